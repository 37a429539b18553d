"""`facebatch train` on the development mix: what an adapter learned from a user's names gains.

The library: lfw-many + lfw-dev + lfw-strangers of one half of the identities (people_mix.py's
`tune` and `check`: choices are made on `tune`, `check` is people they never saw). It grows in
two steps: the first half of each person's photos (by scan order; a one-photo stranger by a hash
of the photo) is there first, the rest comes later ("new photos").

The user, on the first part, clustered with the defaults: names the biggest cluster of 2/3 of
the lfw-many people and of 10% of the lfw-dev people (a cluster where that person is the
majority), says "not NAME" on up to two intruders of each named cluster and names up to two of
the person's faces found elsewhere, face by face. Intruders left uncorrected stay named wrongly,
as a user's would. `facebatch train`'s own procedure runs on those labels (people.adapter: the
check on a held-back part, then the adapter trained on every name), and the new photos are
measured in the plain space and in the adapted one, in the same run:

- suggestions: each new subject face against the centres of the confirmed faces, named at the
  calibrated cut: precision, and recall over the named people's new faces;
- strangers (lfw-strangers) and unnamed people (lfw-many and lfw-dev people nobody named) given
  a name;
- clustering F: the whole library clustered with the user's labels as constraints, pairwise F over
  the new photos' subject faces, of the named people and of the lfw-many and lfw-dev people
  nobody named (an adapter must not blur the people it never saw);
- look-alikes: the 20 pairs of named people whose plain centres are nearest (the pairs the plain
  embedding confuses most); on their new photos, the mean over pairs of (same-person pairs
  accepted + different-person pairs refused) / 2, at the cut;
- what `train`'s check said (activate or not), and the training time.

    .venv/bin/python benchmarks/train_adapter.py --libraries /work/libs
    .venv/bin/python benchmarks/train_adapter.py --libraries /work/libs --grid    # the losses compared
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import zlib
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from people_mix import Mix, half, load_mix  # noqa: E402

from facebatch.people.adapter import Examples, build_examples, check_recipe, fit_on_every_name  # noqa: E402
from facebatch.models.scale import DistanceScale  # noqa: E402
from facebatch.store import Library as LibraryFolder  # noqa: E402

SCALE: DistanceScale  # the libraries' model's, set by main()
from facebatch.people.constraints import user_constraints  # noqa: E402
from facebatch.people.evaluation import pairwise_prf  # noqa: E402
from facebatch.people.grouping import GroupingSettings, group_faces  # noqa: E402
from facebatch.people.labels import SOURCE_FACE, LabelState  # noqa: E402
from facebatch.people.training import TrainingSettings  # noqa: E402

SETS = ("lfw-many", "lfw-dev", "lfw-strangers")
FRIENDS = ("lfw-many", "lfw-dev")
NAMED_SHARE = {"lfw-many": 2 / 3, "lfw-dev": 0.1}
CORRECTIONS = 2  # faces a user corrects per named cluster: intruders ("not"), and missed faces (named)
LOOK_ALIKE_PAIRS = 20
GRID = [
    {},
    {"mining": "hard"},
    {"loss": "am-softmax"},
    {"gate_distance": 1.0},
    {"gate_distance": 0.0},  # every face moved
    {"calibrate": 0.0, "gate_distance": 0.0},  # FaceNet's triplet loss alone
]


@dataclass
class Library:
    """One half of the mix: its faces, which came first, and the truth."""

    x: np.ndarray
    truth: np.ndarray  # identity ("" for a background face)
    dataset: np.ndarray
    subject: np.ndarray
    photo: np.ndarray
    sides: np.ndarray
    first: np.ndarray  # in the library before the new photos


def library_half(mix: Mix, split: str) -> Library:
    halves = np.array([half(t, p) for t, p in zip(mix.truth, mix.photo)])
    rows = np.flatnonzero((halves == split) & np.isin(mix.dataset, SETS))
    truth, photo, subject = mix.truth[rows], mix.photo[rows], mix.subject[rows]
    # The first half of each identity's photos, in scan order; a one-photo identity by a hash.
    photos_of: dict[str, list[int]] = {}
    for i in np.flatnonzero(subject).tolist():
        photos_of.setdefault(truth[i], []).append(int(photo[i]))
    first_photos = set()
    for photos in photos_of.values():
        photos = sorted(set(photos))
        if len(photos) == 1:
            if zlib.crc32(str(photos[0]).encode()) % 2 == 0:
                first_photos.add(photos[0])
        else:
            first_photos.update(photos[: (len(photos) + 1) // 2])
    first = np.isin(photo, list(first_photos))
    return Library(mix.x[rows], np.where(subject, truth, ""), mix.dataset[rows], subject, photo, mix.sides[rows], first)


@dataclass
class UserLabels:
    name: np.ndarray  # confirmed name per face of the first part ("" none)
    by_face: np.ndarray  # named face by face (else by cluster)
    said_not: dict[int, set[str]]
    people: list[str]


def simulate_user(lib: Library, seed: int) -> UserLabels:
    """Cluster the first part and label it as described in the module's doc."""
    rng = np.random.default_rng(seed)
    first = np.flatnonzero(lib.first)
    labels = np.full(len(lib.x), -1, np.int64)
    labels[first] = group_faces(lib.x[first], lib.sides[first], lib.photo[first], GroupingSettings().on_scale(SCALE)).labels
    people = []
    for dataset, share in NAMED_SHARE.items():
        pool = sorted(set(lib.truth[lib.first & lib.subject & (lib.dataset == dataset)].tolist()))
        people += sorted(rng.choice(pool, int(round(share * len(pool))), replace=False).tolist())
    name = np.full(len(lib.x), "", dtype=object)
    by_face = np.zeros(len(lib.x), bool)
    said_not: dict[int, set[str]] = {}
    for person in people:
        own = np.flatnonzero(lib.first & (lib.truth == person))
        cluster = _majority_cluster(labels, lib.truth, own, person)
        if cluster is not None:
            members = np.flatnonzero(labels == cluster)
            name[members] = person
            for i in [i for i in members.tolist() if lib.truth[i] != person][:CORRECTIONS]:
                name[i] = ""
                said_not.setdefault(i, set()).add(person)
        missed = [i for i in own.tolist() if name[i] != person][:CORRECTIONS]
        name[missed] = person
        by_face[missed] = True
    return UserLabels(name, by_face, said_not, people)


