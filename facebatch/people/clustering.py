"""Clustering: HDBSCAN over every face embedding, with cluster numbers that survive re-runs.

    LIBRARY/clusters.parquet   face_id, cluster_id (-1: none), probability, first_run
    LIBRARY/clusters.json      run counter, the next never-used cluster number, the settings used

Both are derived state: `cluster` rewrites them whole. What the user said about faces (names,
"not", merges, ignores) lives in LIBRARY/labels.parquet (facebatch.people.labels), which clustering only
reads, so every fact survives every re-run and every renumbering.

Stable numbers: after HDBSCAN, each new cluster is matched to the old cluster it shares most faces
with (greedy, largest overlaps first; a match needs the shared faces to be a majority of one of
the two). A matched cluster keeps the old number; any other cluster gets a number never used
before (the counter only grows), so a number always means one group of faces.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from facebatch.errors import FacebatchError
from facebatch.schema import EMBEDDING_DIM
from facebatch.store import Library, atomic_write_json, atomic_write_table, read_table_file

UNCLUSTERED = -1
SELECTION_METHODS = ("eom", "leaf")

# Defaults measured by benchmarks/cluster_params.py on lfw-dev (3,729 faces, 743 people with 3-9
# photos each; unclustered faces scored as singletons; background faces as strangers) and
# faces-dev (35 faces, 8 people). PCA 64 on lfw-dev (it has > PCA_MIN_FACES faces):
#   min_cluster_size, min_samples, method, min_face_size | lfw pairwise F | BCubed F | coverage | faces-dev F
#   3, 1, leaf, 40 (default)                           | 0.911          | 0.947    | 0.868    | 0.653
#   3, 1, leaf, 0                                      | 0.892          | 0.944    | 0.880    | 0.604
#   3, 1, leaf, 50                                     | 0.915          | 0.950    | 0.866    | 0.653
#   3, 2, leaf, 40                                     | 0.889          | 0.929    | 0.817    | 0.966
#   2, 2, leaf, 0                                      | 0.867          | 0.920    | 0.816    | 0.636
#   3, 1, eom, 0 (512-d)                               | 0.432          | 0.938    | 0.906    | 0.862
# eom lumps similar people into a few big clusters (pairwise precision 0.28-0.46 on lfw); leaf
# keeps them apart. min_cluster_size 3: people with 2 photos stay unclustered but get suggestions.
# min_samples 2 is better on faces-dev (and on synthetic libraries full of one-photo strangers,
# see benchmarks/cluster_scale.py) but misses the lfw target: `--min-samples 2` is the knob.
DEFAULT_MIN_CLUSTER_SIZE = 3
DEFAULT_MIN_SAMPLES = 1
DEFAULT_METHOD = "leaf"
DEFAULT_EPSILON = 0.0
# PCA before HDBSCAN: HDBSCAN's tree-based search is fast in a few dozen dimensions and slow in
# 512 (benchmarks/cluster_scale.py, 10,000 synthetic faces: 150 s in 512-d, 32 s in 64-d, same F
# 0.95 vs 0.94; lfw-dev F 0.891 in 512-d, 0.892 in 64-d). Fitted on a random sample; 0 turns it off.
DEFAULT_PCA_DIMS = 64
DEFAULT_PCA_SAMPLE = 20_000
PCA_MIN_FACES = 2_000  # below this HDBSCAN is fast in full dimension: no reduction needed
# Above this many faces HDBSCAN runs on a k-nearest-neighbour graph (exact neighbours by blocked
# matrix products in the PCA space) instead of its tree-based search, which is O(n^2)-like beyond
# ~20 dimensions: 100,000 faces in 64-d did not finish in 10 min (benchmarks/cluster_scale.py).
# The leaf clusters come from short edges, which the graph keeps; measured F is in the benchmark.
KNN_MIN_FACES = 20_000
KNN_NEIGHBOURS = 10
# From this many faces on, neighbours come from faiss (when installed) instead of exact search.
ANN_MIN_FACES = 200_000
# Faces whose box's shorter side is below this (original pixels) are left out of clustering (-1;
# they still get suggestions). Upscaled from a few dozen pixels to FaceNet's 160, small background
# faces get blurred, look-alike embeddings that HDBSCAN gathers into "junk" clusters of strangers:
# on lfw-dev the four biggest wrong clusters were such faces (median side 31-48 px; the people the
# photos are of: 83-97 px). Measured by benchmarks/cluster_params.py --min-face-size.
DEFAULT_MIN_FACE_SIZE = 40

CLUSTERS_SCHEMA = pa.schema(
    [
        pa.field("face_id", pa.string(), nullable=False),
        pa.field("cluster_id", pa.int64(), nullable=False),  # -1: unclustered
        pa.field("probability", pa.float32(), nullable=False),  # HDBSCAN membership strength, 0..1
        pa.field("first_run", pa.int64(), nullable=False),  # the run that first saw this face
    ]
)


@dataclass(frozen=True)
class ClusterSettings:
    min_cluster_size: int = DEFAULT_MIN_CLUSTER_SIZE
    min_samples: int = DEFAULT_MIN_SAMPLES
    method: str = DEFAULT_METHOD
    epsilon: float = DEFAULT_EPSILON
    pca_dims: int = DEFAULT_PCA_DIMS
    pca_sample: int = DEFAULT_PCA_SAMPLE
    min_face_size: float = DEFAULT_MIN_FACE_SIZE
    seed: int = 0

    def __post_init__(self) -> None:
        if self.min_cluster_size < 2:
            raise FacebatchError(f"--min-cluster-size must be at least 2, got {self.min_cluster_size}")
        if self.min_samples < 1:
            raise FacebatchError(f"--min-samples must be at least 1, got {self.min_samples}")
        if self.method not in SELECTION_METHODS:
            raise FacebatchError(f"--method must be eom or leaf, got {self.method!r}")
        if not 0.0 <= self.epsilon <= 2.0:
            raise FacebatchError(f"--epsilon must be between 0 and 2, got {self.epsilon}")
        if self.pca_dims < 0 or self.pca_dims > EMBEDDING_DIM:
            raise FacebatchError(f"--pca-dims must be between 0 and {EMBEDDING_DIM}, got {self.pca_dims}")
        if self.min_face_size < 0:
            raise FacebatchError(f"--min-face-size must be at least 0 pixels, got {self.min_face_size}")
        if self.pca_sample < 100:
            raise FacebatchError(f"--pca-sample must be at least 100, got {self.pca_sample}")


# --------------------------------------------------------------------------- pure clustering


def embeddings_matrix(faces: pa.Table) -> np.ndarray:
    """The `embedding` column as an (n, 512) float32 array (no per-row Python objects)."""
    column = faces.column("embedding").combine_chunks()
    if len(column) == 0:
        return np.zeros((0, EMBEDDING_DIM), np.float32)
    return np.asarray(column.flatten().to_numpy(zero_copy_only=False), np.float32).reshape(len(column), -1)


def normalise_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def pca_reduce(x: np.ndarray, dims: int, sample: int, seed: int = 0) -> np.ndarray:
    """Project on the top `dims` principal axes of a random sample, then back onto the unit sphere.

    Re-normalising keeps "Euclidean ranks like cosine" true in the reduced space. The sample keeps
    the fit O(sample * 512^2) whatever the library size.
    """
    rng = np.random.default_rng(seed)
    rows = x if len(x) <= sample else x[rng.choice(len(x), sample, replace=False)]
    mean = rows.mean(axis=0)
    _, _, vt = np.linalg.svd(rows - mean, full_matrices=False)
    return normalise_rows((x - mean) @ vt[:dims].T).astype(np.float64)


def run_hdbscan(x: np.ndarray, settings: ClusterSettings) -> tuple[np.ndarray, np.ndarray]:
    """(labels, probabilities) for unit vectors; labels -1 for noise, 0..k-1 otherwise."""
    n = len(x)
    labels = np.full(n, UNCLUSTERED, np.int64)
    probabilities = np.zeros(n, np.float32)
    if n < settings.min_cluster_size or n < 2:
        return labels, probabilities  # too few faces to form a cluster
    import hdbscan  # slow import (numba-free but heavy): only when clustering

    if settings.pca_dims and n >= PCA_MIN_FACES and settings.pca_dims < x.shape[1]:
        x = pca_reduce(x, settings.pca_dims, settings.pca_sample, settings.seed)
    else:
        x = np.asarray(x, np.float64)
    use_graph = n >= KNN_MIN_FACES
    model = hdbscan.HDBSCAN(
        min_cluster_size=settings.min_cluster_size,
        min_samples=min(settings.min_samples, n - 1),
        cluster_selection_method=settings.method,
        cluster_selection_epsilon=settings.epsilon,
        metric="precomputed" if use_graph else "euclidean",
        core_dist_n_jobs=os.cpu_count() or 1,
    )
    found = model.fit_predict(knn_graph(x, max(KNN_NEIGHBOURS, settings.min_samples)) if use_graph else x)
    labels[:] = found
    probabilities[:] = np.nan_to_num(model.probabilities_, nan=0.0)
    probabilities[labels == UNCLUSTERED] = 0.0
    return labels, probabilities


def box_sides(faces: pa.Table) -> np.ndarray:
    """Shorter side of each face's box, in original pixels."""
    column = faces.column("box").combine_chunks()
    if len(column) == 0:
        return np.zeros(0, np.float32)
    box = np.asarray(column.flatten().to_numpy(zero_copy_only=False), np.float32).reshape(-1, 4)
    return np.minimum(box[:, 2] - box[:, 0], box[:, 3] - box[:, 1])


