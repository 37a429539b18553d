"""XMP face regions: orientation maps checked against Pillow; merging that keeps every byte other
tools wrote; sidecar names; and the round trip on real photos in all eight EXIF orientations
(sample_data in CI, ../shared/datasets when present): facebatch writes, ExifTool reads every
region where facebatch found the face, and import-xmp in a fresh library gives the names back."""

from __future__ import annotations

import difflib
import json
import shutil
import subprocess
from dataclasses import astuple, dataclass
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageOps

from conftest import LIBRARY_MODEL, SAMPLE_DATA, add_photos, dataset, person_centres, run, scan_quietly
from facebatch.exports.xmp import (
    SIDECAR_FULL,
    SIDECAR_STEM,
    FaceRegion,
    FolderStems,
    choose_sidecar,
    merge_sidecar,
)
from facebatch.exports.xmp_packet import MWG_RS, XmpError, array_items, parse_packet, struct_fields
from facebatch.exports.xmp_regions import Box, read_regions, shown_to_stored, stored_to_shown
from facebatch.imageload import _ORIENTATION_TRANSPOSE
from facebatch.people.actions import label_faces
from facebatch.people.view import build_view
from facebatch.store import Library

ORIENTATIONS = range(1, 9)
_UNDO = {Image.Transpose.ROTATE_90: Image.Transpose.ROTATE_270, Image.Transpose.ROTATE_270: Image.Transpose.ROTATE_90}


def to_stored(image: Image.Image, orientation: int) -> Image.Image:
    """The pixels a file must store so that a viewer applying `orientation` shows `image`."""
    if orientation == 1:
        return image
    transpose = _ORIENTATION_TRANSPOSE[orientation]
    return image.transpose(_UNDO.get(transpose, transpose))


def stored_box_by_pixels(box: list[float], shown_size: tuple[int, int], orientation: int) -> Box:
    """Where a box of the shown photo lies in the stored one, found by moving pixels with Pillow
    (not with facebatch's maps): a mask of the box, stored as the photo is."""
    mask = Image.new("L", shown_size, 0)
    x1, y1, x2, y2 = (round(v) for v in box)
    ImageDraw.Draw(mask).rectangle([x1, y1, x2 - 1, y2 - 1], fill=255)
    stored = to_stored(mask, orientation)
    left, top, right, bottom = stored.getbbox()
    return Box(left / stored.width, top / stored.height, right / stored.width, bottom / stored.height)


def only_inserted(original: bytes, merged: bytes) -> bool:
    """Every byte of `original` is still in `merged`, in order and unchanged: merging only added."""
    ops = difflib.SequenceMatcher(None, original, merged, autojunk=False).get_opcodes()
    return all(op in ("equal", "insert") for op, *_ in ops)


def exiftool_read(*paths: Path) -> list[dict]:
    exiftool = shutil.which("exiftool")
    if exiftool is None:
        pytest.skip("ExifTool is not installed (.ci/run installs Debian's libimage-exiftool-perl)")
    done = subprocess.run([exiftool, "-j", "-struct", "-n", *map(str, paths)], capture_output=True, check=True)
    return json.loads(done.stdout)


# --------------------------------------------------------------------------- frames


@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_orientation_maps_move_a_box_as_pillow_moves_its_pixels(orientation):
    shown_size = (300, 200) if orientation < 5 else (200, 300)
    box = [30.0, 20.0, 90.0, 140.0]
    expected = stored_box_by_pixels(box, shown_size, orientation)
    shown = Box.from_pixels(box, *shown_size)
    stored = shown_to_stored(shown, orientation)
    assert astuple(stored) == pytest.approx(astuple(expected))
    assert astuple(stored_to_shown(stored, orientation)) == pytest.approx(astuple(shown))


# --------------------------------------------------------------------------- merging, no photos needed

