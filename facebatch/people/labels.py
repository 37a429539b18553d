"""What the user said about faces: names, "not" constraints, merges, ignores.

    LIBRARY/labels.parquet   face_id, kind, value, source, run, created_at

Every user statement is stored as facts about *faces*, never about cluster numbers, because
cluster numbers are derived state that a re-cluster may change. Only these commands write the
table; `facebatch cluster` reads it and derives everything again:

- kind `name`, source `cluster`: the face was a member of a cluster when the user named the
  cluster; source `face`: the user named this one face. A face label outranks a cluster label.
- kind `not`: "this face is not VALUE", a cannot-link constraint kept for good: no later
  cluster label, suggestion or export gives the face that name.
- kind `merge` / `ignore`: VALUE is a group token (m1, i1, ...) shared by the faces the user
  merged or ignored. After a re-cluster, a cluster takes part in a group when the group's faces
  are a majority of its faces that existed when the user acted (`run` against the face's
  `first_run`), so new photos that join a cluster do not dilute the user's decision.

A cluster's person is derived from its members' names: the name most of its labelled faces
carry (more than half). Two names given to whole clusters meeting in one cluster is a conflict:
reported with the command that resolves it, never settled silently.
"""

from __future__ import annotations

import shlex
import unicodedata
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from facebatch.people.clustering import (
    UNCLUSTERED,
    ClusterState,
    embeddings_matrix,
    read_clusters,
    read_state,
    require_clusters,
    require_library,
    write_clusters,
)
from facebatch.errors import FacebatchError
from facebatch.store import Library, atomic_write_table, read_table_file

KIND_NAME, KIND_NOT, KIND_MERGE, KIND_IGNORE = "name", "not", "merge", "ignore"
SOURCE_CLUSTER, SOURCE_FACE = "cluster", "face"
STATUS_CONFIRMED, STATUS_SUGGESTED, STATUS_UNKNOWN = "confirmed", "suggested", "unknown"
MAX_NAME_LENGTH = 100

# Largest embedding distance (Euclidean, unit vectors: 0..2) at which an unlabelled face that no
# named cluster holds is suggested as its nearest confirmed face's person. Measured on lfw-dev by
# benchmarks/cluster_suggest.py (half of each person's photos labelled, a third of the people not
# at all): precision of the suggestions 1.000 at 0.7, 0.992 at 0.8, 0.976 at 0.85, 0.921 at 0.9,
# 0.805 at 0.95. 0.85 is the largest distance that keeps them >= 95% right.
DEFAULT_SUGGEST_DISTANCE = 0.85

LABELS_SCHEMA = pa.schema(
    [
        pa.field("face_id", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),  # name | not | merge | ignore
        pa.field("value", pa.string(), nullable=False),  # a person's name, or a merge/ignore group token
        pa.field("source", pa.string(), nullable=False),  # cluster | face
        pa.field("run", pa.int64(), nullable=False),  # the clustering run the user saw when acting
        pa.field("created_at", pa.timestamp("ms", tz="UTC"), nullable=False),
    ]
)


# --------------------------------------------------------------------------- the table


def labels_path(library: Library) -> Path:
    return library.root / "labels.parquet"


def read_labels(library: Library) -> pa.Table:
    return read_table_file(labels_path(library), LABELS_SCHEMA)


def write_labels(library: Library, table: pa.Table) -> None:
    atomic_write_table(labels_path(library), table.cast(LABELS_SCHEMA))


def facts(
    face_ids: list[str], kind: str, value: str, source: str, run: int
) -> pa.Table:
    now = datetime.now(timezone.utc)
    n = len(face_ids)
    return pa.table(
        {
            "face_id": pa.array(face_ids, pa.string()),
            "kind": pa.array([kind] * n, pa.string()),
            "value": pa.array([value] * n, pa.string()),
            "source": pa.array([source] * n, pa.string()),
            "run": pa.array([run] * n, pa.int64()),
            "created_at": pa.array([now] * n, pa.timestamp("ms", tz="UTC")),
        }
    ).cast(LABELS_SCHEMA)


def _drop(table: pa.Table, mask: pa.ChunkedArray | pa.Array) -> pa.Table:
    return table.filter(pc.invert(pc.fill_null(mask, False)))


def _is(table: pa.Table, kind: str, source: str | None = None, faces: set[str] | None = None) -> pa.Array:
    mask = pc.equal(table.column("kind"), kind)
    if source is not None:
        mask = pc.and_(mask, pc.equal(table.column("source"), source))
    if faces is not None:
        mask = pc.and_(mask, pc.is_in(table.column("face_id"), pa.array(sorted(faces), pa.string())))
    return mask


