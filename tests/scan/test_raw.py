"""RAW photos through the whole scan (real MTCNN and the default model): DNGs written here from
sample_data's photos (tests/dng.py), one with the camera's JPEG preview and held sideways, one that
LibRaw demosaics, and a RAW + JPEG pair that is one photo; their XMP regions land on the faces."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from conftest import SAMPLE_DATA, run, scan_quietly
from dng import write_dng
from facebatch.exports.xmp_packet import parse_packet
from facebatch.exports.xmp_regions import read_regions
from facebatch.scan.pipeline import iou
from facebatch.store import Library

OBAMA = SAMPLE_DATA / "people" / "barack_obama" / "1.jpg"
BIDEN = SAMPLE_DATA / "people" / "joe_biden" / "1.jpg"


def faces_by_name(library: Path) -> dict[str, list[list[float]]]:
    faces = Library(library).read_faces(["path", "box"])
    out: dict[str, list[list[float]]] = {}
    for path, box in zip(faces["path"].to_pylist(), faces["box"].to_pylist()):
        out.setdefault(Path(path).name, []).append(box)
    return out


@pytest.fixture(scope="module")
def raw_library(tmp_path_factory) -> tuple[Path, Path, str]:
    root = tmp_path_factory.mktemp("raw")
    photos = root / "photos"
    photos.mkdir()
    obama, biden = Image.open(OBAMA), Image.open(BIDEN)
    # A camera held sideways: the sensor's frame turned a quarter left, EXIF 6 turns it back to show.
    write_dng(photos / "sideways.dng", obama.transpose(Image.Transpose.ROTATE_90), preview_long_side=1024, orientation=6)
    write_dng(photos / "demosaic.dng", biden)  # no preview: a half-size demosaic
    write_dng(photos / "IMG_7.dng", obama, preview_long_side=1024)  # RAW + JPEG: one photo
    obama.save(photos / "IMG_7.jpg", quality=95)
    result = run("--library", root / "lib", "scan", photos)
    assert result.exit_code == 0, result.output
    originals = root / "originals"
    originals.mkdir()
    for name, image in (("obama.jpg", obama), ("biden.jpg", biden)):
        image.save(originals / name, quality=95)
    scan_quietly(root / "jpeg-lib", originals)
    return root / "lib", root / "jpeg-lib", result.output


def test_raws_are_scanned_in_their_displayed_size_and_a_pair_is_one_photo(raw_library):
    library, originals, output = raw_library
    assert "1 RAW + JPEG pair scanned as one photo each (the RAW, or its JPEG where LibRaw can't read the RAW)" in output
    photos = Library(library).read_photos()
    sizes = {Path(p).name: (w, h, s) for p, w, h, s in zip(*(photos[c].to_pylist() for c in ("path", "width", "height", "status")))}
    width, height = Image.open(OBAMA).size
    assert sizes == {"sideways.dng": (width, height, "ok"), "IMG_7.dng": (width, height, "ok"),
                     "demosaic.dng": (*Image.open(BIDEN).size, "ok")}

    found, expected = faces_by_name(library), faces_by_name(originals)
    for raw, jpeg in (("IMG_7.dng", "obama.jpg"), ("sideways.dng", "obama.jpg"), ("demosaic.dng", "biden.jpg")):
        assert len(found[raw]) == len(expected[jpeg])  # the same faces, in the same places as shown
        assert all(max(iou(box, other) for other in expected[jpeg]) > 0.8 for box in found[raw])


def test_xmp_regions_of_a_raw_land_on_its_faces_in_its_stored_frame(raw_library, tmp_path):
    library, _, _ = raw_library
    assert run("--library", library, "cluster").exit_code == 0
    faces = Library(library).read_faces(["face_id", "path", "box"])
    sideways = [(f, b) for f, p, b in zip(*(faces[c].to_pylist() for c in ("face_id", "path", "box"))) if p.endswith("sideways.dng")]
    pair = [f for f, p in zip(faces["face_id"].to_pylist(), faces["path"].to_pylist()) if p.endswith("IMG_7.dng")]
    face, box = sideways[0]
    assert run("--library", library, "label", "face", face, pair[0], "Barack Obama").exit_code == 0
    result = run("--library", library, "export-xmp", "--sidecar-name", "photo.xmp")
    assert result.exit_code == 0, result.output
    photos = Path(faces["path"][0].as_py()).parent
    assert (photos / "IMG_7.xmp").exists()  # the pair's one sidecar, the stem form Lightroom reads
    assert not (photos / "IMG_7.jpg.xmp").exists()
    packet = parse_packet((photos / "sideways.xmp").read_bytes())
    width, height = Image.open(OBAMA).size  # as shown; the sensor's frame is height x width
    assert b'stDim:w="' + str(height).encode() + b'"' in packet.data  # AppliedToDimensions: the RAW as stored
    [region] = [r for r in read_regions(packet)[0] if r.source == "mwg"]
    stored = [box[1], width - box[2], box[3], width - box[0]]  # the shown box in the sensor's frame
    written = [region.box.x1 * height, region.box.y1 * width, region.box.x2 * height, region.box.y2 * width]
    assert iou(written, stored) > 0.95


def test_a_raw_libraw_cannot_read_is_scanned_from_its_jpeg(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    raw = bytearray(b"II*\x00" + b"\x08\x00\x00\x00" + b"\x00" * 200)  # a TIFF header LibRaw makes nothing of
    (photos / "IMG_9.NEF").write_bytes(bytes(raw))
    Image.open(OBAMA).save(photos / "IMG_9.JPG", quality=95)
    result = run("--library", tmp_path / "lib", "scan", photos)
    assert result.exit_code == 0, result.output
    [row] = Library(tmp_path / "lib").read_photos().to_pylist()
    assert (Path(row["path"]).name, row["status"], row["width"]) == ("IMG_9.NEF", "ok", Image.open(OBAMA).width)
    assert Library(tmp_path / "lib").read_faces(["face_id"]).num_rows >= 1


def test_forget_photo_knows_a_pairs_jpeg_as_its_raw(raw_library):
    from facebatch.forget import faces_of_photos

    library, _, _ = raw_library
    faces = Library(library).read_faces(["face_id", "path"])
    photos = Path(faces["path"][0].as_py()).parent
    raw_faces = {f for f, p in zip(faces["face_id"].to_pylist(), faces["path"].to_pylist()) if p.endswith("IMG_7.dng")}
    assert raw_faces and faces_of_photos(Library(library), [str(photos / "IMG_7.jpg")]) == raw_faces