# What digiKam (exiv2) writes: one Description, attributes for simple values, a region of its own.
DIGIKAM_SIDECAR = b"""<?xpacket begin="\xef\xbb\xbf" id="W5M0MpCehiHzreSzNTczkc9d"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="XMP Core 4.4.0-Exiv2">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about=""
    xmlns:xmp="http://ns.adobe.com/xap/1.0/"
    xmlns:digiKam="http://www.digikam.org/ns/1.0/"
    xmlns:lr="http://ns.adobe.com/lightroom/1.0/"
    xmlns:dc="http://purl.org/dc/elements/1.1/"
    xmlns:MP="http://ns.microsoft.com/photo/1.2/"
    xmlns:MPRI="http://ns.microsoft.com/photo/1.2/t/RegionInfo#"
    xmlns:MPReg="http://ns.microsoft.com/photo/1.2/t/Region#"
    xmlns:mwg-rs="http://www.metadataworkinggroup.com/schemas/regions/"
    xmlns:stDim="http://ns.adobe.com/xap/1.0/sType/Dimensions#"
    xmlns:stArea="http://ns.adobe.com/xmp/sType/Area#"
   xmp:Rating="4"
   digiKam:ColorLabel="3">
   <digiKam:TagsList>
    <rdf:Seq>
     <rdf:li>Places/Paris</rdf:li>
     <rdf:li>People/Stranger</rdf:li>
    </rdf:Seq>
   </digiKam:TagsList>
   <lr:hierarchicalSubject>
    <rdf:Bag>
     <rdf:li>Places|Paris</rdf:li>
     <rdf:li>People|Stranger</rdf:li>
    </rdf:Bag>
   </lr:hierarchicalSubject>
   <dc:title>
    <rdf:Alt>
     <rdf:li xml:lang="x-default">Holiday &amp; friends</rdf:li>
    </rdf:Alt>
   </dc:title>
   <MP:RegionInfo rdf:parseType="Resource">
    <MPRI:Regions>
     <rdf:Bag>
      <rdf:li
       MPReg:PersonDisplayName="Stranger"
       MPReg:Rectangle="0.1, 0.1, 0.2, 0.2"/>
     </rdf:Bag>
    </MPRI:Regions>
   </MP:RegionInfo>
   <mwg-rs:Regions rdf:parseType="Resource">
    <mwg-rs:AppliedToDimensions
     stDim:w="4000"
     stDim:h="3000"
     stDim:unit="pixel"/>
    <mwg-rs:RegionList>
     <rdf:Bag>
      <rdf:li>
       <rdf:Description
        mwg-rs:Name="Stranger"
        mwg-rs:Type="Face">
       <mwg-rs:Area
        stArea:x="0.2"
        stArea:y="0.2"
        stArea:w="0.2"
        stArea:h="0.2"
        stArea:unit="normalized"/>
       </rdf:Description>
      </rdf:li>
     </rdf:Bag>
    </mwg-rs:RegionList>
   </mwg-rs:Regions>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
<?xpacket end="w"?>
"""

# What ExifTool writes: single quotes, one Description per namespace, rdf:parseType='Resource'.
EXIFTOOL_SIDECAR = b"""<?xpacket begin='\xef\xbb\xbf' id='W5M0MpCehiHzreSzNTczkc9d'?>
<x:xmpmeta xmlns:x='adobe:ns:meta/' x:xmptk='Image::ExifTool 12.57'>
<rdf:RDF xmlns:rdf='http://www.w3.org/1999/02/22-rdf-syntax-ns#'>

 <rdf:Description rdf:about=''
  xmlns:Iptc4xmpExt='http://iptc.org/std/Iptc4xmpExt/2008-02-29/'>
  <Iptc4xmpExt:PersonInImage>
   <rdf:Bag/>
  </Iptc4xmpExt:PersonInImage>
 </rdf:Description>

 <rdf:Description rdf:about=''
  xmlns:mwg-rs='http://www.metadataworkinggroup.com/schemas/regions/'
  xmlns:stArea='http://ns.adobe.com/xmp/sType/Area#'>
  <mwg-rs:Regions rdf:parseType='Resource'>
   <mwg-rs:RegionList>
    <rdf:Bag>
     <rdf:li rdf:parseType='Resource'>
      <mwg-rs:Area rdf:parseType='Resource'>
       <stArea:h>0.1</stArea:h>
       <stArea:unit>normalized</stArea:unit>
       <stArea:w>0.1</stArea:w>
       <stArea:x>0.85</stArea:x>
       <stArea:y>0.85</stArea:y>
      </mwg-rs:Area>
      <mwg-rs:Name>Rex</mwg-rs:Name>
      <mwg-rs:Type>Pet</mwg-rs:Type>
     </rdf:li>
    </rdf:Bag>
   </mwg-rs:RegionList>
  </mwg-rs:Regions>
 </rdf:Description>
</rdf:RDF>
</x:xmpmeta>
<?xpacket end='w'?>"""

ALICE = FaceRegion("f-alice", "Alice", "confirmed", Box(0.5, 0.5, 0.6, 0.7))
BOB = FaceRegion("f-bob", "Bob", "confirmed", Box(0.7, 0.1, 0.8, 0.2))
SIZE = (4000, 3000)


def names_in(data: bytes) -> dict[str, list[str]]:
    packet = parse_packet(data)
    out = {}
    for uri, local in (("http://iptc.org/std/Iptc4xmpExt/2008-02-29/", "PersonInImage"),
                       ("http://www.digikam.org/ns/1.0/", "TagsList"),
                       ("http://ns.adobe.com/lightroom/1.0/", "hierarchicalSubject")):
        out[local] = [li.text for p in packet.properties(uri, local) for li in array_items(p)]
    return out


