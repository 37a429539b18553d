"""Faces into people: HDBSCAN proposes groups, an absolute distance scale and the user's
constraints decide them. Pure numpy: embeddings and constraints in, a group per face out.

The steps, each measured on the development mix (benchmarks/people_mix.py, BENCHMARKS.md):

1. HDBSCAN (`eom`, min_samples 2) over the faces big enough to trust proposes groups. Density
   alone cannot say "one person": it shatters a person with thousands of photos into many
   leaves and gathers look-alike strangers.
2. Cannot-link: two faces of one photo are two people (the one that fits the group's other
   photos stays), faces the user named differently are two people, a face "not Alice" never
   sits with Alice's faces.
3. Membership on an absolute scale, the Euclidean distance `verify` uses: a face belongs to a
   group when it is within `member_distance` of the centre (normalised mean) of the group's
   other faces, and within the group's own radius (`member_spread` times the 90th percentile of
   its members' distances): a stranger who reaches a big group under the absolute cap still lies
   outside how that person's own photos scatter. Misfits leave one at a time, the worst first,
   so an intruder does not take a true member with it.
4. What the user said: groups holding faces of one user group (a name, a merge) become one
   cluster, each keeping its own centre (a child at 2 and at 12); faces the user named one by
   one join their person whatever the distance.
5. Groups whose centres are within `merge_distance` are one person and are joined, closest
   first, never across a cannot-link: a person's leaves come back together, look-alikes stay
   apart.
6. Faces left out join the nearest group they fit; strangers, far from every group, stay out.

Distances to centres come from running group sums (f.S / |S|), never pairwise matrices, so
every step is O(faces x dimensions) and a million faces fit in memory.
"""

from __future__ import annotations

import heapq
import math
import os
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from facebatch.errors import UsageError
from facebatch.models.quality import MIN_QUALITY
from facebatch.models.scale import DistanceScale

UNCLUSTERED = -1
SELECTION_METHODS = ("eom", "leaf")

DEFAULT_MIN_CLUSTER_SIZE = 3
DEFAULT_MIN_SAMPLES = 2
DEFAULT_METHOD = "eom"
DEFAULT_PCA_DIMS = 64
DEFAULT_PCA_SAMPLE = 20_000
PCA_MIN_FACES = 2_000  # below this HDBSCAN is fast in full dimension: no reduction needed
# From here on HDBSCAN runs on a sparse k-nearest-neighbour graph instead of the vectors: its tree
# search in 64 dimensions took 91 s for 30,000 synthetic faces against 7 s on the graph, for the
# same pairwise F (0.999). On the development mix (4,000 faces) the vectors were as good or a
# little better on strangers, so smaller libraries keep them.
KNN_MIN_FACES = 10_000
KNN_NEIGHBOURS = 10
ANN_MIN_FACES = 200_000  # from here on neighbours come from faiss, when installed
DEFAULT_MIN_FACE_SIZE = 40
# The member and merge distances, and how the member distance grows with a group, are the model's
# (models.scale: each model's measured on the development mix). FaceNet's: 0.9 and 0.75, growing
# 0.01 per doubling of a group beyond 10 faces: the centre of a big group is better known than a
# small one's, so someone else's distance to it grows with the group (per-comparison false accepts
# at 1e-4: 0.90 for 10 faces, 0.935 for 20, 0.94 for 40) while a true member's shrinks; a third of
# what the strangers allow took all photos of each person + strangers from F 0.988 to 0.990 with
# the same 0.3% of strangers in a friend's cluster (benchmarks/people_mix.py; 0.02 let in 0.7%).
# Groups compared with each face left out, and with each group when joining: the nearest by
# centre. More never changed a result on the development mix.
CANDIDATES = 8
# A group's own radius (step 3): `member_spread` times the 90th percentile of its members' distances
# to the centre of the others (robust to a tenth of them being outliers), for groups of at least
# SPREAD_MIN_SIZE faces (fewer say nothing of a spread). A stranger within the absolute member
# distance but far outside how this person's own photos scatter stays out. The median plus k robust
# deviations was measured first and cascades: each member taken out narrows it (BENCHMARKS.md).
DEFAULT_MEMBER_SPREAD = 1.3
SPREAD_QUANTILE = 0.9
SPREAD_MIN_SIZE = 5
# A group's core (what naming its cluster confirms) is its faces within the 90th percentile of their
# distances; a group of fewer faces than this is all core: a user sees every face of it at a glance.
CORE_MIN_SIZE = 10
BLOCK = 32_768  # faces whose distances are computed at once (memory: BLOCK x the dimension, in doubles)


