"""Face verification: is the face in photo A the person in photo B? And how well do we answer that.

`verify` compares the most prominent face of two photos; `evaluate_pairs` runs the LFW protocol on
a CSV of labelled pairs. Both embed exactly as `scan` does (models.faces: `find_faces` and the
model's embedder), so distances here are comparable with a library's embeddings of that model.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facebatch.config import DetectionSettings, ModelSettings, require_device
from facebatch.errors import InputError, PhotoError, UncalibratedModel, UsageError
from facebatch.imageload import read_photo_bytes
from facebatch.models.embedding import measured_scale
from facebatch.models.detection import Face
from facebatch.models.faces import Crops, FacePipeline, facenet_weights, pipeline_for, prepare_builder
from facebatch.models.scale import NAME_CONFIDENCE, DistanceScale
from facebatch.models.weights import DEFAULT_WEIGHTS
from facebatch.people.evaluation import DEFAULT_FAR, DEFAULT_FOLDS, VerificationReport, nearest_centre, verification_report
from facebatch.wording import counted

# `verify` answers a 1:1 question, "are these two faces one person?", where either answer is as
# likely beforehand: its threshold is the model's (models.scale), the distance that answers most
# LFW-style pairs right (FaceNet: 1.108 on lfw-dev, 98.6%, 98% of same-person pairs and 1.3% of
# different-person pairs accepted).
# `identify` and the export's suggestions answer another question, "which of my named people is
# this, if any?", in a library where most faces are strangers: on the same distance scale they
# need confidence >= 0.8 to the person's centre (FaceNet: distance <= 0.838). A pair at 0.9 is
# likely one person when asked about alone, and its confidence as a suggestion (0.38) says why a
# library would not name it: `verify` prints both, so the two answers never contradict.
# Other weights (vggface2, a .pt file) have no measured scale: measure with `eval pairs` and pass --threshold.

# Exit codes of `facebatch verify`: scripts branch on them.
EXIT_SAME = 0
EXIT_DIFFERENT = 1
EXIT_ERROR = 2

EMBED_CHUNK = 256  # photos whose crops are held in memory at once during `eval pairs`


def build_pipeline(
    weights: str = DEFAULT_WEIGHTS,
    device: str = "cpu",
    batch_size: int = 32,
    threads: int | None = None,
    models: ModelSettings | None = None,
) -> FacePipeline:
    """The scan's detector and embedder with default detection settings, in this process; `models`
    None: the default model, runtime and precision for `device`."""
    require_device(device)
    models = models or ModelSettings.choose(None, None, device)
    builder = prepare_builder(DetectionSettings(), facenet_weights(models.embedding, weights), models, batch_size, device,
                              threads or os.cpu_count() or 1)
    return pipeline_for(builder)  # cached: a second command in the same process reuses the models


def pipeline_scale(pipeline: FacePipeline) -> DistanceScale | None:
    """The measured scale of the pipeline's model and weights; None for unmeasured weights."""
    return measured_scale(pipeline.model)


def distance(a: np.ndarray, b: np.ndarray) -> float:
    """Euclidean distance between two L2-normalised embeddings: 0 (identical) to 2."""
    return float(np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64)))


def prominent_face(faces: Sequence[Face]) -> int:
    """Index of the largest face box (the first of equals)."""
    areas = [(f.box[2] - f.box[0]) * (f.box[3] - f.box[1]) for f in faces]
    return int(np.argmax(areas))


def central_face(faces: Sequence[Face], width: int, height: int) -> int:
    """Index of the face whose box centre is nearest the image centre (the LFW convention)."""
    return nearest_centre([f.box for f in faces], width, height)


def embed_crops(pipeline: FacePipeline, crops: Sequence[Crops], flip: bool = False) -> np.ndarray:
    """Unit vectors of the faces' crops; `flip` adds each mirror image's embedding to each before
    normalising again (test-time augmentation)."""
    embeddings = pipeline.embed(crops)
    if flip and len(crops):
        embeddings = embeddings + pipeline.embed([tuple(np.ascontiguousarray(c[:, ::-1]) for c in face) for face in crops])
        embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    return embeddings.astype(np.float32, copy=False)