def cluster_faces(x: np.ndarray, sides: np.ndarray, settings: ClusterSettings) -> tuple[np.ndarray, np.ndarray]:
    """HDBSCAN over the faces big enough to trust; the others are unclustered."""
    labels = np.full(len(x), UNCLUSTERED, np.int64)
    probabilities = np.zeros(len(x), np.float32)
    big = sides >= settings.min_face_size
    labels[big], probabilities[big] = run_hdbscan(x[big], settings)
    return labels, probabilities


def knn_graph(x: np.ndarray, k: int, block: int = 512) -> Any:
    """Sparse symmetric distances to each face's k nearest faces, as one connected graph.

    Exact neighbours by blocks of rows (memory: block x n floats). Separate components are tied
    together by edges of length 2, the largest distance between unit vectors, so they only meet at
    the root of HDBSCAN's hierarchy and the clusters below are untouched.
    """
    from scipy import sparse
    from scipy.sparse import csgraph

    n = len(x)
    k = min(k, n - 1)
    x32 = np.ascontiguousarray(x, np.float32)
    search = _approximate_neighbours if n >= ANN_MIN_FACES and _faiss() is not None else _exact_neighbours
    cols, similarity = search(x32, k, block)
    rows = np.repeat(np.arange(n), k)
    keep = cols.ravel() >= 0  # the approximate search may find fewer than k
    # A stored 0 would read as "no edge": identical faces get a tiny distance instead.
    distances = np.maximum(np.sqrt(np.maximum(0.0, 2.0 - 2.0 * similarity.ravel())), 1e-6).astype(np.float32)
    graph = sparse.csr_matrix((distances[keep], (rows[keep], cols.ravel()[keep])), shape=(n, n))
    graph = graph.maximum(graph.T).tocsr()
    count, component = csgraph.connected_components(graph, directed=False)
    if count > 1:
        first = np.unique(component, return_index=True)[1]
        ties = sparse.csr_matrix((np.full(count - 1, 2.0, np.float32), (first[:1].repeat(count - 1), first[1:])),
                                 shape=(n, n))
        graph = graph.maximum(ties).maximum(ties.T).tocsr()
    return graph