@dataclass(frozen=True)
class GroupingSettings:
    min_cluster_size: int = DEFAULT_MIN_CLUSTER_SIZE
    min_samples: int = DEFAULT_MIN_SAMPLES
    method: str = DEFAULT_METHOD
    member_distance: float | None = None  # None: the model's (`on_scale`)
    merge_distance: float | None = None
    pca_dims: int = DEFAULT_PCA_DIMS
    pca_sample: int = DEFAULT_PCA_SAMPLE
    min_face_size: float = DEFAULT_MIN_FACE_SIZE
    seed: int = 0
    member_growth: float | None = None
    member_spread: float | None = DEFAULT_MEMBER_SPREAD  # None: the absolute distance alone

    def __post_init__(self) -> None:
        if self.min_cluster_size < 2:
            raise UsageError(f"--min-cluster-size must be at least 2, got {self.min_cluster_size}")
        if self.min_samples < 1:
            raise UsageError(f"--min-samples must be at least 1, got {self.min_samples}")
        if self.method not in SELECTION_METHODS:
            raise UsageError(f"--method must be eom or leaf, got {self.method!r}")
        for option, value in (("--member-distance", self.member_distance), ("--merge-distance", self.merge_distance)):
            if value is not None and not 0.0 < value <= 2.0:
                raise UsageError(f"{option} must be in (0, 2], got {value}")
        if self.pca_dims < 0:
            raise UsageError(f"--pca-dims must be at least 0, got {self.pca_dims}")
        if self.min_face_size < 0:
            raise UsageError(f"--min-face-size must be at least 0 pixels, got {self.min_face_size}")
        if self.member_spread is not None and self.member_spread <= 0:
            raise UsageError(f"--member-spread must be positive, got {self.member_spread}")
        if self.pca_sample < 100:
            raise UsageError(f"--pca-sample must be at least 100, got {self.pca_sample}")


    def on_scale(self, scale: DistanceScale) -> GroupingSettings:
        """These settings with what was not given taken from the model's scale."""
        return replace(
            self,
            member_distance=scale.member_distance if self.member_distance is None else self.member_distance,
            merge_distance=scale.merge_distance if self.merge_distance is None else self.merge_distance,
            member_growth=scale.member_growth if self.member_growth is None else self.member_growth,
        )


@dataclass(frozen=True)
class Constraints:
    """What the user said, as faces and user groups (people.constraints builds them).

    `group`: each face's user group (-1: none); faces of one user group are one person. How
    strongly depends on what the user did to the face:
      `hard`: the user named this very face (or split it off): it joins its user group's cluster
      whatever its distance, and is never taken out as a misfit.
      `merged`: the user merged clusters holding it: groups holding such faces of one user group
      become one cluster whatever their distance, each keeping its own centre.
      otherwise (a name given to a whole cluster): groups of one user group become one cluster
      when their centres are within the member distance; a face that does not fit is not
      pulled back (the user saw the cluster, not every face in it).
    `apart`: pairs of user groups that are different people (two names, two sides of a split).
    `not_group`: (face, user group) pairs: that face is not that group's person ("not Alice").
    Faces of one photo are always apart; that comes from the photo codes, not from here.
    """

    group: np.ndarray
    hard: np.ndarray
    merged: np.ndarray
    apart: frozenset[tuple[int, int]] = frozenset()
    not_group: frozenset[tuple[int, int]] = frozenset()

    @staticmethod
    def none(n: int) -> Constraints:
        return Constraints(np.full(n, -1, np.int64), np.zeros(n, bool), np.zeros(n, bool))

    def groups_apart(self, a: int, b: int) -> bool:
        return (a, b) in self.apart or (b, a) in self.apart


@dataclass
class Grouping:
    labels: np.ndarray  # cluster (person) per face, 0..k-1, -1 unclustered
    modes: np.ndarray  # group (one centre) per face: a cluster the user merged may have several
    distance: np.ndarray  # each member's distance to the centre of its group's other faces (nan: none)
    core: np.ndarray  # members within their group's 90th percentile distance: what naming confirms
    neighbours: list[tuple[int, int]]  # groups with faces among each other's nearest neighbours
    steps: dict[str, Any] = field(default_factory=dict)  # counts per step, for the benchmark and the summary


# --------------------------------------------------------------------------- distances


def normalise_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def centre_distance(dot: np.ndarray, norm: np.ndarray) -> np.ndarray:
    """Distance from a unit vector to a group's centre (its sum S, direction only) from f.S and |S|."""
    with np.errstate(divide="ignore", invalid="ignore"):
        cosine = np.where(norm > 1e-12, dot / norm, np.nan)
    return np.sqrt(np.maximum(2.0 - 2.0 * np.minimum(cosine, 1.0), 0.0))


def person_distance(face: np.ndarray, faces: np.ndarray) -> float:
    """Distance from one unit vector to the centre of a set of unit vectors (one face: the plain
    distance between the two, as `verify` measures it)."""
    if len(faces) == 0:
        return math.nan
    total = faces.sum(axis=0)
    return float(centre_distance(np.asarray(face, np.float64) @ total, np.linalg.norm(total)))


# --------------------------------------------------------------------------- HDBSCAN proposals


def pca_reduce(x: np.ndarray, dims: int, sample: int, seed: int = 0) -> np.ndarray:
    """Project on the top `dims` principal axes fitted on a random sample, back onto the sphere.

    Re-normalising keeps "Euclidean ranks like cosine" true in the reduced space.
    """
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(seed)
    rows = x if len(x) <= sample else x[rng.choice(len(x), sample, replace=False)]
    pca = PCA(n_components=dims, svd_solver="full" if len(rows) < 5 * dims else "randomized", random_state=seed)
    pca.fit(rows)
    return normalise_rows(pca.transform(x)).astype(np.float64)


