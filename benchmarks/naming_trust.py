"""What naming clusters confirms and exports: strangers under a friend's name, on the development mix.

For each half of the identities (people_mix's `tune` and `check`), a library is made from the
development libraries' own rows (one folder per set, as people_mix reads them): every face of that
half, with its stored box, score, landmarks and embedding. It is clustered with the defaults, the 20
biggest clusters whose majority is a friend (a subject of lfw-many, lfw-dev or faces-dev) are named
after that friend with `label cluster`, and the tags are computed as `export` writes them.

Reported per half: friends' faces under their own name (confirmed / suggested), faces of a known
identity under another name, and faces waiting for a look; strangers (lfw-strangers' subjects) exported with a name and
confirmed; what naming every member would have confirmed (the method before the core); and the
quality gate: faces below it, and among them friends and strangers that would otherwise get a name.

    .venv/bin/python benchmarks/naming_trust.py --libraries /work/libs/sface [--no-quality-gate]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cluster_common import DATASETS, library_faces  # noqa: E402
from people_mix import FRIEND_SETS, SETS, half  # noqa: E402

from facebatch.models.quality import MIN_QUALITY  # noqa: E402
from facebatch.people.actions import label_cluster  # noqa: E402
from facebatch.people.clustering import cluster_library  # noqa: E402
from facebatch.people.grouping import GroupingSettings  # noqa: E402
from facebatch.people.suggestions import STATUS_CONFIRMED, face_tags  # noqa: E402
from facebatch.people.view import build_view  # noqa: E402
from facebatch.store import Library  # noqa: E402

NAMED_CLUSTERS = 20


def half_library(libraries: Path, split: str, folder: Path) -> dict[str, tuple[str, str]]:
    """A library of one half's faces; returns face_id -> (identity, set) of the scored faces."""
    truth: dict[str, tuple[str, str]] = {}
    library = Library(folder)
    for name in SETS:
        source = Library((libraries / name).resolve())
        if not folder.joinpath("library.json").exists():
            library.create(source.model())
        faces = library_faces(source, DATASETS / name, central=name != "faces-dev")
        table = source.read_faces()
        photos = source.read_photos()
        keep = np.array([half(t or "", i) == split or name == "faces-dev"
                         for i, t in enumerate(faces.truth)])
        for face_id, identity, subject, kept in zip(faces.face_ids, faces.truth, faces.subject, keep):
            if kept and identity and subject:
                truth[face_id] = (identity, name)
        table = table.filter(pa.array(keep))
        photos = photos.filter(pc.is_in(photos["photo_id"], table["photo_id"].unique()))
        library.write_shard(photos, table, {"kind": "benchmark"}, source.model().tag)
    return truth


def measure(libraries: Path, split: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        library = Library(Path(tmp) / "lib")
        truth = half_library(libraries, split, library.root)
        cluster_library(library, GroupingSettings())
        view = build_view(library)
        owners = {}
        for c, info in sorted(view.clusters.items(), key=lambda kv: -kv[1].size):
            people = Counter(truth[f] for f in view.members(c) if f in truth)
            if people:
                (identity, dataset), _ = people.most_common(1)[0]
                if dataset in FRIEND_SETS and identity not in owners.values():
                    owners[c] = identity
            if len(owners) == NAMED_CLUSTERS:
                break
        waiting = sum(label_cluster(library, c, name).waiting for c, name in owners.items())
        before = {f for c in owners for f in view.members(c)}  # naming every member confirmed these
        tags = face_tags(library)
        quality = dict(zip(*(library.read_faces(["face_id", "quality"])[c].to_pylist() for c in ("face_id", "quality"))))
    named = set(owners.values())
    out = Counter()
    for face_id, person, status in zip(tags.face_ids, tags.person, tags.status):
        identity, dataset = truth.get(face_id, ("", ""))
        stranger = dataset == "lfw-strangers"
        out["strangers"] += stranger
        out["low_quality"] += quality[face_id] < MIN_QUALITY
        out["low_quality_named"] += quality[face_id] < MIN_QUALITY and person is not None
        if stranger and face_id in before:
            out["strangers_confirmed_before"] += 1
        if identity in named:
            out["friend_faces"] += 1
            if person == identity:
                out["right_confirmed" if status == STATUS_CONFIRMED else "right_suggested"] += 1
        if person and identity and person != identity:  # background faces have no known identity
            out["wrong"] += 1
            out["strangers_named"] += stranger
            out["strangers_confirmed"] += stranger and status == STATUS_CONFIRMED
    out["waiting"] = waiting
    return dict(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--libraries", type=Path, required=True, help="folder holding one library per set")
    parser.add_argument("--no-quality-gate", action="store_true", help="what it is without the gate (every face trusted)")
    args = parser.parse_args()
    if args.no_quality_gate:
        import facebatch.people.grouping
        import facebatch.people.suggestions

        facebatch.people.grouping.MIN_QUALITY = facebatch.people.suggestions.MIN_QUALITY = 0.0
    print("| half | named people's faces | right: confirmed / suggested | waiting for a look | wrong names "
          "| strangers named | strangers confirmed | confirmed by naming every member (before) | below the quality gate |")
    print("|---|---|---|---|---|---|---|---|---|")
    for split in ("tune", "check"):
        r = measure(args.libraries, split)
        s = max(r.get("strangers", 0), 1)
        print(f"| {split} | {r.get('friend_faces', 0)} | {r.get('right_confirmed', 0)} / {r.get('right_suggested', 0)} "
              f"| {r.get('waiting', 0)} | {r.get('wrong', 0)} | {r.get('strangers_named', 0)} of {r.get('strangers', 0)} "
              f"({100 * r.get('strangers_named', 0) / s:.2f}%) | {r.get('strangers_confirmed', 0)} "
              f"| {r.get('strangers_confirmed_before', 0)} strangers | {r.get('low_quality', 0)}, "
              f"{r.get('low_quality_named', 0)} named |", flush=True)


if __name__ == "__main__":
    main()