# --------------------------------------------------------------------------- verify


@dataclass(frozen=True)
class ChosenFace:
    path: str
    index: int  # in best-first order, as in the library's face_index
    n_faces: int
    face: Face
    given: bool = False  # chosen with --face, not as the largest

    def note(self, label: str) -> str | None:
        """Which face was compared, when the photo has several: a group photo's largest face is
        not always the one the user meant."""
        if self.n_faces < 2:
            return None
        x1, y1, x2, y2 = (round(v) for v in self.face.box)
        how = "as given" if self.given else "the largest; --face N compares another"
        return f"photo {label} {self.path}: face {self.index} of {self.n_faces} (box {x1},{y1} to {x2},{y2}), {how}"


@dataclass(frozen=True)
class VerifyResult:
    a: ChosenFace
    b: ChosenFace
    distance: float
    threshold: float
    scale: DistanceScale | None  # of the model that embedded them; None: unmeasured weights

    @property
    def same(self) -> bool:
        return self.distance <= self.threshold

    @property
    def confidence(self) -> float | None:
        return None if self.scale is None else float(self.scale.confidence(self.distance))

    def line(self) -> str:
        verdict = "same person" if self.same else "different people"
        sign = "<=" if self.same else ">"
        line = f"{verdict}: distance {self.distance:.4f} {sign} threshold {self.threshold:.4f}"
        if self.confidence is None:
            return line + "; these weights have no measured confidence"
        named = "would" if self.confidence >= NAME_CONFIDENCE else "would not"
        return line + f"; as a suggestion in a library this distance has confidence {self.confidence:.2f} (it {named} name a face)"

    def notes(self) -> list[str]:
        return [n for n in (self.a.note("A"), self.b.note("B")) if n]

    def to_json(self) -> dict:
        def face(chosen: ChosenFace) -> dict:
            return {
                "path": chosen.path,
                "face": chosen.index,
                "faces": chosen.n_faces,
                "box": [round(v, 1) for v in chosen.face.box],
                "score": round(chosen.face.score, 4),
            }

        confidence = None if self.confidence is None else round(self.confidence, 4)
        return {"same": self.same, "distance": self.distance, "threshold": self.threshold,
                "confidence": confidence, "a": face(self.a), "b": face(self.b)}


def photo_faces(pipeline: FacePipeline, path: str) -> tuple[list[Face], list[Crops], int, int]:
    try:
        photo, faces, crops = pipeline.find_faces(read_photo_bytes(path))
    except PhotoError as exc:
        message = exc.message if path in exc.message else f"{path}: {exc.message}"
        raise InputError(message) from None
    return faces, crops, photo.width, photo.height


def verify(
    pipeline: FacePipeline,
    path_a: str,
    path_b: str,
    faces: tuple[int | None, int | None] = (None, None),
    threshold: float | None = None,
) -> VerifyResult:
    """Compare one face of each photo: the largest, or the given index in best-first order; at the
    model's threshold unless one is given."""
    scale = pipeline_scale(pipeline)
    if threshold is None:
        if scale is None:
            raise UncalibratedModel("these weights have no measured threshold: measure one with `facebatch eval pairs` "
                                    "and pass --threshold")
        threshold = scale.verify_threshold
    chosen, crops = [], []
    for path, wanted in zip((path_a, path_b), faces):
        found, found_crops, _, _ = photo_faces(pipeline, path)
        if not found:
            raise InputError(f"no face found in {path}")
        index = prominent_face(found) if wanted is None else wanted
        if not 0 <= index < len(found):
            raise UsageError(
                f"--face {index}: {path} has {counted(len(found), 'face')} (0 to {len(found) - 1})",
            )
        chosen.append(ChosenFace(path, index, len(found), found[index], given=wanted is not None))
        crops.append(found_crops[index])
    embeddings = embed_crops(pipeline, crops)
    return VerifyResult(chosen[0], chosen[1], distance(embeddings[0], embeddings[1]), threshold, scale)


