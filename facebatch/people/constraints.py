"""The user's labels as clustering constraints (people.grouping.Constraints).

Each face can carry keys: its own name (`name:Alice`, hard), the name its cluster was given
(`name:Alice`, soft), a merge token (`merge:m3`, soft) and a split side (`split:s1/1` for the
faces split off, hard; `split:s1/0` for the rest, soft). Keys that meet on one face are one person
(a merge of Alice's cluster with an unnamed one makes `merge:m3` and `name:Alice` one user
group). Two user groups holding different names, or the two sides of one split, are apart; a
face "not Alice" is apart from Alice's user group.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from facebatch.people.grouping import Constraints
from facebatch.people.labels import KIND_MERGE, KIND_SPLIT, LabelState


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, key: str) -> str:
        self.parent.setdefault(key, key)
        while self.parent[key] != key:
            self.parent[key] = self.parent[self.parent[key]]
            key = self.parent[key]
        return key

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def face_keys(state: LabelState, face_id: str) -> tuple[list[str], list[str]]:
    """(hard keys, soft keys) of one face."""
    hard, soft = [], []
    own = state.face_names.get(face_id)
    if own:
        hard.append(f"name:{own[0]}")
    elif face_id in state.cluster_names:
        soft.append(f"name:{state.cluster_names[face_id]}")
    merge = state.tokens[KIND_MERGE].get(face_id)
    if merge:
        soft.append(f"merge:{merge[0]}")
    split = state.tokens[KIND_SPLIT].get(face_id)
    if split:
        (hard if split[0].endswith("/1") else soft).append(f"split:{split[0]}")
    return hard, soft


def user_constraints(state: LabelState, face_ids: Sequence[str]) -> Constraints:
    n = len(face_ids)
    keys = [face_keys(state, f) for f in face_ids]
    union = _UnionFind()
    for hard, soft in keys:
        every = hard + soft
        for key in every[1:]:
            union.union(every[0], key)
    roots = sorted({union.find(k) for hard, soft in keys for k in hard + soft})
    number = {root: i for i, root in enumerate(roots)}
    group = np.full(n, -1, np.int64)
    soft_group = np.full(n, -1, np.int64)
    for i, (hard, soft) in enumerate(keys):
        if hard:
            group[i] = number[union.find(hard[0])]
        if soft:
            soft_group[i] = number[union.find(soft[0])]
    # What each user group is: its names and split sides.
    names: dict[int, set[str]] = {}
    sides: dict[int, set[str]] = {}
    for key in union.parent:
        g = number[union.find(key)]
        kind, _, value = key.partition(":")
        if kind == "name":
            names.setdefault(g, set()).add(value)
        elif kind == "split":
            sides.setdefault(g, set()).add(value)
    apart = set()
    named = sorted(names)
    for i, a in enumerate(named):
        for b in named[i + 1:]:
            if names[a] != names[b]:
                apart.add((a, b))
    by_token: dict[str, dict[str, int]] = {}
    for g, values in sides.items():
        for value in values:
            token, _, side = value.partition("/")
            by_token.setdefault(token, {})[side] = g
    for side_of in by_token.values():
        if len(side_of) == 2 and side_of["0"] != side_of["1"]:
            apart.add((side_of["0"], side_of["1"]))
    group_of_name = {value: g for g, values in names.items() for value in values}
    not_group = {
        (i, group_of_name[name])
        for i, face_id in enumerate(face_ids)
        for name in state.nots.get(face_id, ())
        if name in group_of_name
    }
    return Constraints(group, soft_group, frozenset(apart), frozenset(not_group))
