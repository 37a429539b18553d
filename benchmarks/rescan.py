"""Re-scan of an unchanged library: how long `facebatch scan` takes when no photo changed.

Makes N small JPEG files and a library whose tables already describe them (rows written with the
library's own writer, as a finished scan leaves them, 256 photos per part and one face each), then
times the real CLI, cold process included, and checks that it did no model work.

    .venv/bin/python benchmarks/rescan.py [--photos 10000] [--runs 3]
"""

from __future__ import annotations

import argparse
import io
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
from PIL import Image

from facebatch.models.catalog import DEFAULT_MODEL, model_named
from facebatch.models.embedding import model_tag
from facebatch.scan.pipeline import face_id
from facebatch.schema import FACES_SCHEMA, PHOTOS_SCHEMA
from facebatch.store import Library, LibraryModel
from facebatch.models.weights import resolve_weights

PART = 256


def make_photos(folder: Path, count: int) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        sub = folder / f"{i // 1000:03d}"
        sub.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), np.uint8)).save(buffer, "JPEG")
        path = sub / f"{i:06d}.jpg"
        path.write_bytes(buffer.getvalue())
        paths.append(path)
    return paths


def write_library(library: Library, paths: list[Path], model: str) -> None:
    library.create(LibraryModel(model, DEFAULT_MODEL, "casia-webface"))
    rng = np.random.default_rng(1)
    now = datetime.now(timezone.utc)
    for start in range(0, len(paths), PART):
        chunk = paths[start : start + PART]
        photos, faces = [], {name: [] for name in FACES_SCHEMA.names}
        for path in chunk:
            stat = path.stat()
            photo_id = f"{hash(str(path)) & (2**64 - 1):032x}"
            photos.append({"photo_id": photo_id, "path": str(path), "size_bytes": stat.st_size,
                           "mtime": stat.st_mtime_ns, "width": 32, "height": 32, "n_faces": 1, "status": "ok",
                           "scanned_at": now})
            vector = rng.normal(size=model_named(DEFAULT_MODEL).dim).astype(np.float32)
            for name, value in (("face_id", face_id(photo_id, (1, 1, 30, 30))), ("photo_id", photo_id),
                                ("path", str(path)), ("face_index", 0), ("box", [1.0, 1.0, 30.0, 30.0]),
                                ("score", 0.99), ("landmarks", [10.0] * 10),
                                ("embedding", vector / np.linalg.norm(vector)), ("model", model),
                                ("rotation", None), ("quality", None), ("video_time", None), ("video_span", None)):
                faces[name].append(value)
        library.write_shard(pa.Table.from_pylist(photos, PHOTOS_SCHEMA), pa.table(faces).cast(FACES_SCHEMA),
                            {"kind": "benchmark"}, model)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    facebatch = Path(sys.executable).parent / "facebatch"
    with tempfile.TemporaryDirectory() as tmp:
        folder, library = Path(tmp) / "photos", Library(Path(tmp) / "lib")
        paths = make_photos(folder, args.photos)
        write_library(library, paths, model_tag(model_named(DEFAULT_MODEL), resolve_weights(), "onnx-int8"))
        print("| photos | run | seconds (whole command) | summary |")
        print("|---|---|---|---|")
        for run in range(1, args.runs + 1):
            started = time.perf_counter()
            out = subprocess.run([str(facebatch), "--library", str(library.root), "scan", str(folder)],
                                 check=True, capture_output=True, text=True, env={**os.environ}).stdout.strip()
            seconds = time.perf_counter() - started
            assert re.search(rf" 0 scanned, 0 moved, {args.photos} unchanged,", out), out
            print(f"| {args.photos} | {run} | {seconds:.2f} | {out} |")
    print(f"\nreproduce: .venv/bin/python benchmarks/rescan.py --photos {args.photos} --runs {args.runs}")


if __name__ == "__main__":
    main()
