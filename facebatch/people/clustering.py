"""`facebatch cluster`: every live face into people, with numbers that survive re-runs.

Reads the faces and the user's labels, turns the labels into constraints (people.constraints),
groups the faces (people.grouping), numbers the groups, and writes clusters.parquet,
cluster_pairs.parquet and clusters.json through the Library. This module is their only writer
(`merge` and `split` ask it to renumber). No photo is opened.

Stable numbers: each new cluster is matched to the old cluster it shares most faces with (greedy,
largest overlaps first; a match needs the shared faces to be a majority of one of the two). A
matched cluster keeps the old number; any other cluster gets a number never used before (the
counter only grows), so a number always means one group of faces.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pyarrow as pa

from facebatch.people.constraints import user_constraints
from facebatch.people.embeddings import embedding_space, face_embeddings
from facebatch.people.grouping import Grouping, GroupingSettings, group_faces, normalise_rows
from facebatch.people.labels import replay
from facebatch.schema import CLUSTER_PAIRS_SCHEMA, CLUSTERS_SCHEMA, UNCLUSTERED
from facebatch.store import Library

# Nearest other clusters kept per cluster, for merge suggestions and `clusters --similar`.
PAIRS_PER_CLUSTER = 5


@dataclass
class ClusterState:
    """clusters.json: what the last run did and the counters the next one continues."""

    run: int = 0
    next_id: int = 1  # cluster numbers start at 1: "cluster 0" reads like "none"
    settings: dict[str, Any] = field(default_factory=dict)
    clustered_at: str | None = None
    steps: dict[str, Any] = field(default_factory=dict)

    @staticmethod
    def read(library: Library) -> ClusterState:
        data = library.read_cluster_state()
        return ClusterState(**{k: data[k] for k in ("run", "next_id", "settings", "clustered_at", "steps") if k in data})


# --------------------------------------------------------------------------- reading faces


def box_sides(faces: pa.Table) -> np.ndarray:
    """Shorter side of each face's box, in original pixels."""
    column = faces.column("box").combine_chunks()
    if len(column) == 0:
        return np.zeros(0, np.float32)
    box = np.asarray(column.flatten().to_numpy(zero_copy_only=False), np.float32).reshape(-1, 4)
    return np.minimum(box[:, 2] - box[:, 0], box[:, 3] - box[:, 1])


def photo_codes(faces: pa.Table) -> np.ndarray:
    """An integer per face, the same for faces of one photo."""
    return np.asarray(faces.column("photo_id").combine_chunks().dictionary_encode().indices, np.int64)


# --------------------------------------------------------------------------- stable numbering


def match_clusters(new_labels: np.ndarray, old_ids: np.ndarray, next_id: int) -> tuple[np.ndarray, int, int]:
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
    return ids, next_id, len(used_old)


def cluster_pairs(x: np.ndarray, ids: np.ndarray, candidates: list[tuple[int, int]]) -> pa.Table:
    """Each cluster's PAIRS_PER_CLUSTER nearest other clusters (distance between centres)."""
    member = ids >= 0
    numbers, dense = np.unique(ids[member], return_inverse=True)
    sums = np.zeros((len(numbers), x.shape[1]), np.float64)
    np.add.at(sums, dense.reshape(-1), x[member])
    centres = normalise_rows(sums)
    position = {int(c): i for i, c in enumerate(numbers.tolist())}
    rows: dict[int, list[tuple[float, int]]] = {}
    for a, b in candidates:
        if a not in position or b not in position or a == b:
            continue
        cosine = float(centres[position[a]] @ centres[position[b]])
        distance = float(np.sqrt(max(0.0, 2.0 - 2.0 * cosine)))
        rows.setdefault(a, []).append((distance, b))
        rows.setdefault(b, []).append((distance, a))
    out: dict[str, list] = {"cluster_id": [], "other_id": [], "distance": []}
    for a in sorted(rows):
        for distance, b in sorted(set(rows[a]))[:PAIRS_PER_CLUSTER]:
            out["cluster_id"].append(a)
            out["other_id"].append(b)
            out["distance"].append(distance)
    return pa.table(out).cast(CLUSTER_PAIRS_SCHEMA)


