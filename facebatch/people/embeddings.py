"""The embeddings the people stages work with.

Today: the stored FaceNet embeddings. `facebatch train` (an adapter learned from the user's
names) plugs in here, so that clustering, suggestions and `identify` all see the same space.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from facebatch.schema import EMBEDDING_DIM
from facebatch.store import Library


def embeddings_matrix(faces: pa.Table) -> np.ndarray:
    """The `embedding` column as an (n, 512) float32 array (no per-row Python objects)."""
    column = faces.column("embedding").combine_chunks()
    if len(column) == 0:
        return np.zeros((0, EMBEDDING_DIM), np.float32)
    return np.asarray(column.flatten().to_numpy(zero_copy_only=False), np.float32).reshape(len(column), -1)


def face_embeddings(library: Library, faces: pa.Table) -> np.ndarray:
    """Unit vectors for the faces of `faces` (a table with its `embedding` column), in the space
    people are found in."""
    return embeddings_matrix(faces)


def new_face_embeddings(library: Library, embeddings: np.ndarray) -> np.ndarray:
    """The same for faces embedded just now (`identify`), not stored in the library."""
    return np.asarray(embeddings, np.float32)
