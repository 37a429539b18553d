"""Settings: the CLI builds one frozen, validated object per command and hands it to the library.

Defaults live here, once, with the measurement that chose them (see README, "Defaults").
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from facebatch.errors import DeviceUnavailable, UsageError
from facebatch.models.catalog import DEFAULT_MODEL, model_named
from facebatch.wording import counted

DEFAULT_LIBRARY = "facebatch-library"

# Longest side of the copy MTCNN runs on. Measured on ../shared/datasets (benchmarks/detect_size.py):
# see README "Defaults". Smaller is faster; faces below ~20 px at this scale are missed.
DEFAULT_DETECT_MAX_SIDE = 1280
# Faces smaller than this (shorter box side, original pixels) are dropped: their embeddings are noise.
DEFAULT_MIN_FACE = 20
# MTCNN's final-stage probability. 0.9 and 0.95 found the same faces on ../shared/datasets (42/43
# dlib-annotated tiny faces, 0 false faces); 0.99 lost one. The stricter of the equals keeps clusters clean.
DEFAULT_MIN_SCORE = 0.95
DEFAULT_BATCH_SIZE = 32
# Photos per shard at most: big enough that a shard's Parquet files are not tiny, small enough that
# a killed scan loses little work and the progress bar moves. Shards shrink toward the end of a scan
# (scan.driver.next_shard_size), so small scans get small ones too.
DEFAULT_SHARD_SIZE = 256


@dataclass(frozen=True)
class DetectionSettings:
    """How faces are found. Picklable: it travels to every worker."""

    max_side: int = DEFAULT_DETECT_MAX_SIDE
    min_face: int = DEFAULT_MIN_FACE
    min_score: float = DEFAULT_MIN_SCORE
    find_rotated: bool = False  # look again at photos with no face, turned a quarter each way

    def __post_init__(self) -> None:
        if self.max_side < 160:
            raise UsageError(f"--detect-size must be at least 160 pixels, got {self.max_side}")
        if self.min_face < 1:
            raise UsageError(f"--min-face must be at least 1 pixel, got {self.min_face}")
        if not 0.0 <= self.min_score <= 1.0:
            raise UsageError(f"--min-score must be between 0 and 1, got {self.min_score}")


# Where the models run and at which precision (README "Weights"). ONNX Runtime needs no torch in
# the process; int8 is FaceNet statically quantised (per-channel, QDQ), measured against fp32 in
# benchmarks/model_runtimes.py (BENCHMARKS.md, "Models"), and SFace, alone or beside FaceNet
# (models.sface_int8, BENCHMARKS.md sections 18 and 20). MTCNN always runs in fp32.
RUNTIMES = ("onnx", "torch")
PRECISIONS = ("fp32", "int8")
DEFAULT_RUNTIME = "onnx"
# int8 kept the embeddings where fp32 puts them on real faces (cosine >= 0.99, lfw-dev pair
# accuracy within 0.1 point), so it is the CPU default.
DEFAULT_PRECISION = "int8"


# A fused model's variant when its SFace runs in int8 too (ModelSettings.variant).
FUSED_SFACE_INT8 = "-sface-int8"


def runtime_and_precision(variant: str) -> tuple[str, str]:
    """A model tag's variant (`onnx-int8`, `onnx-int8-sface-int8`...) as --runtime and --precision."""
    runtime, precision = variant.split("-")[:2]
    return runtime, precision


def still_made(variant: str, embedding: str) -> bool:
    """Whether this version still makes embeddings of this variant for the model (`onnx-int8` of
    facenet+sface, with SFace in fp32, it no longer does): --runtime and --precision bring it back."""
    return ModelSettings(*runtime_and_precision(variant), embedding).variant == variant


