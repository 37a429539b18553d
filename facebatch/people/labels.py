"""What the user said about faces: an append-only history of facts, and the state it adds up to.

    LIBRARY/labels.parquet   action, face_id, kind, value, active, source, run, created_at, undoes

Every statement is about *faces*, never about cluster numbers (derived state a re-cluster may
change). A fact fills a slot of a face; the latest row of a slot wins, and `active = false`
empties it. Rows are only ever added: undo is a new action that puts back what the slots held
before the action it undoes, so nothing the user said is ever lost.

Slots:
- `name`, source `face` / `xmp`: the user (or a sidecar written by another tool) named this face.
- `name`, source `cluster`: the face was a member of a cluster when the user named the cluster.
  It outranks nothing: a face-level name wins, and it only counts while the face is still in a
  cluster of that person (an intruder that a better clustering moves out loses it).
- `not`, one slot per name: "this face is not VALUE", kept for good (a cannot-link).
- `merge`: a group token (m1, m2...) shared by faces the user said are one person.
- `ignore`: a group token (i1...) shared by the faces of a cluster of strangers.
- `split`: token/side (s1/0, s1/1): the two sides were split apart by the user: each side is
  one person, and the sides are two people.
Merge, ignore and split groups attach to clusters by majority at the group's clustering `run`
(see `group_clusters`), so new photos that join a cluster later do not dilute the decision.
"""

from __future__ import annotations

import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa

from facebatch.errors import UsageError
from facebatch.schema import LABELS_SCHEMA, UNCLUSTERED

KIND_NAME, KIND_NOT, KIND_MERGE, KIND_IGNORE, KIND_SPLIT = "name", "not", "merge", "ignore", "split"
SOURCE_CLUSTER, SOURCE_FACE, SOURCE_XMP = "cluster", "face", "xmp"
MAX_NAME_LENGTH = 100


def clean_name(name: str) -> str:
    """A person's name as stored: NFC, inner whitespace collapsed. Any letters, spaces allowed."""
    cleaned = " ".join(unicodedata.normalize("NFC", name).split())
    if not cleaned:
        raise UsageError("a name cannot be empty")
    if len(cleaned) > MAX_NAME_LENGTH:
        raise UsageError(f"a name can be at most {MAX_NAME_LENGTH} characters, got {len(cleaned)}")
    if any(unicodedata.category(c).startswith("C") for c in cleaned):
        raise UsageError(f"a name cannot contain control characters: {cleaned!r}")
    return cleaned


@dataclass(frozen=True)
class Fact:
    face_id: str
    kind: str
    value: str
    source: str = SOURCE_FACE
    active: bool = True

    @property
    def slot(self) -> tuple[str, str, str]:
        return slot_of(self.face_id, self.kind, self.value, self.source)


def slot_of(face_id: str, kind: str, value: str, source: str) -> tuple[str, str, str]:
    if kind == KIND_NAME:
        return (face_id, kind, SOURCE_CLUSTER if source == SOURCE_CLUSTER else SOURCE_FACE)
    if kind == KIND_NOT:
        return (face_id, kind, value)
    return (face_id, kind, "")


# --------------------------------------------------------------------------- the state


@dataclass
class LabelState:
    """What the history adds up to now."""

    face_names: dict[str, tuple[str, str]] = field(default_factory=dict)  # face -> (name, source)
    cluster_names: dict[str, str] = field(default_factory=dict)  # face -> name given to its cluster
    nots: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    tokens: dict[str, dict[str, tuple[str, int]]] = field(default_factory=lambda: defaultdict(dict))
    # ^ kind (merge, ignore, split) -> face -> (token, run)
    actions: int = 0  # the last action number in the history

    def name_of(self, face_id: str) -> str | None:
        """The face's own name, else its cluster name (the caller checks that the cluster agrees)."""
        own = self.face_names.get(face_id)
        return own[0] if own else self.cluster_names.get(face_id)

    def names(self) -> list[str]:
        return sorted(set(n for n, _ in self.face_names.values()) | set(self.cluster_names.values()))


def replay(history: pa.Table) -> LabelState:
    """The state after every row of the history, in order (latest row of a slot wins)."""
    latest: dict[tuple[str, str, str], tuple[str, bool, str, int]] = {}
    columns = [history[c].to_pylist() for c in ("face_id", "kind", "value", "source", "active", "run")]
    for face_id, kind, value, source, active, run in zip(*columns):
        latest[slot_of(face_id, kind, value, source)] = (value, active, source, run)
    state = LabelState(actions=max(history["action"].to_pylist(), default=0))
    for (face_id, kind, level), (value, active, source, run) in latest.items():
        if not active:
            continue
        if kind == KIND_NAME and level == SOURCE_CLUSTER:
            state.cluster_names[face_id] = value
        elif kind == KIND_NAME:
            state.face_names[face_id] = (value, source)
        elif kind == KIND_NOT:
            state.nots[face_id].add(value)
        else:
            state.tokens[kind][face_id] = (value, run)
    # A face's own "not X" beats a cluster name X it got (the user looked at this face).
    for face_id, names in state.nots.items():
        if state.cluster_names.get(face_id) in names:
            del state.cluster_names[face_id]
    return state