def _majority_cluster(labels: np.ndarray, truth: np.ndarray, own: np.ndarray, person: str) -> int | None:
    for cluster, _ in Counter(labels[own][labels[own] >= 0].tolist()).most_common():
        members = truth[labels == cluster]
        if 2 * int((members == person).sum()) > len(members):
            return int(cluster)
    return None


def examples(lib: Library, user: UserLabels) -> Examples:
    first = np.flatnonzero(lib.first)
    said_not = {int(np.searchsorted(first, i)): names for i, names in user.said_not.items()}
    return build_examples([str(i) for i in first], lib.x[first], user.name[first], lib.photo[first],
                          lib.sides[first], said_not, SCALE)


def measure_new(lib: Library, user: UserLabels, y: np.ndarray, look_alikes: list[tuple[str, str]]) -> dict:
    """The new photos, in one space (`y`: every face's vector in it)."""
    confirmed = np.flatnonzero(user.name != "")
    people = sorted(set(user.name[confirmed].tolist()))
    index = {p: k for k, p in enumerate(people)}
    sums = np.zeros((len(people), y.shape[1]))
    np.add.at(sums, [index[n] for n in user.name[confirmed]], y[confirmed])
    centres = sums / np.linalg.norm(sums, axis=1, keepdims=True)
    new = np.flatnonzero(~lib.first & lib.subject)
    cosine = y[new].astype(np.float64) @ centres.T
    best = cosine.argmax(axis=1)
    distance = np.sqrt(np.maximum(0.0, 2.0 - 2.0 * cosine[np.arange(len(new)), best]))
    suggested = distance <= SCALE.name_distance
    right = np.array(people, dtype=object)[best] == lib.truth[new]
    named_person = np.isin(lib.truth[new], people)
    stranger = lib.dataset[new] == "lfw-strangers"
    unnamed_friend = ~named_person & ~stranger
    return {
        "reliability": reliability(distance, right),
        "precision": float((suggested & right).sum() / max(1, suggested.sum())),
        "recall": float((suggested & right & named_person).sum() / max(1, named_person.sum())),
        "named_new": int(named_person.sum()),
        "strangers": (int((suggested & stranger).sum()), int(stranger.sum())),
        "unnamed": (int((suggested & unnamed_friend).sum()), int(unnamed_friend.sum())),
        "cluster_f": clustering_f(lib, user, y),  # (named people, unnamed people)
        "look_alikes": look_alike_accuracy(lib, y, look_alikes),
    }


