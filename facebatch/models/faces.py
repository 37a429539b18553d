"""The face pipeline: one photo's bytes to its faces and their embeddings, the same for every command.

`scan`'s workers, `verify`, `identify` and `eval pairs` all build a `FacePipeline` (MTCNN and the
library's embedding model) from a small picklable `PipelineBuilder`, once per process (cached),
never a pickled model per task. In ONNX Runtime (the default) no torch is imported; `--runtime
torch` (and `--device cuda`) builds FaceNet and MTCNN in torch (SFace always runs in ONNX Runtime).
"""

from __future__ import annotations

import gc
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from facebatch.config import DetectionSettings, ModelSettings
from facebatch.errors import FacebatchError
from facebatch.imageload import DecodedPhoto, decode_photo
from facebatch.models.catalog import EmbeddingModel, model_named
from facebatch.models.detection import Face, FaceDetector
from facebatch.models.embedding import FaceGeometry, ModelEmbedder, NetEmbedder, model_tag, needed_scale
from facebatch.models.onnx_models import OnnxModel, OnnxModels, OnnxMtcnnNets, prepare_onnx_models
from facebatch.models.weights import Weights, resolve_weights

Crops = tuple[np.ndarray, ...]  # one face's input to each net of the model


@dataclass(frozen=True)
class PipelineBuilder:
    """Everything a worker needs to build the pipeline; hashable, so built pipelines are cached."""

    detection: DetectionSettings
    weights: Weights | None  # FaceNet's; None when the model does not run FaceNet
    batch_size: int = 32
    device: str = "cpu"
    torch_threads: int | None = None  # threads of the models (torch or ONNX Runtime); None: the Dask worker's
    models: ModelSettings = ModelSettings("torch", "fp32")
    onnx: OnnxModels | None = None  # MTCNN's and FaceNet's files when they run in ONNX Runtime (prepare_builder)
    sface: OnnxModel | None = None  # SFace's file, when the model runs it (prepare_builder)

    @property
    def model(self) -> EmbeddingModel:
        return model_named(self.models.embedding)

    @property
    def tag(self) -> str:
        return model_tag(self.model, self.weights, self.models.variant)

    def build(self) -> FacePipeline:
        threads = self.torch_threads or _worker_threads()
        if self.models.runtime == "torch":
            import torch

            from facebatch.models.mtcnn import TorchMtcnnNets

            torch.set_num_threads(threads)
            detector = FaceDetector(self.detection, TorchMtcnnNets(self.device))
        else:
            if self.onnx is None:
                raise FacebatchError("the ONNX models were not prepared: build the pipeline with prepare_builder()")
            detector = FaceDetector(self.detection, OnnxMtcnnNets(self.onnx, threads))
        nets = [self.net_embedder(net, threads) for net in self.model.nets]
        pipeline = FacePipeline(detector, ModelEmbedder(self.model, self.weights, nets, self.tag))
        # The models (and torch's modules, when loaded) live as long as the process: keep the garbage
        # collector from walking them on every full collection and at exit (a worker stops ~0.7 s sooner).
        gc.freeze()
        return pipeline

    def net_embedder(self, net: str, threads: int) -> NetEmbedder:
        """One net of the model (`facenet`, `sface`) in this builder's runtime."""
        from facebatch.models.facenet import FaceEmbedder, OnnxFaceEmbedder
        from facebatch.models.sface import OnnxSFaceEmbedder

        if net == "sface":
            if self.sface is None:
                raise FacebatchError("SFace was not prepared: build the pipeline with prepare_builder()")
            return OnnxSFaceEmbedder(self.sface, threads, self.batch_size)
        if self.weights is None:
            raise FacebatchError("FaceNet's weights were not resolved: build the pipeline with prepare_builder()")
        if self.models.runtime == "torch":
            return FaceEmbedder(self.weights, self.device, self.batch_size)
        if self.onnx is None or self.onnx.facenet is None:
            raise FacebatchError("FaceNet's ONNX file was not prepared: build the pipeline with prepare_builder()")
        return OnnxFaceEmbedder(self.weights, self.onnx.facenet, self.models.precision, threads, self.batch_size)