def test_merge_adds_to_a_digikam_sidecar_and_takes_back_only_its_own():
    first = merge_sidecar(DIGIKAM_SIDECAR, [ALICE, BOB], SIZE)
    assert first.regions == 2 and only_inserted(DIGIKAM_SIDECAR, first.data)
    regions, _ = read_regions(parse_packet(first.data))
    assert sorted((r.source, r.name, r.facebatch_status) for r in regions) == [
        ("mp", "Alice", "confirmed"), ("mp", "Bob", "confirmed"), ("mp", "Stranger", None),
        ("mwg", "Alice", "confirmed"), ("mwg", "Bob", "confirmed"), ("mwg", "Stranger", None)]
    alice = next(r for r in regions if r.name == "Alice" and r.source == "mwg")
    assert astuple(alice.box) == pytest.approx(astuple(ALICE.box))
    assert names_in(first.data) == {
        "PersonInImage": ["Alice", "Bob"],
        "TagsList": ["Places/Paris", "People/Stranger", "People/Alice", "People/Bob"],
        "hierarchicalSubject": ["Places|Paris", "People|Stranger", "People|Alice", "People|Bob"]}

    assert merge_sidecar(first.data, [ALICE, BOB], SIZE).data == first.data  # again: not a byte changes

    renamed = merge_sidecar(first.data, [FaceRegion("f-alice", "Alicia", "confirmed", ALICE.box)], SIZE).data
    assert only_inserted(DIGIKAM_SIDECAR, renamed)
    assert sorted(r.name for r in read_regions(parse_packet(renamed))[0]) == ["Alicia", "Alicia", "Stranger", "Stranger"]
    assert names_in(renamed)["TagsList"] == ["Places/Paris", "People/Stranger", "People/Alicia"]

    assert merge_sidecar(renamed, [], SIZE).data == DIGIKAM_SIDECAR  # nothing left to say: the sidecar as it was


def test_a_name_another_tool_already_lists_is_never_taken_back():
    stranger_too = FaceRegion("f-s", "Stranger", "confirmed", Box(0.6, 0.0, 0.7, 0.1))
    first = merge_sidecar(DIGIKAM_SIDECAR, [stranger_too], SIZE).data
    assert names_in(first)["TagsList"] == ["Places/Paris", "People/Stranger"]  # already there: not added twice
    assert names_in(merge_sidecar(first, [], SIZE).data)["TagsList"] == ["Places/Paris", "People/Stranger"]


def test_a_face_another_tool_named_is_left_to_it():
    same = FaceRegion("f1", "Stranger", "confirmed", Box(0.11, 0.1, 0.29, 0.31))
    other = FaceRegion("f1", "Carol", "confirmed", Box(0.11, 0.1, 0.29, 0.31))
    assert merge_sidecar(DIGIKAM_SIDECAR, [same], SIZE).left_to_others == 1
    outcome = merge_sidecar(DIGIKAM_SIDECAR, [other], SIZE)
    assert (outcome.regions, outcome.disagreements) == (0, [("Carol", "Stranger")])
    assert "Carol" not in outcome.data.decode()


def test_merge_into_exiftool_layout_new_files_and_empty_forms():
    merged = merge_sidecar(EXIFTOOL_SIDECAR, [ALICE], SIZE).data
    assert only_inserted(EXIFTOOL_SIDECAR, merged)
    regions, other = read_regions(parse_packet(merged))
    assert [(r.source, r.name) for r in regions] == [("mwg", "Alice"), ("mp", "Alice")] and other == 1  # Rex, a pet
    assert names_in(merged)["PersonInImage"] == ["Alice"]  # into the empty <rdf:Bag/>
    assert parse_packet(merged).properties(MWG_RS, "Regions")[0].child(MWG_RS, "AppliedToDimensions") is not None
    # Taken back, a list left empty goes, and so does the Description that held only it; the
    # regions' AppliedToDimensions, which they lacked, stays.
    without_empty_list = EXIFTOOL_SIDECAR.replace(
        b"\n\n <rdf:Description rdf:about=''\n  xmlns:Iptc4xmpExt='http://iptc.org/std/Iptc4xmpExt/2008-02-29/'>\n"
        b"  <Iptc4xmpExt:PersonInImage>\n   <rdf:Bag/>\n  </Iptc4xmpExt:PersonInImage>\n </rdf:Description>", b"")
    taken_back = merge_sidecar(merged, [], SIZE).data
    assert only_inserted(without_empty_list, taken_back) and not only_inserted(EXIFTOOL_SIDECAR, taken_back)
    assert taken_back.replace(b'\n   <mwg-rs:AppliedToDimensions stDim:w="4000" stDim:h="3000" stDim:unit="pixel" '
                              b'xmlns:stDim="http://ns.adobe.com/xap/1.0/sType/Dimensions#"/>', b"") == without_empty_list

    new = merge_sidecar(None, [ALICE], SIZE).data
    assert new.startswith(b"<?xpacket") and [r.name for r in read_regions(parse_packet(new))[0]] == ["Alice", "Alice"]
    one_line = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"></rdf:RDF></x:xmpmeta>'
    assert only_inserted(one_line, merge_sidecar(one_line, [ALICE], SIZE).data)


