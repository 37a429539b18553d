"""The embeddings the people stages work with.

The stored embeddings of the library's model (models.embedding), or, while `facebatch train` has an adapter active
(people.stored_adapter), the adapter's output for them: clustering, suggestions, export, the report and
`identify` all call these two functions, so they all see the same space. `embedding_space`
names it (clusters.json records it).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from facebatch.people import stored_adapter
from facebatch.store import Library


def embeddings_matrix(faces: pa.Table) -> np.ndarray:
    """The `embedding` column as an (n, d) float32 array (no per-row Python objects); every row is
    of one model (Library.read_faces leaves out another model's), so of one size."""
    column = faces.column("embedding").combine_chunks()
    if len(column) == 0:
        return np.zeros((0, 0), np.float32)
    return np.asarray(column.flatten().to_numpy(zero_copy_only=False), np.float32).reshape(len(column), -1)


def face_embeddings(library: Library, faces: pa.Table) -> np.ndarray:
    """Unit vectors for the faces of `faces` (a table with its `embedding` column), in the space
    people are found in."""
    return new_face_embeddings(library, embeddings_matrix(faces))


def new_face_embeddings(library: Library, embeddings: np.ndarray) -> np.ndarray:
    """The same for faces embedded just now (`identify`), not stored in the library."""
    adapter = stored_adapter.active_adapter(library)
    x = np.asarray(embeddings, np.float32)
    return adapter.apply(x) if adapter is not None else x


def embedding_space(library: Library) -> str:
    """The model's name for its stored embeddings (`facenet`, `sface`...), with the adapter while one
    is active (people.stored_adapter.embedding_space)."""
    return stored_adapter.embedding_space(library)