def clean_name(name: str) -> str:
    """A person's name as stored: NFC, inner whitespace collapsed. Any letters, spaces allowed."""
    cleaned = " ".join(unicodedata.normalize("NFC", name).split())
    if not cleaned:
        raise FacebatchError("a name cannot be empty")
    if len(cleaned) > MAX_NAME_LENGTH:
        raise FacebatchError(f"a name can be at most {MAX_NAME_LENGTH} characters, got {len(cleaned)}")
    if any(unicodedata.category(c).startswith("C") for c in cleaned):
        raise FacebatchError(f"a name cannot contain control characters: {cleaned!r}")
    return cleaned


# --------------------------------------------------------------------------- groups (merge, ignore)


def group_clusters(
    labels: pa.Table, kind: str, face_ids: np.ndarray, cluster_ids: np.ndarray, first_run: np.ndarray
) -> dict[str, set[int]]:
    """Token -> the clusters that take part in that merge/ignore group.

    A cluster takes part when the group's faces are more than half of its faces that existed at
    the group's run (so a cluster that grew with new photos stays in, and a cluster that got a
    few of the group's faces by chance stays out).
    """
    rows = labels.filter(pc.equal(labels.column("kind"), kind))
    if rows.num_rows == 0:
        return {}
    index = {face_id: i for i, face_id in enumerate(face_ids.tolist())}
    token_run: dict[str, int] = {}
    tagged: dict[str, Counter] = defaultdict(Counter)
    for face_id, token, run in zip(rows["face_id"].to_pylist(), rows["value"].to_pylist(), rows["run"].to_pylist()):
        token_run[token] = max(run, token_run.get(token, run))
        i = index.get(face_id)
        if i is not None and cluster_ids[i] != UNCLUSTERED:
            tagged[token][int(cluster_ids[i])] += 1
    known_at: dict[int, Counter] = {}
    clustered = cluster_ids != UNCLUSTERED
    result: dict[str, set[int]] = {}
    for token, counts in tagged.items():
        run = token_run[token]
        if run not in known_at:
            known = clustered & (first_run <= run)
            known_at[run] = Counter(cluster_ids[known].tolist())
        members = {c for c, n in counts.items() if 2 * n > known_at[run].get(c, 0)}
        if members:
            result[token] = members
    return result


def apply_merges(
    labels: pa.Table, face_ids: np.ndarray, raw: np.ndarray, first_run: np.ndarray
) -> tuple[np.ndarray, int]:
    """Join the (raw) clusters that the user's merges say are one person; (labels, joins made)."""
    groups = group_clusters(labels, KIND_MERGE, face_ids, raw, first_run)
    parent: dict[int, int] = {}

    def find(c: int) -> int:
        while parent.get(c, c) != c:
            c = parent[c]
        return c

    joins = 0
    for members in groups.values():
        first, *rest = sorted(members)
        for other in rest:
            a, b = find(first), find(other)
            if a != b:
                parent[max(a, b)] = min(a, b)
                joins += 1
    if joins:
        raw = raw.copy()
        for c in list(parent):
            raw[raw == c] = find(c)
    return raw, joins


# --------------------------------------------------------------------------- the derived view


@dataclass
class ClusterInfo:
    cluster_id: int
    size: int
    person: str | None = None
    ignored: bool = False
    votes: Counter = field(default_factory=Counter)  # effective names of labelled members
    whole_cluster_names: Counter = field(default_factory=Counter)  # names its members got as a cluster

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
    """Clusters and labels joined: who each face is and what each cluster is, right now."""

    face_ids: np.ndarray  # faces of the last clustering run
    cluster_ids: np.ndarray
    probability: np.ndarray
    first_run: np.ndarray
    state: ClusterState
    labels: pa.Table
    names: dict[str, tuple[str, str]]  # face_id -> (name, source): the effective label
    nots: dict[str, set[str]]
    clusters: dict[int, ClusterInfo]

    def members(self, cluster_id: int) -> list[str]:
        return self.face_ids[self.cluster_ids == cluster_id].tolist()

    def cluster(self, cluster_id: int) -> ClusterInfo:
        info = self.clusters.get(cluster_id)
        if info is None:
            raise FacebatchError(f"no cluster {cluster_id}: `facebatch clusters` lists them")
        return info


