"""Clusters and labels joined: who each cluster is now, its conflicts, and which cluster it may
be the same person as. Derived on every read, never stored."""

from __future__ import annotations

import shlex
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from facebatch.errors import NotFound
from facebatch.people.clustering import ClusterState
from facebatch.models.scale import DistanceScale
from facebatch.people.embeddings import embedding_space
from facebatch.people.stored_adapter import PLAIN_SPACE
from facebatch.people.labels import KIND_IGNORE, LabelState, group_clusters, replay
from facebatch.schema import UNCLUSTERED
from facebatch.store import Library


@dataclass(frozen=True)
class Similar:
    """Another cluster that may be the same person."""

    cluster_id: int
    distance: float  # between the two clusters' centres
    confidence: float  # that they are one person, on the library model's scale


@dataclass(frozen=True)
class SimilarPair:
    """Two clusters that may be one person, and how likely on the model's scale."""

    a: int
    b: int
    distance: float  # between their centres
    confidence: float


@dataclass
class ClusterInfo:
    cluster_id: int
    size: int
    person: str | None = None
    ignored: bool = False
    votes: Counter = field(default_factory=Counter)  # names of its labelled members
    whole_cluster_names: Counter = field(default_factory=Counter)  # names its members got as a cluster
    similar: list[Similar] = field(default_factory=list)  # nearest first
    suggestion: Similar | None = None  # for an unnamed cluster: the named or larger one it may be

    @property
    def conflict(self) -> bool:
        return len(self.whole_cluster_names) >= 2 or (self.person is None and len(self.votes) >= 2)

    def conflict_line(self) -> str:
        names = " and ".join(f"{name} ({n})" for name, n in self.votes.most_common())
        shown = f"shown as {self.person}" if self.person else "left unnamed"
        keep = self.person or self.votes.most_common(1)[0][0]
        other = next(name for name, _ in self.votes.most_common() if name != keep)
        return (
            f"cluster {self.cluster_id} holds faces named {names}: {shown}; "
            f"`facebatch label cluster {self.cluster_id} {shlex.quote(keep)}` names them all, "
            f"`facebatch label face FACE_ID {shlex.quote(other)}` keeps one face apart"
        )


@dataclass
class View:
    face_ids: np.ndarray  # faces of the last clustering run
    cluster_ids: np.ndarray
    modes: np.ndarray  # the centre each face belongs to (a merged cluster may have several)
    distance: np.ndarray  # each member's distance to the centre of its cluster's other faces
    core: np.ndarray  # members in their cluster's core: what naming the cluster confirms
    first_run: np.ndarray
    state: ClusterState
    history: pa.Table  # the labels history
    labels: LabelState
    clusters: dict[int, ClusterInfo]
    scale: DistanceScale  # of the library's model

    def members(self, cluster_id: int) -> list[str]:
        return self.face_ids[self.cluster_ids == cluster_id].tolist()

    def core_members(self, cluster_id: int) -> set[str]:
        return set(self.face_ids[(self.cluster_ids == cluster_id) & self.core].tolist())

    def cluster(self, cluster_id: int) -> ClusterInfo:
        info = self.clusters.get(cluster_id)
        if info is None:
            raise NotFound(f"no cluster {cluster_id}: `facebatch clusters` lists them")
        return info

    def similar_pairs(self) -> list[SimilarPair]:
        """Pairs of clusters that may be one person, nearest first: centres within `verify`'s
        threshold (beyond it `verify` calls them two people, so no merge is offered), never two
        clusters named differently (two people by the user's word) nor an ignored one."""
        pairs = {}
        for c, info in self.clusters.items():
            for other in info.similar:
                a, b = min(c, other.cluster_id), max(c, other.cluster_id)
                if other.distance <= self.scale.verify_threshold and self._may_merge(a, b):
                    pairs[a, b] = SimilarPair(a, b, other.distance, other.confidence)
        return sorted(pairs.values(), key=lambda p: (p.distance, p.a, p.b))

    def _may_merge(self, a: int, b: int) -> bool:
        first, second = self.clusters[a], self.clusters[b]
        named_apart = bool(first.person and second.person and first.person != second.person)
        return not (first.ignored or second.ignored or named_apart)

    def cluster_of(self) -> dict[str, int]:
        return dict(zip(self.face_ids.tolist(), self.cluster_ids.tolist()))

    def mode_of(self) -> dict[str, int]:
        return dict(zip(self.face_ids.tolist(), self.modes.tolist()))

    def confirmed_name(self, face_id: str, cluster_id: int) -> str | None:
        """The name the user gave this face: its own, or its cluster's while the face is still
        with faces of that name (an intruder that a later clustering moves away loses it)."""
        own = self.labels.face_names.get(face_id)
        if own:
            return own[0]
        name = self.labels.cluster_names.get(face_id)
        info = self.clusters.get(cluster_id)
        if name and info is not None and not info.ignored and (info.person == name or info.votes[name] >= 2):
            return name
        return None