@dataclass(frozen=True)
class ModelSettings:
    """The embedding model (models.catalog), and the runtime and precision of its nets (MTCNN always
    runs in fp32, SFace in ONNX Runtime). Picklable: it travels to every worker."""

    runtime: str = DEFAULT_RUNTIME
    precision: str = DEFAULT_PRECISION
    embedding: str = DEFAULT_MODEL

    def __post_init__(self) -> None:
        model_named(self.embedding)  # an unknown name is one line here, before any work
        if self.runtime not in RUNTIMES:
            raise UsageError(f"--runtime must be {' or '.join(RUNTIMES)}, got {self.runtime!r}")
        if self.precision not in PRECISIONS:
            raise UsageError(f"--precision must be {' or '.join(PRECISIONS)}, got {self.precision!r}")
        if self.runtime == "torch" and self.precision != "fp32":
            raise UsageError(f"--precision {self.precision} runs in ONNX Runtime: drop --runtime torch")

    @property
    def variant(self) -> str:
        """How the embeddings were computed, as recorded in their model tag: onnx-int8, torch-fp32...
        FaceNet and SFace side by side in int8 say so (`onnx-int8-sface-int8`): under `onnx-int8`
        that model ran SFace in fp32, and a library of those is embedded again (same_weights: its
        adapter stays)."""
        variant = f"{self.runtime}-{self.precision}"
        if {"facenet", "sface"} <= set(model_named(self.embedding).nets) and self.sface_precision == "int8":
            variant += FUSED_SFACE_INT8
        return variant

    @property
    def sface_precision(self) -> str:
        """SFace runs in ONNX Runtime whatever the runtime: at --precision, in fp32 with --runtime torch."""
        return self.precision if self.runtime == "onnx" else "fp32"

    @classmethod
    def choose(cls, runtime: str | None, precision: str | None, device: str = "cpu",
               embedding: str = DEFAULT_MODEL) -> ModelSettings:
        """The options as given, the rest defaulted: a GPU runs torch (ONNX Runtime's CPU package
        has no CUDA), torch runs fp32, ONNX Runtime the default precision."""
        if runtime is None:
            runtime = "torch" if device != "cpu" else DEFAULT_RUNTIME
        if device != "cpu" and runtime != "torch":
            raise UsageError(f"--device {device} runs the models in torch: drop --runtime {runtime}")
        if precision is None:
            precision = DEFAULT_PRECISION if runtime == "onnx" else "fp32"
        return cls(runtime, precision, embedding)


@dataclass(frozen=True)
class ScanConfig:
    roots: tuple[str, ...]
    library: Path
    weights: str | None = None  # None: the library's (casia-webface for a new one)
    model: str | None = None  # the embedding model (models.catalog); None: the library's, or the default
    detection: DetectionSettings = field(default_factory=DetectionSettings)
    batch_size: int = DEFAULT_BATCH_SIZE
    shard_size: int | None = None  # None: at most DEFAULT_SHARD_SIZE, smaller toward the end (next_shard_size)
    workers: int | None = None  # None: one worker process per core (local cluster only)
    threads_per_worker: int = 1
    scheduler: str | None = None  # address of an existing Dask scheduler
    device: str = "cpu"
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    force: bool = False  # redo model work even for unchanged photos
    retry_errors: bool = False  # re-read photos whose last scan failed though the file is unchanged
    videos: bool = True  # scan videos too (their keyframes: videoload)
    models: ModelSettings = field(default_factory=ModelSettings)

    def __post_init__(self) -> None:
        if not self.roots:
            raise UsageError("give at least one photo folder to scan")
        if self.batch_size < 1:
            raise UsageError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.shard_size is not None and self.shard_size < 1:
            raise UsageError(f"--shard-size must be at least 1, got {self.shard_size}")
        if self.workers is not None and self.workers < 1:
            raise UsageError(f"--workers must be at least 1, got {self.workers}")
        if self.threads_per_worker < 1:
            raise UsageError(f"--threads-per-worker must be at least 1, got {self.threads_per_worker}")
        if self.scheduler is not None and self.workers is not None:
            raise UsageError("--workers starts a local cluster; it cannot be combined with --scheduler")
        check_device(self.device)
        if self.model is not None:
            model_named(self.model)

    def local_workers(self) -> int:
        """Worker processes for a local cluster: the cores shared out by threads per worker."""
        if self.workers is not None:
            return self.workers
        return max(1, (os.cpu_count() or 1) // self.threads_per_worker)


def check_device(device: str) -> None:
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise UsageError(f"--device must be cpu, cuda or cuda:N, got {device!r}")


def require_device(device: str) -> None:
    """--device cuda[:N] needs that GPU here: checked before any work (it imports torch, so only
    when a GPU is asked for), instead of every photo failing on the workers."""
    check_device(device)
    if device == "cpu":
        return
    import torch

    index = int(device.split(":")[1]) if ":" in device else 0
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if index >= count:
        found = counted(count, "CUDA GPU") if count else "no CUDA GPU"
        raise DeviceUnavailable(f"--device {device}: this machine has {found} (torch {torch.__version__}); "
                                "use --device cpu")


def library_path(option: str | None) -> Path:
    """--library, else $FACEBATCH_LIBRARY, else ./facebatch-library (click resolves the env var)."""
    return Path(option or DEFAULT_LIBRARY).expanduser().absolute()