def effective_names(labels: pa.Table) -> tuple[dict[str, tuple[str, str]], dict[str, set[str]]]:
    """(face_id -> (name, source), face_id -> names it is not). A face label outranks a cluster one."""
    names: dict[str, tuple[str, str]] = {}
    nots: dict[str, set[str]] = defaultdict(set)
    columns = [labels[c].to_pylist() for c in ("face_id", "kind", "value", "source")]
    for face_id, kind, value, source in zip(*columns):
        if kind == KIND_NAME:
            if source == SOURCE_FACE or face_id not in names or names[face_id][1] != SOURCE_FACE:
                names[face_id] = (value, source)
        elif kind == KIND_NOT:
            nots[face_id].add(value)
    return names, dict(nots)


def build_view(library: Library, table: pa.Table | None = None, labels: pa.Table | None = None) -> View:
    clusters = require_clusters(library) if table is None else table
    labels = read_labels(library) if labels is None else labels
    face_ids = np.array(clusters["face_id"].to_pylist(), dtype=object)
    cluster_ids = clusters["cluster_id"].to_numpy()
    first_run = clusters["first_run"].to_numpy()
    names, nots = effective_names(labels)
    sizes = Counter(cluster_ids[cluster_ids != UNCLUSTERED].tolist())
    infos = {c: ClusterInfo(c, n) for c, n in sorted(sizes.items())}
    for face_id, c in zip(face_ids.tolist(), cluster_ids.tolist()):
        if c != UNCLUSTERED and face_id in names:
            name, source = names[face_id]
            infos[c].votes[name] += 1
            if source == SOURCE_CLUSTER:
                infos[c].whole_cluster_names[name] += 1
    for info in infos.values():
        if info.votes:
            name, n = info.votes.most_common(1)[0]
            if 2 * n > sum(info.votes.values()):
                info.person = name
    for members in group_clusters(labels, KIND_IGNORE, face_ids, cluster_ids, first_run).values():
        for c in members:
            infos[c].ignored = True
    return View(face_ids, cluster_ids, clusters["probability"].to_numpy(), first_run, read_state(library),
                labels, names, nots, infos)


# --------------------------------------------------------------------------- user commands


def _live_face_ids(library: Library) -> set[str]:
    return set(library.read_faces(["face_id"]).column("face_id").to_pylist())


def label_cluster(library: Library, cluster_id: int, name: str) -> str:
    """Name every member face (source `cluster`), except faces that are "not" that name."""
    name = clean_name(name)
    require_library(library)
    with library.lock():
        view = build_view(library)
        info = view.cluster(cluster_id)
        if info.ignored:
            raise FacebatchError(
                f"cluster {cluster_id} is ignored: `facebatch ignore cluster {cluster_id} --undo` first"
            )
        members = view.members(cluster_id)
        refused = [f for f in members if name in view.nots.get(f, ())]
        named = [f for f in members if name not in view.nots.get(f, ())]
        own = sum(1 for f in named if view.names.get(f, ("", ""))[1] == SOURCE_FACE and view.names[f][0] != name)
        labels = _drop(view.labels, _is(view.labels, KIND_NAME, SOURCE_CLUSTER, set(named)))
        labels = pa.concat_tables([labels, facts(named, KIND_NAME, name, SOURCE_CLUSTER, view.state.run)])
        write_labels(library, labels)
    line = f"cluster {cluster_id} is {name}: {len(named)} faces"
    if own:
        line += f"; {own} keep their own face label"
    if refused:
        line += f"; {len(refused)} left out (labelled not {name})"
    return line


def label_face(library: Library, face_id: str, name: str, negative: bool = False) -> str:
    """`name` for one face (source `face`), or with `negative` the constraint "not `name`"."""
    name = clean_name(name)
    require_library(library)
    with library.lock():
        if face_id not in _live_face_ids(library):
            raise FacebatchError(f"no face {face_id} in the library: `facebatch export` lists face ids")
        labels = read_labels(library)
        run = read_state(library).run
        one = {face_id}
        if negative:
            # The constraint wins over any label of that name this face had.
            named_so = pc.and_(_is(labels, KIND_NAME, faces=one), pc.equal(labels.column("value"), name))
            same_not = pc.and_(_is(labels, KIND_NOT, faces=one), pc.equal(labels.column("value"), name))
            labels = _drop(labels, pc.or_(named_so, same_not))
            labels = pa.concat_tables([labels, facts([face_id], KIND_NOT, name, SOURCE_FACE, run)])
            line = f"face {face_id} is not {name}"
        else:
            stale_not = pc.and_(_is(labels, KIND_NOT, faces=one), pc.equal(labels.column("value"), name))
            labels = _drop(labels, pc.or_(_is(labels, KIND_NAME, SOURCE_FACE, one), stale_not))
            labels = pa.concat_tables([labels, facts([face_id], KIND_NAME, name, SOURCE_FACE, run)])
            line = f"face {face_id} is {name}"
        write_labels(library, labels)
    return line