BANDS = [(0.0, 0.5), (0.5, 0.8), (0.8, 0.9), (0.9, 0.99), (0.99, 1.01)]


def reliability(distance: np.ndarray, right: np.ndarray) -> list[tuple[str, int, float, float]]:
    """(band, answers, mean confidence, share right) of the nearest-person answers, by the
    confidence the model's scale gives their distance: does the mapping still hold?"""
    c = SCALE.confidence(distance)
    out = []
    for lo, hi in BANDS:
        band = (c >= lo) & (c < hi)
        if band.any():
            out.append((f"{lo:.2f}-{min(hi, 1.0):.2f}", int(band.sum()), float(c[band].mean()), float(right[band].mean())))
    return out


def clustering_f(lib: Library, user: UserLabels, y: np.ndarray) -> tuple[float, float]:
    state = LabelState()
    for i in np.flatnonzero(user.name != "").tolist():
        if user.by_face[i]:
            state.face_names[str(i)] = (user.name[i], SOURCE_FACE)
        else:
            state.cluster_names[str(i)] = user.name[i]
    for i, names in user.said_not.items():
        state.nots[str(i)] = set(names)
    constraints = user_constraints(state, [str(i) for i in range(len(y))])
    labels = group_faces(y, lib.sides, lib.photo, GroupingSettings().on_scale(SCALE), constraints).labels
    scored = np.flatnonzero(~lib.first & lib.subject & np.isin(lib.dataset, FRIENDS))
    named = np.isin(lib.truth[scored], user.people)
    return tuple(pairwise_prf(lib.truth[part].tolist(), labels[part].tolist()).f  # type: ignore[return-value]
                 for part in (scored[named], scored[~named]))


def look_alike_pairs(lib: Library, people: list[str]) -> list[tuple[str, str]]:
    """The named people whose plain centres (all their photos) are nearest."""
    centres = np.stack([lib.x[lib.truth == p].sum(axis=0) for p in people]).astype(np.float64)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    distance = np.sqrt(np.maximum(0.0, 2.0 - 2.0 * centres @ centres.T))
    pairs = sorted((distance[a, b], a, b) for a in range(len(people)) for b in range(a + 1, len(people)))
    return [(people[a], people[b]) for _, a, b in pairs[:LOOK_ALIKE_PAIRS]]


def look_alike_accuracy(lib: Library, y: np.ndarray, pairs: list[tuple[str, str]]) -> float:
    scores = []
    for a, b in pairs:
        fa = y[~lib.first & (lib.truth == a)].astype(np.float64)
        fb = y[~lib.first & (lib.truth == b)].astype(np.float64)
        if len(fa) == 0 or len(fb) == 0:
            continue
        same = [_distances(f, f)[np.triu_indices(len(f), 1)] for f in (fa, fb)]
        same_d = np.concatenate(same)
        different = _distances(fa, fb).ravel()
        accepted = (same_d <= SCALE.name_distance).mean() if len(same_d) else 1.0
        scores.append((accepted + (different > SCALE.name_distance).mean()) / 2)
    return float(np.mean(scores)) if scores else float("nan")


def _distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sqrt(np.maximum(0.0, 2.0 - 2.0 * a @ b.T))