@pytest.mark.parametrize("data, reason", [
    (b"<x:xmpmeta xmlns:x='adobe:ns:meta/'><rdf:RDF", "not well-formed"),
    (b"<!DOCTYPE x [<!ENTITY a 'aaaa'>]><x/>", "DOCTYPE"),
    ("<x:xmpmeta xmlns:x='adobe:ns:meta/'/>".encode("utf-16"), "UTF-8"),
    (b"<x:xmpmeta xmlns:x='adobe:ns:meta/'/>", "no rdf:RDF"),
    (DIGIKAM_SIDECAR.replace(b"<rdf:Seq>\n     <rdf:li>Places/Paris</rdf:li>\n     <rdf:li>People/Stranger</rdf:li>\n"
                             b"    </rdf:Seq>", b"Paris"), "not an array"),
])
def test_packets_facebatch_cannot_merge_are_refused(data, reason):
    with pytest.raises(XmpError, match=reason):
        merge_sidecar(data, [ALICE], SIZE)


def test_suggested_regions_say_so():
    guess = merge_sidecar(None, [FaceRegion("f", "Alice", "suggested", ALICE.box)], SIZE).data
    assert {r.facebatch_status for r in read_regions(parse_packet(guess))[0]} == {"suggested"}


# --------------------------------------------------------------------------- sidecar names


def test_sidecar_names_follow_what_is_there(tmp_path):
    photo = tmp_path / "a.jpg"
    photo.touch()
    assert choose_sidecar(photo, FolderStems(), SIDECAR_FULL) == tmp_path / "a.jpg.xmp"
    assert choose_sidecar(photo, FolderStems(), SIDECAR_STEM) == tmp_path / "a.xmp"
    (tmp_path / "a.xmp").touch()
    assert choose_sidecar(photo, FolderStems(), SIDECAR_FULL) == tmp_path / "a.xmp"  # Lightroom's, followed
    (tmp_path / "a.jpg.xmp").touch()
    assert choose_sidecar(photo, FolderStems(), SIDECAR_FULL) == tmp_path / "a.jpg.xmp"
    assert choose_sidecar(photo, FolderStems(), SIDECAR_STEM) == tmp_path / "a.xmp"  # both: the setting decides
    raw = tmp_path / "b.jpg"
    raw.touch()
    (tmp_path / "b.cr2").touch()
    (tmp_path / "b.xmp").touch()  # the raw's sidecar, not the JPEG's
    assert choose_sidecar(raw, FolderStems(), SIDECAR_STEM) == tmp_path / "b.jpg.xmp"


# --------------------------------------------------------------------------- the CLI on a library without photos


@pytest.fixture
def synthetic(tmp_path) -> Library:
    library = Library(tmp_path / "lib")
    library.create(LIBRARY_MODEL)
    add_photos(library, {"ann": 2}, dict(zip(["ann"], person_centres(1))), "a")
    return library


def test_export_needs_clusters_and_import_a_folder(synthetic, tmp_path):
    result = run("--library", synthetic.root, "export-xmp")
    assert result.exit_code == 2 and "facebatch cluster" in result.output
    result = run("--library", synthetic.root, "import-xmp", tmp_path / "nowhere")
    assert result.exit_code == 2 and result.output.count("\n") == 1 and "does not exist" in result.output
    result = run("--library", tmp_path / "none", "import-xmp", tmp_path)
    assert result.exit_code == 2 and "no library" in result.output


# --------------------------------------------------------------------------- real photos, eight orientations


@dataclass
class OrientedSet:
    """Photos in all eight orientations, scanned, named and exported."""

    folder: Path
    library: Library
    fresh: Path  # a copy of the library right after the scan: no clusters, no names
    names: dict[str, str]  # face_id -> the name given
    before: dict[str, bytes]  # sidecars that were there before the export, by path
    export_output: str


def write_orientations(folder: Path, upright: Image.Image, stem: str) -> None:
    for orientation in ORIENTATIONS:
        exif = Image.Exif()
        exif[0x0112] = orientation
        to_stored(upright, orientation).save(folder / f"{stem}_o{orientation}.jpg", quality=92, exif=exif.tobytes())


def faces_by_path(library: Library) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for face in library.read_faces(["face_id", "path", "box"]).to_pylist():
        out.setdefault(face["path"], []).append(face)
    return {path: sorted(faces, key=lambda f: f["box"][0] + f["box"][2]) for path, faces in out.items()}