def _next_token(labels: pa.Table, kind: str, prefix: str) -> str:
    used = [v for k, v in zip(labels["kind"].to_pylist(), labels["value"].to_pylist()) if k == kind]
    numbers = [int(v[len(prefix):]) for v in used if v.startswith(prefix) and v[len(prefix):].isdigit()]
    return f"{prefix}{max(numbers, default=0) + 1}"


def merge_clusters(library: Library, cluster_ids: list[int]) -> str:
    """One person: the clusters become the first one's number now, and stay together after re-runs."""
    unique = list(dict.fromkeys(cluster_ids))
    if len(unique) < 2:
        raise FacebatchError("merge needs two different cluster numbers, e.g. `facebatch merge 12 31`")
    require_library(library)
    with library.lock():
        table = require_clusters(library)
        view = build_view(library, table)
        for c in unique:
            if view.cluster(c).ignored:
                raise FacebatchError(f"cluster {c} is ignored: `facebatch ignore cluster {c} --undo` first")
        members = [f for c in unique for f in view.members(c)]
        labels = view.labels
        old_tokens = set(labels.filter(_is(labels, KIND_MERGE, faces=set(members)))["value"].to_pylist())
        token = _next_token(labels, KIND_MERGE, "m")
        # Earlier merges touching these faces join the new group: one token per person.
        relabel = pc.and_(pc.equal(labels["kind"], KIND_MERGE), pc.is_in(labels["value"], pa.array(sorted(old_tokens), pa.string())))
        carried = labels.filter(pc.fill_null(relabel, False))["face_id"].to_pylist()
        labels = _drop(labels, relabel)
        faces = list(dict.fromkeys(carried + members))
        labels = pa.concat_tables([labels, facts(faces, KIND_MERGE, token, SOURCE_CLUSTER, view.state.run)])
        write_labels(library, labels)
        ids = view.cluster_ids.copy()
        ids[np.isin(ids, unique[1:])] = unique[0]
        table = table.set_column(1, "cluster_id", pa.array(ids, pa.int64()))
        write_clusters(library, table, view.state)
        merged = build_view(library, table, labels).cluster(unique[0])
    line = f"clusters {', '.join(map(str, unique))} are now cluster {unique[0]}: {merged.size} faces"
    if merged.conflict:
        line += "\nconflict: " + merged.conflict_line()
    elif merged.person:
        line += f", {merged.person}"
    return line


def ignore_cluster(library: Library, cluster_id: int, undo: bool = False) -> str:
    require_library(library)
    with library.lock():
        view = build_view(library)
        info = view.cluster(cluster_id)
        members = view.members(cluster_id)
        labels = view.labels
        if undo:
            if not info.ignored:
                raise FacebatchError(f"cluster {cluster_id} is not ignored")
            write_labels(library, _drop(labels, _is(labels, KIND_IGNORE, faces=set(members))))
            return f"cluster {cluster_id} is no longer ignored"
        if info.ignored:
            return f"cluster {cluster_id} is already ignored"
        token = _next_token(labels, KIND_IGNORE, "i")
        write_labels(library, pa.concat_tables([labels, facts(members, KIND_IGNORE, token, SOURCE_CLUSTER,
                                                                   view.state.run)]))
    return f"cluster {cluster_id} ignored: its {len(members)} faces are never suggested or exported as a person"


# --------------------------------------------------------------------------- per-face tags


@dataclass
class FaceTags:
    """One row per live face, in the faces table's order."""

    face_ids: list[str]
    photo_ids: list[str]
    cluster_ids: np.ndarray
    person: list[str | None]
    status: list[str]
    confidence: np.ndarray