# --------------------------------------------------------------------------- a run


@dataclass
class ClusterSummary:
    faces: int
    clusters: int
    kept: int  # clusters that kept their number from the last run
    new: int
    unclustered: int
    seconds: float
    run: int

    def line(self) -> str:
        return (
            f"{self.faces} faces: {self.clusters} clusters ({self.kept} kept their number, {self.new} new), "
            f"{self.unclustered} unclustered; run {self.run}, {self.seconds:.1f}s"
        )


def cluster_library(library: Library, settings: GroupingSettings) -> ClusterSummary:
    """Cluster every live face under the user's constraints; keep the numbers of unchanged groups."""
    library.require()
    started = time.monotonic()
    with library.lock():
        faces = library.read_faces(["face_id", "photo_id", "box", "embedding", "quality"])
        face_ids = np.array(faces.column("face_id").to_pylist(), dtype=object)
        x = face_embeddings(library, faces)
        sides, photo, quality = box_sides(faces), photo_codes(faces), faces["quality"].to_numpy()
        del faces
        state = ClusterState.read(library)
        old = library.read_clusters()
        run = state.run + 1
        next_id = max(state.next_id, int(max(old.column("cluster_id").to_pylist(), default=0)) + 1)
        labels = replay(library.read_labels())
        used = settings.on_scale(library.scale())
        grouping = group_faces(x, sides, photo, used, user_constraints(labels, face_ids.tolist()), quality)

        old_id_of = dict(zip(old.column("face_id").to_pylist(), old.column("cluster_id").to_pylist()))
        old_first = dict(zip(old.column("face_id").to_pylist(), old.column("first_run").to_pylist()))
        first_run = np.array([old_first.get(f, run) for f in face_ids], np.int64)
        old_ids = np.array([old_id_of.get(f, UNCLUSTERED) for f in face_ids], np.int64)
        ids, next_id, kept = match_clusters(grouping.labels, old_ids, next_id)
        table = _clusters_table(face_ids, ids, grouping, first_run)
        pairs = cluster_pairs(x, ids, _numbered_pairs(grouping, ids))
        new_state = ClusterState(
            run=run,
            next_id=next_id,
            # As given (None: the model's), and the distances they came to on the model's scale.
            settings={**asdict(settings), "embedding_space": embedding_space(library),
                      "used": {k: getattr(used, k) for k in ("member_distance", "merge_distance", "member_growth")}},
            clustered_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            steps=grouping.steps,
        )
        library.write_clustering(table, pairs, asdict(new_state))
    n_clusters = len(set(ids[ids >= 0].tolist()))
    return ClusterSummary(
        faces=len(face_ids),
        clusters=n_clusters,
        kept=kept,
        new=n_clusters - kept,
        unclustered=int((ids < 0).sum()),
        seconds=time.monotonic() - started,
        run=run,
    )


def _clusters_table(face_ids: np.ndarray, ids: np.ndarray, grouping: Grouping, first_run: np.ndarray) -> pa.Table:
    distance = np.where(ids >= 0, grouping.distance, np.nan)
    return pa.table(
        {
            "face_id": pa.array(face_ids.tolist(), pa.string()),
            "cluster_id": pa.array(ids, pa.int64()),
            "mode": pa.array(grouping.modes, pa.int64()),
            "distance": pa.array(distance.astype(np.float32), pa.float32(), mask=np.isnan(distance)),
            "first_run": pa.array(first_run, pa.int64()),
            "core": pa.array(grouping.core & (ids >= 0), pa.bool_()),
        }
    ).cast(CLUSTERS_SCHEMA)