def action_rows(history: pa.Table, facts: Iterable[Fact], run: int, undoes: int | None = None) -> pa.Table:
    """The rows of one new action: only the facts that change a slot (a repeat changes nothing)."""
    current = _current_slots(history)
    rows = []
    for fact in facts:
        held = current.get(fact.slot)
        now_value = (fact.value, fact.source) if fact.active else None
        if held == now_value:
            continue
        current[fact.slot] = now_value
        rows.append(fact)
    return _table(rows, history_action(history) + 1, run, undoes)


def history_action(history: pa.Table) -> int:
    return max(history["action"].to_pylist(), default=0)


def _current_slots(history: pa.Table) -> dict[tuple[str, str, str], tuple[str, str] | None]:
    current: dict[tuple[str, str, str], tuple[str, str] | None] = {}
    columns = [history[c].to_pylist() for c in ("face_id", "kind", "value", "source", "active")]
    for face_id, kind, value, source, active in zip(*columns):
        current[slot_of(face_id, kind, value, source)] = (value, source) if active else None
    return current


def _table(facts: Sequence[Fact], action: int, run: int, undoes: int | None) -> pa.Table:
    n = len(facts)
    now = datetime.now(timezone.utc)
    return pa.table(
        {
            "action": pa.array([action] * n, pa.int64()),
            "face_id": pa.array([f.face_id for f in facts], pa.string()),
            "kind": pa.array([f.kind for f in facts], pa.string()),
            "value": pa.array([f.value for f in facts], pa.string()),
            "active": pa.array([f.active for f in facts], pa.bool_()),
            "source": pa.array([f.source for f in facts], pa.string()),
            "run": pa.array([run] * n, pa.int64()),
            "created_at": pa.array([now] * n, pa.timestamp("ms", tz="UTC")),
            "undoes": pa.array([undoes] * n, pa.int64()),
        }
    ).cast(LABELS_SCHEMA)


def undoable_actions(history: pa.Table) -> list[int]:
    """Actions that can still be undone, latest first: not undone, not themselves an undo."""
    actions = history["action"].to_pylist()
    undoes = history["undoes"].to_pylist()
    undone = {u for u in undoes if u is not None}
    is_undo = {a for a, u in zip(actions, undoes) if u is not None}
    return sorted(set(actions) - undone - is_undo, reverse=True)


def undo_rows(history: pa.Table, action: int, run: int) -> pa.Table:
    """Rows of a new action that put back what each slot touched by `action` held before it."""
    before: dict[tuple[str, str, str], Fact | None] = {}
    touched: list[tuple[str, str, str]] = []
    columns = [history[c].to_pylist() for c in ("action", "face_id", "kind", "value", "source", "active")]
    for row_action, face_id, kind, value, source, active in zip(*columns):
        key = slot_of(face_id, kind, value, source)
        if row_action < action:
            before[key] = Fact(face_id, kind, value, source, active) if active else None
        elif row_action == action:
            touched.append(key)
    facts = []
    for key in dict.fromkeys(touched):
        face_id, kind, level = key
        previous = before.get(key)
        if previous is not None:
            facts.append(previous)
        else:
            value = level if kind == KIND_NOT else ""
            source = SOURCE_CLUSTER if (kind == KIND_NAME and level == SOURCE_CLUSTER) else SOURCE_FACE
            facts.append(Fact(face_id, kind, value, source, active=False))
    return _table(facts, history_action(history) + 1, run, undoes=action)


# --------------------------------------------------------------------------- groups (merge, ignore, split)


def group_clusters(
    tokens: dict[str, tuple[str, int]], face_ids: np.ndarray, cluster_ids: np.ndarray, first_run: np.ndarray
) -> dict[str, set[int]]:
    """Token -> the clusters that take part in that merge/ignore/split group.

    A cluster takes part when the group's faces are more than half of its faces that existed at
    the group's run (so a cluster that grew with new photos stays in, and a cluster that got a
    few of the group's faces by chance stays out).
    """
    if not tokens:
        return {}
    index = {face_id: i for i, face_id in enumerate(face_ids.tolist())}
    token_run: dict[str, int] = {}
    tagged: dict[str, Counter] = defaultdict(Counter)
    for face_id, (token, run) in tokens.items():
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