def face_tags(
    library: Library, suggest_distance: float = DEFAULT_SUGGEST_DISTANCE, view: View | None = None
) -> FaceTags:
    """confirmed / suggested / unknown for every live face, from the tables alone.

    Suggested: an unlabelled face in a named, not ignored cluster (confidence: its HDBSCAN
    membership probability), else one whose nearest confirmed face lies within
    `suggest_distance` (confidence falls linearly from 1 at distance 0 to 0 at the threshold).
    A face is never suggested a name it is "not", nor while its cluster is ignored.
    """
    require_library(library)
    faces = library.read_faces(["face_id", "photo_id", "embedding"])
    face_ids = faces["face_id"].to_pylist()
    view = build_view(library, read_clusters(library)) if view is None else view
    where = {f: i for i, f in enumerate(view.face_ids.tolist())}
    rows = np.array([where.get(f, -1) for f in face_ids], np.int64)
    cluster_ids = np.where(rows >= 0, view.cluster_ids[np.maximum(rows, 0)] if len(view.face_ids) else -1, -1)
    probability = np.where(rows >= 0, view.probability[np.maximum(rows, 0)] if len(view.face_ids) else 0.0, 0.0)
    n = len(face_ids)
    person: list[str | None] = [None] * n
    status = [STATUS_UNKNOWN] * n
    confidence = np.zeros(n, np.float32)
    open_rows = []
    for i, (face_id, c) in enumerate(zip(face_ids, cluster_ids.tolist())):
        nots = view.nots.get(face_id, set())
        if face_id in view.names:
            person[i], status[i], confidence[i] = view.names[face_id][0], STATUS_CONFIRMED, 1.0
            continue
        info = view.clusters.get(c)
        if info is not None and info.ignored:
            continue
        if info is not None and info.person and info.person not in nots:
            person[i], status[i], confidence[i] = info.person, STATUS_SUGGESTED, float(probability[i])
            continue
        open_rows.append(i)
    if open_rows:
        confirmed = [i for i in range(n) if status[i] == STATUS_CONFIRMED]
        if confirmed:
            x = embeddings_matrix(faces)
            _nearest_suggestions(x, confirmed, open_rows, face_ids, person, status, confidence, view.nots,
                                 suggest_distance)
    return FaceTags(face_ids, faces["photo_id"].to_pylist(), cluster_ids.astype(np.int64), person, status, confidence)


def _nearest_suggestions(
    x: np.ndarray,
    confirmed: list[int],
    open_rows: list[int],
    face_ids: list[str],
    person: list[str | None],
    status: list[str],
    confidence: np.ndarray,
    nots: dict[str, set[str]],
    threshold: float,
    chunk: int = 4096,
) -> None:
    """Nearest confirmed face within `threshold`, by blocks so memory stays chunk x labelled."""
    known = x[confirmed]
    known_names = np.array([person[i] for i in confirmed], dtype=object)
    k = min(5, len(confirmed))  # a face "not Alice" falls back to its next-nearest person
    for start in range(0, len(open_rows), chunk):
        block = open_rows[start:start + chunk]
        similarity = x[block] @ known.T
        top = np.argpartition(-similarity, k - 1, axis=1)[:, :k] if k < len(confirmed) else \
            np.tile(np.arange(len(confirmed)), (len(block), 1))
        for row, i in enumerate(block):
            order = top[row][np.argsort(-similarity[row, top[row]])]
            for j in order:
                distance = float(np.sqrt(max(0.0, 2.0 - 2.0 * similarity[row, j])))
                if distance > threshold:
                    break
                if known_names[j] in nots.get(face_ids[i], ()):
                    continue
                person[i], status[i] = known_names[j], STATUS_SUGGESTED
                confidence[i] = max(0.0, 1.0 - distance / threshold)
                break


def named_faces(library: Library) -> tuple[list[str], np.ndarray]:
    """(person, embedding) of every live face with a confirmed name: the gallery for `identify`."""
    require_library(library)
    names, _ = effective_names(read_labels(library))
    faces = library.read_faces(["face_id", "embedding"])
    keep = [i for i, f in enumerate(faces["face_id"].to_pylist()) if f in names]
    chosen = faces.take(pa.array(keep, pa.int64()))
    return [names[f][0] for f in chosen["face_id"].to_pylist()], embeddings_matrix(chosen)


@dataclass
class Person:
    name: str
    confirmed: int
    suggested: int
    photos: int  # photos with a confirmed or suggested face of this person
    clusters: list[int]


def people(library: Library, tags: FaceTags | None = None) -> list[Person]:
    tags = face_tags(library) if tags is None else tags
    by_name: dict[str, Person] = {}
    photos: dict[str, set[str]] = defaultdict(set)
    for name, status, photo, c in zip(tags.person, tags.status, tags.photo_ids, tags.cluster_ids.tolist()):
        if name is None:
            continue
        entry = by_name.setdefault(name, Person(name, 0, 0, 0, []))
        if status == STATUS_CONFIRMED:
            entry.confirmed += 1
        else:
            entry.suggested += 1
        photos[name].add(photo)
        if c != UNCLUSTERED and c not in entry.clusters:
            entry.clusters.append(c)
    for name, entry in by_name.items():
        entry.photos = len(photos[name])
        entry.clusters.sort()
    return sorted(by_name.values(), key=lambda p: (-(p.confirmed + p.suggested), p.name))
