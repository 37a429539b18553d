"""A whole library of synthetic faces through cluster, label, people and export: time and memory.

Builds LIBRARY with N synthetic faces shaped like lfw-dev (benchmarks/cluster_scale.py), one face
per photo, written as ordinary shards; then times each step in this process (peak RSS at the end).

    .venv/bin/python benchmarks/cluster_library.py --lfw /tmp/lfw-lib --faces 100000 --library /tmp/lib100k
"""

from __future__ import annotations

import argparse
import functools
import resource
import shutil
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cluster_scale import synthetic  # noqa: E402

from facebatch.exports.tags import ExportSettings, export_tags  # noqa: E402
from facebatch.people.actions import label_cluster  # noqa: E402
from facebatch.people.clustering import cluster_library, read_assignments  # noqa: E402
from facebatch.people.grouping import GroupingSettings  # noqa: E402
from facebatch.people.suggestions import face_tags, people_summary  # noqa: E402
from facebatch.schema import FACES_SCHEMA, PHOTOS_SCHEMA  # noqa: E402
from facebatch.store import Library, LibraryModel  # noqa: E402

# A FaceNet tag: the synthetic faces take FaceNet's spread, so they are judged on its scale.
MODEL = "casia-webface@9549dbb482ce/box-margin44-182-centre160/onnx-int8"


def build(library: Library, x, truth, shard: int = 10_000) -> None:
    library.create(LibraryModel(MODEL, "facenet", "casia-webface", chosen=True))
    now = datetime.now(timezone.utc).replace(microsecond=0)
    for start in range(0, len(x), shard):
        rows = range(start, min(start + shard, len(x)))
        ids = [f"{i:012x}" for i in rows]
        photos = pa.table({
            "photo_id": ids, "path": [f"/photos/{truth[i]}/{i}.jpg" for i in rows], "size_bytes": [1] * len(ids),
            "mtime": [0] * len(ids), "width": [200] * len(ids), "height": [200] * len(ids), "n_faces": [1] * len(ids),
            "status": ["ok"] * len(ids), "error_kind": [None] * len(ids), "error": [None] * len(ids),
            "scanned_at": [now] * len(ids)}).cast(PHOTOS_SCHEMA)
        faces = pa.table({
            "face_id": ids, "photo_id": ids, "path": photos["path"], "face_index": [0] * len(ids),
            "box": [[10.0, 10.0, 90.0, 90.0]] * len(ids), "score": [0.99] * len(ids),
            "landmarks": [[0.0] * 10] * len(ids),
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(x[start:start + len(ids)].ravel()), 512),
            "model": [MODEL] * len(ids), "rotation": [None] * len(ids), "quality": [None] * len(ids),
            "video_time": [None] * len(ids), "video_span": [None] * len(ids)}).cast(FACES_SCHEMA)
        library.write_shard(photos, faces, {"kind": "synthetic"}, MODEL)


def timed(name: str, step):
    started = time.perf_counter()
    result = step()
    print(f"| {name} | {time.perf_counter() - started:.1f} |", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lfw", type=Path, required=True)
    parser.add_argument("--faces", type=int, default=100_000)
    parser.add_argument("--library", type=Path, required=True)
    args = parser.parse_args()
    shutil.rmtree(args.library, ignore_errors=True)
    x, truth = synthetic(args.faces, args.lfw)
    library = Library(args.library)
    print(f"{args.faces:,} faces\n\n| step | seconds |\n|---|---|")
    timed("write the library", functools.partial(build, library, x, truth))
    del x
    summary = timed("facebatch cluster", lambda: cluster_library(library, GroupingSettings()))
    some = next(c for c in read_assignments(library).values() if c >= 0)
    timed("facebatch label cluster", lambda: label_cluster(library, some, "Alice"))
    timed("facebatch cluster (again)", lambda: cluster_library(library, GroupingSettings()))
    timed("face tags (people)", lambda: people_summary(face_tags(library)))
    out = args.library.parent / "tags.jsonl"
    timed("facebatch export tags.jsonl", lambda: export_tags(library, ExportSettings(output=str(out), format="jsonl")))
    print(f"\n{summary.line()}\npeak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
