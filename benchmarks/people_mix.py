"""The library-shaped development benchmark: clustering quality on the mix a user has.

Libraries scanned from ../shared/datasets (one each, with `facebatch --library L scan FOLDER`):
lfw-many (62 people with 10-144 photos), lfw-dev (743 people with 3-9), lfw-strangers (1,728
people seen once or twice) and faces-dev (library photos and group shots). Each photo's person is
its central face (LFW) or biggest face (faces-dev); other faces in a photo are people of their own.

Scenarios, each clustered on its own, as a library of only those photos would be:
  lfw-many, lfw-dev, lfw-strangers, faces-dev   one set alone
  mix                                           all four together (the default is chosen here)
  all-each                                      lfw-many (all photos) + strangers
  ten-each                                      lfw-many capped at 10 photos a person + strangers

Every scenario runs twice, on two disjoint halves of the identities (`tune` and `check`, by a
hash of the name): settings are chosen on `tune`; `check` is people the choice never saw.

Reported: pairwise and BCubed P/R/F over the identified faces (the photos' subjects of lfw-many,
lfw-dev and faces-dev; of lfw-strangers when alone; unclustered = a cluster of one);
strangers clustered and strangers inside a friend's cluster (lfw-strangers faces in a cluster
whose majority is a person of lfw-many, lfw-dev or faces-dev); clusters made only of strangers;
faces sharing a cluster with another face of their photo; seconds; peak memory (MB) of the run.

    .venv/bin/python benchmarks/people_mix.py --libraries /work/libs          # the default settings
    .venv/bin/python benchmarks/people_mix.py --libraries /work/libs --grid   # the settings compared
    .venv/bin/python benchmarks/people_mix.py --libraries /work/libs --baseline  # yesterday's method
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
import zlib
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cluster_common import DATASETS, library_faces  # noqa: E402

SETS = ("lfw-many", "lfw-dev", "lfw-strangers", "faces-dev")
FRIEND_SETS = ("lfw-many", "lfw-dev", "faces-dev")


@dataclass
class Mix:
    x: np.ndarray  # (n, 512) float32
    truth: np.ndarray  # identity per face ("" when not scored)
    subject: np.ndarray  # the photo's person (not a background face)
    dataset: np.ndarray  # which set the face comes from
    photo: np.ndarray  # int code per photo
    sides: np.ndarray
    quality: np.ndarray  # models.quality, as `cluster` reads it


def default_cache(libraries: Path) -> Path:
    """A cache file per libraries folder and content: a re-scan (another model) is never read stale."""
    import hashlib

    digest = hashlib.sha256(f"{libraries.resolve()} quality".encode())  # the cache's fields
    for name in SETS:
        for path in sorted((libraries / name).rglob("*")):
            if path.is_file() and path.suffix in (".json", ".parquet"):
                digest.update(f"{path.relative_to(libraries)} {path.stat().st_size} {path.stat().st_mtime_ns}".encode())
    return Path(f"/tmp/people_mix-{digest.hexdigest()[:12]}.npz")


def load_mix(libraries: Path, cache: Path | None = None) -> Mix:
    cache = cache or default_cache(libraries)
    if cache.exists():
        data = np.load(cache, allow_pickle=True)
        return Mix(**{k: data[k] for k in data.files})
    from facebatch.store import Library

    parts = []
    for name in SETS:
        library = Library((libraries / name).resolve())
        faces = library_faces(library, DATASETS / name, central=name != "faces-dev")
        read = library.read_faces(["photo_id", "quality"])
        parts.append((name, faces, read["photo_id"].to_pylist(), read["quality"].to_numpy()))
    photo_codes: dict[str, int] = {}
    mix = Mix(
        x=np.vstack([f.embeddings for _, f, _, _ in parts]).astype(np.float32),
        truth=np.array([t or "" for _, f, _, _ in parts for t in f.truth], dtype=object),
        subject=np.concatenate([f.subject for _, f, _, _ in parts]),
        dataset=np.array([name for name, f, _, _ in parts for _ in f.face_ids], dtype=object),
        photo=np.array([photo_codes.setdefault(p, len(photo_codes)) for _, _, ids, _ in parts for p in ids], np.int64),
        sides=np.concatenate([f.sides for _, f, _, _ in parts]),
        quality=np.concatenate([q for _, _, _, q in parts]),
    )
    np.savez(cache, **asdict(mix))
    return mix


def half(identity: str, photo: int) -> str:
    """tune or check, by a hash of the identity (a background face goes with its photo)."""
    key = identity if identity and not identity.startswith("stranger:") else f"photo{photo}"
    return "tune" if zlib.crc32(key.encode()) % 2 == 0 else "check"


def scenario(mix: Mix, name: str, split: str) -> np.ndarray:
    """Face indices of one scenario on one half of the identities."""
    halves = np.array([half(t, p) for t, p in zip(mix.truth, mix.photo)])
    # faces-dev is 26 photos of 8 people: halves of it would be noise, so it is whole in both.
    keep = (halves == split) | ((mix.dataset == "faces-dev") & (name != "mix"))
    if name in SETS:
        keep &= mix.dataset == name
    elif name == "all-each":
        keep &= np.isin(mix.dataset, ["lfw-many", "lfw-strangers"])
    elif name == "ten-each":
        keep &= np.isin(mix.dataset, ["lfw-many", "lfw-strangers"])
        # the first 10 photos of each lfw-many person (by photo code: the scan's order)
        many = np.flatnonzero(keep & (mix.dataset == "lfw-many"))
        person_of_photo: dict[int, str] = {}
        for i in many[mix.subject[many]]:
            person_of_photo[int(mix.photo[i])] = mix.truth[i]
        kept_photos: set[int] = set()
        seen: Counter = Counter()
        for photo in sorted(person_of_photo):
            person = person_of_photo[photo]
            if seen[person] < 10:
                seen[person] += 1
                kept_photos.add(photo)
        drop = many[~np.isin(mix.photo[many], list(kept_photos))]
        keep[drop] = False
    elif name != "mix":
        raise ValueError(name)
    return np.flatnonzero(keep)


def score(mix: Mix, rows: np.ndarray, labels: np.ndarray) -> dict:
    from facebatch.people.evaluation import bcubed_prf, pairwise_prf

    truth = mix.truth[rows]
    dataset = mix.dataset[rows]
    # "Identified faces": the subjects of the people a user knows (not strangers, not background
    # faces); strangers are scored by the stranger columns. A strangers-only library scores them.
    identified = mix.subject[rows] & (truth != "")
    if np.isin(dataset, FRIEND_SETS).any():
        identified &= np.isin(dataset, FRIEND_SETS)
    scored = identified
    t = truth[scored].tolist()
    p = labels[scored].tolist()
    pw, bc = pairwise_prf(t, p), bcubed_prf(t, p)
    stranger = (dataset == "lfw-strangers") & mix.subject[rows]
    friend = np.isin(dataset, FRIEND_SETS) & mix.subject[rows]
    # Majority identity of each cluster, over its subject faces.
    owner: dict[int, str] = {}
    owner_set: dict[int, str] = {}
    for c in np.unique(labels[labels >= 0]).tolist():
        members = (labels == c) & (mix.subject[rows])
        if members.any():
            names, counts = np.unique(truth[members].astype(str), return_counts=True)
            owner[c] = names[np.argmax(counts)]
            owner_set[c] = dataset[members][truth[members] == owner[c]][0]
    in_friend = np.array([owner_set.get(int(c)) in FRIEND_SETS if c >= 0 else False for c in labels])
    clusters = np.unique(labels[labels >= 0])
    only_strangers = 0
    for c in clusters.tolist():
        members = labels == c
        if not (friend & members).any():
            only_strangers += 1
    photo = mix.photo[rows]
    shared = 0
    clustered = labels >= 0
    if clustered.any():
        key = labels[clustered] * (int(photo.max()) + 1) + photo[clustered]
        _, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
        shared = int((counts[inverse] > 1).sum())
    n_strangers = int(stranger.sum())
    by_size = _by_size(truth, labels, friend, stranger, owner)
    return {
        "faces": len(rows), "scored": int(scored.sum()), "clusters": len(clusters),
        "pw_p": pw.precision, "pw_r": pw.recall, "pw_f": pw.f, "bc_p": bc.precision, "bc_r": bc.recall, "bc_f": bc.f,
        "strangers": n_strangers,
        "strangers_clustered": int((stranger & clustered).sum()),
        "strangers_in_friend": int((stranger & in_friend).sum()),
        "stranger_clusters": only_strangers,
        "same_photo": shared,
        "by_size": by_size,
    }


SIZE_BUCKETS = ((3, 9), (10, 29), (30, 99), (100, 10**9))


def _by_size(truth: np.ndarray, labels: np.ndarray, friend: np.ndarray, stranger: np.ndarray,
             owner: dict[int, str]) -> dict[str, dict[str, int]]:
    """Per friend size (faces of the person in the scenario): their faces in their own cluster
    (the biggest cluster they own), and strangers inside the clusters they own."""
    sizes = Counter(truth[friend].tolist())
    kept: Counter = Counter()
    for person in sizes:
        theirs = labels[friend & (truth == person)]
        owned = [c for c in theirs.tolist() if c >= 0 and owner.get(c) == person]
        kept[person] = Counter(owned).most_common(1)[0][1] if owned else 0
    intruders = Counter(owner[c] for c in labels[stranger].tolist() if c >= 0 and owner.get(c) in sizes)
    out = {}
    for low, high in SIZE_BUCKETS:
        people = [p for p, n in sizes.items() if low <= n <= high]
        out[f"{low}-{high}" if high < 10**9 else f"{low}+"] = {
            "people": len(people), "faces": sum(sizes[p] for p in people), "kept": sum(kept[p] for p in people),
            "strangers_in": sum(intruders[p] for p in people)}
    return out


def run_one(args: argparse.Namespace) -> None:
    """One (scenario, half, settings) in this process: prints one JSON line."""
    mix = load_mix(args.libraries, args.cache)
    rows = scenario(mix, args.scenario, args.split)
    settings = json.loads(args.settings)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    if settings.pop("baseline", False):
        labels = baseline_labels(mix, rows, settings)
        steps = {}
    else:
        from facebatch.people.grouping import GroupingSettings, group_faces

        result = group_faces(mix.x[rows], mix.sides[rows], mix.photo[rows], on_scale(GroupingSettings(**settings), args),
                             quality=mix.quality[rows])
        labels, steps = result.labels, result.steps
    seconds = time.perf_counter() - started
    peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
    print(json.dumps({**score(mix, rows, labels), "seconds": seconds, "peak_mb": peak, "steps": steps}))


def on_scale(settings, args: argparse.Namespace):
    """Distances not given in --settings come from the model of the libraries (lfw-many's)."""
    if None not in (settings.member_distance, settings.merge_distance, settings.member_growth):
        return settings
    from facebatch.store import Library

    return settings.on_scale(Library((args.libraries / "lfw-many").resolve()).scale())


def baseline_labels(mix: Mix, rows: np.ndarray, settings: dict) -> np.ndarray:
    """The method before this benchmark: HDBSCAN leaf, min_samples 1, PCA 64, faces >= 40 px."""
    import hdbscan

    from facebatch.people.grouping import pca_reduce

    x = mix.x[rows].astype(np.float64)
    big = mix.sides[rows] >= 40
    labels = np.full(len(rows), -1, np.int64)
    sub = x[big]
    if len(sub) >= 2000:
        sub = pca_reduce(sub, 64, 20000)
    labels[big] = hdbscan.HDBSCAN(min_cluster_size=settings.get("min_cluster_size", 3),
                                  min_samples=settings.get("min_samples", 1),
                                  cluster_selection_method=settings.get("method", "leaf")).fit_predict(sub)
    return labels


def measure(args: argparse.Namespace, scenario_name: str, split: str, settings: dict) -> dict:
    cache = args.cache or default_cache(args.libraries)
    out = subprocess.run(
        [sys.executable, __file__, "--libraries", str(args.libraries), "--cache", str(cache), "--one",
         "--scenario", scenario_name, "--split", split, "--settings", json.dumps(settings)],
        check=True, capture_output=True, text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


HEADER = ("| settings | scenario | half | faces | clusters | pairwise P / R / F | BCubed P / R / F | strangers clustered "
          "| strangers in a friend's cluster | stranger-only clusters | faces sharing a cluster with their photo "
          "| s | MB |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|")


def row(label: str, scenario_name: str, split: str, r: dict) -> str:
    s = r["strangers"] or 1
    return (f"| {label} | {scenario_name} | {split} | {r['faces']} | {r['clusters']} | "
            f"{r['pw_p']:.3f} / {r['pw_r']:.3f} / **{r['pw_f']:.3f}** | {r['bc_p']:.3f} / {r['bc_r']:.3f} / {r['bc_f']:.3f} | "
            f"{r['strangers_clustered']}/{r['strangers']} | {r['strangers_in_friend']} ({100 * r['strangers_in_friend'] / s:.1f}%) | "
            f"{r['stranger_clusters']} | {r['same_photo']} | {r['seconds']:.1f} | {r['peak_mb']:.0f} |")


SIZE_HEADER = ("| settings | scenario | half | friend's faces | people | faces | in their own cluster | strangers inside |\n"
               "|---|---|---|---|---|---|---|---|")


def size_rows(label: str, scenario_name: str, split: str, r: dict) -> list[str]:
    return [f"| {label} | {scenario_name} | {split} | {bucket} | {b['people']} | {b['faces']} | "
            f"{b['kept'] / max(b['faces'], 1):.3f} | {b['strangers_in']} |" for bucket, b in r["by_size"].items() if b["people"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--libraries", type=Path, required=True, help="folder holding one library per set")
    parser.add_argument("--cache", type=Path, help="embeddings of the mix [default: /tmp, per libraries and content]")
    parser.add_argument("--scenarios", default="lfw-many,lfw-dev,lfw-strangers,faces-dev,mix,all-each,ten-each")
    parser.add_argument("--splits", default="tune,check")
    parser.add_argument("--settings", action="append", default=[], help="JSON of GroupingSettings fields (repeatable)")
    parser.add_argument("--baseline", action="store_true", help="also the method before (leaf, min_samples 1)")
    parser.add_argument("--by-size", action="store_true", help="also friends kept and strangers let in by friend size")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--scenario", help=argparse.SUPPRESS)
    parser.add_argument("--split", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        args.settings = args.settings[0]
        run_one(args)
        return
    load_mix(args.libraries, args.cache)
    configurations = [json.loads(s) for s in args.settings] or [{}]
    if args.baseline:
        configurations.insert(0, {"baseline": True})
    print(HEADER, flush=True)
    sized: list[str] = []
    for settings in configurations:
        label = "before (leaf, min_samples 1)" if settings.get("baseline") else (
            ", ".join(f"{k} {v}" for k, v in settings.items()) or "default")
        for scenario_name in args.scenarios.split(","):
            for split in args.splits.split(","):
                result = measure(args, scenario_name, split, settings)
                print(row(label, scenario_name, split, result), flush=True)
                sized.extend(size_rows(label, scenario_name, split, result))
    if args.by_size:
        print("\n" + SIZE_HEADER + "\n" + "\n".join(sized))


if __name__ == "__main__":
    main()