def stored_fraction(face: dict, photo: Path) -> Box:
    with Image.open(photo) as image:
        orientation = image.getexif().get(0x0112, 1)
        shown = image.size if orientation < 5 else image.size[::-1]
    return stored_box_by_pixels(face["box"], shown, orientation)


def digikam_sidecar_for(photo: Path, stranger: dict) -> bytes:
    """DIGIKAM_SIDECAR with its Stranger over a face facebatch leaves unnamed, plus a region on no face."""
    box = stored_fraction(stranger, photo)
    x, y, w, h = (box.x1 + box.x2) / 2, (box.y1 + box.y2) / 2, box.x2 - box.x1, box.y2 - box.y1
    data = DIGIKAM_SIDECAR.replace(b'MPReg:Rectangle="0.1, 0.1, 0.2, 0.2"',
                                   f'MPReg:Rectangle="{box.x1:.5f}, {box.y1:.5f}, {w:.5f}, {h:.5f}"'.encode())
    for key, value in (("x", x), ("y", y), ("w", w), ("h", h)):
        data = data.replace(f'stArea:{key}="0.2"'.encode(), f'stArea:{key}="{value:.5f}"'.encode())
    with Image.open(photo) as image:
        data = data.replace(b'stDim:w="4000"', f'stDim:w="{image.width}"'.encode())
        data = data.replace(b'stDim:h="3000"', f'stDim:h="{image.height}"'.encode())
    nobody = (b'      <rdf:li>\n       <rdf:Description mwg-rs:Name="Nobody" mwg-rs:Type="Face">\n'
              b'        <mwg-rs:Area stArea:x="0.02" stArea:y="0.02" stArea:w="0.02" stArea:h="0.02" stArea:unit="normalized"/>\n'
              b'       </rdf:Description>\n      </rdf:li>\n     </rdf:Bag>\n    </mwg-rs:RegionList>')
    return data.replace(b"     </rdf:Bag>\n    </mwg-rs:RegionList>", nobody)


LIGHTROOM_SIDECAR = b"""<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="Adobe XMP Core 7.0">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about="" xmlns:crs="http://ns.adobe.com/camera-raw-settings/1.0/" crs:Exposure2012="+0.35"/>
 </rdf:RDF>
</x:xmpmeta>
"""


def build_oriented_set(root: Path, upright: Image.Image, extras: list[Path], with_foreign_sidecars: bool) -> OrientedSet:
    folder = root / "photos"
    folder.mkdir()
    write_orientations(folder, upright, "p")
    for photo in extras:
        shutil.copy(photo, folder / photo.name)
    library = Library(root / "lib")
    scan_quietly(library.root, folder)
    fresh = root / "fresh"
    shutil.copytree(library.root, fresh)
    assert run("--library", library.root, "cluster").exit_code == 0
    faces = faces_by_path(library)
    before: dict[str, bytes] = {}
    stranger = None
    if with_foreign_sidecars:
        o6 = folder / "p_o6.jpg"
        stranger = faces[str(o6)][0]
        before[str(o6) + ".xmp"] = digikam_sidecar_for(o6, stranger)
        before[str(folder / "p_o3.xmp")] = LIGHTROOM_SIDECAR
        elsewhere = root / "elsewhere"
        elsewhere.mkdir()
        before[str(elsewhere / "o2.xmp")] = EXIFTOOL_SIDECAR
        (folder / "p_o2.jpg.xmp").symlink_to(elsewhere / "o2.xmp")
        for path, data in before.items():
            Path(path).write_bytes(data)
    names: dict[str, str] = {}
    for path_faces in faces.values():
        for rank, face in enumerate(path_faces):
            if face is not stranger:
                names[face["face_id"]] = f"Person {rank}"
    for name in sorted(set(names.values())):
        label_faces(library, [f for f, n in names.items() if n == name], name)
    result = run("--library", library.root, "export-xmp")
    assert result.exit_code == 0, result.output
    return OrientedSet(folder, library, fresh, names, before, result.output)


@pytest.fixture(scope="module")
def sample_set(tmp_path_factory) -> OrientedSet:
    """sample_data's group photo (13 faces) in eight orientations, with sidecars other tools wrote."""
    with Image.open(SAMPLE_DATA / "groups" / "situation_room_2011.jpg") as image:
        upright = ImageOps.exif_transpose(image).convert("RGB").resize((900, 600), Image.Resampling.LANCZOS)
    return build_oriented_set(tmp_path_factory.mktemp("xmp-sample"), upright, [], with_foreign_sidecars=True)