def build_view(library: Library, table: pa.Table | None = None, history: pa.Table | None = None) -> View:
    clusters = library.require_clusters() if table is None else table
    history = library.read_labels() if history is None else history
    labels = replay(history)
    face_ids = np.array(clusters["face_id"].to_pylist(), dtype=object)
    cluster_ids = clusters["cluster_id"].to_numpy()
    modes = clusters["mode"].to_numpy()
    first_run = clusters["first_run"].to_numpy()
    core = np.asarray(clusters["core"].fill_null(True).to_numpy(zero_copy_only=False), bool)
    distance = np.asarray(clusters["distance"].to_numpy(zero_copy_only=False), np.float64)
    state = ClusterState.read(library)
    # Clusters made in another space (before a model change or an adapter switch) keep their
    # members until the next `cluster`, but their distances are another scale's: not shown as fits
    # or similarities on this one.
    current = state.settings.get("embedding_space", PLAIN_SPACE) == embedding_space(library)
    if not current:
        distance = np.full(len(distance), np.nan)
    sizes = Counter(cluster_ids[cluster_ids != UNCLUSTERED].tolist())
    infos = {c: ClusterInfo(c, n) for c, n in sorted(sizes.items())}
    for face_id, c in zip(face_ids.tolist(), cluster_ids.tolist()):
        if c == UNCLUSTERED:
            continue
        own = labels.face_names.get(face_id)
        name = own[0] if own else labels.cluster_names.get(face_id)
        if name:
            infos[c].votes[name] += 1
            if not own:
                infos[c].whole_cluster_names[name] += 1
    for info in infos.values():
        if info.votes:
            name, n = info.votes.most_common(1)[0]
            if 2 * n > sum(info.votes.values()):
                info.person = name
    for members in group_clusters(labels.tokens[KIND_IGNORE], face_ids, cluster_ids, first_run).values():
        for c in members:
            infos[c].ignored = True
    scale = library.scale()
    pairs = library.read_cluster_pairs()
    _attach_similar(infos, pairs if current else pairs.schema.empty_table(), scale)
    return View(face_ids, cluster_ids, modes, distance, core, first_run, state, history, labels, infos, scale)


def _attach_similar(infos: dict[int, ClusterInfo], pairs: pa.Table, scale: DistanceScale) -> None:
    """Nearest clusters from the last clustering; an unnamed cluster's suggestion is the nearest
    named or larger one within the model's member distance, the distance at which a face would
    join a cluster (the clustering joins closer ones itself, at the merge distance; on the
    development mix, of each FaceNet cluster's nearest other cluster of someone else 13% lay within
    its 0.9, half within 1.0). Merges since then may have removed a number: those are skipped."""
    for a, b, distance in zip(*(pairs[c].to_pylist() for c in ("cluster_id", "other_id", "distance"))):
        if a in infos and b in infos:
            infos[a].similar.append(Similar(b, float(distance), float(scale.confidence(distance))))
    for info in infos.values():
        info.similar.sort(key=lambda s: s.distance)
        if info.person or info.ignored:
            continue
        for other in info.similar:
            if other.distance > scale.member_distance:
                break
            target = infos[other.cluster_id]
            if not target.ignored and (target.person or target.size > info.size):
                info.suggestion = other
                break