def _exact_neighbours(x: np.ndarray, k: int, block: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, k) indices and inner products of each row's k nearest other rows, by blocks of rows."""
    n = len(x)
    cols = np.empty((n, k), np.int64)
    sims = np.empty((n, k), np.float32)
    for start in range(0, n, block):
        stop = min(start + block, n)
        similarity = x[start:stop] @ x.T
        similarity[np.arange(stop - start), np.arange(start, stop)] = -np.inf  # not its own neighbour
        nearest = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
        cols[start:stop] = nearest
        sims[start:stop] = np.take_along_axis(similarity, nearest, axis=1)
    return cols, sims


def _approximate_neighbours(x: np.ndarray, k: int, block: int) -> tuple[np.ndarray, np.ndarray]:
    """The same from faiss's inverted-file index: O(n * n/nlist * nprobe) instead of O(n^2).

    Exact search is quadratic: hours at a million faces on two cores. Faces form tight groups, so
    an inverted file probing the 32 nearest of ~4 sqrt(n) cells finds most true neighbours
    (measured recall 0.89 at 200,000 synthetic faces with 16 probes of 1,024 cells).
    """
    faiss = _faiss()
    n, d = x.shape
    cells = int(4 * math.sqrt(n))
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, cells, faiss.METRIC_INNER_PRODUCT)
    index.train(x[np.random.default_rng(0).choice(n, min(n, 40 * cells), replace=False)])
    index.add(x)
    index.nprobe = 32
    sims, cols = index.search(x, k + 1)
    own = cols == np.arange(n)[:, None]
    # Drop each row's own entry (or, if it was not found, its farthest neighbour).
    drop = np.where(own.any(axis=1), own.argmax(axis=1), k)
    mask = np.ones_like(own)
    mask[np.arange(n), drop] = False
    return cols[mask].reshape(n, k), sims[mask].reshape(n, k)