def facenet_weights(embedding: str, spec: str) -> Weights | None:
    """FaceNet's weights (`--weights`), resolved, for a model that runs FaceNet; None for one that
    does not, which then never converts, exports or loads them."""
    return resolve_weights(spec) if "facenet" in model_named(embedding).nets else None


def prepare_builder(
    detection: DetectionSettings,
    weights: Weights | None,
    models: ModelSettings,
    batch_size: int = 32,
    device: str = "cpu",
    threads: int | None = None,
) -> PipelineBuilder:
    """A builder for `models` (FaceNet's `weights`: None for a model without FaceNet); the ONNX files
    it needs are made here, once (that needs torch), so that workers only read them."""
    from facebatch.models.sface import prepare_sface

    model = model_named(models.embedding)
    if "facenet" not in model.nets:
        weights = None  # never exported, quantised or loaded: SFace alone needs none of it
    onnx = prepare_onnx_models(weights, models.precision) if models.runtime == "onnx" else None
    if model.centred:
        model_tag(model, weights)  # a model whose means are missing is refused here, not on every worker
    sface = prepare_sface(models.sface_precision) if "sface" in model.nets else None
    return PipelineBuilder(detection, weights, batch_size, device, threads, models, onnx, sface)


def _worker_threads() -> int:
    try:
        from distributed import get_worker

        return max(1, get_worker().state.nthreads)
    except (ImportError, ValueError):
        return 1


_PIPELINES: dict[PipelineBuilder, FacePipeline] = {}
_PIPELINES_LOCK = threading.Lock()


def pipeline_for(builder: PipelineBuilder) -> FacePipeline:
    """This process's pipeline for `builder`, built on first use (one model copy per worker)."""
    with _PIPELINES_LOCK:
        if builder not in _PIPELINES:
            _PIPELINES.clear()  # a new scan's settings replace the old models, not add to them
            gc.unfreeze()  # and the garbage collector may look at the old ones again (see build)
            _PIPELINES[builder] = builder.build()
        return _PIPELINES[builder]


class FacePipeline:
    def __init__(self, detector: FaceDetector, embedder: ModelEmbedder) -> None:
        self.detector = detector
        self.embedder = embedder
        self.lock = threading.Lock()  # one shard at a time per process: the models use the worker's cores

    @property
    def model(self) -> str:
        """The tag every embedding of this pipeline carries."""
        return self.embedder.model_tag

    def find_faces(self, data: bytes, seconds: Counter | None = None) -> tuple[DecodedPhoto, list[Face], list[Crops]]:
        """Decode, detect and crop one photo: the photo, its faces (best first) and their crops."""
        clock = StageClock(Counter() if seconds is None else seconds)
        with clock("decode"):
            photo = decode_photo(data, min_long_side=self.detector.settings.max_side)
        with clock("detect"):
            faces = self.detector.detect(photo)
        with clock("crop"):
            crops = self.crops_of(data, photo, [FaceGeometry(f.box, f.landmarks, f.rotation) for f in faces])
        return photo, faces, crops

    def crops_of(self, data: bytes, photo: DecodedPhoto, faces: Sequence[FaceGeometry]) -> list[Crops]:
        """Crops come from a decode large enough for every face (full size when a face is small)."""
        if not faces:
            return []
        scale = needed_scale(self.embedder.model, faces, photo.width, photo.height)
        needed = None if scale >= 1 else int(np.ceil(max(photo.width, photo.height) * scale))  # None: full size
        if (needed is None and photo.scale < 1) or (needed is not None and max(photo.image.size) < needed):
            photo = decode_photo(data, min_long_side=needed)
        return [self.embedder.crops(photo, face) for face in faces]

    def embed(self, crops: Sequence[Crops]) -> np.ndarray:
        return self.embedder.embed(crops)


class StageClock:
    """Seconds spent per stage: `with clock("detect"): ...` adds to seconds["detect"]."""

    def __init__(self, seconds: Counter) -> None:
        self.seconds = seconds

    def __call__(self, stage: str) -> StageClock:
        self.stage = stage
        return self

    def __enter__(self) -> None:
        self.started = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.seconds[self.stage] += time.perf_counter() - self.started