def run(mix: Mix, split: str, settings: TrainingSettings, seed: int) -> dict:
    lib = library_half(mix, split)
    user = simulate_user(lib, seed)
    ex = examples(lib, user)
    pairs = look_alike_pairs(lib, user.people)
    started = time.perf_counter()
    check = check_recipe(ex, replace(settings, scale=SCALE), GroupingSettings().on_scale(SCALE))
    final = fit_on_every_name(ex, replace(settings, scale=SCALE))
    seconds = time.perf_counter() - started
    return {
        "library": int(lib.first.sum()), "new": int((~lib.first).sum()), "people": len(user.people),
        "confirmed": int((user.name != "").sum()), "wrongly_confirmed": int(((user.name != "") & (user.name != lib.truth)).sum()),
        "nots": len(ex.nots), "verdict": "activate" if check.passed else "refuse",
        "check_losses": check.losses, "seconds": seconds,
        "plain": measure_new(lib, user, lib.x, pairs),
        "adapted": measure_new(lib, user, final.transform(lib.x), pairs),
    }


HEADER = ("| space | loss | half | suggestion precision | suggestion recall | strangers named | unnamed people named "
          "| clustering F, new photos: named / unnamed people | look-alike pair accuracy | `train`'s check | train s |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|")


def rows(label: str, split: str, r: dict) -> list[str]:
    """The plain space's row, then the adapter's (with what `train`'s check said)."""
    out = []
    for space in ("plain", "adapted"):
        m = r[space]
        check = seconds = ""
        if space == "adapted":
            check = r["verdict"] + (f" (loses on {', '.join(r['check_losses'])})" if r["check_losses"] else "")
            seconds = f"{r['seconds']:.1f}"
        out.append(f"| {space} | {label if space == 'adapted' else ''} | {split} | {m['precision']:.4f} | "
                   f"{m['recall']:.4f} | {m['strangers'][0]}/{m['strangers'][1]} | {m['unnamed'][0]}/{m['unnamed'][1]} | "
                   f"{m['cluster_f'][0]:.4f} / {m['cluster_f'][1]:.4f} | {m['look_alikes']:.4f} | {check} | {seconds} |")
    return out


def label_of(overrides: dict, settings: TrainingSettings) -> str:
    return ", ".join(f"{k} {v}" for k, v in overrides.items()) or f"default ({settings.loss})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--libraries", type=Path, required=True, help="folder holding one library per set")
    parser.add_argument("--cache", type=Path, help="embeddings of the mix [default: /tmp, per libraries and content]")
    parser.add_argument("--splits", default="tune,check")
    parser.add_argument("--grid", action="store_true", help="compare the losses and settings in GRID")
    parser.add_argument("--settings", action="append", default=[], help="JSON of TrainingSettings fields (repeatable)")
    parser.add_argument("--seed", type=int, default=0, help="which people the simulated user names")
    args = parser.parse_args()
    global SCALE
    SCALE = LibraryFolder((args.libraries / "lfw-many").resolve()).scale()  # the libraries' model's
    mix = load_mix(args.libraries, args.cache)
    configurations = [json.loads(s) for s in args.settings] or (GRID if args.grid else [{}])
    print(HEADER, flush=True)
    calibration_rows = []  # the first configuration's, printed after the table
    for split in args.splits.split(","):
        plain_done = False
        for overrides in configurations:
            settings = TrainingSettings(**overrides)
            r = run(mix, split, settings, args.seed)
            if not plain_done:
                calibration_rows += [(split, "plain", r["plain"]["reliability"]),
                                     (split, f"adapted ({label_of(overrides, settings)})", r["adapted"]["reliability"])]
                print(f"<!-- {split}: {r['library']} faces first, {r['new']} new; {r['people']} people named, "
                      f"{r['confirmed']} faces confirmed ({r['wrongly_confirmed']} wrongly), {r['nots']} faces known "
                      f"not to be someone; {r['plain']['named_new']} new faces of named people -->", flush=True)
            for line in rows(label_of(overrides, settings), split, r)[0 if not plain_done else 1:]:
                print(line, flush=True)
            plain_done = True
    print("\n| space | half | confidence band | answers | mean confidence | share right |\n|---|---|---|---|---|---|")
    for split, space, bands in calibration_rows:
        for band, n, mean, share in bands:
            print(f"| {space} | {split} | {band} | {n} | {mean:.3f} | {share:.3f} |")
    print(f"\n`{' '.join(['.venv/bin/python', 'benchmarks/train_adapter.py'] + sys.argv[1:])}`")


if __name__ == "__main__":
    main()
