"""`facebatch scan` end to end with the real models (MTCNN, converted FaceNet) on real photos."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from facebatch.models.catalog import DEFAULT_MODEL, model_named
from facebatch.scan.driver import worker_arguments
from facebatch.store import Library
from conftest import SAMPLE_DATA, dataset, hard_manifest, run

SUMMARY = re.compile(
    r"^(\d+) photos?: (\d+) scanned, (\d+) moved, (\d+) unchanged, (\d+) gone; (\d+) new faces?(?:, \d+ found again)?; "
    r"(\d+) errors?.*; "
    r"[\d.]+s( \([\d.]+ photos/s\))?$"
)


def scan(library: Path, *args: str) -> tuple[str, re.Match]:
    result = run("--library", library, "scan", *args)
    assert result.exit_code == 0, result.output
    line = result.output.strip().splitlines()[-1]
    match = SUMMARY.match(line)
    assert match, line
    return result.output, match


def sample_photos() -> list[Path]:
    return sorted(p for p in SAMPLE_DATA.rglob("*") if p.suffix.lower() in {".jpg", ".png"})


@pytest.fixture(scope="module")
def sample_library(tmp_path_factory) -> Library:
    library = tmp_path_factory.mktemp("sample") / "lib"
    output, match = scan(library, str(SAMPLE_DATA), "--workers", "2")
    assert "\r" not in output  # no progress bar outside a terminal
    assert int(match.group(1)) == len(sample_photos())
    return Library(library)


def test_every_photo_gets_a_row_and_faces_where_there_are_faces(sample_library):
    photos = {Path(r["path"]).relative_to(SAMPLE_DATA).as_posix(): r for r in sample_library.read_photos().to_pylist()}
    assert sorted(photos) == sorted(p.relative_to(SAMPLE_DATA).as_posix() for p in sample_photos())
    for path, row in photos.items():
        if path.startswith("people/"):
            assert row["status"] == "ok" and row["n_faces"] >= 1, path
        elif path.startswith("groups/"):
            assert row["n_faces"] >= 10, path  # 13 people in the Situation Room photo
        else:
            assert row["status"] == "no_faces" and row["n_faces"] == 0, path
    faces = sample_library.read_faces().to_pylist()
    assert sum(r["n_faces"] for r in photos.values()) == len(faces)
    assert len({f["face_id"] for f in faces}) == len(faces)


def test_boxes_are_inside_the_photo_and_embeddings_unit_norm(sample_library):
    size = {r["photo_id"]: (r["width"], r["height"]) for r in sample_library.read_photos().to_pylist()}
    faces = sample_library.read_faces()
    for face in faces.to_pylist():
        width, height = size[face["photo_id"]]
        x1, y1, x2, y2 = face["box"]
        assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
        assert face["score"] >= 0.95
        assert face["model"] == sample_library.model().tag and face["model"].startswith(f"{DEFAULT_MODEL}[")
    embeddings = np.stack(faces["embedding"].to_numpy(zero_copy_only=False))
    assert embeddings.shape[1] == model_named(DEFAULT_MODEL).dim
    norms = np.linalg.norm(embeddings, axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-5)


def test_photos_of_one_person_are_closer_than_photos_of_two(sample_library):
    best = {}  # the main face of each single-person photo
    for face in sample_library.read_faces().to_pylist():
        rel = Path(face["path"]).relative_to(SAMPLE_DATA)
        if rel.parts[0] == "people" and face["face_index"] == 0:
            best[rel] = (rel.parts[1], np.asarray(face["embedding"]))
    same, different = [], []
    for (person_a, a), (person_b, b) in itertools.combinations(best.values(), 2):
        (same if person_a == person_b else different).append(float(np.linalg.norm(a - b)))
    assert len(same) >= 7 and len(different) >= 10
    assert max(same) < min(different), (sorted(same), sorted(different))


def test_a_second_scan_does_no_model_work(sample_library):
    _, match = scan(sample_library.root, str(SAMPLE_DATA), "--workers", "1")
    found, scanned, moved, unchanged, gone = (int(match.group(i)) for i in range(1, 6))
    assert (scanned, moved, unchanged, gone) == (0, 0, found, 0)


def test_moved_touched_new_and_deleted_photos(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    originals = [SAMPLE_DATA / "people/barack_obama/2.jpg", SAMPLE_DATA / "people/joe_biden/1.jpg"]
    for source in originals:
        (folder / source.name.replace(".jpg", f"-{source.parent.name}.jpg")).write_bytes(source.read_bytes())
    library = Library(tmp_path / "lib")
    scan(library.root, str(folder), "--workers", "1")
    before = {f["face_id"]: f for f in library.read_faces().to_pylist()}

    (folder / "2-barack_obama.jpg").rename(folder / "moved.jpg")  # same content, new path
    os.utime(folder / "1-joe_biden.jpg", ns=(1, 1))  # touched: the hash says unchanged
    (folder / "new.jpg").write_bytes((SAMPLE_DATA / "people/grace_hopper/1.jpg").read_bytes())
    _, match = scan(library.root, str(folder), "--workers", "1")
    assert match.group(1, 2, 3, 4, 5) == ("3", "1", "1", "1", "1")  # moved, touched (unchanged content), new, gone

    photos = {Path(r["path"]).name: r for r in library.read_photos().to_pylist()}
    assert photos["2-barack_obama.jpg"]["status"] == "gone"
    assert {photos[n]["status"] for n in ("moved.jpg", "1-joe_biden.jpg", "new.jpg")} == {"ok"}
    after = {f["face_id"]: f for f in library.read_faces().to_pylist()}
    assert set(before) < set(after)  # the moved photo kept its face ids: labels on them survive
    assert {Path(after[i]["path"]).name for i in before} == {"moved.jpg", "1-joe_biden.jpg"}

    (folder / "new.jpg").unlink()
    scan(library.root, str(folder), "--workers", "1")
    assert len(library.read_faces()) == len(before)

    (folder / "copy.jpg").write_bytes((folder / "moved.jpg").read_bytes())  # a copy: the original stays
    copied = run("--library", library.root, "scan", folder, "--workers", "1")
    assert "3 photos: 0 scanned, 0 moved, 1 copied, 2 unchanged, 0 gone; 0 new faces;" in copied.output
    # The copy lists the same face as its original, and counts once, as `cluster` counts it.
    assert run("--library", library.root, "cluster").output.startswith("2 faces:")
    tags = run("--library", library.root, "export", tmp_path / "tags.json").output
    assert tags.startswith("3 photos, 2 faces (0 with a person)"), tags


def test_forced_rescan_with_other_settings_keeps_face_ids(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "group.jpg").write_bytes((SAMPLE_DATA / "groups/situation_room_2011.jpg").read_bytes())
    library = Library(tmp_path / "lib")
    scan(library.root, str(folder), "--workers", "1")
    before = library.read_faces()
    output, match = scan(library.root, str(folder), "--workers", "1", "--force", "--detect-size", "1000")
    assert match.group(2) == "1"  # the models ran again
    assert f"; 0 new faces, {before.num_rows} found again;" in output  # the same faces: none is new
    after = library.read_faces()
    assert sorted(after["face_id"].to_pylist()) == sorted(before["face_id"].to_pylist())
    assert after["box"].to_pylist() != before["box"].to_pylist()  # new boxes, same ids


def test_bad_files_get_rows_and_the_scan_goes_on(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "text.jpg").write_text("not a photo")
    good = (SAMPLE_DATA / "people/barack_obama/2.jpg").read_bytes()
    (folder / "cut.jpg").write_bytes(good[: len(good) // 2])
    (folder / "good.jpg").write_bytes(good)
    result = run("--library", tmp_path / "lib", "scan", folder, "--workers", "1")
    assert result.exit_code == 0, result.output
    assert "3 errors (empty_file 1, not_an_image 1, truncated 1)" in result.output
    rows = {Path(r["path"]).name: r for r in Library(tmp_path / "lib").read_photos().to_pylist()}
    assert {n: r["status"] for n, r in rows.items()} == {
        "empty.jpg": "error", "text.jpg": "error", "cut.jpg": "error", "good.jpg": "ok"}
    assert all(rows[n]["error"] for n in ("empty.jpg", "text.jpg", "cut.jpg"))
    strict = run("--library", tmp_path / "lib", "scan", folder, "--strict", "--quiet")
    assert strict.exit_code == 1 and strict.output == ""
    assert "(`facebatch errors` lists them)" in result.output
    listed = run("--library", tmp_path / "lib", "errors")
    lines = listed.output.splitlines()
    assert listed.exit_code == 0 and [line.split("\t")[:2] for line in lines[:-1]] == [
        [str(folder / "cut.jpg"), "truncated"], [str(folder / "empty.jpg"), "empty_file"],
        [str(folder / "text.jpg"), "not_an_image"]]
    assert all(line.split("\t")[2] for line in lines[:-1])  # each with its message
    assert lines[-1] == ("3 photos failed: empty_file 1, not_an_image 1, truncated 1; `facebatch scan --retry-errors` "
                         "reads them again")
    as_json = run("--library", tmp_path / "lib", "errors", "--kind", "truncated", "--json")
    assert [json.loads(line)["path"] for line in as_json.output.splitlines()] == [str(folder / "cut.jpg")]
    (folder / "cut.jpg").write_bytes(good)  # fixed: scanned again, no longer listed
    assert run("--library", tmp_path / "lib", "scan", folder, "-q").exit_code == 0
    assert run("--library", tmp_path / "lib", "errors").output.splitlines()[-1].startswith("2 photos failed: ")


def test_hard_cases_each_get_a_row(tmp_path):
    hard = dataset("hard")
    library = Library(tmp_path / "lib")
    scan(library.root, str(hard), "--workers", "2")
    photos = {Path(r["path"]).relative_to(hard).as_posix(): r for r in library.read_photos().to_pylist()}
    manifest = {row["path"]: row for row in hard_manifest(hard)}
    assert set(manifest) <= set(photos)
    assert all(r["status"] in ("ok", "no_faces") for r in photos.values()), [
        (p, r["error"]) for p, r in photos.items() if r["status"] == "error"]

    faces = library.read_faces().to_pylist()
    for path in [p for p in manifest if re.match(r"exif_orientation/nasa_.*_exif\d\.jpg", p)]:
        face = next(f for f in faces if f["path"] == str(hard / path) and f["face_index"] == 0)
        lx, ly, rx, ry, nx, ny, mlx, mly, mrx, mry = face["landmarks"]
        assert max(ly, ry) < ny < min(mly, mry), path  # eyes above the nose above the mouth: upright
        assert lx < rx, path  # not mirrored
    assert photos["png_alpha/nasa_andrew_morgan_alpha.png"]["n_faces"] == 1
    for path in [p for p in manifest if p.startswith("no_faces/")]:
        assert photos[path]["status"] == "no_faces", path
    assert photos["very_large/nasa_iss_morgan_hague_interview_48708316717_o.jpg"]["n_faces"] >= 2


def _scan_command(library: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "facebatch.cli", "--library", str(library), "scan", *args]


def test_a_killed_scan_resumes_with_every_photo_exactly_once(tmp_path):
    library = Library(tmp_path / "lib")
    args = [str(SAMPLE_DATA), "--workers", "1", "--shard-size", "1", "--quiet"]
    process = subprocess.Popen(_scan_command(library.root, *args), start_new_session=True)
    deadline = time.monotonic() + 240
    while len(list(library.shards_dir.glob("part-*.json"))) < 3 and time.monotonic() < deadline:
        assert process.poll() is None, "the scan ended before it could be killed"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)  # the scan and its Dask workers, mid-shard
    process.wait()
    done_before = len(list(library.shards_dir.glob("part-*.json")))
    assert 3 <= done_before < len(sample_photos())

    subprocess.run(_scan_command(library.root, *args), check=True, timeout=600)
    photos = library.read_photos()
    assert sorted(photos["path"].to_pylist()) == sorted(str(p) for p in sample_photos())
    faces = library.read_faces()["face_id"].to_pylist()
    assert len(faces) == len(set(faces)) == sum(photos["n_faces"].to_pylist())
    for folder in (library.photos_dir, library.faces_dir):  # the Parquet files alone give the same rows
        rows = sum(pq.read_metadata(p).num_rows for p in folder.glob("*.parquet"))
        assert rows == (len(photos) if folder == library.photos_dir else len(faces))


def test_kill_9_of_the_scan_alone_leaves_no_alarming_warning(tmp_path):
    """`kill -9` of the command (not its workers) left multiprocessing's resource tracker saying
    "There appear to be 12 leaked semaphore objects": it cleans them up; the scan resumes."""
    library = Library(tmp_path / "lib")
    args = [str(SAMPLE_DATA), "--workers", "1", "--shard-size", "1", "--quiet"]
    process = subprocess.Popen(_scan_command(library.root, *args), start_new_session=True, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while not list(library.shards_dir.glob("part-*.json")) and time.monotonic() < deadline:
        assert process.poll() is None, "the scan ended before it could be killed"
        time.sleep(0.05)
    process.kill()  # the command only, as `kill -9 PID` does
    try:
        _, err = process.communicate(timeout=60)  # until the tracker and the workers let go of stderr
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # whatever of the workers is left
    assert b"leaked" not in err and b"Traceback" not in err, err.decode()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_existing_dask_cluster_gives_the_same_rows(tmp_path, sample_library):
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    python = [sys.executable, "-m"]
    processes = [
        subprocess.Popen([*python, "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", str(port),
                          "--no-dashboard"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ]
    try:
        # The settings of jobs/dask/worker.sh: one model slot per worker process, here 2 of them.
        processes.append(subprocess.Popen(
            [*python, "distributed.cli.dask_worker", address, *worker_arguments(2), "--no-dashboard"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        library = Library(tmp_path / "lib")
        output, _ = scan(library.root, str(SAMPLE_DATA), "--scheduler", address)
        assert "warning" not in output
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            process.wait(timeout=30)

    def rows(lib: Library) -> dict:
        return {(f["path"], f["face_id"]): np.asarray(f["embedding"]) for f in lib.read_faces().to_pylist()}

    local, remote = rows(sample_library), rows(library)
    assert local.keys() == remote.keys()
    for key in local:
        np.testing.assert_allclose(local[key], remote[key], atol=1e-4)
    key = lambda r: (r["path"], r["photo_id"], r["n_faces"], r["status"])  # noqa: E731
    assert sorted(map(key, library.read_photos().to_pylist())) == sorted(
        map(key, sample_library.read_photos().to_pylist()))


def test_a_heic_photo_is_scanned_like_its_jpeg(tmp_path):
    """Phones write HEIC: the default install reads it, finds the same face, embeds it alike."""
    from PIL import Image

    folder = tmp_path / "phone"
    folder.mkdir()
    source = SAMPLE_DATA / "people" / "barack_obama" / "1.jpg"
    with Image.open(source) as image:
        image.save(folder / "IMG_0001.HEIC", format="HEIF", quality=92)
    (folder / "IMG_0001.jpg").write_bytes(source.read_bytes())
    library = Library(tmp_path / "lib")
    result = run("--library", library.root, "scan", folder)
    assert result.exit_code == 0, result.output
    assert "2 photos: 2 scanned" in result.output and "0 errors" in result.output
    photos = {Path(r["path"]).name: r for r in library.read_photos().to_pylist()}
    assert photos["IMG_0001.HEIC"]["status"] == "ok" and photos["IMG_0001.HEIC"]["n_faces"] == 1
    assert (photos["IMG_0001.HEIC"]["width"], photos["IMG_0001.HEIC"]["height"]) == (
        photos["IMG_0001.jpg"]["width"], photos["IMG_0001.jpg"]["height"])
    faces = {Path(f["path"]).name: f for f in library.read_faces().to_pylist()}
    heic, jpeg = faces["IMG_0001.HEIC"], faces["IMG_0001.jpg"]
    assert np.abs(np.array(heic["box"]) - np.array(jpeg["box"])).max() < 4
    assert float(np.linalg.norm(np.array(heic["embedding"]) - np.array(jpeg["embedding"]))) < 0.3
