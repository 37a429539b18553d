"""Shared fixtures: where the real data lives, and skipping with a reason when it doesn't."""

from __future__ import annotations

import csv
import zlib
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa

import pytest
from PIL import Image
from click.testing import CliRunner, Result

from facebatch.cli import cli
from facebatch.schema import FACES_SCHEMA, PHOTOS_SCHEMA
from facebatch.store import Library, LibraryModel

PROJECT = Path(__file__).resolve().parents[1]
SAMPLE_DATA = PROJECT / "sample_data"
DATASETS = PROJECT.parent / "shared" / "datasets"


def dataset(name: str) -> Path:
    """A folder of ../shared/datasets, or skip: those photos are internal and not in the repo."""
    folder = DATASETS / name
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent: the project's internal test photos (labelled faces, not redistributable), "
                    "beside a developer's checkout only; these tests need them, the rest run on sample_data/")
    return folder


def hard_manifest(hard: Path) -> list[dict[str, str]]:
    """The hard dataset's manifest rows for images (its .xml rows are annotations)."""
    with open(hard / "manifest.csv", newline="") as manifest:
        return [row for row in csv.DictReader(manifest) if not row["path"].endswith(".xml")]


def run(*args: object, env: dict[str, str] | None = None) -> Result:
    """The CLI in-process, as a user would type it (arguments may be paths)."""
    return CliRunner().invoke(cli, [str(a) for a in args], env=env)


# --------------------------------------------------------------------------- synthetic libraries
# Libraries of made-up embeddings, one face per photo, for the people/exports/review tests.

# A FaceNet tag: the synthetic faces of these tests are judged on FaceNet's distance scale.
MODEL = "casia-webface@9549dbb482ce/box-margin44-182-centre160/onnx-int8"
LIBRARY_MODEL = LibraryModel(MODEL, "facenet", "casia-webface")


def person_centres(n: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(n, 512))
    return c / np.linalg.norm(c, axis=1, keepdims=True)


def add_photos(lib: Library, people: dict[str, int], centres: dict[str, np.ndarray], tag: str, seed: int = 0,
               model: str = MODEL) -> list[str]:
    """One photo per face: `people` maps a name to how many new photos of them. Returns face ids
    in order. Face ids and paths are derived from the name, tag and index, so they are stable."""
    # crc32, not hash(): str hashes change with every process (PYTHONHASHSEED), and a rare draw
    # splits a person into two leaf clusters, so the data must be the same on every run.
    rng = np.random.default_rng(zlib.crc32(f"{tag}/{seed}".encode()))
    now = datetime.now(timezone.utc)
    photo_rows, face_rows = [], {name: [] for name in FACES_SCHEMA.names}
    face_ids = []
    for name, count in people.items():
        for k in range(count):
            photo_id = f"p-{name}-{tag}-{k}"
            path = f"/photos/{tag}/{name}/{k}.jpg"
            photo_rows.append({"photo_id": photo_id, "path": path, "size_bytes": 10, "mtime": 1, "width": 200,
                               "height": 100, "n_faces": 1, "status": "ok", "scanned_at": now})
            v = centres[name] + 0.03 * rng.normal(size=512)
            face_id = f"f-{name}-{tag}-{k}"
            face_ids.append(face_id)
            for key, value in (("face_id", face_id), ("photo_id", photo_id), ("path", path), ("face_index", 0),
                               ("box", [20.0, 10.0, 60.0, 50.0]), ("score", 0.99), ("landmarks", [5.0] * 10),
                               ("embedding", (v / np.linalg.norm(v)).astype(np.float32)), ("model", model),
                               ("rotation", None), ("quality", None), ("video_time", None), ("video_span", None)):
                face_rows[key].append(value)
    lib.write_shard(pa.Table.from_pylist(photo_rows, PHOTOS_SCHEMA), pa.table(face_rows).cast(FACES_SCHEMA),
                    {"kind": "test"}, model)
    return face_ids


def add_people(lib: Library, folder: Path, people: dict[str, int], tag: str) -> None:
    """Real JPEG files (a coloured square per face, so thumbnails can be made) with embeddings
    around one centre per person (ann, bob, cat, dan). Face ids: f<name><tag><k:03d>."""
    centres = dict(zip(["ann", "bob", "cat", "dan"], person_centres(4)))
    rng = np.random.default_rng(len(tag))
    now = datetime.now(timezone.utc)
    photos, faces = [], {name: [] for name in FACES_SCHEMA.names}
    for name, count in people.items():
        for k in range(count):
            path = folder / tag / name / f"{k}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (320, 240), tuple(int(v) for v in rng.integers(0, 255, 3))).save(path)
            photo_id = f"p-{name}-{tag}-{k}"
            photos.append({"photo_id": photo_id, "path": str(path), "size_bytes": 1, "mtime": 1, "width": 320,
                           "height": 240, "n_faces": 1, "status": "ok", "scanned_at": now})
            v = centres[name] + 0.03 * rng.normal(size=512)
            for key, value in (("face_id", f"f{name}{tag}{k:03d}"), ("photo_id", photo_id), ("path", str(path)),
                               ("face_index", 0), ("box", [100.0, 60.0, 180.0, 150.0]), ("score", 0.99),
                               ("landmarks", [5.0] * 10), ("embedding", (v / np.linalg.norm(v)).astype(np.float32)),
                               ("model", MODEL), ("rotation", None), ("quality", None), ("video_time", None), ("video_span", None)):
                faces[key].append(value)
    lib.write_shard(pa.Table.from_pylist(photos, PHOTOS_SCHEMA), pa.table(faces).cast(FACES_SCHEMA), {}, MODEL)


def people_library(root: Path, people: dict[str, int]) -> Library:
    """A library (root/lib) of add_people's photos (root/photos), clustered with the default settings."""
    from facebatch.people.clustering import cluster_library
    from facebatch.people.grouping import GroupingSettings

    lib = Library(root / "lib")
    lib.create(LIBRARY_MODEL)
    add_people(lib, root / "photos", people, "a")
    cluster_library(lib, GroupingSettings())
    return lib


def scan_quietly(library: Path, folder: Path) -> None:
    result = run("--library", library, "scan", "-q", folder)
    assert result.exit_code == 0, result.output


@pytest.fixture(scope="session")
def sample_scan(tmp_path_factory) -> Path:
    """sample_data scanned once per test session (real MTCNN and FaceNet); copy it to change it."""
    root = tmp_path_factory.mktemp("sample-scan") / "lib"
    result = run("--library", root, "scan", "-q", SAMPLE_DATA)
    assert result.exit_code == 0, result.output
    return root


@pytest.fixture
def sample_library(sample_scan, tmp_path) -> Library:
    """A private copy of the scanned sample_data library."""
    import shutil

    shutil.copytree(sample_scan, tmp_path / "lib")
    return Library(tmp_path / "lib")