def _numbered_pairs(grouping: Grouping, ids: np.ndarray) -> list[tuple[int, int]]:
    """The grouping's neighbouring groups, as cluster numbers."""
    number_of: dict[int, int] = {}
    for label, number in zip(grouping.labels.tolist(), ids.tolist()):
        if label >= 0:
            number_of[label] = number
    return [(number_of[a], number_of[b]) for a, b in grouping.neighbours if a in number_of and b in number_of]


# --------------------------------------------------------------------------- moves between runs

# Moves kept for undo (a re-cluster starts afresh: its numbers already reflect every label).
MOVES_KEPT = 50


def move_faces(
    library: Library, table: pa.Table, face_ids: list[str], target: int | None, action: int, split: bool = False
) -> tuple[pa.Table, int]:
    """Put faces into cluster `target` (None: a new number; UNCLUSTERED: out of every cluster) now,
    without a re-cluster, and remember where they were so that undoing `action` puts them back.
    Call under the lock."""
    state = ClusterState.read(library)
    if target is None:
        target = max(state.next_id, int(max(table["cluster_id"].to_pylist(), default=0)) + 1)
        state.next_id = target + 1
    split = split or target == UNCLUSTERED
    chosen = set(face_ids)
    ids = table["cluster_id"].to_pylist()
    modes = table["mode"].to_pylist()
    # A split-off group is a new centre; a merge keeps the modes; a face taken out has none.
    new_mode = UNCLUSTERED if target == UNCLUSTERED else max(modes, default=-1) + 1
    before = []
    for i, face_id in enumerate(table["face_id"].to_pylist()):
        if face_id in chosen:
            before.append((face_id, ids[i], modes[i]))
            ids[i] = target
            if split:
                modes[i] = new_mode
    table = table.set_column(table.schema.get_field_index("cluster_id"), "cluster_id", pa.array(ids, pa.int64()))
    table = table.set_column(table.schema.get_field_index("mode"), "mode", pa.array(modes, pa.int64()))
    moves = [m for m in library.read_cluster_state().get("moves", []) if m["run"] == state.run][-MOVES_KEPT + 1:]
    moves.append({"action": action, "run": state.run, "faces": [f for f, _, _ in before],
                  "before": [c for _, c, _ in before], "modes": [m for _, _, m in before], "after": target})
    library.write_clustering(table, None, {**asdict(state), "moves": moves})
    return table, target


def undo_moves(library: Library, action: int) -> int:
    """Put back the faces that `action` moved, if no re-cluster came since. Returns faces moved."""
    data = library.read_cluster_state()
    moves = data.get("moves", [])
    undone = [m for m in moves if m["action"] == action and m["run"] == data.get("run")]
    if not undone:
        return 0
    table = library.read_clusters()
    ids, modes = table["cluster_id"].to_pylist(), table["mode"].to_pylist()
    index = {f: i for i, f in enumerate(table["face_id"].to_pylist())}
    moved = 0
    for move in undone:
        # A move recorded before clusters had modes: a face's mode was its cluster.
        for face_id, before, mode in zip(move["faces"], move["before"], move.get("modes", move["before"])):
            i = index.get(face_id)
            if i is not None and ids[i] == move["after"]:
                ids[i], modes[i] = before, mode
                moved += 1
    table = table.set_column(table.schema.get_field_index("cluster_id"), "cluster_id", pa.array(ids, pa.int64()))
    table = table.set_column(table.schema.get_field_index("mode"), "mode", pa.array(modes, pa.int64()))
    library.write_clustering(table, None, {**data, "moves": [m for m in moves if m["action"] != action]})
    return moved


def read_assignments(library: Library) -> dict[str, int]:
    """face_id -> cluster_id (-1 unclustered) for every live face; faces scanned since the last
    `facebatch cluster` are -1 too. Used by `facebatch eval clusters`."""
    clusters = library.read_clusters()
    assigned = dict(zip(clusters.column("face_id").to_pylist(), clusters.column("cluster_id").to_pylist()))
    live = library.read_faces(["face_id"]).column("face_id").to_pylist()
    return {face_id: int(assigned.get(face_id, UNCLUSTERED)) for face_id in live}
