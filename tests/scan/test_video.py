"""Videos through the whole scan (real MTCNN and the default model): a two-minute clip made here
from sample_data's photos, two people in it, gives two faces, each with its best frame and span;
tags, XMP, thumbnails and forget follow."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from clips import write_clip
from conftest import SAMPLE_DATA, run
from facebatch.review.pages import Scanned
from facebatch.review.thumbnails import make_thumbnails
from facebatch.store import Library

PEOPLE = SAMPLE_DATA / "people"
# 20 seconds each: Barack Obama in four photos, then Joe Biden in two.
SCENES = [PEOPLE / "barack_obama" / f"{k}.jpg" for k in (1, 2, 3, 4)] + [PEOPLE / "joe_biden" / f"{k}.jpg" for k in (1, 2)]
SIZE = (960, 720)


@pytest.fixture(scope="module")
def video_library(tmp_path_factory) -> tuple[Library, Path]:
    root = tmp_path_factory.mktemp("video")
    folder = root / "home movies"
    folder.mkdir()
    write_clip(folder / "clip.mp4", SCENES, 20, SIZE, fps=2)
    result = run("--library", root / "lib", "scan", "-q", folder)
    assert result.exit_code == 0, result.output
    return Library(root / "lib"), folder


def test_a_two_minute_clip_of_two_people_gives_two_faces_with_their_best_frame_and_span(video_library):
    library, folder = video_library
    [photo] = library.read_photos().to_pylist()
    assert (photo["kind"], photo["duration"], photo["width"], photo["height"], photo["n_faces"], photo["status"]) == (
        "video", 120.0, *SIZE, 2, "ok")
    faces = sorted(library.read_faces(["video_time", "video_span", "box"]).to_pylist(), key=lambda f: f["video_span"])
    assert len(faces) == 2
    obama, biden = faces
    assert obama["video_span"][0] == 0.0 and 70 <= obama["video_span"][1] < 80  # seen from 0 to the last keyframe before 80 s
    assert 80 <= biden["video_span"][0] and biden["video_span"][1] < 120
    assert obama["video_span"][0] <= obama["video_time"] <= obama["video_span"][1]
    assert all(0 <= f["box"][0] < f["box"][2] <= SIZE[0] and 0 <= f["box"][1] < f["box"][3] <= SIZE[1] for f in faces)


def test_no_videos_leaves_them_out(video_library, tmp_path):
    _, folder = video_library
    result = run("--library", tmp_path / "lib", "scan", "--no-videos", folder)
    assert result.exit_code == 0, result.output
    assert Library(tmp_path / "lib").read_photos().num_rows == 0


def test_a_video_is_tagged_named_in_its_sidecar_thumbnailed_and_forgotten(video_library, tmp_path):
    library, folder = video_library
    assert run("--library", library.root, "cluster").exit_code == 0
    faces = library.read_faces(["face_id", "video_span"]).to_pylist()
    obama = min(faces, key=lambda f: f["video_span"])["face_id"]
    assert run("--library", library.root, "label", "face", obama, "Barack Obama").exit_code == 0

    out = tmp_path / "tags.json"
    assert run("--library", library.root, "export", out).exit_code == 0
    [record] = json.loads(out.read_text())["photos"]
    assert record["kind"] == "video"
    named = [f for f in record["faces"] if f["person"] == "Barack Obama"]
    assert len(named) == 1 and named[0]["video_span"][0] == 0.0 and named[0]["video_time"] is not None

    result = run("--library", library.root, "export-xmp")
    assert result.exit_code == 0, result.output
    sidecar = (folder / "clip.mp4.xmp").read_text()
    assert "<rdf:li>Barack Obama</rdf:li>" in sidecar and "mwg-rs:Regions" not in sidecar  # people, no regions

    thumbnails = make_thumbnails(library, Scanned.read(library).boxes.values())  # from the frame each was found in
    assert {Image.open(path).size for path in thumbnails.values()} == {(200, 200)}

    assert run("--library", library.root, "forget", "Barack Obama", "--yes").exit_code == 0
    assert not (folder / "clip.mp4.xmp").exists()  # it held only the name facebatch wrote: gone with it
    assert obama not in library.read_faces(["face_id"])["face_id"].to_pylist()
