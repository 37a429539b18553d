"""`facebatch train`: an adapter learned from the user's names, checked before it is used.

It is stored as people.stored_adapter reads it (LIBRARY/adapter/: the weights, and adapter.json
with what it was trained on: the model, the names, their face counts, the labels history's last
action, the loss and settings, and the check's figures).

The adapter (people.training.ResidualAdapter) maps the library model's stored embeddings to new
unit vectors; when it is active, people.embeddings hands its output to clustering, suggestions, export,
the report and `identify`. The scan tables and the labels are never touched: clusters.json records
the space its clusters were made in (`embedding_space`), and switching the adapter on or off
re-clusters the library; tags are derived on every read.

What `train` learns from: every confirmed face (named face by face, or in a cluster the user
named) is a face of its person; an unnamed face with a "not" label, or in a photo with a
confirmed face, is not that person; background faces, unnamed and farther from every named
person's centre than the model's distance at confidence 0.03, are nobody named.

The check, before anything is activated, in FOLDS folds. Each fold holds out a third of the
people with at least MIN_FACES confirmed faces whole (people its adapter never sees: strangers
with a known answer; when at least HOLD_OUT_MIN_PEOPLE such people are named), a quarter of every
other such person's faces, and half of the background faces; an adapter is trained on the rest.
Both spaces, plain and adapted, are measured on what was held back with the product's own rules
(the nearest person's centre, the calibrated cut, the last clustering run's settings): suggestion
precision and recall on the held-back faces, pairwise F of clustering them and the held-out
people among the other faces, and false suggestions on the held-out people and background faces.
Counts are summed over the folds (F averaged). An adapter that loses on any figure, or gains on
none, is not activated. One that passes is trained again on every name with the same settings
and activated: the check measures the recipe, and its figures are stored with the adapter.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timezone
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np

from facebatch.errors import LibraryMissing
from facebatch.files import atomic_write_json
from facebatch.models.scale import DistanceScale
from facebatch.people.embeddings import embeddings_matrix
from facebatch.people.stored_adapter import (METADATA_FILE, PLAIN_SPACE, embedding_space, model_of_space, read_metadata,
                                             store_adapter)
from facebatch.schema import UNCLUSTERED
from facebatch.store import Library

if TYPE_CHECKING:  # torch is imported only by the commands that train or load an adapter
    from facebatch.people.clustering import ClusterSummary
    from facebatch.people.grouping import GroupingSettings
    from facebatch.people.training import Fitted, TrainingSet, TrainingSettings


MIN_FACES = 4  # a person needs this many confirmed faces to have some held back
MIN_PEOPLE = 2  # people with MIN_FACES faces needed to train
HOLD_BACK_SHARE = 0.25  # of each person's faces
FOLDS = 3  # each holds out a third of the people whole (when HOLD_OUT_MIN_PEOPLE are named)
HOLD_OUT_MIN_PEOPLE = 4
MAX_BACKGROUND = 20_000  # background faces used (a sample of a huge library's)
MAX_CHECK_FACES = 20_000  # faces clustered in the check
BLOCK = 65_536  # faces compared with the centres at once


# --------------------------------------------------------------------------- what the library knows


@dataclass
class Examples:
    """Every live face with what the user said about it, in the plain space."""

    face_ids: list[str]
    x: np.ndarray  # plain embeddings
    name: np.ndarray  # confirmed name, "" when none
    photo: np.ndarray  # photo code
    sides: np.ndarray
    nots: dict[int, set[str]]  # unnamed face row -> names it is not (its labels and its photo's faces)
    label_action: int  # the history's last action: the labels this was read at
    scale: DistanceScale  # of the library's model: what "named" and "background" mean

    @cached_property
    def background(self) -> np.ndarray:
        return background_rows(self)


def library_examples(library: Library) -> Examples:
    """The library's faces with their confirmed names and "not" labels (clusters needed)."""
    from facebatch.people.clustering import box_sides, photo_codes
    from facebatch.people.view import build_view

    table = library.require_clusters()
    faces = library.read_faces(["face_id", "photo_id", "box", "embedding"])
    face_ids = faces["face_id"].to_pylist()
    view = build_view(library, table)
    cluster_of = view.cluster_of()
    name = np.array([view.confirmed_name(f, cluster_of.get(f, UNCLUSTERED)) or "" for f in face_ids], dtype=object)
    said_not = {i: set(view.labels.nots[f]) for i, f in enumerate(face_ids) if view.labels.nots.get(f)}
    return build_examples(face_ids, embeddings_matrix(faces), name, photo_codes(faces), box_sides(faces), said_not,
                          view.scale, view.labels.actions)