# --------------------------------------------------------------------------- eval pairs

_TRUE = frozenset({"1", "true", "yes"})
_FALSE = frozenset({"0", "false", "no"})


@dataclass(frozen=True)
class Pair:
    path1: str  # as written in the CSV (relative to the root)
    path2: str
    same: bool
    fold: str | None


def read_pairs(csv_path: Path, root: Path) -> list[Pair]:
    """Pairs of photos from a CSV; every photo must exist.

    With a header row naming `path1`, `path2` and `same` (and maybe `fold`), columns are found by
    name, in any order; without one they are `path1,path2,same[,fold]`. A first row that is
    neither (its `same` cell is no 1/0 and its first cell no photo) is skipped as a header.
    `same` is 1/0, true/false or yes/no.
    """
    try:
        with open(csv_path, newline="") as handle:
            rows = [(n, [c.strip() for c in row]) for n, row in enumerate(csv.reader(handle), start=1) if row and any(row)]
    except OSError as exc:
        raise InputError(f"cannot read pairs file {csv_path}: {exc.strerror or exc}") from None
    except (csv.Error, UnicodeDecodeError) as exc:
        raise InputError(f"pairs file {csv_path} is not a CSV file: {exc}") from None
    columns = {"path1": 0, "path2": 1, "same": 2, "fold": 3}
    if rows:
        header = [c.lower() for c in rows[0][1]]
        if {"path1", "path2", "same"} <= set(header):
            columns = {name: header.index(name) for name in ("path1", "path2", "same", "fold") if name in header}
            rows = rows[1:]
        elif len(header) >= 3 and header[2] not in _TRUE | _FALSE and not (root / rows[0][1][0]).is_file():
            rows = rows[1:]  # a header with other names: positional columns
    need = max(columns["path1"], columns["path2"], columns["same"]) + 1
    limit = max(need, columns.get("fold", 3) + 1)
    pairs: list[Pair] = []
    for line, cells in rows:
        if not need <= len(cells) <= limit or not cells[columns["path1"]] or not cells[columns["path2"]]:
            raise InputError(f"{csv_path} line {line}: expected path1,path2,same[,fold]")
        label = cells[columns["same"]].lower()
        if label not in _TRUE | _FALSE:
            raise InputError(f"{csv_path} line {line}: same must be 1/0, true/false or yes/no, got {cells[columns['same']]!r}")
        at = columns.get("fold")
        fold = cells[at] if at is not None and at < len(cells) and cells[at] else None
        pairs.append(Pair(cells[columns["path1"]], cells[columns["path2"]], label in _TRUE, fold))
    if not pairs:
        raise InputError(f"pairs file {csv_path} has no pairs")
    if len({p.fold is None for p in pairs}) > 1:
        raise InputError(f"{csv_path}: give a fold for every pair or for none")
    for path in dict.fromkeys(p for pair in pairs for p in (pair.path1, pair.path2)):
        if not (root / path).is_file():
            raise InputError(f"photo not found: {root / path} (paths in {csv_path.name} are relative to --root)")
    return pairs


