"""--find-rotated: a photo held sideways (no orientation tag) gives its faces in its own
coordinates, with the turn that found them, and crops that undo it."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import SAMPLE_DATA, run
from facebatch.config import DetectionSettings, ModelSettings
from facebatch.models.faces import pipeline_for, prepare_builder
from facebatch.models.weights import resolve_weights
from facebatch.store import Library

TURNS = {90: Image.Transpose.ROTATE_90, 270: Image.Transpose.ROTATE_270}  # PIL: counter-clockwise


def jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=92)
    return buffer.getvalue()


def photo_folder(tmp_path: Path, turn: Image.Transpose, upright_too: bool = True) -> Path:
    """A folder with Joe Biden's photo turned by `turn` (sideways.jpg), and upright (upright.jpg)."""
    folder = tmp_path / "scans"
    folder.mkdir()
    upright = Image.open(SAMPLE_DATA / "people/joe_biden/1.jpg").convert("RGB")
    if upright_too:
        (folder / "upright.jpg").write_bytes(jpeg(upright))
    (folder / "sideways.jpg").write_bytes(jpeg(upright.transpose(turn)))
    return folder


@pytest.mark.parametrize("model", ["sface", "facenet"])
def test_a_sideways_portrait_gives_the_upright_face_back(model):
    upright = Image.open(SAMPLE_DATA / "people/barack_obama/1.jpg").convert("RGB")
    pipeline = pipeline_for(prepare_builder(DetectionSettings(find_rotated=True), resolve_weights(),
                                            ModelSettings(embedding=model), threads=2))
    _, (face,), crops = pipeline.find_faces(jpeg(upright))
    reference = pipeline.embed(crops)[0]
    width, height = upright.size
    for rotation, transpose in TURNS.items():  # the photo turned counter-clockwise: found turning it clockwise
        sideways = upright.transpose(transpose)
        _, faces, crops = pipeline.find_faces(jpeg(sideways))
        assert [f.rotation for f in faces] == [rotation]
        x1, y1, x2, y2 = face.box
        # The upright box, turned as the photo was, in the sideways photo's own pixels.
        expected = (y1, width - x2, y2, width - x1) if rotation == 90 else (height - y2, x1, height - y1, x2)
        assert np.abs(np.array(faces[0].box) - np.array(expected)).max() < 12
        assert float(np.linalg.norm(pipeline.embed(crops)[0] - reference)) < 0.4  # the same face, upright again


def test_without_the_option_a_sideways_photo_keeps_no_face_and_upright_photos_are_not_turned():
    upright = Image.open(SAMPLE_DATA / "people/barack_obama/1.jpg").convert("RGB")
    plain = pipeline_for(prepare_builder(DetectionSettings(), resolve_weights(), ModelSettings(), threads=2))
    assert plain.find_faces(jpeg(upright.transpose(Image.Transpose.ROTATE_90)))[1] == []
    turned = pipeline_for(prepare_builder(DetectionSettings(find_rotated=True), resolve_weights(), ModelSettings(),
                                          threads=2))
    assert [f.rotation for f in turned.find_faces(jpeg(upright))[1]] == [0]


def test_scan_find_rotated_records_the_turn(tmp_path):
    folder = photo_folder(tmp_path, Image.Transpose.ROTATE_90, upright_too=False)
    result = run("--library", tmp_path / "lib", "scan", folder, "--find-rotated")
    assert result.exit_code == 0 and "1 new face;" in result.output, result.output
    library = Library(tmp_path / "lib")
    (face,) = library.read_faces().to_pylist()
    assert face["rotation"] == 90
    # Once asked, the library keeps looking sideways: a forced scan without the option keeps the face.
    again = run("--library", library.root, "scan", folder, "--force", "-q")
    assert again.exit_code == 0 and library.read_info()["find_rotated"] is True
    assert [(f["face_id"], f["rotation"]) for f in library.read_faces().to_pylist()] == [(face["face_id"], 90)]


def test_a_model_change_embeds_a_turned_face_upright_again(tmp_path):
    folder = photo_folder(tmp_path, Image.Transpose.ROTATE_270)
    library = Library(tmp_path / "lib")
    assert run("--library", library.root, "scan", folder, "--find-rotated", "-q").exit_code == 0
    moved = run("--library", library.root, "scan", folder, "--model", "facenet")  # FaceNet crops by the box
    assert moved.exit_code == 0 and "2 embedded again" in moved.output, moved.output
    faces = {Path(f["path"]).name: f for f in library.read_faces().to_pylist()}
    assert (faces["upright.jpg"]["rotation"], faces["sideways.jpg"]["rotation"]) == (None, 270)
    assert faces["sideways.jpg"]["model"] == faces["upright.jpg"]["model"] == library.model().tag
    distance = np.linalg.norm(np.array(faces["sideways.jpg"]["embedding"]) - np.array(faces["upright.jpg"]["embedding"]))
    assert distance < 0.4  # the turned face was cropped upright again: the same face


def test_find_rotated_on_a_library_scanned_without_it_looks_again_at_photos_with_no_face(tmp_path):
    folder = photo_folder(tmp_path, Image.Transpose.ROTATE_90)
    library = Library(tmp_path / "lib")
    first = run("--library", library.root, "scan", folder)
    assert first.exit_code == 0 and "1 new face;" in first.output, first.output  # the sideways one missed
    again = run("--library", library.root, "scan", folder, "--find-rotated")  # no --force needed
    assert again.exit_code == 0 and "1 scanned" in again.output and "1 new face;" in again.output, again.output
    faces = {Path(f["path"]).name: f["rotation"] for f in library.read_faces().to_pylist()}
    assert faces == {"upright.jpg": None, "sideways.jpg": 90}
    third = run("--library", library.root, "scan", folder, "--find-rotated")
    assert "0 scanned" in third.output  # asked once: nothing is looked at again after that