def _faiss() -> Any:
    """faiss, when installed (`pip install 'facebatch[large]'`): approximate neighbours for big libraries."""
    try:
        import faiss
    except ImportError:
        return None
    return faiss


# --------------------------------------------------------------------------- stable numbering


def match_clusters(
    new_labels: np.ndarray, old_ids: np.ndarray, next_id: int
) -> tuple[np.ndarray, int, int]:
    """Give each new cluster an old number when it is the same group, else a fresh one.

    `new_labels`: raw labels (-1 noise) per face; `old_ids`: the previous cluster id per face (-1
    when none or new). Returns (ids per face, next_id, clusters that kept a number).
    """
    ids = np.full(len(new_labels), UNCLUSTERED, np.int64)
    in_new = new_labels >= 0
    new_size = Counter(new_labels[in_new].tolist())
    old_size = Counter(old_ids[old_ids >= 0].tolist())
    both = in_new & (old_ids >= 0)
    overlap = Counter(zip(new_labels[both].tolist(), old_ids[both].tolist()))
    mapping: dict[int, int] = {}
    used_old: set[int] = set()
    # Largest overlap first; ties by the smaller old number, so the result is deterministic.
    for (new, old), shared in sorted(overlap.items(), key=lambda item: (-item[1], item[0][1], item[0][0])):
        if new in mapping or old in used_old:
            continue
        if 2 * shared > new_size[new] or 2 * shared > old_size[old]:
            mapping[new] = old
            used_old.add(old)
    for new in sorted(new_size):
        if new not in mapping:
            mapping[new] = next_id
            next_id += 1
    if in_new.any():
        lookup = np.vectorize(mapping.__getitem__, otypes=[np.int64])
        ids[in_new] = lookup(new_labels[in_new])
    kept = len(used_old)
    return ids, next_id, kept


# --------------------------------------------------------------------------- the stored state


@dataclass
class ClusterState:
    """clusters.json: what the last run did and the counters the next one continues."""

    run: int = 0
    next_id: int = 1  # cluster numbers start at 1: "cluster 0" reads like "none"
    settings: dict[str, Any] = field(default_factory=dict)
    clustered_at: str | None = None


def clusters_path(library: Library) -> Path:
    return library.root / "clusters.parquet"


def state_path(library: Library) -> Path:
    return library.root / "clusters.json"


def require_library(library: Library) -> None:
    if not library.exists():
        raise FacebatchError(f"no library at {library.root}: run `facebatch scan FOLDER` first")


def read_state(library: Library) -> ClusterState:
    path = state_path(library)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return ClusterState()
    except (OSError, ValueError) as exc:
        raise FacebatchError(f"cannot read {path}: {exc}") from exc
    return ClusterState(**{k: data[k] for k in ("run", "next_id", "settings", "clustered_at") if k in data})