@dataclass(frozen=True)
class PairsResult:
    report: VerificationReport
    failed_photos: dict[str, str]  # path -> why it has no embedding (no face, unreadable)
    n_photos: int
    flip: bool

    def lines(self) -> list[str]:
        r = self.report
        n_folds = len(r.fold_accuracies)
        lines = [
            f"pairs         {r.n_pairs} ({r.n_same} same, {r.n_pairs - r.n_same} different), "
            f"{self.n_photos} photos, {n_folds} folds{', flip' if self.flip else ''}",
            f"accuracy      {r.accuracy:.4f} ± {r.accuracy_std:.4f} (each fold's threshold chosen on the other {n_folds - 1})",
            f"best          {r.best_accuracy:.4f} at threshold {r.best_threshold:.4f} (one threshold for all pairs)",
            f"ROC AUC       {r.auc:.4f}",
            f"TAR@FAR={DEFAULT_FAR:g} {r.tar.tar:.4f} at threshold {r.tar.threshold:.4f} (FAR {r.tar.far:.4f})",
        ]
        if r.n_failed:
            lines.append(f"failed        {r.n_failed} pairs counted as wrong: {len(self.failed_photos)} photos without an embedding")
            lines += [f"  {path}: {why}" for path, why in sorted(self.failed_photos.items())]
        return lines

    def to_json(self) -> dict:
        r = self.report
        return {
            "pairs": r.n_pairs,
            "same_pairs": r.n_same,
            "photos": self.n_photos,
            "flip": self.flip,
            "accuracy": r.accuracy,
            "accuracy_std": r.accuracy_std,
            "fold_accuracies": list(r.fold_accuracies),
            "fold_thresholds": list(r.fold_thresholds),
            "best_threshold": r.best_threshold,
            "best_accuracy": r.best_accuracy,
            "auc": _json_float(r.auc),
            "tar": _json_float(r.tar.tar),
            "far": _json_float(r.tar.far),
            "far_target": DEFAULT_FAR,
            "tar_threshold": _json_float(r.tar.threshold),
            "failed_pairs": r.n_failed,
            "failed_photos": dict(sorted(self.failed_photos.items())),
        }


def _json_float(value: float) -> float | None:
    return None if math.isnan(value) else value


def embed_central_faces(
    pipeline: FacePipeline,
    paths: Sequence[Path],
    flip: bool = False,
    progress: Callable[[int, int, int, int], None] | None = None,
) -> tuple[dict[Path, np.ndarray], dict[Path, str]]:
    """Embedding of the face nearest each photo's centre; and, for photos without one, why."""
    embeddings: dict[Path, np.ndarray] = {}
    failed: dict[Path, str] = {}
    for start in range(0, len(paths), EMBED_CHUNK):
        chunk, crops = [], []
        for path in paths[start : start + EMBED_CHUNK]:
            try:
                photo, faces, photo_crops = pipeline.find_faces(read_photo_bytes(str(path)))
            except PhotoError as exc:
                failed[path] = exc.message
                continue
            if not faces:
                failed[path] = "no face found"
                continue
            chunk.append(path)
            crops.append(photo_crops[central_face(faces, photo.width, photo.height)])
        if crops:
            embeddings.update(zip(chunk, embed_crops(pipeline, crops, flip)))
        if progress:
            done = min(start + EMBED_CHUNK, len(paths))
            progress(done, len(paths), len(embeddings), len(failed))
    return embeddings, failed


def evaluate_pairs(
    pipeline: FacePipeline,
    pairs: Sequence[Pair],
    root: Path,
    flip: bool = False,
    n_folds: int = DEFAULT_FOLDS,
    progress: Callable[[int, int, int, int], None] | None = None,
) -> PairsResult:
    """LFW-protocol verification accuracy; each photo is embedded once however many pairs use it."""
    photos = list(dict.fromkeys(p for pair in pairs for p in (pair.path1, pair.path2)))
    embeddings, failed = embed_central_faces(pipeline, [root / p for p in photos], flip, progress)
    distances = np.array([
        distance(embeddings[root / pair.path1], embeddings[root / pair.path2])
        if root / pair.path1 in embeddings and root / pair.path2 in embeddings
        else math.nan
        for pair in pairs
    ])
    same = np.array([pair.same for pair in pairs])
    folds = None if pairs[0].fold is None else [pair.fold for pair in pairs]
    if folds is not None and len(set(folds)) < 2:
        raise InputError("the fold column must name at least 2 folds")
    if folds is None and len(pairs) < n_folds:
        raise InputError(f"{len(pairs)} pairs are too few for {n_folds} folds")
    report = verification_report(distances, same, folds, n_folds)
    failed_photos = {p: failed[root / p] for p in photos if root / p in failed}
    return PairsResult(report, failed_photos, len(photos), flip)
