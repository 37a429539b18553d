"""Names that travel: facebatch's named faces written into XMP sidecars, where digiKam,
Lightroom, Immich, PhotoPrism and Windows look for people. Never into the photo itself.

Per photo with named faces, its sidecar gets:
  - MWG regions (mwg-rs:Regions): AppliedToDimensions = the stored size, and per face an Area
    (x, y = the box's centre, w, h; fractions of the photo as stored, before EXIF orientation,
    see xmp_regions), Type "Face", Name;
  - Microsoft MP regions (MP:RegionInfo/MPRI:Regions): Rectangle "x, y, w, h" (top-left), same
    frame, PersonDisplayName;
  - the names as Iptc4xmpExt:PersonInImage, digiKam:TagsList "People/NAME" and
    lr:hierarchicalSubject "People|NAME".

Merging. A sidecar that exists is changed by splicing (xmp_packet): every byte facebatch did not
write stays. facebatch's regions carry facebatch:Face (the face id) and facebatch:Status, so a
later export replaces exactly them; the names it added to the three lists are recorded in
facebatch:PersonInImage, facebatch:TagsList and facebatch:hierarchicalSubject, so it takes back only
those. A face that another tool's region already covers (IoU >= MATCH_IOU) is left to that region:
same name, nothing to add; another name, reported, never contradicted.

Sidecar names: an existing PHOTO.EXT.xmp or PHOTO.xmp is followed (PHOTO.xmp only when no other
file in the folder shares the stem, as a raw + JPEG pair does); a new one is named by the setting,
PHOTO.EXT.xmp by default. A sidecar that is a symbolic link is followed: its target is replaced
atomically. Photos whose size no longer matches the library are skipped (scan again).
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from facebatch.errors import UsageError
from facebatch.exports.xmp_packet import (
    DIGIKAM,
    EMPTY_PACKET,
    FACEBATCH,
    IPTC_EXT,
    LIGHTROOM,
    MP,
    MPRI,
    MWG_RS,
    RDF,
    Edits,
    Element,
    Node,
    PREFIXES,
    Packet,
    XmpError,
    accepts_fields,
    array_items,
    array_of,
    child_indent,
    parse_packet,
    render,
    struct_fields,
    struct_value,
)
from facebatch.exports.xmp_regions import (
    STATUS_CONFIRMED,
    STATUS_SUGGESTED,
    Box,
    PhotoFrame,
    Region,
    iou,
    mwg_regions,
    photo_frame,
    read_regions,
    shown_to_stored,
)
from facebatch.files import atomic_file
from facebatch.models.scale import NAME_CONFIDENCE
from facebatch.exports.tagged import tagged_faces
from facebatch.exports.tags import live_photo_rows
from facebatch.schema import KIND_PHOTO, KIND_VIDEO
from facebatch.scan.discovery import renditions_of_raws
from facebatch.store import Library

SIDECAR_FULL = "photo.jpg.xmp"  # PHOTO.EXT.xmp: digiKam, darktable, Immich, PhotoPrism
SIDECAR_STEM = "photo.xmp"  # PHOTO.xmp: Lightroom, Capture One
SIDECAR_NAMES = (SIDECAR_FULL, SIDECAR_STEM)

# Two boxes of one face: MTCNN's box against a region another tool drew. Human-drawn regions on
# sample_data's group photo overlap MTCNN's boxes by IoU 0.59-0.95 (their boxes are shorter:
# no forehead, no chin); 0.3 still takes a region up to about three times the box's area, while
# no other face of that crowded photo (13 faces) overlaps any of its four regions at all.
MATCH_IOU = 0.3

# The three lists of names, the form a name takes in each, and the array kind each one is.
NAME_LISTS = (
    (IPTC_EXT, "Iptc4xmpExt", "PersonInImage", "Bag", "{}"),
    (DIGIKAM, "digiKam", "TagsList", "Seq", "People/{}"),
    (LIGHTROOM, "lr", "hierarchicalSubject", "Bag", "People|{}"),
)


@dataclass(frozen=True)
class XmpExportSettings:
    include_suggested: bool = False  # also faces whose name is a suggestion (>= min_confidence)
    min_confidence: float = NAME_CONFIDENCE
    new_sidecar_name: str = SIDECAR_FULL
    dry_run: bool = False

    def __post_init__(self) -> None:
        if self.new_sidecar_name not in SIDECAR_NAMES:
            raise UsageError(f"--sidecar-name must be {' or '.join(SIDECAR_NAMES)}, got {self.new_sidecar_name!r}")
        if not 0.0 <= self.min_confidence <= 1.0:
            raise UsageError(f"--min-confidence must be between 0 and 1, got {self.min_confidence}")


@dataclass(frozen=True)
class FaceRegion:
    """A named face as facebatch writes it: fractions of the photo as stored."""

    face_id: str
    name: str
    status: str  # confirmed | suggested
    box: Box


@dataclass
class XmpExportResult:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0  # sidecars that held only what facebatch had written, now taken back
    regions: int = 0  # regions facebatch's sidecars hold after this run (would hold, on a dry run)
    left_to_others: int = 0  # faces another tool's region already covers with the same name
    disagreements: list[tuple[str, str, str]] = field(default_factory=list)  # (sidecar, our name, theirs)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (photo or sidecar, why)
    dry_run: bool = False


# --------------------------------------------------------------------------- which photos, which sidecar


@dataclass(frozen=True)
class LivePhoto:
    path: str
    photo_id: str
    width: int
    height: int
    kind: str = KIND_PHOTO  # a video's sidecar lists its people, with no regions (MWG has none for video)


def live_photos(library: Library, under: list[Path] | None = None) -> list[LivePhoto]:
    """Live photos (one row per path, sorted), optionally only those under some folders."""
    return [LivePhoto(path, photo_id, width, height, kind) for path, photo_id, width, height, kind in live_photo_rows(library)
            if width and height and (under is None or any(Path(path).is_relative_to(folder) for folder in under))]


class FolderStems:
    """Which sidecar stems a folder's photos share: PHOTO.xmp belongs to PHOTO.EXT only when no
    other photo of the folder has that stem. A RAW + JPEG pair is one photo, scanned as the RAW, so
    IMG_1.xmp is the RAW's (as Lightroom reads it), never the JPEG's."""

    def __init__(self) -> None:
        self._folders: dict[Path, tuple[Counter[str], set[str]]] = {}

    def shared(self, photo: Path) -> bool:
        folder = photo.parent
        if folder not in self._folders:
            try:
                names = [e.name for e in os.scandir(folder) if not e.name.lower().endswith(".xmp")]
            except OSError:
                names = []
            paired = renditions_of_raws(names)
            self._folders[folder] = (Counter(Path(n).stem for n in names if n not in paired), paired)
        stems, paired = self._folders[folder]
        return photo.name in paired or stems[photo.stem] > 1


def sidecar_paths(photo: Path, stems: FolderStems) -> list[Path]:
    """The sidecar names a photo may have, PHOTO.EXT.xmp first."""
    paths = [photo.with_name(photo.name + ".xmp")]
    if not stems.shared(photo):
        paths.append(photo.with_suffix(".xmp"))
    return paths


def sidecar_exists(path: Path) -> bool:
    return path.exists() or path.is_symlink()


def choose_sidecar(photo: Path, stems: FolderStems, new_name: str) -> Path:
    """The existing sidecar (the setting's form first when both exist), else the new one's name."""
    paths = sidecar_paths(photo, stems)
    if new_name == SIDECAR_STEM:
        paths.reverse()
    return next((p for p in paths if sidecar_exists(p)), paths[0])


# --------------------------------------------------------------------------- the faces to write


@dataclass(frozen=True)
class NamedFace:
    face_id: str
    name: str
    status: str  # confirmed | suggested
    box: list[float]  # x1, y1, x2, y2 in pixels of the photo as shown (faces.box)


def named_faces(library: Library, settings: XmpExportSettings) -> dict[str, list[NamedFace]]:
    """The faces to write, by photo_id."""
    wanted = {STATUS_CONFIRMED, STATUS_SUGGESTED} if settings.include_suggested else {STATUS_CONFIRMED}
    by_photo: dict[str, list[NamedFace]] = defaultdict(list)
    for face in tagged_faces(library, settings.min_confidence):
        if face.person is not None and face.status in wanted:
            by_photo[face.photo_id].append(NamedFace(face.face_id, face.person, face.status, face.box))
    return by_photo


def face_regions(faces: list[NamedFace], photo: LivePhoto, frame: PhotoFrame) -> list[FaceRegion]:
    """The faces as regions of the stored photo, left to right as shown."""
    return [FaceRegion(f.face_id, f.name, f.status,
                       shown_to_stored(Box.from_pixels(f.box, photo.width, photo.height), frame.orientation))
            for f in sorted(faces, key=lambda f: (f.box[0], f.face_id))]


# --------------------------------------------------------------------------- the merge


def _fraction(value: float) -> str:
    return f"{min(max(value, 0.0), 1.0):.6f}".rstrip("0").rstrip(".") or "0"


def _mwg_item(region: FaceRegion) -> Element:
    b = region.box
    area = Element("mwg-rs:Area", {
        "stArea:x": _fraction((b.x1 + b.x2) / 2), "stArea:y": _fraction((b.y1 + b.y2) / 2),
        "stArea:w": _fraction(b.x2 - b.x1), "stArea:h": _fraction(b.y2 - b.y1), "stArea:unit": "normalized",
    })
    description = Element("rdf:Description", {
        "mwg-rs:Name": region.name, "mwg-rs:Type": "Face",
        "facebatch:Face": region.face_id, "facebatch:Status": region.status,
    }, [area])
    return Element("rdf:li", children=[description])


def _mp_item(region: FaceRegion) -> Element:
    b = region.box
    rectangle = ", ".join(_fraction(v) for v in (b.x1, b.y1, b.x2 - b.x1, b.y2 - b.y1))
    description = Element("rdf:Description", {
        "MPReg:PersonDisplayName": region.name, "MPReg:Rectangle": rectangle,
        "facebatch:Face": region.face_id, "facebatch:Status": region.status,
    })
    return Element("rdf:li", children=[description])


def _dimensions(size: tuple[int, int]) -> Element:
    return Element("mwg-rs:AppliedToDimensions", {"stDim:w": str(size[0]), "stDim:h": str(size[1]), "stDim:unit": "pixel"})


def _array(kind: str, items: list[Element]) -> Element:
    return Element(f"rdf:{kind}", children=items)


def _field_name(element: Element) -> tuple[str, str]:
    prefix, local = element.qname.split(":")
    return PREFIXES[prefix], local


def _is_ours(item: Node) -> bool:
    return (FACEBATCH, "Face") in struct_fields(item)


@dataclass(frozen=True)
class _RegionsProperty:
    """A regions struct and the field of it that holds the array of regions."""

    name: tuple[str, str]
    qname: str
    array_field: tuple[str, str]
    array_qname: str


MWG_REGIONS = _RegionsProperty((MWG_RS, "Regions"), "mwg-rs:Regions", (MWG_RS, "RegionList"), "mwg-rs:RegionList")
MP_REGIONS = _RegionsProperty((MP, "RegionInfo"), "MP:RegionInfo", (MPRI, "Regions"), "MPRI:Regions")


class _Merge:
    """One sidecar's edits: take back what facebatch wrote before, add what it writes now."""

    def __init__(self, packet: Packet) -> None:
        self.packet = packet
        self.edits = Edits(packet.data)
        self.new_properties: list[Element] = []  # top-level properties the packet doesn't have yet

    def _append(self, parent: Node, elements: list[Element]) -> None:
        indent = child_indent(self.packet.data, parent)
        self.edits.append(parent, [render(e, indent, parent.scope) for e in elements], indent)

    def regions(self, spec: _RegionsProperty, items: list[Element], new_fields: list[Element]) -> None:
        """facebatch's items of a regions array (MWG RegionList, MP Regions) become `items`;
        `new_fields` go with them into a regions struct facebatch creates."""
        props = self.packet.properties(*spec.name)
        array_element = Element(spec.array_qname, children=[_array("Bag", items)])
        if not props:
            if items:
                self.new_properties.append(Element(spec.qname, {"rdf:parseType": "Resource"}, [*new_fields, array_element]))
            return
        value = struct_value(props[0])
        holder = value.child(*spec.array_field)
        missing = [f for f in new_fields if _field_name(f) not in {c.name for c in value.children} | set(value.attrs)]
        if holder is None:
            if items and not accepts_fields(value):
                raise XmpError(f"its {props[0].qname} is written in a form facebatch does not merge")
            if items:
                self._append(value, [*missing, array_element])
            return
        if items and missing and accepts_fields(value):
            self._append(value, missing)  # regions without AppliedToDimensions get it
        if items:
            self._correct_dimensions(value, new_fields)
        array = array_of(holder)
        if array is None:
            if holder.children or holder.text.strip():
                raise XmpError(f"its {holder.qname} is not an array")
            if items:
                self._append(holder, [_array("Bag", items)])
            return
        everything = array_items(holder)
        ours = [li for li in everything if _is_ours(li)]
        if ours and len(ours) == len(everything) and not items:
            self.edits.remove(props[0])  # it held facebatch's regions only: take it all back
            return
        for li in ours:
            self.edits.remove(li)
        self._append(array, items)

    def _correct_dimensions(self, value: Node, new_fields: list[Element]) -> None:
        """Regions another tool wrote for other pixels (an edited or resized photo, a stale sidecar)
        say so in AppliedToDimensions; facebatch's regions are the photo's as stored, so the
        photo's stored size replaces theirs (their areas are fractions: they do not move)."""
        dims = value.child(MWG_RS, "AppliedToDimensions")
        wanted = next((f for f in new_fields if f.qname == "mwg-rs:AppliedToDimensions"), None)
        if dims is None or wanted is None:
            return
        held = {name[1]: text for name, text in struct_fields(struct_value(dims)).items()}
        if (held.get("w"), held.get("h")) != (wanted.attrs["stDim:w"], wanted.attrs["stDim:h"]):
            self.edits.remove(dims)
            self._append(value, [wanted])

    def names(self, uri: str, prefix: str, local: str, kind: str, wanted: list[str]) -> None:
        """One list of names: take back the items facebatch added that are no longer wanted, add
        the wanted ones that are missing, and record which items are facebatch's."""
        records = self.packet.properties(FACEBATCH, local)
        added_before = {li.text for r in records for li in array_items(r)}
        props = self.packet.properties(uri, local)
        if props and array_of(props[0]) is None and (props[0].children or props[0].text.strip()):
            raise XmpError(f"its {props[0].qname} is not an array")
        items = array_items(props[0]) if props else []
        foreign = {li.text for li in items if li.text not in added_before}
        dropped = [li for li in items if li.text in added_before and li.text not in wanted]
        present = {li.text for li in items if li not in dropped}
        to_add = [Element("rdf:li", text=n) for n in wanted if n not in present]
        if props and dropped and len(dropped) == len(items) and not to_add:
            self.edits.remove(props[0])
        else:
            for li in dropped:
                self.edits.remove(li)
            if props and to_add:
                array = array_of(props[0])
                if array is None:
                    self._append(props[0], [_array(kind, to_add)])
                else:
                    self._append(array, to_add)
            elif to_add:
                self.new_properties.append(Element(f"{prefix}:{local}", children=[_array(kind, to_add)]))
        self._record(records, local, [n for n in wanted if n not in foreign])

    def _record(self, records: list[Node], local: str, ours: list[str]) -> None:
        """facebatch:LOCAL lists the items facebatch added to LOCAL (and may take back)."""
        if records and [li.text for li in array_items(records[0])] == ours and len(records) == 1:
            return
        for record in records:
            self.edits.remove(record)
        if ours:
            self.new_properties.append(
                Element(f"facebatch:{local}", children=[_array("Bag", [Element("rdf:li", text=n) for n in ours])]))

    def finish(self) -> bytes:
        self._collapse_emptied_descriptions()
        if self.new_properties:
            own = [d for d in self.packet.descriptions()
                   if d.scope.get("facebatch") == FACEBATCH and d not in self.edits.removed]
            if own:
                self._append(own[0], self.new_properties)
            else:
                description = Element("rdf:Description", {"rdf:about": self.packet.about()}, self.new_properties)
                self._append(self.packet.rdf, [description])
        return self.edits.apply()

    def _collapse_emptied_descriptions(self) -> None:
        """An rdf:Description left with no property goes too (as facebatch's own does when
        everything it wrote is taken back)."""
        for description in self.packet.descriptions():
            children = description.children
            fields = [k for k in description.attrs if k[0] != RDF]
            if children and not fields and all(c in self.edits.removed for c in children):
                for child in children:
                    self.edits.keep(child)
                self.edits.remove(description)


def _split_covered(regions: list[FaceRegion], others: list[Region]) -> tuple[list[FaceRegion], set[str], list[tuple[str, str]]]:
    """Leave a face to another tool's region that covers it: the same name, nothing to write; another
    name, a disagreement to report, never a second region that contradicts it. Returns the regions to
    write, the names other tools' regions already give, and the disagreements (ours, theirs)."""
    to_write, same, differ = [], set(), []
    for region in regions:
        covering = [o for o in others if iou(o.box, region.box) >= MATCH_IOU]
        if not covering:
            to_write.append(region)
        elif any(o.name == region.name for o in covering):
            same.add(region.name)
        else:
            differ.append((region.name, covering[0].name))
    return to_write, same, differ


@dataclass(frozen=True)
class MergeOutcome:
    data: bytes
    regions: int  # facebatch regions the sidecar now holds (each in MWG and MP form)
    left_to_others: int
    disagreements: list[tuple[str, str]]  # (facebatch's name, the other tool's)


def merge_sidecar(existing: bytes | None, regions: list[FaceRegion], stored_size: tuple[int, int] | None,
                  names_only: Sequence[str] = ()) -> MergeOutcome:
    """The sidecar's new bytes: `existing` (None: a new sidecar) with facebatch's regions and
    names replaced by `regions` (and `names_only`, listed without a region: a video's people);
    `stored_size` None leaves the regions' dimensions as they are. Raises XmpError for a packet it
    can't merge (then left alone)."""
    packet = parse_packet(existing if existing is not None else EMPTY_PACKET)
    others = [r for r in read_regions(packet)[0] if r.facebatch_status is None]
    to_write, same, differ = _split_covered(regions, others)
    merge = _Merge(packet)
    merge.regions(MWG_REGIONS, [_mwg_item(r) for r in to_write], [_dimensions(stored_size)] if stored_size else [])
    merge.regions(MP_REGIONS, [_mp_item(r) for r in to_write], [])
    names = sorted({r.name for r in to_write} | same | set(names_only))
    for uri, prefix, local, kind, form in NAME_LISTS:
        merge.names(uri, prefix, local, kind, [form.format(n) for n in names])
    left_to_others = len(regions) - len(to_write) - len(differ)
    return MergeOutcome(merge.finish(), len(to_write), left_to_others, differ)


def take_back(existing: bytes, face_ids: set[str], names: set[str], their_names: set[str] = frozenset()) -> bytes:
    """`existing` without the regions facebatch wrote for these faces or under these names, and
    without the names facebatch added to the people lists for them: `names`, the names of the
    regions taken out, and `their_names` (the faces' own names: a video's sidecar lists its people
    with no region to find them by), unless a region kept still shows that name. Every byte
    another tool wrote stays, its regions of the same person too (`facebatch forget`)."""
    packet = parse_packet(existing)
    ours = [r for r in mwg_regions(packet)[0] if r.facebatch_status]
    removed = [r for r in ours if r.facebatch_face in face_ids or r.name in names]
    keep = [FaceRegion(r.facebatch_face or "", r.name, r.facebatch_status or "", r.box) for r in ours if r not in removed]
    dropped = (set(names) | {r.name for r in removed} | set(their_names)) - {r.name for r in keep}
    listed = {li.text for record in packet.properties(FACEBATCH, "PersonInImage") for li in array_items(record)}
    if not removed and not listed & dropped:
        return existing  # nothing of them here: not even rewritten (regions read back would round anew)
    return merge_sidecar(existing, keep, None, sorted(listed - dropped)).data


# --------------------------------------------------------------------------- the run


def _read_sidecar(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def write_sidecar(path: Path, data: bytes) -> bool:
    """Write a sidecar's new bytes (a link's target, atomically); one left with nothing at all, as
    facebatch makes a new one before adding to it, is removed instead (a link is written, never
    removed). Returns whether the file was removed."""
    if data == EMPTY_PACKET and not path.is_symlink():
        path.unlink(missing_ok=True)
        return True
    target = path.resolve() if path.is_symlink() else path
    with atomic_file(target, make_parents=False) as f:
        f.write(data)
    return False


def _export_photo(photo: LivePhoto, faces: list[NamedFace], stems: FolderStems,
                  settings: XmpExportSettings, result: XmpExportResult) -> None:
    sidecar = choose_sidecar(Path(photo.path), stems, settings.new_sidecar_name)
    try:
        existing = _read_sidecar(sidecar)
    except OSError as error:
        result.skipped.append((str(sidecar), f"cannot read it: {error.strerror or error}"))
        return
    if not faces and (existing is None or FACEBATCH.encode() not in existing):
        return  # no names, and nothing of facebatch's to take back
    if photo.kind == KIND_VIDEO:
        _write_merged(sidecar, existing, lambda: merge_sidecar(existing, [], None, sorted({f.name for f in faces})),
                      settings, result)
        return
    try:
        frame = photo_frame(photo.path)
    except Exception as error:  # noqa: BLE001 - Pillow raises anything for a damaged header
        result.skipped.append((photo.path, f"cannot open the photo: {error}"))
        return
    if frame.shown_size != (photo.width, photo.height):
        result.skipped.append((photo.path, f"it is {frame.shown_size[0]}x{frame.shown_size[1]} now, "
                                           f"{photo.width}x{photo.height} when scanned: scan it again"))
        return
    _write_merged(sidecar, existing, lambda: merge_sidecar(existing, face_regions(faces, photo, frame),
                                                           (frame.stored_width, frame.stored_height)), settings, result)


def _write_merged(sidecar: Path, existing: bytes | None, merged: Callable[[], MergeOutcome],
                  settings: XmpExportSettings, result: XmpExportResult) -> None:
    try:
        outcome = merged()
    except XmpError as error:
        result.skipped.append((str(sidecar), f"{error}; left as it is"))
        return
    result.regions += outcome.regions
    result.left_to_others += outcome.left_to_others
    result.disagreements += [(str(sidecar), ours, theirs) for ours, theirs in outcome.disagreements]
    if outcome.data == existing:
        result.unchanged += 1
        return
    if outcome.data == EMPTY_PACKET and existing is None:
        return  # nothing to write and no file: nothing made
    if not settings.dry_run:
        try:
            removed = write_sidecar(sidecar, outcome.data)
        except OSError as error:
            result.skipped.append((str(sidecar), f"cannot write it: {error.strerror or error}"))
            return
    else:
        removed = outcome.data == EMPTY_PACKET and not sidecar.is_symlink()
    if existing is None:
        result.created += 1
    elif removed:
        result.removed += 1
    else:
        result.updated += 1


def export_xmp(library: Library, settings: XmpExportSettings) -> XmpExportResult:
    """Write (or, on a dry run, count) the sidecars of every live photo with named faces, and take
    facebatch's regions back from sidecars whose photo has none left."""
    faces = named_faces(library, settings)
    result = XmpExportResult(dry_run=settings.dry_run)
    stems = FolderStems()
    # A photo whose faces wait to be embedded again (a model change) would look nameless: its
    # sidecar is left as it is, never stripped of the names it holds.
    pending = library.pending_photos()
    for photo in live_photos(library):
        if photo.photo_id in pending:
            result.skipped.append((photo.path, "its faces wait to be embedded again by the library's model "
                                               "(the next scan does it)"))
            continue
        _export_photo(photo, faces.get(photo.photo_id, []), stems, settings, result)
    return result