@pytest.fixture(scope="module")
def dataset_set(tmp_path_factory) -> OrientedSet:
    """A NASA portrait of ../shared/datasets/hard in eight orientations, and the dataset's own
    photos stored rotated with EXIF 3, 6 and 8."""
    folder = dataset("hard") / "exif_orientation"
    originals = sorted(folder.glob("nasa_*_exif*.jpg"))
    with Image.open(originals[0]) as image:
        upright = ImageOps.exif_transpose(image).convert("RGB")
    return build_oriented_set(tmp_path_factory.mktemp("xmp-dataset"), upright, originals, with_foreign_sidecars=False)


@pytest.fixture(params=["sample", "dataset"])
def oriented(request) -> OrientedSet:
    return request.getfixturevalue(f"{request.param}_set")


def test_exiftool_reads_every_region_where_facebatch_found_the_face(oriented):
    sidecars = sorted(oriented.folder.glob("*.xmp"))
    read = {Path(r["SourceFile"]).name: r for r in exiftool_read(*sidecars)}
    checked = set()
    for path, faces in faces_by_path(oriented.library).items():
        photo = Path(path)
        sidecar = next(s for s in (photo.name + ".xmp", photo.stem + ".xmp") if s in read)
        tags = read[sidecar]
        with Image.open(photo) as image:
            stored_size = image.size
        mwg = {r["Face"]: r for r in tags["RegionInfo"]["RegionList"] if "Face" in r}
        mp = {r["Face"]: r for r in tags["RegionInfoMP"]["Regions"] if "Face" in r}
        dims = tags["RegionInfo"]["AppliedToDimensions"]
        assert (dims["W"], dims["H"], dims["Unit"]) == (*stored_size, "pixel")
        tolerance = 1.5 / min(stored_size)
        for face in faces:
            if face["face_id"] not in oriented.names:
                assert face["face_id"] not in mwg
                continue
            expected = stored_box_by_pixels(face["box"], stored_size if _orientation(photo) < 5 else stored_size[::-1],
                                            _orientation(photo))
            area = mwg[face["face_id"]]["Area"]
            assert mwg[face["face_id"]]["Name"] == oriented.names[face["face_id"]]
            assert area["Unit"] == "normalized" and mwg[face["face_id"]]["Type"] == "Face"
            centred = Box.from_centre(area["X"], area["Y"], area["W"], area["H"])
            assert astuple(centred) == pytest.approx(astuple(expected), abs=tolerance)
            x, y, w, h = (float(v) for v in mp[face["face_id"]]["Rectangle"].split(","))
            assert astuple(Box(x, y, x + w, y + h)) == pytest.approx(astuple(expected), abs=tolerance)
            assert mp[face["face_id"]]["PersonDisplayName"] == oriented.names[face["face_id"]]
            checked.add(_orientation(photo))
    assert checked == set(ORIENTATIONS)


def _orientation(photo: Path) -> int:
    with Image.open(photo) as image:
        return image.getexif().get(0x0112, 1)


def test_import_in_a_fresh_library_gives_back_the_same_names(oriented):
    result = run("--library", oriented.fresh, "import-xmp", oriented.folder)
    assert result.exit_code == 0, result.output
    fresh = Library(oriented.fresh)
    assert run("--library", fresh.root, "cluster").exit_code == 0
    got = {f: name for f, (name, source) in build_view(fresh).labels.face_names.items() if source == "xmp"}
    expected = dict(oriented.names)
    if oriented.before:  # the digiKam sidecar's own region named the face facebatch left alone
        o6 = str(oriented.folder / "p_o6.jpg")
        expected[faces_by_path(oriented.library)[o6][0]["face_id"]] = "Stranger"
        assert "no face for 'Nobody' in " + o6 in result.output
        assert "1 other regions (unnamed, pets, points) passed over" in result.output  # Rex, the pet
    assert got == expected
    assert f"{len(expected)} faces named" in result.output and "0 conflicts" in result.output


def test_sidecars_other_tools_wrote_keep_their_content(sample_set):
    for path, original in sample_set.before.items():
        merged = Path(path).read_bytes()
        assert merged != original and only_inserted(original, merged), path
    link = sample_set.folder / "p_o2.jpg.xmp"
    assert link.is_symlink() and link.resolve() == (sample_set.folder.parent / "elsewhere" / "o2.xmp")
    assert not (sample_set.folder / "p_o3.jpg.xmp").exists()  # Lightroom's p_o3.xmp was the one updated
    (digikam,) = exiftool_read(sample_set.folder / "p_o6.jpg.xmp")
    assert (digikam["Rating"], digikam["ColorLabel"], digikam["Title"]) == (4, 3, "Holiday & friends")
    names = [r["Name"] for r in digikam["RegionInfo"]["RegionList"]]
    assert names[:2] == ["Stranger", "Nobody"] and len(names) == 2 + sum(
        1 for f in faces_by_path(sample_set.library)[str(sample_set.folder / "p_o6.jpg")] if f["face_id"] in sample_set.names)
    assert "Places/Paris" in digikam["TagsList"] and "People/Person 1" in digikam["TagsList"]
    (lightroom,) = exiftool_read(sample_set.folder / "p_o3.xmp")
    assert lightroom["Exposure2012"] == "+0.35" and lightroom["RegionInfo"]["RegionList"]


