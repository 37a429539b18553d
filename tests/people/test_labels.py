"""people.labels: the append-only history, the state it adds up to, undo; and people.constraints."""

from __future__ import annotations

import numpy as np
import pytest

from facebatch.errors import UsageError
from facebatch.people.constraints import user_constraints
from facebatch.people.labels import (
    KIND_MERGE,
    KIND_NAME,
    KIND_NOT,
    KIND_SPLIT,
    SOURCE_CLUSTER,
    SOURCE_FACE,
    Fact,
    action_rows,
    clean_name,
    replay,
    undo_rows,
    undoable_actions,
)
from facebatch.schema import LABELS_SCHEMA

import pyarrow as pa


def history_of(*actions: list[Fact]) -> pa.Table:
    table = LABELS_SCHEMA.empty_table()
    for facts in actions:
        table = pa.concat_tables([table, action_rows(table, facts, run=1)])
    return table


def test_names_are_cleaned():
    assert clean_name("  Zoë   van der  Berg ") == "Zoë van der Berg"
    assert clean_name("José") == clean_name("Jose\u0301")  # NFC: one spelling
    for bad, message in (("   ", "a name cannot be empty"), ("a\tb\x00", "control characters"),
                         ("x" * 101, "at most 100 characters")):
        with pytest.raises(UsageError, match=message):
            clean_name(bad)


def test_the_latest_row_of_a_slot_wins_and_a_face_name_outranks_a_cluster_name():
    table = history_of(
        [Fact("a", KIND_NAME, "Ann", SOURCE_CLUSTER), Fact("b", KIND_NAME, "Ann", SOURCE_CLUSTER)],
        [Fact("a", KIND_NAME, "Anne", SOURCE_CLUSTER)],
        [Fact("b", KIND_NAME, "Bob", SOURCE_FACE)],
        [Fact("c", KIND_NOT, "Ann"), Fact("c", KIND_NOT, "Bob")],
        [Fact("c", KIND_NOT, "Bob", active=False)],
    )
    state = replay(table)
    assert state.name_of("a") == "Anne" and state.name_of("b") == "Bob"
    assert state.cluster_names["b"] == "Ann"  # kept under the face's own name, which wins
    assert state.nots["c"] == {"Ann"} and state.actions == 5
    assert table["action"].to_pylist() == [1, 1, 2, 3, 4, 4, 5]


def test_a_repeated_fact_writes_nothing():
    table = history_of([Fact("a", KIND_NAME, "Ann")])
    assert action_rows(table, [Fact("a", KIND_NAME, "Ann")], run=1).num_rows == 0


def test_a_not_beats_a_cluster_name_of_that_name():
    state = replay(history_of([Fact("a", KIND_NAME, "Ann", SOURCE_CLUSTER)], [Fact("a", KIND_NOT, "Ann")]))
    assert state.name_of("a") is None


def test_undo_puts_back_what_the_slots_held_and_is_itself_history():
    table = history_of([Fact("a", KIND_NAME, "Ann")], [Fact("a", KIND_NAME, "Anne"), Fact("b", KIND_NAME, "Anne")])
    assert undoable_actions(table) == [2, 1]
    table = pa.concat_tables([table, undo_rows(table, 2, run=1)])
    state = replay(table)
    assert state.name_of("a") == "Ann" and state.name_of("b") is None
    assert undoable_actions(table) == [1]  # the undo itself is not undone by the next undo
    table = pa.concat_tables([table, undo_rows(table, 1, run=1)])
    assert replay(table).name_of("a") is None and table.num_rows == 6


def test_constraints_from_labels():
    table = history_of(
        [Fact("a1", KIND_NAME, "Ann", SOURCE_CLUSTER), Fact("a2", KIND_NAME, "Ann", SOURCE_CLUSTER)],
        [Fact("b1", KIND_NAME, "Bob")],
        [Fact("a2", KIND_MERGE, "m1", SOURCE_CLUSTER), Fact("x1", KIND_MERGE, "m1", SOURCE_CLUSTER)],
        [Fact("s1", KIND_SPLIT, "s1/1"), Fact("s2", KIND_SPLIT, "s1/0", SOURCE_CLUSTER)],
        [Fact("n1", KIND_NOT, "Ann")],
    )
    faces = ["a1", "a2", "b1", "x1", "s1", "s2", "n1", "free"]
    c = user_constraints(replay(table), faces)
    g = dict(zip(faces, c.group.tolist()))
    assert g["a1"] == g["a2"] == g["x1"]  # the merge carries Ann's name to x1
    assert len({g["a1"], g["b1"], g["s1"], g["s2"]}) == 4 and g["free"] == -1 and g["n1"] == -1
    assert c.groups_apart(g["a1"], g["b1"]) and c.groups_apart(g["s1"], g["s2"])
    assert not c.groups_apart(g["a1"], g["s1"])
    assert (faces.index("n1"), g["a1"]) in c.not_group
    assert dict(zip(faces, c.hard.tolist())) == {"a1": False, "a2": False, "b1": True, "x1": False, "s1": True,
                                                 "s2": False, "n1": False, "free": False}
    assert np.flatnonzero(c.merged).tolist() == [1, 3, 4, 5]
