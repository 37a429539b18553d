"""The user's labels as clustering constraints (people.grouping.Constraints).

Each face can carry keys: a name (`name:Alice`, its own or its cluster's), a merge token
(`merge:m3`) and a split side (`split:s1/1` for the faces split off, `split:s1/0` for the rest).
Keys that meet on one face are one person (a merge of Alice's cluster with an unnamed one makes
`merge:m3` and `name:Alice` one user group). How firmly a face holds to its group (hard, merged
or by name only) is in people.grouping.Constraints. Two user groups holding different names, or
the two sides of one split, are apart; a face "not Alice" is apart from Alice's user group.
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


def face_keys(state: LabelState, face_id: str) -> tuple[list[str], bool, bool]:
    """(keys, hard, merged) of one face: its user-group keys, whether the user named or split off
    this very face, and whether it is in a merge or split the user made."""
    keys, hard, merged = [], False, False
    own = state.face_names.get(face_id)
    if own:
        keys.append(f"name:{own[0]}")
        hard = True
    elif face_id in state.cluster_names:
        keys.append(f"name:{state.cluster_names[face_id]}")
    merge = state.tokens[KIND_MERGE].get(face_id)
    if merge:
        keys.append(f"merge:{merge[0]}")
        merged = True
    split = state.tokens[KIND_SPLIT].get(face_id)
    if split:
        keys.append(f"split:{split[0]}")
        hard = hard or split[0].endswith("/1")
        merged = True
    return keys, hard, merged


def user_constraints(state: LabelState, face_ids: Sequence[str]) -> Constraints:
    n = len(face_ids)
    keys = [face_keys(state, f) for f in face_ids]
    union = _UnionFind()
    for every, _, _ in keys:
        for key in every[1:]:
            union.union(every[0], key)
    roots = sorted({union.find(k) for every, _, _ in keys for k in every})
    number = {root: i for i, root in enumerate(roots)}
    group = np.full(n, -1, np.int64)
    hard = np.zeros(n, bool)
    merged = np.zeros(n, bool)
    for i, (every, is_hard, is_merged) in enumerate(keys):
        if every:
            group[i] = number[union.find(every[0])]
            hard[i], merged[i] = is_hard, is_merged
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
    return Constraints(group, hard, merged, frozenset(apart), frozenset(not_group))