def test_export_again_changes_nothing(sample_set):
    result = run("--library", sample_set.library.root, "export-xmp", "--dry-run")
    assert result.exit_code == 0, result.output
    assert result.output.endswith("0 would be created, 0 would change, 8 unchanged; "
                                  f"{len(sample_set.names)} face regions; nothing written (dry run)\n")


def test_embedded_regions_of_sample_data_name_their_faces(sample_library):
    """situation_room_2011.jpg carries its photographer's MWG and MP regions inside the file."""
    photo = str(SAMPLE_DATA / "groups" / "situation_room_2011.jpg")
    assert run("--library", sample_library.root, "cluster").exit_code == 0
    biden = _face_under(sample_library, photo, (0.07, 0.372, 0.0433333, 0.094))
    label_faces(sample_library, [biden], "Joe Biden")  # the user's own name for him
    result = run("--library", sample_library.root, "import-xmp", SAMPLE_DATA)
    assert result.exit_code == 0, result.output
    assert "4 regions, 4 on a face, 0 on no face; 3 faces named, 0 already named so, 1 conflicts" in result.output
    assert f"conflict: face {biden} in {photo} is 'Joe Biden' in facebatch, 'Joseph R Biden' in XMP" in result.output
    names = {f: n for f, (n, _) in build_view(sample_library).labels.face_names.items()}
    # The file's own MP rectangles (x, y, w, h), read by eye from its XMP.
    for name, rectangle in (("Barack Obama", (0.313333, 0.354, 0.0386667, 0.072)),
                            ("Denis McDonough", (0.47, 0.105, 0.0386667, 0.079)),
                            ("Hillary Clinton", (0.749333, 0.43, 0.0626667, 0.108))):
        assert names[_face_under(sample_library, photo, rectangle)] == name
    assert names[biden] == "Joe Biden"


def test_a_name_given_through_the_cluster_is_never_overridden_by_a_sidecar_and_label_cluster_reaches_imports(
        sample_library):
    photo = str(SAMPLE_DATA / "groups" / "situation_room_2011.jpg")
    assert run("--library", sample_library.root, "cluster").exit_code == 0
    biden = _face_under(sample_library, photo, (0.07, 0.372, 0.0433333, 0.094))
    obama = _face_under(sample_library, photo, (0.313333, 0.354, 0.0386667, 0.072))
    cluster_of = build_view(sample_library).cluster_of()
    assert run("--library", sample_library.root, "label", "cluster", str(cluster_of[biden]), "Joe Biden").exit_code == 0
    history = sample_library.read_labels().num_rows

    result = run("--library", sample_library.root, "import-xmp", SAMPLE_DATA)
    assert result.exit_code == 0, result.output
    assert (f"conflict: face {biden} in {photo} is 'Joe Biden' in facebatch, 'Joseph R Biden' in XMP (kept 'Joe Biden'; "
            f"`facebatch label face {biden} 'Joseph R Biden'` takes the XMP's)") in result.output
    assert "3 faces named, 0 already named so, 1 conflicts" in result.output
    view = build_view(sample_library)
    assert biden not in view.labels.face_names and view.confirmed_name(biden, cluster_of[biden]) == "Joe Biden"
    assert view.labels.face_names[obama] == ("Barack Obama", "xmp")
    assert sample_library.read_labels().num_rows == history + 3  # nothing written for Biden's face

    # What the user says in facebatch outranks a sidecar: naming Obama's cluster reaches his imported face.
    named = run("--library", sample_library.root, "label", "cluster", str(cluster_of[obama]), "Barack H. Obama")
    assert named.output == (f"cluster {cluster_of[obama]} is Barack H. Obama: 5 faces; 1 named otherwise by a sidecar "
                            "(import-xmp) take Barack H. Obama\n")
    assert build_view(sample_library).confirmed_name(obama, cluster_of[obama]) == "Barack H. Obama"
    assert run("--library", sample_library.root, "undo").exit_code == 0
    assert build_view(sample_library).labels.face_names[obama] == ("Barack Obama", "xmp")


def _face_under(library: Library, photo: str, rectangle: tuple[float, float, float, float]) -> str:
    """The face whose box centre lies inside a rectangle given as fractions of the photo."""
    x, y, w, h = rectangle
    with Image.open(photo) as image:
        width, height = image.size
    centres = {f["face_id"]: ((f["box"][0] + f["box"][2]) / 2 / width, (f["box"][1] + f["box"][3]) / 2 / height)
               for f in faces_by_path(library)[photo]}
    (face,) = [f for f, (cx, cy) in centres.items() if x <= cx <= x + w and y <= cy <= y + h]
    return face


