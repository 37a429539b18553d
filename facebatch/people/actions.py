"""What the user does to people: name, "not", merge, split, ignore, undo.

The CLI and the review site call these same functions, so they always write the same facts.
Each one is one action in the labels history (people.labels) and returns a result object that
says what changed; the callers format it. Writes happen under the library lock, waiting up to
`wait` seconds for a scan or another command to finish.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import pyarrow as pa

from facebatch.errors import NotFound, UsageError
from facebatch.people.clustering import move_faces, undo_moves
from facebatch.people.labels import (
    KIND_IGNORE,
    KIND_MERGE,
    KIND_NAME,
    KIND_NOT,
    KIND_SPLIT,
    SOURCE_CLUSTER,
    SOURCE_FACE,
    SOURCE_XMP,
    Fact,
    action_rows,
    clean_name,
    undo_rows,
    undoable_actions,
)
from facebatch.people.view import ClusterInfo, View, build_view
from facebatch.schema import UNCLUSTERED
from facebatch.store import Library
from facebatch.wording import counted


@dataclass(frozen=True)
class ActionResult:
    """What one action changed."""

    action: int  # its number in the history (0: nothing changed, nothing written)
    kind: str  # name-cluster, name-faces, not, merge, ignore, unignore, split, undo
    faces: int  # faces whose labels changed
    name: str | None = None
    cluster_id: int | None = None  # the cluster acted on, or the merged/new cluster
    clusters: tuple[int, ...] = ()  # every cluster involved
    size: int = 0  # faces in the resulting cluster
    kept_own: int = 0  # faces that keep their own, different face label
    replaced_imported: int = 0  # faces whose name from a sidecar (import-xmp) gave way to this one
    waiting: int = 0  # members outside the cluster's core: the name is only suggested until the user looks
    refused: int = 0  # faces left out because they are "not" the name
    conflict: str | None = None  # a conflict line, after a merge
    person: str | None = None  # the resulting cluster's person
    undone: ActionSummary | None = None


@dataclass(frozen=True)
class ActionSummary:
    """An action of the history, described for undo and the review site."""

    action: int
    kinds: tuple[str, ...]
    values: tuple[str, ...]
    faces: int

    def text(self) -> str:
        parts = []
        for kind, value in zip(self.kinds, self.values):
            if kind == KIND_NAME:
                parts.append(f"named {value}")
            elif kind == KIND_NOT:
                parts.append(f"not {value}")
            else:
                parts.append({KIND_MERGE: "merge", KIND_IGNORE: "ignore", KIND_SPLIT: "split"}.get(kind, kind))
        return f"action {self.action} ({', '.join(parts)}, {counted(self.faces, 'face')})"


def _write(library: Library, view: View, facts: list[Fact]) -> int:
    rows = action_rows(view.history, facts, view.state.run)
    if rows.num_rows == 0:
        return 0
    library.append_labels(rows)
    return int(rows["action"][0].as_py())


def _live(library: Library, face_ids: list[str]) -> list[str]:
    known = set(library.read_faces(["face_id"], pending=True)["face_id"].to_pylist())  # labels need no embedding
    missing = [f for f in face_ids if f not in known]
    if missing:
        raise NotFound(f"no face {missing[0]} in the library: `facebatch export` lists face ids")
    return list(dict.fromkeys(face_ids))


def _view(library: Library) -> View:
    """The view for actions on faces, which need no clustering yet."""
    return build_view(library, library.read_clusters())


def label_cluster(library: Library, cluster_id: int, name: str, wait: float = 0.0) -> ActionResult:
    """Name the cluster's core faces (source `cluster`), except faces that are "not" that name: the
    faces a user looking at the cluster sees as one person. Members outside the core (its outer
    tenth by distance) are not confirmed: they wait for a look (`review`'s queue) and meanwhile get
    the name as a suggestion with its calibrated confidence. A face the user named in facebatch
    keeps its name; one named only by a sidecar (import-xmp: weaker than what the user says here)
    takes this one."""
    name = clean_name(name)
    library.require()
    with library.lock(wait):
        view = build_view(library)
        info = view.cluster(cluster_id)
        if info.ignored:
            raise UsageError(f"cluster {cluster_id} is ignored: `facebatch ignore cluster {cluster_id} --undo` first")
        members = view.members(cluster_id)
        core = view.core_members(cluster_id)
        refused = [f for f in members if name in view.labels.nots.get(f, ())]
        allowed = [f for f in members if name not in view.labels.nots.get(f, ())]
        own = {f: view.labels.face_names[f] for f in allowed if f in view.labels.face_names}
        waiting = [f for f in allowed if f not in core and not (f in own and own[f][1] == SOURCE_FACE)]
        named = [f for f in allowed if f in core]
        other = {f: own[f] for f in named if f in own and own[f][0] != name}
        imported = [f for f, (_, source) in other.items() if source == SOURCE_XMP]
        facts = [Fact(f, KIND_NAME, name, SOURCE_CLUSTER) for f in named]
        facts += [Fact(f, KIND_NAME, other[f][0], SOURCE_XMP, active=False) for f in imported]
        # Renamed: the edge's old cluster name goes too (it waits for a look under the new one).
        facts += [Fact(f, KIND_NAME, view.labels.cluster_names[f], SOURCE_CLUSTER, active=False) for f in waiting
                  if view.labels.cluster_names.get(f, name) != name]
        action = _write(library, view, facts)
    return ActionResult(action, "name-cluster", len(named), name, cluster_id, (cluster_id,), info.size,
                        kept_own=len(other) - len(imported), replaced_imported=len(imported), refused=len(refused),
                        waiting=len(waiting), person=name)


def label_faces(library: Library, face_ids: list[str], name: str, wait: float = 0.0) -> ActionResult:
    """`name` for these faces (source `face`: outranks any cluster name); clears "not name"."""
    name = clean_name(name)
    library.require()
    with library.lock(wait):
        view = _view(library)
        faces = _live(library, face_ids)
        facts = [Fact(f, KIND_NAME, name, SOURCE_FACE) for f in faces]
        facts += [Fact(f, KIND_NOT, name, SOURCE_FACE, active=False) for f in faces if name in view.labels.nots.get(f, ())]
        action = _write(library, view, facts)
    return ActionResult(action, "name-faces", len(faces), name, clusters=_clusters_of(view, faces))


def reject_faces(library: Library, face_ids: list[str], name: str, wait: float = 0.0) -> ActionResult:
    """"These faces are not `name`", for good: no cluster label, suggestion or export gives it.
    A face in `name`'s cluster leaves it now (the next clustering keeps it out)."""
    name = clean_name(name)
    library.require()
    with library.lock(wait):
        table = library.read_clusters()
        view = build_view(library, table)
        faces = _live(library, face_ids)
        facts = [Fact(f, KIND_NOT, name, SOURCE_FACE) for f in faces]
        for f in faces:  # the "not" wins over a name of that name this face had
            own = view.labels.face_names.get(f)
            if own and own[0] == name:
                facts.append(Fact(f, KIND_NAME, name, own[1], active=False))
            if view.labels.cluster_names.get(f) == name:
                facts.append(Fact(f, KIND_NAME, name, SOURCE_CLUSTER, active=False))
        action = _write(library, view, facts)
        cluster_of = view.cluster_of()
        leaving = [f for f in faces if cluster_of.get(f, UNCLUSTERED) in view.clusters
                   and view.clusters[cluster_of[f]].person == name]
        if action and leaving:
            move_faces(library, table, leaving, UNCLUSTERED, action)
    return ActionResult(action, "not", len(faces), name, clusters=_clusters_of(view, faces))


def merge_clusters(library: Library, cluster_ids: list[int], wait: float = 0.0) -> ActionResult:
    """One person: the clusters become the first one's number now, and stay together after re-runs."""
    unique = list(dict.fromkeys(cluster_ids))
    if len(unique) < 2:
        raise UsageError("merge needs two different cluster numbers, e.g. `facebatch merge 12 31`")
    library.require()
    with library.lock(wait):
        table = library.require_clusters()
        view = build_view(library, table)
        for c in unique:
            if view.cluster(c).ignored:
                raise UsageError(f"cluster {c} is ignored: `facebatch ignore cluster {c} --undo` first")
        members = [f for c in unique for f in view.members(c)]
        tokens = view.labels.tokens[KIND_MERGE]
        old = {tokens[f][0] for f in members if f in tokens}
        token = _next_token(view, KIND_MERGE, "m")
        # Earlier merges touching these faces join the new group: one token per person.
        carried = [f for f, (t, _) in tokens.items() if t in old]
        faces = list(dict.fromkeys(carried + members))
        action = _write(library, view, [Fact(f, KIND_MERGE, token, SOURCE_CLUSTER) for f in faces])
        moved = [f for c in unique[1:] for f in view.members(c)]
        table, _ = move_faces(library, table, moved, unique[0], action)
        merged = build_view(library, table).cluster(unique[0])
    return ActionResult(action, "merge", len(faces), cluster_id=unique[0], clusters=tuple(unique), size=merged.size,
                        conflict=_merge_conflict(view, unique, merged), person=merged.person)


def _merge_conflict(before: View, cluster_ids: list[int], merged: ClusterInfo) -> str | None:
    """What the user must hear about names after a merge: the merged cluster's conflict, or that
    clusters shown under different names (one named by a single face's label) are now one."""
    if merged.conflict:
        return merged.conflict_line()
    shown = {c: before.cluster(c).person for c in cluster_ids}
    if len(set(shown.values()) - {None}) < 2:
        return None
    listed = ", ".join(f"{c} ({name})" for c, name in shown.items() if name)
    return (f"clusters {listed} were shown under different names: cluster {merged.cluster_id} is now shown as "
            f"{merged.person}; faces named one by one keep their names; `facebatch undo` takes the merge back")


def split_faces(library: Library, face_ids: list[str], wait: float = 0.0) -> ActionResult:
    """These faces are one person and not the person of the rest of their cluster: they get a
    cluster of their own now, and stay apart after re-runs."""
    library.require()
    with library.lock(wait):
        table = library.require_clusters()
        view = build_view(library, table)
        faces = _live(library, face_ids)
        cluster_of = view.cluster_of()
        sources = sorted({cluster_of.get(f, -1) for f in faces} - {-1})
        if not sources:
            raise UsageError("only faces that are in a cluster can be split off")
        rest = [f for c in sources for f in view.members(c) if f not in set(faces)]
        if not rest:
            raise UsageError("split needs faces to keep: select fewer faces than the whole cluster")
        token = _next_token(view, KIND_SPLIT, "s").split("/")[0]
        facts = [Fact(f, KIND_SPLIT, f"{token}/1", SOURCE_FACE) for f in faces]
        facts += [Fact(f, KIND_SPLIT, f"{token}/0", SOURCE_CLUSTER) for f in rest]
        # A cluster name given to the split-off faces stays with the rest.
        facts += [Fact(f, KIND_NAME, view.labels.cluster_names[f], SOURCE_CLUSTER, active=False)
                  for f in faces if f in view.labels.cluster_names]
        action = _write(library, view, facts)
        _, new_id = move_faces(library, table, faces, None, action, split=True)
    return ActionResult(action, "split", len(faces), cluster_id=new_id, clusters=tuple(sources), size=len(faces))


def ignore_cluster(library: Library, cluster_id: int, undo: bool = False, wait: float = 0.0) -> ActionResult:
    """Strangers: an ignored cluster is never suggested or exported as a person."""
    library.require()
    with library.lock(wait):
        view = build_view(library)
        info = view.cluster(cluster_id)
        members = view.members(cluster_id)
        if undo:
            if not info.ignored:
                raise UsageError(f"cluster {cluster_id} is not ignored")
            tokens = view.labels.tokens[KIND_IGNORE]
            facts = [Fact(f, KIND_IGNORE, tokens[f][0], SOURCE_CLUSTER, active=False) for f in members if f in tokens]
            return ActionResult(_write(library, view, facts), "unignore", len(facts), cluster_id=cluster_id,
                                clusters=(cluster_id,), size=info.size)
        if info.ignored:
            return ActionResult(0, "ignore", 0, cluster_id=cluster_id, clusters=(cluster_id,), size=info.size)
        token = _next_token(view, KIND_IGNORE, "i")
        action = _write(library, view, [Fact(f, KIND_IGNORE, token, SOURCE_CLUSTER) for f in members])
    return ActionResult(action, "ignore", len(members), cluster_id=cluster_id, clusters=(cluster_id,), size=info.size)


def undo(library: Library, wait: float = 0.0) -> ActionResult:
    """Undo the latest action not undone yet: a new action puts back what it changed."""
    library.require()
    with library.lock(wait):
        view = _view(library)
        pending = undoable_actions(view.history)
        if not pending:
            raise NotFound("nothing to undo")
        target = pending[0]
        summary = describe(view.history, target)
        rows = undo_rows(view.history, target, view.state.run)
        library.append_labels(rows)
        undo_moves(library, target)
    return ActionResult(int(rows["action"][0].as_py()) if rows.num_rows else 0, "undo", summary.faces, undone=summary)


def history(library: Library, limit: int = 20) -> list[ActionSummary]:
    """The latest actions that can still be undone, latest first."""
    table = library.read_labels()
    return [describe(table, a) for a in undoable_actions(table)[:limit]]


def describe(table: pa.Table, action: int) -> ActionSummary:
    rows = [(k, v, f, a) for k, v, f, a, n in zip(*(table[c].to_pylist() for c in ("kind", "value", "face_id", "active", "action")))
            if n == action]
    kinds = Counter((k, v if k in (KIND_NAME, KIND_NOT) else "") for k, v, _, active in rows if active)
    # A split marks both sides; the faces it is about are the ones split off (side 1).
    split_off = {f for k, v, f, _ in rows if k == KIND_SPLIT and v.endswith("/1")}
    faces = len(split_off or {f for _, _, f, _ in rows})
    ordered = [kv for kv, _ in kinds.most_common()] or [(rows[0][0], "")] if rows else []
    return ActionSummary(action, tuple(k for k, _ in ordered), tuple(v for _, v in ordered), faces)


def _next_token(view: View, kind: str, prefix: str) -> str:
    used = [v for k, v in zip(view.history["kind"].to_pylist(), view.history["value"].to_pylist()) if k == kind]
    numbers = [int(v[len(prefix):].split("/")[0]) for v in used
               if v.startswith(prefix) and v[len(prefix):].split("/")[0].isdigit()]
    return f"{prefix}{max(numbers, default=0) + 1}"


def _clusters_of(view: View, faces: list[str]) -> tuple[int, ...]:
    cluster_of = view.cluster_of()
    return tuple(sorted({cluster_of[f] for f in faces if cluster_of.get(f, -1) >= 0}))


@dataclass(frozen=True)
class ImportResult:
    """Names read from another tool (XMP face regions) as face labels."""

    action: int  # 0: nothing written
    named: int  # faces that got the name
    unchanged: int  # faces that already had it
    conflicts: tuple[tuple[str, str, str], ...]  # (face_id, name offered, the name the face keeps)


def import_face_names(
    library: Library, names: list[tuple[str, str]], source: str = SOURCE_XMP, wait: float = 0.0
) -> ImportResult:
    """Names for faces from another tool, as one action with `source`. A name the user gave in
    facebatch, to the face or to its cluster, is never overwritten: a different one is reported as
    a conflict instead (`label face` takes the other tool's name, when the user wants it). A later
    facebatch label of the face wins over the imported one (same slot, later row)."""
    library.require()
    with library.lock(wait):
        view = _view(library)
        cluster_of = view.cluster_of()
        live = set(library.read_faces(["face_id"], pending=True)["face_id"].to_pylist())
        facts, unchanged, conflicts = [], 0, []
        for face_id, raw in dict(names).items():
            if face_id not in live:
                raise NotFound(f"no face {face_id} in the library")
            name = clean_name(raw)
            held = view.labels.face_names.get(face_id)
            given = view.confirmed_name(face_id, cluster_of.get(face_id, UNCLUSTERED))  # its own, or its cluster's
            if given == name:
                unchanged += 1
            elif held and held[1] != source:
                conflicts.append((face_id, name, held[0]))
            elif not held and given:
                conflicts.append((face_id, name, given))
            elif name in view.labels.nots.get(face_id, ()):
                conflicts.append((face_id, name, f"not {name}"))
            else:
                facts.append(Fact(face_id, KIND_NAME, name, source))
        action = _write(library, view, facts)
    return ImportResult(action, len(facts), unchanged, tuple(conflicts))
