"""Names already given in other tools become facebatch labels: MWG and MP face regions read from
each photo's sidecars (PHOTO.EXT.xmp, PHOTO.xmp) and from the XMP inside the photo.

Each named face region is turned into facebatch's frame (after EXIF orientation, see
xmp_regions) and given to the face of that photo it overlaps most, if that overlap is at least
MATCH_IOU. A face that two regions name differently is listed and left unnamed. Names are stored
with people.actions.import_face_names (source "xmp"): a name the user gave in facebatch, to the face
or to its cluster, is never overwritten (a different one is reported as a conflict, with the
`label face` command that takes the sidecar's), and a later facebatch label, a cluster's included,
wins.
Regions facebatch wrote itself from suggestions (export-xmp --include-suggested) are guesses, not
names anyone gave: they are counted, never imported.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from facebatch.errors import InputError, UsageError
from facebatch.exports.xmp import MATCH_IOU, FolderStems, LivePhoto, live_photos, sidecar_paths
from facebatch.exports.xmp_packet import XmpError, parse_packet
from facebatch.exports.xmp_regions import (
    STATUS_SUGGESTED,
    Box,
    PhotoFrame,
    Region,
    iou,
    photo_frame,
    read_regions,
    stored_to_shown,
)
from facebatch.people.actions import import_face_names
from facebatch.people.labels import clean_name
from facebatch.store import Library

EMBEDDED = "embedded"
# One face written twice (MWG and MP, sidecar and embedded) is one region: same name, boxes this close.
SAME_REGION_IOU = 0.9


@dataclass(frozen=True)
class FoundRegion:
    """A named face region, in facebatch's frame (fractions of the photo as shown)."""

    photo: str
    origin: str  # the sidecar's path, or "embedded"
    name: str
    box: Box


@dataclass
class XmpImportResult:
    photos: int = 0  # live photos under the folders
    photos_with_regions: int = 0
    regions: int = 0  # named face regions (one face named in MWG and MP form, or in a sidecar and embedded, is one)
    matched: int = 0  # regions that landed on a face
    named: int = 0  # faces that got a name now
    unchanged: int = 0  # faces that already had that name
    guesses: int = 0  # regions facebatch wrote from suggestions: not imported
    other_regions: int = 0  # unnamed regions, pets, focus points, shapes that are not boxes
    action: int = 0  # the labels history action (0: nothing written)
    unmatched: list[FoundRegion] = field(default_factory=list)
    disputed: list[tuple[str, str, list[str]]] = field(default_factory=list)  # (photo, face_id, names)
    conflicts: list[tuple[str, str, str, str]] = field(default_factory=list)  # (photo, face_id, offered, kept)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, why)


def _packets(photo: LivePhoto, frame: PhotoFrame, stems: FolderStems) -> list[tuple[str, bytes]]:
    packets = [(str(p), p.read_bytes()) for p in sidecar_paths(Path(photo.path), stems) if p.is_file()]
    if frame.xmp is not None:
        packets.append((EMBEDDED, frame.xmp))
    return packets


def _photo_regions(photo: LivePhoto, stems: FolderStems, result: XmpImportResult) -> list[FoundRegion]:
    """The named face regions of one photo in facebatch's frame; problems go to result.skipped."""
    try:
        frame = photo_frame(photo.path, with_xmp=True)
    except Exception as error:  # noqa: BLE001 - Pillow raises anything for a damaged header
        result.skipped.append((photo.path, f"cannot open the photo: {error}"))
        return []
    try:
        packets = _packets(photo, frame, stems)
    except OSError as error:
        result.skipped.append((photo.path, f"cannot read its sidecar: {error.strerror or error}"))
        return []
    if packets and frame.shown_size != (photo.width, photo.height):
        result.skipped.append((photo.path, f"it is {frame.shown_size[0]}x{frame.shown_size[1]} now, "
                                           f"{photo.width}x{photo.height} when scanned: scan it again"))
        return []
    found: list[FoundRegion] = []
    for origin, data in packets:
        where = photo.path if origin == EMBEDDED else origin
        try:
            regions, other = read_regions(parse_packet(data))
        except XmpError as error:
            result.skipped.append((where, f"its XMP is {error}"))
            continue
        result.other_regions += other
        for region in regions:
            name = _usable_name(region, where, result)
            box = stored_to_shown(region.box, frame.orientation)
            if name is not None and not any(f.name == name and iou(f.box, box) >= SAME_REGION_IOU for f in found):
                found.append(FoundRegion(photo.path, origin, name, box))
    result.regions += len(found)
    return found


def _usable_name(region: Region, where: str, result: XmpImportResult) -> str | None:
    """The region's name as facebatch stores it; None for facebatch's own guesses and bad names."""
    if region.facebatch_status == STATUS_SUGGESTED:
        result.guesses += 1
        return None
    try:
        return clean_name(region.name)
    except UsageError as error:
        result.skipped.append((where, f"a region's name: {error}"))
        return None


def best_face(region: Box, faces: list[tuple[str, Box]]) -> str | None:
    """The face a region overlaps most, when that overlap is at least MATCH_IOU."""
    scored = [(iou(region, box), face_id) for face_id, box in faces]
    best = max(scored, default=(0.0, None))
    return best[1] if best[0] >= MATCH_IOU else None


def _faces_by_photo(library: Library, photos: list[LivePhoto]) -> dict[str, list[tuple[str, Box]]]:
    """photo_id -> (face_id, box as fractions of the shown photo)."""
    size = {p.photo_id: (p.width, p.height) for p in photos}
    faces = library.read_faces(["face_id", "photo_id", "box"], pending=True).to_pylist()  # boxes, not embeddings
    by_photo: dict[str, list[tuple[str, Box]]] = defaultdict(list)
    for face in faces:
        if face["photo_id"] in size:
            by_photo[face["photo_id"]].append((face["face_id"], Box.from_pixels(face["box"], *size[face["photo_id"]])))
    return by_photo


def _folders(folders: list[str]) -> list[Path]:
    paths = []
    for folder in folders:
        path = Path(folder).expanduser()
        if not path.is_dir():
            raise InputError(f"photo folder {folder} does not exist or is not a folder")
        paths.append(Path(os.path.abspath(path)))  # as the scan stored it: a symlinked folder stays itself
    return paths


def import_xmp(library: Library, folders: list[str]) -> XmpImportResult:
    """Read the face regions of every library photo under `folders` and store their names."""
    library.require()
    photos = live_photos(library, _folders(folders))
    faces = _faces_by_photo(library, photos)
    result = XmpImportResult(photos=len(photos))
    stems = FolderStems()
    names: dict[str, set[str]] = defaultdict(set)
    photo_of: dict[str, str] = {}
    for photo in photos:
        regions = _photo_regions(photo, stems, result)
        result.photos_with_regions += bool(regions)
        for region in regions:
            face_id = best_face(region.box, faces.get(photo.photo_id, []))
            if face_id is None:
                result.unmatched.append(region)
                continue
            result.matched += 1
            names[face_id].add(region.name)
            photo_of[face_id] = photo.path
    agreed = []
    for face_id, given in names.items():
        if len(given) == 1:
            agreed.append((face_id, next(iter(given))))
        else:
            result.disputed.append((photo_of[face_id], face_id, sorted(given)))
    if agreed:
        stored = import_face_names(library, agreed)
        result.action, result.named, result.unchanged = stored.action, stored.named, stored.unchanged
        result.conflicts = [(photo_of[f], f, offered, kept) for f, offered, kept in stored.conflicts]
    return result