def test_unreadable_sidecars_are_skipped_and_left_alone(sample_set, tmp_path):
    """A sidecar facebatch can't parse is named in one line and not touched; the run goes on."""
    broken = sample_set.folder / "p_o7.jpg.xmp"
    original = broken.read_bytes()
    try:
        broken.write_bytes(b"<x:xmpmeta><rdf:RDF")
        result = run("--library", sample_set.library.root, "export-xmp")
        assert result.exit_code == 0, result.output
        assert f"skipped {broken}: not well-formed XML" in result.output
        assert broken.read_bytes() == b"<x:xmpmeta><rdf:RDF"
        shutil.copytree(sample_set.fresh, tmp_path / "fresh")
        result = run("--library", tmp_path / "fresh", "import-xmp", sample_set.folder)
        assert f"skipped {broken}: its XMP is not well-formed XML" in result.output
    finally:
        broken.write_bytes(original)


def test_dry_run_counts_a_rename_and_writes_nothing(sample_set, tmp_path):
    library = Library(shutil.copytree(sample_set.library.root, tmp_path / "lib"))  # same photos, its own names
    o1 = str(sample_set.folder / "p_o1.jpg")
    label_faces(library, [faces_by_path(library)[o1][0]["face_id"]], "Renamed")
    sidecars = {p: p.read_bytes() for p in sample_set.folder.glob("*.xmp")}
    result = run("--library", library.root, "export-xmp", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "8 sidecars: 0 would be created, 1 would change, 7 unchanged" in result.output
    assert {p: p.read_bytes() for p in sample_set.folder.glob("*.xmp")} == sidecars


def test_a_photo_changed_since_the_scan_is_skipped(sample_set, tmp_path):
    photo = sample_set.folder / "p_o8.jpg"
    kept = tmp_path / "p_o8.jpg"
    shutil.copy2(photo, kept)
    sidecar = sample_set.folder / "p_o8.jpg.xmp"
    before = sidecar.read_bytes()
    try:
        with Image.open(kept) as image:
            image.resize((image.width // 2, image.height // 2)).save(photo, exif=image.getexif().tobytes())
        result = run("--library", sample_set.library.root, "export-xmp")
        assert result.exit_code == 0, result.output
        assert f"skipped {photo}: it is 450x300 now, 900x600 when scanned: scan it again" in result.output
        assert sidecar.read_bytes() == before
    finally:
        shutil.copy2(kept, photo)


def test_regions_written_into_a_sidecar_with_another_size_take_the_photos_stored_size():
    stale = DIGIKAM_SIDECAR.replace(b'stDim:w="4000"', b'stDim:w="10"').replace(b'stDim:h="3000"', b'stDim:h="10"')
    assert stale != DIGIKAM_SIDECAR
    merged = merge_sidecar(stale, [ALICE], SIZE).data
    regions = parse_packet(merged).properties(MWG_RS, "Regions")[0]
    dims = {name[1]: value for name, value in struct_fields(regions.child(MWG_RS, "AppliedToDimensions")).items()}
    assert (dims["w"], dims["h"]) == ("4000", "3000")  # the photo as stored, not the other tool's 10x10
    assert sorted(r.name for r in read_regions(parse_packet(merged))[0]) == ["Alice", "Alice", "Stranger", "Stranger"]
    assert merge_sidecar(DIGIKAM_SIDECAR, [ALICE], SIZE).data.count(b"AppliedToDimensions") == \
        DIGIKAM_SIDECAR.count(b"AppliedToDimensions")  # the right size: left as it is


def test_a_sidecar_left_with_nothing_is_removed_but_a_link_is_written(tmp_path):
    from facebatch.exports.xmp import write_sidecar
    from facebatch.exports.xmp_packet import EMPTY_PACKET

    region = FaceRegion("f1", "Ann", "confirmed", Box(0.1, 0.1, 0.3, 0.3))
    ours = merge_sidecar(None, [region], (100, 100)).data
    emptied = merge_sidecar(ours, [], None).data
    assert emptied == EMPTY_PACKET  # everything facebatch wrote, taken back
    plain = tmp_path / "a.jpg.xmp"
    plain.write_bytes(ours)
    assert write_sidecar(plain, emptied) and not plain.exists()
    target, link = tmp_path / "store" / "b.xmp", tmp_path / "b.jpg.xmp"
    target.parent.mkdir()
    target.write_bytes(ours)
    link.symlink_to(target)
    assert not write_sidecar(link, emptied) and link.is_symlink() and target.read_bytes() == EMPTY_PACKET
