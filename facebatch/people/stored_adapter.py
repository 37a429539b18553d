"""The stored adapter and its application: what `facebatch train` leaves in LIBRARY/adapter/, read back.

    LIBRARY/adapter/adapter.pt     the weights (a torch state dict, loaded with weights_only=True)
    LIBRARY/adapter/adapter.json   its sha256, whether it is active, the model it was trained on

A leaf of people/: people.embeddings applies the active adapter to every stored embedding here,
and people.adapter (training and its check) writes it; neither imports the other through this.
An adapter belongs to the model whose vectors it was trained on: after a model change it is set
aside (a 512-d map means nothing to 128-d vectors).
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facebatch.errors import LibraryDamaged
from facebatch.files import atomic_write_bytes, atomic_write_json
from facebatch.store import Library

WEIGHTS_FILE = "adapter.pt"
METADATA_FILE = "adapter.json"
PLAIN_SPACE = "facenet"  # FaceNet's stored embeddings, no adapter (clusters.json of older libraries says so)
FORMAT = 1
BLOCK = 65_536  # faces adapted at once (memory: BLOCK x the model's dimension, twice)


def apply_weights(weights: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """people.training.ResidualAdapter's forward pass in numpy, from its state dict: unit rows,
    float32, in blocks."""
    x = np.asarray(x, np.float32)
    out = np.empty_like(x)
    centres = weights.get("centres", np.zeros((0, x.shape[1]), np.float32))
    gate_distance, gate_width = float(weights.get("gate_distance", 0.0)), float(weights.get("gate_width", 1.0))
    for start in range(0, len(x), BLOCK):
        block = x[start:start + BLOCK]
        if "residual.2.weight" in weights:  # two-layer MLP
            hidden = np.maximum(block @ weights["residual.0.weight"].T + weights["residual.0.bias"], 0.0)
            step = hidden @ weights["residual.2.weight"].T + weights["residual.2.bias"]
        else:
            step = block @ weights["residual.0.weight"].T + weights["residual.0.bias"]
        if len(centres) and gate_distance > 0:
            nearest_centre = np.sqrt(np.maximum(2.0 - 2.0 * (block @ centres.T).max(axis=1), 1e-9))
            step *= (1.0 / (1.0 + np.exp(-(gate_distance - nearest_centre) / gate_width)))[:, None]
        y = block + step
        out[start:start + BLOCK] = y / np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-12)
    return out


@dataclass(frozen=True)
class StoredAdapter:
    id: str  # the first 16 hex digits of the weights file's sha256
    weights: dict[str, np.ndarray]

    def apply(self, x: np.ndarray) -> np.ndarray:
        return apply_weights(self.weights, x)


def read_metadata(library: Library) -> dict[str, Any] | None:
    path = library.adapter_dir / METADATA_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise LibraryDamaged(f"cannot read {path}: {exc}; `facebatch train` makes a new adapter") from exc


def embedding_space(library: Library) -> str:
    """The space people are found in: the model's name (PLAIN_SPACE for FaceNet alone), and the
    adapter while one is active (`adapter:ID` on FaceNet, `MODEL+adapter:ID` on another)."""
    model = library.model()
    plain = model.embedding if model else PLAIN_SPACE
    meta = _active_metadata(library)
    if meta is None:
        return plain
    return f"adapter:{meta['id']}" if plain == PLAIN_SPACE else f"{plain}+adapter:{meta['id']}"


def model_of_space(space: str) -> str:
    """The model a space (as `embedding_space` names it) is made of."""
    return PLAIN_SPACE if space.startswith("adapter:") else space.split("+adapter:")[0]


def _active_metadata(library: Library) -> dict[str, Any] | None:
    """The adapter's metadata while it is on and was trained on the library's present embeddings
    (a model change leaves it behind: it maps vectors of another space, maybe of another size)."""
    from facebatch.models.embedding import same_weights

    meta = read_metadata(library)
    if not meta or not meta.get("active"):
        return None
    model = library.model()
    if model is not None and meta.get("model") and not same_weights(str(meta["model"]), model.tag):
        return None
    return meta


_loaded: dict[Path, tuple[tuple[int, int], StoredAdapter]] = {}


def active_adapter(library: Library) -> StoredAdapter | None:
    """The active adapter, checked against its sha256 (loaded once per process while unchanged)."""
    meta = _active_metadata(library)
    if meta is None:
        return None
    path = library.adapter_dir / WEIGHTS_FILE
    try:
        stat = path.stat()
        key = (stat.st_mtime_ns, stat.st_size)
        cached = _loaded.get(path)
        if cached and cached[0] == key and cached[1].id == meta["id"]:
            return cached[1]
        data = path.read_bytes()
    except OSError as exc:
        raise LibraryDamaged(f"cannot read {path}: {exc}; {_REMEDY}") from exc
    if hashlib.sha256(data).hexdigest() != meta.get("sha256"):
        raise LibraryDamaged(f"{path} does not match its checksum in {METADATA_FILE}; {_REMEDY}")
    adapter = StoredAdapter(meta["id"], _load_weights(data, path))
    _loaded[path] = (key, adapter)
    return adapter


_REMEDY = "`facebatch train --off` goes back to the plain embeddings, `facebatch train` makes a new adapter"


def _load_weights(data: bytes, path: Path) -> dict[str, np.ndarray]:
    import torch

    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        return {k: v.numpy().astype(np.float32) for k, v in state.items()}
    except Exception as exc:  # a damaged pickle raises anything from UnpicklingError to RuntimeError
        raise LibraryDamaged(f"cannot load {path}: {type(exc).__name__}; {_REMEDY}") from exc


def _weights_bytes(weights: dict[str, np.ndarray]) -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save({k: torch.from_numpy(np.array(v, np.float32)) for k, v in weights.items()}, buffer)  # 0-d stays 0-d
    return buffer.getvalue()


def store_adapter(library: Library, weights: dict[str, np.ndarray], metadata: dict[str, Any]) -> str:
    """Write the weights and their metadata, active. Call under the lock. Returns the id.

    The old metadata is switched off first, so a kill between the two writes leaves the plain
    embeddings in use, never a metadata file that describes other weights."""
    old = read_metadata(library)
    if old and old.get("active"):
        atomic_write_json(library.adapter_dir / METADATA_FILE, {**old, "active": False})
    data = _weights_bytes(weights)
    digest = hashlib.sha256(data).hexdigest()
    atomic_write_bytes(library.adapter_dir / WEIGHTS_FILE, data)
    atomic_write_json(library.adapter_dir / METADATA_FILE,
                      {**metadata, "format": FORMAT, "id": digest[:16], "sha256": digest, "active": True})
    return digest[:16]