def read_clusters(library: Library) -> pa.Table:
    """The last run's assignment, one row per face it saw; empty before the first run."""
    return read_table_file(clusters_path(library), CLUSTERS_SCHEMA)


def require_clusters(library: Library) -> pa.Table:
    require_library(library)
    if not clusters_path(library).exists():
        raise FacebatchError("no clusters yet: run `facebatch cluster` first")
    return read_clusters(library)


def read_assignments(library: Library) -> dict[str, int]:
    """face_id -> cluster_id (-1 unclustered) for every live face; faces scanned since the last
    `facebatch cluster` are -1 too. Used by `facebatch eval clusters`."""
    clusters = read_clusters(library)
    assigned = dict(zip(clusters.column("face_id").to_pylist(), clusters.column("cluster_id").to_pylist()))
    live = library.read_faces(["face_id"]).column("face_id").to_pylist()
    return {face_id: int(assigned.get(face_id, UNCLUSTERED)) for face_id in live}


def write_clusters(library: Library, table: pa.Table, state: ClusterState) -> None:
    """State first: a kill between the two writes only skips numbers, never reuses one."""
    atomic_write_json(state_path(library), asdict(state))
    atomic_write_table(clusters_path(library), table.cast(CLUSTERS_SCHEMA))


# --------------------------------------------------------------------------- a run


@dataclass
class ClusterSummary:
    faces: int
    clusters: int
    kept: int  # clusters that kept their number from the last run
    new: int
    unclustered: int
    merged: int  # HDBSCAN clusters joined because the user merged their faces
    seconds: float
    run: int

    def line(self) -> str:
        return (
            f"{self.faces} faces: {self.clusters} clusters ({self.kept} kept their number, {self.new} new), "
            f"{self.unclustered} unclustered; run {self.run}, {self.seconds:.1f}s"
        )


def cluster_library(library: Library, settings: ClusterSettings) -> ClusterSummary:
    """Cluster every live face, keep the numbers of unchanged groups, re-apply the user's merges."""
    from facebatch.people.labels import apply_merges, read_labels

    require_library(library)
    started = time.monotonic()
    with library.lock():
        faces = library.read_faces(["face_id", "box", "embedding"])
        face_ids = np.array(faces.column("face_id").to_pylist(), dtype=object)
        x = embeddings_matrix(faces)
        sides = box_sides(faces)
        del faces
        state = read_state(library)
        old = read_clusters(library)
        run = state.run + 1
        next_id = max(state.next_id, int(max(old.column("cluster_id").to_pylist(), default=0)) + 1)

        raw, probabilities = cluster_faces(x, sides, settings)
        del x
        old_id_of = dict(zip(old.column("face_id").to_pylist(), old.column("cluster_id").to_pylist()))
        old_first = dict(zip(old.column("face_id").to_pylist(), old.column("first_run").to_pylist()))
        first_run = np.array([old_first.get(f, run) for f in face_ids], np.int64)
        raw, merged = apply_merges(read_labels(library), face_ids, raw, first_run)
        old_ids = np.array([old_id_of.get(f, UNCLUSTERED) for f in face_ids], np.int64)
        ids, next_id, kept = match_clusters(raw, old_ids, next_id)

        table = pa.table(
            {
                "face_id": pa.array(face_ids.tolist(), pa.string()),
                "cluster_id": pa.array(ids, pa.int64()),
                "probability": pa.array(probabilities, pa.float32()),
                "first_run": pa.array(first_run, pa.int64()),
            }
        )
        new_state = ClusterState(
            run=run,
            next_id=next_id,
            settings=asdict(settings),
            clustered_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        )
        write_clusters(library, table, new_state)
    n_clusters = len(set(ids[ids >= 0].tolist()))
    return ClusterSummary(
        faces=len(face_ids),
        clusters=n_clusters,
        kept=kept,
        new=n_clusters - kept,
        unclustered=int((ids < 0).sum()),
        merged=merged,
        seconds=time.monotonic() - started,
        run=run,
    )