def build_examples(face_ids: list[str], x: np.ndarray, name: np.ndarray, photo: np.ndarray, sides: np.ndarray,
                   said_not: dict[int, set[str]], scale: DistanceScale, label_action: int = 0) -> Examples:
    """Examples from confirmed names ("" for none) and "not" labels by row; an unnamed face in a
    photo with a confirmed face is not that person either."""
    nots = {i: set(names) for i, names in said_not.items() if not name[i]}
    named_in_photo: dict[int, set[str]] = {}
    for i in np.flatnonzero(name != "").tolist():
        named_in_photo.setdefault(int(photo[i]), set()).add(name[i])
    for i in np.flatnonzero((name == "") & np.isin(photo, list(named_in_photo))).tolist():
        nots.setdefault(i, set()).update(named_in_photo[int(photo[i])])
    return Examples(face_ids, np.asarray(x, np.float32), name, photo, sides, nots, label_action, scale)


# --------------------------------------------------------------------------- the check


@dataclass(frozen=True)
class Figures:
    """One space measured on what the check held back."""

    suggested: int  # held-back faces given a name
    right: int  # ... the right one
    held_back: int  # faces held back of the people trained on
    cluster_f: float  # pairwise F of the held-back faces, clustered among the library's others
    cluster_f_unseen: float  # the same for the faces of the people held out whole
    false_suggestions: int  # held-out people's and background faces given a name
    strangers: int  # held-out people's and background faces

    @property
    def precision(self) -> float:
        return self.right / self.suggested if self.suggested else 1.0

    @property
    def recall(self) -> float:
        return self.right / self.held_back if self.held_back else 1.0

    @staticmethod
    def pooled(folds: list[Figures]) -> Figures:
        """Counts summed over the folds, clustering F averaged."""
        def total(name: str) -> int:
            return sum(getattr(f, name) for f in folds)

        def mean(name: str) -> float:
            return float(np.mean([getattr(f, name) for f in folds]))

        return Figures(total("suggested"), total("right"), total("held_back"), mean("cluster_f"),
                       mean("cluster_f_unseen"), total("false_suggestions"), total("strangers"))


# (label, how to read it from Figures, higher is better)
CHECKS = (
    ("suggestion precision", lambda f: f.precision, True),
    ("suggestion recall", lambda f: f.recall, True),
    # Counted, not only as a share: more suggestions at a better precision can still name more
    # faces wrongly, and a wrong name costs more than a missing one.
    ("wrong names", lambda f: f.suggested - f.right, False),
    ("clustering F", lambda f: f.cluster_f, True),
    ("clustering F of unseen people", lambda f: f.cluster_f_unseen, True),
    ("false suggestions", lambda f: f.false_suggestions, False),
)


def passes(losses: list[str], gains: list[str]) -> bool:
    """The rule: an adapter is activated when it loses on nothing and gains on something."""
    return not losses and bool(gains)


def compare(plain: Figures, adapted: Figures) -> tuple[list[str], list[str]]:
    """(figures the adapter loses on, figures it gains on)."""
    losses, gains = [], []
    for label, value, higher in CHECKS:
        a, p = value(adapted), value(plain)
        if abs(a - p) <= 1e-9:
            continue
        (gains if (a > p) == higher else losses).append(label)
    return losses, gains


@dataclass
class Split:
    """One fold of the check."""

    train: np.ndarray  # rows of named faces trained on
    held_back: np.ndarray  # rows of named faces held back (their people are trained on)
    held_out: np.ndarray  # rows of the people held out whole
    background_train: np.ndarray
    background_check: np.ndarray