def nearest_neighbours(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, k) indices and inner products of each row's k nearest other rows (unit vectors)."""
    n = len(x)
    k = min(k, n - 1)
    x32 = np.ascontiguousarray(x, np.float32)
    if n >= ANN_MIN_FACES and _faiss() is not None:
        return _approximate_neighbours(x32, k)
    from sklearn.neighbors import NearestNeighbors

    distances, cols = NearestNeighbors(n_neighbors=k + 1, algorithm="brute", n_jobs=os.cpu_count()).fit(
        x32).kneighbors(x32)
    return _drop_self(cols, (1.0 - distances.astype(np.float32) ** 2 / 2.0), k)


def _drop_self(cols: np.ndarray, sims: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's own entry out of k + 1 neighbours (or its farthest one, when it was not found)."""
    n = len(cols)
    own = cols == np.arange(n)[:, None]
    drop = np.where(own.any(axis=1), own.argmax(axis=1), k)
    keep = np.ones_like(own)
    keep[np.arange(n), drop] = False
    return cols[keep].reshape(n, k), sims[keep].reshape(n, k)


def _approximate_neighbours(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """faiss's inverted-file index: O(n * n/nlist * nprobe) instead of O(n^2).

    Faces form tight groups, so probing the 32 nearest of ~4 sqrt(n) cells finds most true
    neighbours (measured recall 0.89 at 200,000 synthetic faces with 16 probes of 1,024 cells).
    """
    faiss = _faiss()
    n, d = x.shape
    cells = int(4 * math.sqrt(n))
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, cells, faiss.METRIC_INNER_PRODUCT)
    index.train(x[np.random.default_rng(0).choice(n, min(n, 40 * cells), replace=False)])
    index.add(x)
    index.nprobe = 32
    sims, cols = index.search(x, k + 1)
    return _drop_self(cols, sims, k)


def _faiss() -> Any:
    """faiss, when installed (`pip install 'facebatch[large]'`): approximate neighbours for big libraries."""
    try:
        import faiss
    except ImportError:
        return None
    return faiss


def reduced(x: np.ndarray, settings: GroupingSettings) -> np.ndarray:
    """The space HDBSCAN and the neighbour search work in: PCA on big libraries, else as is."""
    if settings.pca_dims and len(x) >= PCA_MIN_FACES and settings.pca_dims < x.shape[1]:
        return pca_reduce(x, settings.pca_dims, settings.pca_sample, settings.seed)
    return np.asarray(x, np.float64)


def hdbscan_proposals(
    x: np.ndarray, settings: GroupingSettings, neighbours: tuple[np.ndarray, np.ndarray] | None = None
) -> np.ndarray:
    """HDBSCAN labels (-1 noise) for unit vectors (already `reduced`).

    Up to KNN_MIN_FACES faces HDBSCAN runs on the vectors; above, on the k-nearest-neighbour graph
    (`neighbours`: (cols, inner products), from `nearest_neighbours`). HDBSCAN never calls all the
    data one cluster, so a library of one person (a first scan of a few family photos) would have
    no cluster at all: when it finds none, it runs again allowing one, and the member test takes
    out whoever does not fit.
    """
    n = len(x)
    if n < max(settings.min_cluster_size, 2):
        return np.full(n, UNCLUSTERED, np.int64)
    if n >= KNN_MIN_FACES:
        cols, sims = neighbours if neighbours is not None else nearest_neighbours(x, KNN_NEIGHBOURS)
        tree = _single_linkage_from_graph(cols, sims, settings.min_samples)
        labels = _labels_from_tree(tree, settings, single=False)
        if (labels < 0).all():
            labels = _labels_from_tree(tree, settings, single=True)
        return labels
    labels = _hdbscan(x, settings, single=False)
    if (labels < 0).all():
        labels = _hdbscan(x, settings, single=True)
    return labels


def _hdbscan(x: np.ndarray, settings: GroupingSettings, single: bool) -> np.ndarray:
    import hdbscan  # heavy import: only when clustering

    model = hdbscan.HDBSCAN(
        min_cluster_size=settings.min_cluster_size,
        min_samples=min(settings.min_samples, len(x) - 1),
        cluster_selection_method=settings.method,
        core_dist_n_jobs=os.cpu_count() or 1,
        allow_single_cluster=single,
    )
    return np.asarray(model.fit_predict(x), np.int64)


def _single_linkage_from_graph(cols: np.ndarray, sims: np.ndarray, min_samples: int) -> np.ndarray:
    """HDBSCAN's single-linkage tree over the mutual-reachability distances of a kNN graph.

    hdbscan's own sparse path builds the mutual-reachability graph one element at a time through
    a scipy LIL matrix: a million faces did not finish in 30 minutes. Here the same graph is
    vectorised (core distance: to the min_samples-th neighbour, the point itself counted, as
    HDBSCAN defines it), its minimum spanning tree comes from scipy, and hdbscan's own code turns
    it into the tree and selects the clusters (`_labels_from_tree`).
    """
    from hdbscan._hdbscan_linkage import label
    from scipy import sparse
    from scipy.sparse import csgraph

    n, k = cols.shape
    distance = np.sqrt(np.maximum(0.0, 2.0 - 2.0 * sims.astype(np.float64)))
    distance[cols < 0] = np.inf
    order = np.sort(distance, axis=1)
    core = np.zeros(n) if min_samples <= 1 else order[:, min(min_samples - 1, k) - 1]
    rows = np.repeat(np.arange(n), k)
    targets = cols.ravel()
    keep = targets >= 0
    weight = np.maximum(np.maximum(distance.ravel(), core[rows]), core[np.maximum(targets, 0)])[keep]
    # A stored 0 would read as "no edge": identical faces get a tiny distance instead.
    graph = sparse.csr_matrix((np.maximum(weight, 1e-6), (rows[keep], targets[keep])), shape=(n, n))
    graph = graph.maximum(graph.T).tocsr()  # mutual reachability is symmetric: an edge either way counts
    graph = _connected(graph)
    tree = csgraph.minimum_spanning_tree(graph).tocoo()
    edges = np.stack([tree.row, tree.col, tree.data], axis=1).astype(np.float64)
    return label(edges[np.argsort(edges[:, 2], kind="stable")])


def _connected(graph: Any) -> Any:
    """Tie separate components together by edges of length 2, the largest distance between unit
    vectors, so that they only meet at the root of the hierarchy."""
    from scipy import sparse
    from scipy.sparse import csgraph

    count, component = csgraph.connected_components(graph, directed=False)
    if count == 1:
        return graph
    n = graph.shape[0]
    first = np.unique(component, return_index=True)[1]
    ties = sparse.csr_matrix((np.full(count - 1, 2.0), (first[:1].repeat(count - 1), first[1:])), shape=(n, n))
    return (graph + ties + ties.T).tocsr()


def _labels_from_tree(tree: np.ndarray, settings: GroupingSettings, single: bool) -> np.ndarray:
    from hdbscan.hdbscan_ import _tree_to_labels

    labels = _tree_to_labels(None, tree, settings.min_cluster_size, settings.method, single)[0]
    return np.asarray(labels, np.int64)


# --------------------------------------------------------------------------- groups on the absolute scale


class _Groups:
    """Mutable groups of faces with running sums: what the steps after HDBSCAN work on.

    A group is one *mode* of a person: faces close to one centre. Groups that the user said are
    one person but that lie far apart (a child at 2 and at 12) stay separate groups, linked into
    one cluster, so each keeps its own centre. Cannot-links are checked against the whole cluster.
    Per-group face sets and photo / user-group counters make every check O(group), not O(library).
    """

    def __init__(self, x: np.ndarray, labels: np.ndarray, photo: np.ndarray, constraints: Constraints,
                 member_growth: float = 0.0, member_spread: float | None = None, radius_floor: float = 0.0) -> None:
        self.x = x
        self.member_growth = member_growth  # the member distance's growth per doubling (GroupingSettings)
        self.member_spread = member_spread  # a group's own radius over its 90th percentile (GroupingSettings)
        self.radius_floor = radius_floor  # a group's own radius is never less (a burst of near-identical shots)
        self.photo = photo
        self.constraints = constraints
        self.user = constraints.group
        self.label = np.full(len(labels), UNCLUSTERED, np.int64)
        count = int(labels.max()) + 1 if len(labels) and labels.max() >= 0 else 0
        self.sum = np.zeros((count, x.shape[1]), np.float64)
        self.size = np.zeros(count, np.int64)
        self.parent = list(range(count))  # groups linked into one cluster
        self.linked: dict[int, set[int]] = {}  # a cluster's root -> its groups, when more than one
        self.faces: list[set[int]] = [set() for _ in range(count)]
        self.photos: list[Counter] = [Counter() for _ in range(count)]
        self.users: list[Counter] = [Counter() for _ in range(count)]
        self.not_groups: dict[int, set[int]] = {}
        for face, group in constraints.not_group:
            self.not_groups.setdefault(face, set()).add(group)
        self.nots: list[Counter] = [Counter() for _ in range(count)]  # user groups members are "not"
        member = np.flatnonzero(labels >= 0)
        order = member[np.argsort(labels[member], kind="stable")]
        bounds = np.searchsorted(labels[order], np.arange(count + 1))
        for g in range(count):
            self.add(order[bounds[g]:bounds[g + 1]], g)

    # --- membership --------------------------------------------------------------------

    def members(self, g: int) -> np.ndarray:
        return np.fromiter(self.faces[g], np.int64, len(self.faces[g]))

    def add(self, faces: np.ndarray, g: int) -> None:
        if not len(faces):
            return
        self.sum[g] += self.x[faces].sum(axis=0)
        self.size[g] += len(faces)
        self.label[faces] = g
        self.faces[g].update(faces.tolist())
        self.photos[g].update(self.photo[faces].tolist())
        self.users[g].update(u for u in self.user[faces].tolist() if u >= 0)
        for f in faces.tolist():
            self.nots[g].update(self.not_groups.get(f, ()))

    def remove(self, faces: np.ndarray) -> None:
        faces = faces[self.label[faces] >= 0]
        for f, g in zip(faces.tolist(), self.label[faces].tolist()):
            self.sum[g] -= self.x[f]
            self.size[g] -= 1
            self.faces[g].discard(f)
            self.photos[g][self.photo[f]] -= 1
            if self.user[f] >= 0:
                self.users[g][self.user[f]] -= 1
            for u in self.not_groups.get(f, ()):
                self.nots[g][u] -= 1
        self.label[faces] = UNCLUSTERED

    def absorb(self, a: int, b: int) -> None:
        """Group b's faces into group a (one mode: their centres are close)."""
        self.add(self.members(b), a)
        self.sum[b] = 0.0
        self.size[b] = 0
        self.faces[b], self.photos[b], self.users[b], self.nots[b] = set(), Counter(), Counter(), Counter()
        self.link(a, b)

    def new_group(self, faces: np.ndarray) -> int:
        g = len(self.size)
        self.sum = np.vstack([self.sum, np.zeros((1, self.x.shape[1]))])
        self.size = np.append(self.size, 0)
        self.parent.append(g)
        self.faces.append(set())
        self.photos.append(Counter())
        self.users.append(Counter())
        self.nots.append(Counter())
        self.add(faces, g)
        return g

    # --- clusters of linked groups -------------------------------------------------------

    def root(self, g: int) -> int:
        while self.parent[g] != g:
            self.parent[g] = self.parent[self.parent[g]]
            g = self.parent[g]
        return g

    def link(self, a: int, b: int) -> None:
        """Groups a and b are one person (one cluster) but keep their own centres."""
        ra, rb = self.root(a), self.root(b)
        if ra == rb:
            return
        keep, gone = min(ra, rb), max(ra, rb)
        self.parent[gone] = keep
        self.linked[keep] = self.linked.pop(ra, {ra}) | self.linked.pop(rb, {rb})

    def cluster_groups(self, g: int) -> list[int]:
        """The non-empty groups of g's cluster (usually just g)."""
        r = self.root(g)
        return [h for h in self.linked.get(r, {r}) if self.size[h] > 0] or [g]

    # --- distances -------------------------------------------------------------------------

    def own_distance(self, faces: np.ndarray) -> np.ndarray:
        """Distance of each face to the centre of the other faces of its group (nan when alone)."""
        out = np.empty(len(faces))
        for start in range(0, len(faces), BLOCK):  # by blocks: a million FaceNet faces x 512 floats is 4 GB
            block = faces[start:start + BLOCK]
            others = self.sum[self.label[block]] - self.x[block]
            dot = np.einsum("ij,ij->i", self.x[block], others)
            out[start:start + BLOCK] = centre_distance(dot, np.linalg.norm(others, axis=1))
        out[self.size[self.label[faces]] < 2] = np.nan
        return out

    def distance_to(self, faces: np.ndarray, g: np.ndarray) -> np.ndarray:
        """Distance of faces (not members) to the centres of groups g."""
        out = np.empty(len(faces))
        for start in range(0, len(faces), BLOCK):
            rows, groups = faces[start:start + BLOCK], g[start:start + BLOCK]
            dot = np.einsum("ij,ij->i", self.x[rows], self.sum[groups])
            out[start:start + BLOCK] = centre_distance(dot, np.linalg.norm(self.sum[groups], axis=1))
        return out

    def radius(self, faces: np.ndarray, distance: np.ndarray) -> np.ndarray:
        """Each group's own radius, from its members `faces` and their `distance` to the centre of
        their group's other faces: `member_spread` times their 90th percentile, never under the
        floor (the merge distance: a burst of near-identical shots would shut the person's other
        photos out). Infinite for
        groups of fewer than SPREAD_MIN_SIZE faces, and for all when no spread is set."""
        count = len(self.size)
        radius = np.full(count, np.inf)
        known = ~np.isnan(distance)
        label, distance = self.label[faces[known]], distance[known]
        if self.member_spread is None or not len(label):
            return radius
        spread_known = np.bincount(label, minlength=count) >= SPREAD_MIN_SIZE
        spread = self.member_spread * _group_quantiles(label, distance, count, SPREAD_QUANTILE)
        radius[spread_known] = np.maximum(spread[spread_known], self.radius_floor)
        return radius

    # --- cannot-links --------------------------------------------------------------------

    def allowed(self, faces: np.ndarray, g: int) -> bool:
        """May these faces (not in g's cluster) join group g without breaking a cannot-link?"""
        photos = set(self.photo[faces].tolist())
        users = {u for u in self.user[faces].tolist() if u >= 0}
        nots = {u for f in faces.tolist() for u in self.not_groups.get(f, ())}
        return self._compatible(photos, users, nots, self.cluster_groups(g))

    def can_join(self, a: int, b: int) -> bool:
        """May the clusters of groups a and b be one person?"""
        if self.root(a) == self.root(b):
            return True
        others = self.cluster_groups(b)
        photos = {p for h in others for p, n in self.photos[h].items() if n > 0}
        users = {u for h in others for u, n in self.users[h].items() if n > 0}
        nots = {u for h in others for u, n in self.nots[h].items() if n > 0}
        return self._compatible(photos, users, nots, self.cluster_groups(a))

    def _compatible(self, photos: set[int], users: set[int], nots: set[int], groups: list[int]) -> bool:
        for h in groups:
            if any(self.photos[h].get(p, 0) > 0 for p in photos):
                return False
            theirs = {u for u, n in self.users[h].items() if n > 0}
            if nots & theirs or any(self.nots[h].get(u, 0) > 0 for u in users):
                return False
            if any(self.constraints.groups_apart(a, b) for a in users for b in theirs if a != b):
                return False
        return True


def _group_quantiles(label: np.ndarray, values: np.ndarray, count: int, q: float) -> np.ndarray:
    """The q-quantile (linear) of `values` per group `label` (0..count-1; nan for a group without)."""
    order = np.lexsort((values, label))
    sizes = np.bincount(label, minlength=count)
    start = np.r_[0, np.cumsum(sizes)[:-1]]
    out = np.full(count, np.nan)
    has = sizes > 0
    ordered = values[order]
    position = q * (sizes[has] - 1)
    low = np.floor(position).astype(np.int64)
    high = np.minimum(low + 1, sizes[has] - 1)
    weight = position - low
    out[has] = ordered[start[has] + low] * (1 - weight) + ordered[start[has] + high] * weight
    return out


def _take_out_misfits(groups: _Groups, limit: float, min_size: int) -> int:
    """Remove, worst first, faces farther than the member distance from the centre of their
    group's other faces (`limit`, grown for big groups by `_limit`) or outside their group's own
    radius (`_Groups.radius`).

    One face per group per round (the worst), so an intruder does not get a true member thrown
    out with it; groups that shrink below `min_size` dissolve. Returns faces taken out.
    """
    taken = 0
    active = np.flatnonzero(groups.size > 0)
    while len(active):
        faces = np.flatnonzero(np.isin(groups.label, active))
        if not len(faces):
            break
        own = groups.own_distance(faces)
        radius = groups.radius(faces, own)
        distance = np.nan_to_num(own, nan=-1.0)
        distance[_pinned(groups, faces)] = -1.0
        order = np.lexsort((-distance, groups.label[faces]))
        first = np.r_[True, groups.label[faces][order][1:] != groups.label[faces][order][:-1]]
        worst = faces[order[first]]
        worst_group = groups.label[worst]
        allowed = np.minimum(_limit(limit, groups.size[worst_group] - 1, groups.member_growth), radius[worst_group])
        out = worst[distance[order[first]] > allowed]
        if not len(out):
            break
        active = np.unique(groups.label[out])
        groups.remove(out)
        taken += len(out)
    taken += _dissolve_small(groups, min_size)
    return taken


def _limit(limit: float, size: np.ndarray, growth: float) -> np.ndarray:
    """The member distance for a group of `size` faces: `growth` more per doubling beyond 10 faces
    (a big group's centre is better known)."""
    return limit + growth * np.log2(np.maximum(np.asarray(size, np.float64), 10.0) / 10.0)


def _pinned(groups: _Groups, faces: np.ndarray) -> np.ndarray:
    """Faces the user named (hard) that share their group with another face of that user group:
    the user said they belong together, whatever the distance."""
    pinned = np.zeros(len(faces), bool)
    named = np.flatnonzero(groups.constraints.hard[faces])
    # groups.users counts each group's faces per user group: no pass over the whole library.
    pinned[named] = [g >= 0 and u >= 0 and groups.users[g][u] > 1
                     for g, u in zip(groups.label[faces[named]].tolist(), groups.user[faces[named]].tolist())]
    return pinned


def _dissolve_small(groups: _Groups, min_size: int) -> int:
    """Groups below `min_size` dissolve, unless the user made them: they hold faces the user
    named, or are one mode of a cluster the user merged."""
    small = [g for g in np.flatnonzero((groups.size > 0) & (groups.size < min_size)).tolist()
             if len(groups.cluster_groups(g)) == 1 and not groups.constraints.hard[groups.members(g)].any()]
    if not small:
        return 0
    faces = np.flatnonzero(np.isin(groups.label, small))
    groups.remove(faces)
    return len(faces)


def _separate(groups: _Groups) -> int:
    """Cannot-links inside a group: per photo the best-fitting face stays; faces of a second
    named person, or "not" this group's person, leave. Returns faces taken out."""
    faces = np.flatnonzero(groups.label >= 0)
    if not len(faces):
        return 0
    out: set[int] = set()
    key = groups.label[faces] * (int(groups.photo.max()) + 1) + groups.photo[faces]
    _, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
    crowded = np.unique(groups.label[faces][counts[inverse.reshape(-1)] > 1])
    for g in crowded.tolist():
        out.update(_one_face_per_photo(groups, groups.members(g)))
    constraint = groups.constraints
    if constraint.apart or groups.not_groups:
        for g in np.unique(groups.label[faces]).tolist():
            out.update(_user_conflicts(groups, groups.members(g)))
    if out:
        groups.remove(np.array(sorted(out), np.int64))
    return len(out)


def _one_face_per_photo(groups: _Groups, members: np.ndarray) -> list[int]:
    """The faces to take out of a group so that each photo keeps one: the one nearest the centre
    of the group's faces from photos seen once (a crowd from one group photo must not decide
    who the group is), or of all its faces when every photo repeats."""
    photos, inverse, counts = np.unique(groups.photo[members], return_inverse=True, return_counts=True)
    repeated = counts[inverse.reshape(-1)] > 1
    core = members[~repeated] if (~repeated).any() else members
    centre = groups.x[core].sum(axis=0)
    fit = groups.x[members] @ centre
    out = []
    for p in np.flatnonzero(counts > 1).tolist():
        same = np.flatnonzero(inverse.reshape(-1) == p)
        keep = same[np.argmax(fit[same])]
        out.extend(int(members[i]) for i in same if i != keep)
    return out


def _user_conflicts(groups: _Groups, members: np.ndarray) -> list[int]:
    """Faces of a second user group that is apart from the group's biggest one, and faces that
    are "not" a user group present: they leave."""
    constraint = groups.constraints
    present = groups.user[members]
    ids, counts = np.unique(present[present >= 0], return_counts=True)
    out: list[int] = []
    if len(ids) > 1:
        keep = int(ids[np.argmax(counts)])
        for other in ids.tolist():
            if other != keep and constraint.groups_apart(keep, other):
                out.extend(members[present == other].tolist())
    if groups.not_groups:
        here = set(ids.tolist())
        out.extend(f for f in members.tolist() if groups.not_groups.get(f, set()) & here)
    return out


def _group_pairs(groups: _Groups, cols: np.ndarray) -> dict[int, set[int]]:
    """Groups that are neighbours: some face of one has a face of the other among its nearest."""
    a = np.repeat(groups.label, cols.shape[1])
    b = groups.label[np.maximum(cols.ravel(), 0)]
    keep = (a >= 0) & (b >= 0) & (a != b) & (cols.ravel() >= 0)
    pairs = np.unique(np.stack([np.minimum(a[keep], b[keep]), np.maximum(a[keep], b[keep])], axis=1), axis=0)
    near: dict[int, set[int]] = {}
    for x, y in pairs.tolist():
        near.setdefault(x, set()).add(y)
        near.setdefault(y, set()).add(x)
    return near


def _join_close_groups(groups: _Groups, cols: np.ndarray, limit: float) -> int:
    """Join neighbouring groups whose centres are within `limit` of each other, closest first,
    never across a cannot-link. Returns joins made."""
    near = _group_pairs(groups, cols)
    heap = [(_centres_distance(groups, a, b), a, b) for a, others in near.items() for b in others if a < b]
    heapq.heapify(heap)
    joins = 0
    while heap:
        distance, a, b = heapq.heappop(heap)
        if distance > limit:
            break
        if groups.size[a] == 0 or groups.size[b] == 0:
            continue  # joined into another group since; the new pairs are in the heap
        if not groups.can_join(a, b):
            continue
        groups.absorb(a, b)
        joins += 1
        merged = (near.pop(a, set()) | near.pop(b, set())) - {a, b}
        near[a] = merged
        for c in merged:
            near[c].discard(b)
            near[c].add(a)
            heapq.heappush(heap, (_centres_distance(groups, a, c), min(a, c), max(a, c)))
    return joins


def _centres_distance(groups: _Groups, a: int, b: int) -> float:
    """Distance between the centres of two groups."""
    dot = float(groups.sum[a] @ groups.sum[b])
    return float(centre_distance(np.array(dot), np.array(np.linalg.norm(groups.sum[a]) * np.linalg.norm(groups.sum[b]))))


def _join_user_groups(groups: _Groups, near: float) -> int:
    """Must-link: groups holding faces of one user group become one cluster, each keeping its
    own centre, when the user merged them or their centres are within `near` (never across a
    cannot-link). Faces the user named one by one join their user group's cluster; a user group
    nobody clustered becomes a group of its own. Returns groups linked and faces moved."""
    constraint, user = groups.constraints, groups.user
    moved = 0
    for u in np.unique(user[user >= 0]).tolist():
        faces = np.flatnonzero(user == u)
        held = sorted((int(g) for g in np.unique(groups.label[faces]) if g >= 0), key=lambda g: -groups.size[g])
        merged = set(groups.label[faces[constraint.merged[faces]]].tolist()) - {UNCLUSTERED}
        for other in held[1:]:
            close = _centres_distance(groups, held[0], other) <= near
            if (close or {held[0], other} <= merged) and groups.can_join(held[0], other):
                groups.link(held[0], other)
                moved += 1
        loose = faces[(groups.label[faces] < 0) & constraint.hard[faces]]
        if held:
            for f in loose.tolist():
                one = np.array([f])
                if groups.allowed(one, held[0]):
                    groups.add(one, held[0])
                    moved += 1
        elif len(loose) >= 2 and len(np.unique(groups.photo[loose])) == len(loose):
            groups.new_group(loose)
            moved += len(loose)
    return moved


def _adopt_loose_faces(groups: _Groups, candidates: np.ndarray, cols: np.ndarray, limit: float) -> int:
    """Faces in no group join the nearest neighbouring group whose centre is within `limit` and
    that no cannot-link forbids (the next nearest when the nearest says no). Best fits first: a
    face that fits better takes a photo's place first. Returns faces adopted."""
    loose = candidates[groups.label[candidates] < 0]
    if not len(loose) or not cols.shape[1]:
        return 0
    neighbour_groups = groups.label[np.maximum(cols[loose], 0)]
    neighbour_groups[cols[loose] < 0] = UNCLUSTERED
    rows, slots = np.nonzero(neighbour_groups >= 0)
    if not len(rows):
        return 0
    pairs = np.unique(np.stack([rows, neighbour_groups[rows, slots]], axis=1), axis=0)
    distance = groups.distance_to(loose[pairs[:, 0]], pairs[:, 1])
    members = np.flatnonzero(groups.label >= 0)
    radius = groups.radius(members, groups.own_distance(members))
    fits = distance <= np.minimum(_limit(limit, groups.size[pairs[:, 1]], groups.member_growth), radius[pairs[:, 1]])
    adopted = 0
    fitting = pairs[fits]
    for row, g in fitting[np.argsort(distance[fits], kind="stable")].tolist():
        face = loose[row]
        if groups.label[face] < 0 and groups.size[g] > 0 and groups.allowed(np.array([face]), g):
            groups.add(np.array([face]), g)
            adopted += 1
    return adopted


# --------------------------------------------------------------------------- the whole thing


def group_faces(
    x: np.ndarray,
    sides: np.ndarray,
    photo: np.ndarray,
    settings: GroupingSettings,
    constraints: Constraints | None = None,
    quality: np.ndarray | None = None,
) -> Grouping:
    """Faces (unit vectors) into people. `photo`: an integer code per face (same photo, same code).
    `settings` are on the model's scale (GroupingSettings.on_scale). Faces smaller than the minimum
    size, or below MIN_QUALITY (models.quality) unless the user named them, stay out: they never
    anchor a group."""
    if settings.member_distance is None or settings.merge_distance is None or settings.member_growth is None:
        raise ValueError("grouping settings without distances: put them on the model's scale first (on_scale)")
    n = len(x)
    constraints = Constraints.none(n) if constraints is None else constraints
    x = np.asarray(x, np.float32)  # float32: a million faces in 2 GB; sums are kept in float64
    trusted = sides >= settings.min_face_size
    if quality is not None:  # a face the user named stays whatever its quality: their word, not a guess
        trusted &= (quality >= MIN_QUALITY) | (constraints.group >= 0)
    eligible = np.flatnonzero(trusted)
    labels = np.full(n, UNCLUSTERED, np.int64)
    steps: dict[str, Any] = {}
    cols = np.full((n, 0), -1, np.int64)
    if len(eligible) >= 2:
        sub = reduced(x[eligible], settings)
        near, sims = nearest_neighbours(sub, max(KNN_NEIGHBOURS, settings.min_samples))
        cols = np.full((n, near.shape[1]), -1, np.int64)
        cols[eligible] = np.where(near >= 0, eligible[np.maximum(near, 0)], -1)
        labels[eligible] = hdbscan_proposals(sub, settings, (near, sims))
        del sub
    steps["proposed"] = int(len(np.unique(labels[labels >= 0])))
    groups = _Groups(x, labels, photo, constraints, settings.member_growth, settings.member_spread,
                     settings.merge_distance)
    steps["separated"] = _separate(groups)
    steps["misfits"] = _take_out_misfits(groups, settings.member_distance, settings.min_cluster_size)
    steps["user_joins"] = _join_user_groups(groups, settings.member_distance)
    steps["joins"] = _join_close_groups(groups, cols, settings.merge_distance)
    steps["adopted"] = _adopt_loose_faces(groups, eligible, cols, settings.member_distance)
    # Joins and adoptions moved the centres: check every member once more.
    steps["misfits"] += _take_out_misfits(groups, settings.member_distance, settings.min_cluster_size)
    return _finish(groups, cols, steps)


def _finish(groups: _Groups, cols: np.ndarray, steps: dict[str, Any]) -> Grouping:
    """Dense cluster labels 0..k-1 (by first face), modes, each member's distance to its group's
    centre, the core, and neighbouring clusters."""
    member = np.flatnonzero(groups.label >= 0)
    distance = np.full(len(groups.label), np.nan)
    core = np.zeros(len(groups.label), bool)
    modes = np.full(len(groups.label), UNCLUSTERED, np.int64)
    labels = np.full(len(groups.label), UNCLUSTERED, np.int64)
    if len(member):
        distance[member] = groups.own_distance(member)
        core[member] = _core(groups, member, distance[member])
        roots = np.array([groups.root(g) for g in range(len(groups.parent))], np.int64)
        modes[member] = _dense(groups.label[member])
        labels[member] = _dense(roots[groups.label[member]])
    groups.label = labels
    neighbours = sorted((a, b) for a, others in _group_pairs(groups, cols).items() for b in others if a < b)
    steps["groups"] = int(labels.max()) + 1 if len(member) else 0
    return Grouping(labels, modes, distance, core, neighbours, steps)


def _core(groups: _Groups, members: np.ndarray, distance: np.ndarray) -> np.ndarray:
    """Members within their group's 90th percentile distance (every member of a group under
    CORE_MIN_SIZE faces, and faces the user named): the faces a user looking at the cluster
    sees as its person. The outer tenth waits for a look before a cluster name confirms it."""
    label = groups.label[members]
    known = ~np.isnan(distance)
    edge = np.full(len(groups.size), np.inf)
    sized = np.bincount(label[known], minlength=len(groups.size)) >= CORE_MIN_SIZE
    edge[sized] = _group_quantiles(label[known], distance[known], len(groups.size), SPREAD_QUANTILE)[sized]
    return ~(distance > edge[label]) | groups.constraints.hard[members]


def _dense(values: np.ndarray) -> np.ndarray:
    """0..k-1 in order of first appearance."""
    _, first, inverse = np.unique(values, return_index=True, return_inverse=True)
    return np.argsort(np.argsort(first))[inverse.reshape(-1)]