def split_examples(ex: Examples, seed: int) -> list[Split]:
    """FOLDS folds: each holds out a different third of the people with MIN_FACES faces or more
    (none when fewer than HOLD_OUT_MIN_PEOPLE of them), a quarter of every other such person's
    faces, and half of the background faces."""
    rng = np.random.default_rng(seed)
    people, counts = np.unique(ex.name[ex.name != ""], return_counts=True)
    big = rng.permutation(people[counts >= MIN_FACES])
    if len(big) >= HOLD_OUT_MIN_PEOPLE:
        held_out_by_fold = [set(big[k::FOLDS].tolist()) for k in range(FOLDS)]
    else:
        held_out_by_fold = [set()]
    background = ex.background
    folds = []
    for held_out_people in held_out_by_fold:
        train, held_back, held_out = [], [], []
        for person in people.tolist():
            rows = np.flatnonzero(ex.name == person)
            if person in held_out_people:
                held_out.append(rows)
            elif len(rows) >= MIN_FACES:
                back = rng.choice(rows, max(1, round(HOLD_BACK_SHARE * len(rows))), replace=False)
                held_back.append(back)
                train.append(np.setdiff1d(rows, back))
            else:
                train.append(rows)
        shuffled = rng.permutation(background)
        folds.append(Split(_rows(train), _rows(held_back), _rows(held_out), shuffled[: len(shuffled) // 2],
                           shuffled[len(shuffled) // 2:]))
    return folds


def _rows(parts: list[np.ndarray]) -> np.ndarray:
    return np.sort(np.concatenate(parts)).astype(np.int64) if parts else np.zeros(0, np.int64)


def background_rows(ex: Examples) -> np.ndarray:
    """Unnamed faces farther than the background distance from every named person (plain space),
    without a "not" label, a sample of MAX_BACKGROUND at most."""
    centres, _ = centres_of(ex.x, ex.name, np.flatnonzero(ex.name != ""))
    unnamed = np.flatnonzero(ex.name == "")
    unnamed = unnamed[~np.isin(unnamed, list(ex.nots))]
    return _sample(unnamed[nearest(ex.x[unnamed], centres)[1] > ex.scale.background_distance], MAX_BACKGROUND)


def _sample(rows: np.ndarray, most: int) -> np.ndarray:
    return np.sort(np.random.default_rng(0).choice(rows, most, replace=False)) if len(rows) > most else rows


def centres_of(x: np.ndarray, name: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """(people, d) unit centres of the named `rows`, and the names in that order."""
    people = sorted(set(name[rows].tolist()))
    index = {p: k for k, p in enumerate(people)}
    sums = np.zeros((len(people), x.shape[1]), np.float64)
    np.add.at(sums, [index[n] for n in name[rows]], x[rows])
    return sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12), people


def nearest(x: np.ndarray, centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's nearest centre and the distance to it (inf when there is none)."""
    if len(centres) == 0 or len(x) == 0:
        return np.full(len(x), -1, np.int64), np.full(len(x), np.inf)
    out_j, out_d = np.empty(len(x), np.int64), np.empty(len(x))
    for start in range(0, len(x), BLOCK):
        cosine = np.asarray(x[start:start + BLOCK], np.float64) @ centres.T
        j = cosine.argmax(axis=1)
        out_j[start:start + BLOCK] = j
        out_d[start:start + BLOCK] = np.sqrt(np.maximum(0.0, 2.0 - 2.0 * cosine[np.arange(len(j)), j]))
    return out_j, out_d


def training_set(ex: Examples, named_rows: np.ndarray, background: np.ndarray) -> TrainingSet:
    """people.training's TrainingSet: the named rows, the "not" rows about their people, the
    background rows."""
    from facebatch.people.training import TrainingSet

    people = sorted(set(ex.name[named_rows].tolist()))
    index = {p: k for k, p in enumerate(people)}
    not_rows = np.array(sorted(i for i, names in ex.nots.items() if names & index.keys()), np.int64)
    extra = np.setdiff1d(background, not_rows)
    rows = np.concatenate([named_rows, not_rows, extra]).astype(np.int64)
    person = np.full(len(rows), -1, np.int64)
    person[: len(named_rows)] = [index[n] for n in ex.name[named_rows]]
    at = {int(r): k for k, r in enumerate(rows.tolist())}
    nots = [(at[i], index[n]) for i in not_rows.tolist() for n in sorted(ex.nots[i]) if n in index]
    return TrainingSet(ex.x[rows], person, np.array(nots, np.int64).reshape(-1, 2), np.isin(rows, background))


def measure(ex: Examples, split: Split, y: np.ndarray, grouping: GroupingSettings) -> Figures:
    """One space (`y`: every face's vector in it) on the held-back part, by the product's rules."""
    from facebatch.people.evaluation import pairwise_prf
    from facebatch.people.grouping import group_faces

    centres, people = centres_of(y, ex.name, split.train)
    j, d = nearest(y[split.held_back], centres)
    suggested = d <= ex.scale.name_distance
    right = suggested & (np.array(people, dtype=object)[np.maximum(j, 0)] == ex.name[split.held_back])
    strangers = np.concatenate([split.held_out, split.background_check])
    false = int((nearest(y[strangers], centres)[1] <= ex.scale.name_distance).sum())
    scored = np.concatenate([split.held_back, split.held_out])
    others = np.concatenate([split.train, split.background_check])
    room = max(0, MAX_CHECK_FACES - len(scored))
    if len(others) > room:
        others = np.random.default_rng(0).choice(others, room, replace=False)
    rows = np.concatenate([scored, others])
    labels = group_faces(y[rows], ex.sides[rows], ex.photo[rows], grouping).labels

    def cluster_f(part: np.ndarray, at: int) -> float:
        if len(part) == 0:
            return 1.0
        return float(pairwise_prf(ex.name[part].tolist(), labels[at:at + len(part)].tolist()).f)

    return Figures(int(suggested.sum()), int(right.sum()), len(split.held_back), cluster_f(split.held_back, 0),
                   cluster_f(split.held_out, len(split.held_back)), false, len(strangers))


# --------------------------------------------------------------------------- train, off


@dataclass
class TrainReport:
    people: int  # named people trained on
    faces: int  # their confirmed faces
    not_faces: int  # unnamed faces known not to be someone ("not" labels, their photo's faces)
    background: int
    folds: int
    held_back: int  # faces held back of people trained on, over the folds
    held_out_people: int  # people held out whole, each in one fold
    plain: Figures
    adapted: Figures
    losses: list[str]  # figures the adapter loses on
    gains: list[str]
    activated: bool
    evaluate_only: bool
    adapter_id: str | None
    seconds: float
    settings: dict[str, Any] = field(default_factory=dict)
    reclustered: ClusterSummary | None = None  # when the clusters were made again

    @property
    def passed(self) -> bool:
        return passes(self.losses, self.gains)


def grouping_settings(library: Library) -> GroupingSettings:
    """The settings of the library's last clustering run (the defaults before the first)."""
    from facebatch.people.grouping import GroupingSettings

    saved = library.read_cluster_state().get("settings", {})
    names = {f.name for f in fields(GroupingSettings)}
    made_in = model_of_space(saved.get("embedding_space", PLAIN_SPACE))
    if "used" not in saved or made_in != model_of_space(embedding_space(library)):
        # Distances recorded before they came from the model (FaceNet's defaults), or given on another
        # model's scale, mean nothing on this one.
        names -= {"member_distance", "merge_distance", "member_growth"}
    return GroupingSettings(**{k: v for k, v in saved.items() if k in names})


@dataclass
class Check:
    folds: list[Split]
    plain: Figures  # pooled over the folds
    adapted: Figures
    losses: list[str]
    gains: list[str]

    @property
    def passed(self) -> bool:
        return passes(self.losses, self.gains)


def check_recipe(ex: Examples, settings: TrainingSettings, grouping: GroupingSettings) -> Check:
    """Train on part of the names and measure both spaces on the rest, fold by fold (see the
    module's doc)."""
    from facebatch.people.training import fit

    folds = split_examples(ex, settings.seed)
    plain, adapted = [], []
    for split in folds:
        fitted = fit(training_set(ex, split.train, split.background_train), settings)
        plain.append(measure(ex, split, ex.x, grouping))
        adapted.append(measure(ex, split, fitted.transform(ex.x), grouping))
    pooled_plain, pooled_adapted = Figures.pooled(plain), Figures.pooled(adapted)
    return Check(folds, pooled_plain, pooled_adapted, *compare(pooled_plain, pooled_adapted))


def fit_on_every_name(ex: Examples, settings: TrainingSettings) -> Fitted:
    """The adapter that is activated: every confirmed face, every background face."""
    from facebatch.people.training import fit

    return fit(training_set(ex, np.flatnonzero(ex.name != ""), ex.background), settings)


def train_adapter(library: Library, settings: TrainingSettings | None = None, evaluate_only: bool = False) -> TrainReport:
    """Learn an adapter from the library's names, check it on a held-back part, and activate it
    (trained again on every name) when it loses on nothing and gains on something. `evaluate_only`
    reads without taking the library's lock: it writes nothing."""
    from facebatch.people.training import TrainingSettings

    library.require()
    settings = replace(settings or TrainingSettings(), scale=library.scale())
    started = time.monotonic()
    with nullcontext() if evaluate_only else library.lock():
        ex = library_examples(library)
        _require_enough(library, ex)
        check = check_recipe(ex, settings, grouping_settings(library).on_scale(ex.scale))
        named = ex.name != ""
        report = TrainReport(
            people=len(set(ex.name[named].tolist())), faces=int(named.sum()), not_faces=len(ex.nots),
            background=len(ex.background), folds=len(check.folds), held_back=check.plain.held_back,
            held_out_people=len(set(ex.name[np.concatenate([f.held_out for f in check.folds])].tolist())),
            plain=check.plain, adapted=check.adapted, losses=check.losses, gains=check.gains, activated=False,
            evaluate_only=evaluate_only, adapter_id=None, seconds=0.0, settings=asdict(settings))
        if report.passed and not evaluate_only:
            final = fit_on_every_name(ex, settings)
            report.adapter_id = store_adapter(library, final.weights(), _metadata(library, ex, report, final.losses))
            report.activated = True
    if report.activated:
        report.reclustered = recluster_if_stale(library)
    report.seconds = time.monotonic() - started
    return report


def _require_enough(library: Library, ex: Examples) -> None:
    _, counts = np.unique(ex.name[ex.name != ""], return_counts=True)
    if int((counts >= MIN_FACES).sum()) < MIN_PEOPLE:
        raise LibraryMissing(
            library.root,
            f"too few names to learn from: {int((counts >= MIN_FACES).sum())} people have {MIN_FACES} or more "
            f"confirmed faces, `facebatch train` needs {MIN_PEOPLE} (name clusters: `facebatch label cluster N NAME`)",
        )


def _metadata(library: Library, ex: Examples, report: TrainReport, losses: list[float]) -> dict[str, Any]:
    people, counts = np.unique(ex.name[ex.name != ""], return_counts=True)
    return {
        "trained_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": (library.read_info() or {}).get("model"),
        "settings": report.settings,
        "loss_trace": losses,
        "labels": {"action": ex.label_action, "people": dict(zip(people.tolist(), counts.tolist())),
                   "not_faces": report.not_faces, "background_faces": report.background},
        "check": {"plain": asdict(report.plain), "adapted": asdict(report.adapted), "folds": report.folds,
                  "held_back_faces": report.held_back,
                  "held_out_people": report.held_out_people, "gains": report.gains},
    }


@dataclass
class OffReport:
    was_active: bool
    adapter_id: str | None
    reclustered: ClusterSummary | None = None


def adapter_off(library: Library) -> OffReport:
    """Back to the plain embeddings; the adapter stays on disk (`train` makes a new one)."""
    from facebatch.errors import NotFound

    library.require()
    with library.lock():
        meta = read_metadata(library)
        if meta is None:
            raise NotFound(f"no adapter in {library.root}: `facebatch train` learns one from your names")
        if meta.get("active"):
            atomic_write_json(library.adapter_dir / METADATA_FILE, {**meta, "active": False})
    return OffReport(bool(meta.get("active")), meta.get("id"), recluster_if_stale(library))


def recluster_if_stale(library: Library) -> ClusterSummary | None:
    """Cluster again, with the last run's settings, when the clusters were made in another space."""
    from facebatch.people.clustering import cluster_library

    if not library.has_clusters():
        return None
    made_in = library.read_cluster_state().get("settings", {}).get("embedding_space", PLAIN_SPACE)
    if made_in == embedding_space(library):
        return None
    return cluster_library(library, grouping_settings(library))
