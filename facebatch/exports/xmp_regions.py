"""Face regions in XMP: where a face is, in which frame, and which regions a packet holds.

Frames. facebatch's boxes (faces.box) are pixels of the photo as shown, after its EXIF
orientation. MWG regions (and facebatch's MP regions) are fractions of the photo as stored,
before orientation. Orientations 2-8 turn or mirror the unit square, so a box moves between the
two frames by mapping its corners:

    orientation  1       2       3         4       5       6       7         8
    shown->stored (x,y)  (1-x,y) (1-x,1-y) (x,1-y) (y,x)   (y,1-x) (1-y,1-x) (1-y,x)

(2, 4, 5 and 7 mirror; 5-8 swap width and height, so AppliedToDimensions is the stored size.)

    Box                                 x1, y1, x2, y2 as fractions of a frame
    shown_to_stored / stored_to_shown   the maps above
    PhotoFrame, photo_frame(path)       a photo's orientation and stored size, from its header
    Region, read_regions(packet)        named face regions of a packet: MWG and MP
    iou
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from facebatch.exports.xmp_packet import (
    FACEBATCH,
    MP,
    MPREG,
    MPRI,
    MWG_RS,
    ST_AREA,
    Packet,
    array_items,
    embedded_xmp,
    struct_child,
    struct_fields,
)
from facebatch.imageload import RAW_EXTENSIONS, _exif_orientation, raw_frame

# A region facebatch wrote says whose face it was and whether the name was the user's or a guess.
STATUS_CONFIRMED, STATUS_SUGGESTED = "confirmed", "suggested"
SOURCE_MWG, SOURCE_MP = "mwg", "mp"


@dataclass(frozen=True)
class Box:
    """x1, y1, x2, y2 as fractions (0..1) of a frame's width and height."""

    x1: float
    y1: float
    x2: float
    y2: float

    @property
    def area(self) -> float:
        return max(0.0, self.x2 - self.x1) * max(0.0, self.y2 - self.y1)

    @classmethod
    def from_corners(cls, a: tuple[float, float], b: tuple[float, float]) -> Box:
        return cls(min(a[0], b[0]), min(a[1], b[1]), max(a[0], b[0]), max(a[1], b[1]))

    @classmethod
    def from_centre(cls, x: float, y: float, w: float, h: float) -> Box:
        return cls(x - w / 2, y - h / 2, x + w / 2, y + h / 2)

    @classmethod
    def from_pixels(cls, box: list[float], width: int, height: int) -> Box:
        return cls(box[0] / width, box[1] / height, box[2] / width, box[3] / height)


def _shown_to_stored_point(orientation: int, x: float, y: float) -> tuple[float, float]:
    return {
        1: (x, y), 2: (1 - x, y), 3: (1 - x, 1 - y), 4: (x, 1 - y),
        5: (y, x), 6: (y, 1 - x), 7: (1 - y, 1 - x), 8: (1 - y, x),
    }[orientation]


def _stored_to_shown_point(orientation: int, u: float, v: float) -> tuple[float, float]:
    # 1-5 and 7 undo themselves; 6 and 8 undo each other.
    inverse = {6: 8, 8: 6}.get(orientation, orientation)
    return _shown_to_stored_point(inverse, u, v)


def shown_to_stored(box: Box, orientation: int) -> Box:
    return Box.from_corners(_shown_to_stored_point(orientation, box.x1, box.y1),
                            _shown_to_stored_point(orientation, box.x2, box.y2))


def stored_to_shown(box: Box, orientation: int) -> Box:
    return Box.from_corners(_stored_to_shown_point(orientation, box.x1, box.y1),
                            _stored_to_shown_point(orientation, box.x2, box.y2))


def iou(a: Box, b: Box) -> float:
    inter = Box(max(a.x1, b.x1), max(a.y1, b.y1), min(a.x2, b.x2), min(a.y2, b.y2)).area
    union = a.area + b.area - inter
    return inter / union if union > 0 else 0.0


# --------------------------------------------------------------------------- the photo


@dataclass(frozen=True)
class PhotoFrame:
    orientation: int  # EXIF 1-8, as facebatch applied it when scanning
    stored_width: int
    stored_height: int
    xmp: bytes | None  # the photo's embedded XMP packet, when asked for

    @property
    def shown_size(self) -> tuple[int, int]:
        if self.orientation >= 5:
            return self.stored_height, self.stored_width
        return self.stored_width, self.stored_height


def photo_frame(path: str | Path, with_xmp: bool = False) -> PhotoFrame:
    """Orientation and stored size from the photo's header (no pixel is decoded). Raises OSError
    or Pillow's errors for a file that can't be opened: callers skip that photo."""
    if Path(path).suffix.lower() in RAW_EXTENSIONS and (raw := raw_frame(str(path))) is not None:
        return PhotoFrame(raw.orientation, raw.stored_width, raw.stored_height, None)  # RAWs carry no XMP packet
    with Image.open(path) as image:
        xmp = embedded_xmp(image) if with_xmp else None
        return PhotoFrame(_exif_orientation(image), image.width, image.height, xmp)


# --------------------------------------------------------------------------- regions in a packet


@dataclass(frozen=True)
class Region:
    """A named face region of a packet, in the stored frame."""

    name: str
    box: Box  # fractions of the stored photo
    source: str  # mwg | mp
    facebatch_status: str | None  # confirmed | suggested when facebatch wrote it, else None
    facebatch_face: str | None = None  # the face id facebatch wrote it for


def _number(text: str | None) -> float | None:
    """A finite number, or None: XMP values are text, and other tools write anything."""
    try:
        value = float(text) if text is not None else math.nan
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _box(values: list[float | None], centre: bool) -> Box | None:
    """x, y, w, h (x, y the centre, or the top-left corner) as a Box; None unless all four are
    numbers and the box has an area (a point or a circle is not a face box)."""
    if len(values) != 4:
        return None
    x, y, w, h = values
    if x is None or y is None or w is None or h is None or w <= 0 or h <= 0:
        return None
    return Box.from_centre(x, y, w, h) if centre else Box(x, y, x + w, y + h)


def _mwg_area(area: dict[tuple[str, str], str]) -> Box | None:
    if area.get((ST_AREA, "unit"), "normalized") != "normalized":
        return None  # pixels of some other rendition: not comparable
    return _box([_number(area.get((ST_AREA, k))) for k in ("x", "y", "w", "h")], centre=True)


def mwg_regions(packet: Packet) -> tuple[list[Region], int]:
    """Named Face regions of mwg-rs:Regions, and how many other regions (no name, not a face,
    not a normalised rectangle) were passed over."""
    found, other = [], 0
    for regions in packet.properties(MWG_RS, "Regions"):
        region_list = struct_child(regions, MWG_RS, "RegionList")
        for item in array_items(region_list) if region_list is not None else []:
            fields = struct_fields(item)
            area = struct_child(item, MWG_RS, "Area")
            name = fields.get((MWG_RS, "Name"), "").strip()
            kind = fields.get((MWG_RS, "Type"), "Face")
            box = _mwg_area(struct_fields(area) if area is not None else {})
            if not name or kind != "Face" or box is None:
                other += 1
                continue
            found.append(Region(name, box, SOURCE_MWG, fields.get((FACEBATCH, "Status")), fields.get((FACEBATCH, "Face"))))
    return found, other


_RECTANGLE = re.compile(r"^\s*([^,\s]+)\s*,\s*([^,\s]+)\s*,\s*([^,\s]+)\s*,\s*([^,\s]+)\s*$")


def _mp_rectangle(text: str) -> Box | None:
    match = _RECTANGLE.match(text)
    return _box([_number(v) for v in match.groups()], centre=False) if match else None


def mp_regions(packet: Packet) -> tuple[list[Region], int]:
    """Named MP regions (MP:RegionInfo/MPRI:Regions: top-left x, y, w, h), and the others."""
    found, other = [], 0
    for info in packet.properties(MP, "RegionInfo"):
        regions = struct_child(info, MPRI, "Regions")
        for item in array_items(regions) if regions is not None else []:
            fields = struct_fields(item)
            name = fields.get((MPREG, "PersonDisplayName"), "").strip()
            box = _mp_rectangle(fields.get((MPREG, "Rectangle"), ""))
            if not name or box is None:
                other += 1
                continue
            found.append(Region(name, box, SOURCE_MP, fields.get((FACEBATCH, "Status")), fields.get((FACEBATCH, "Face"))))
    return found, other


def read_regions(packet: Packet) -> tuple[list[Region], int]:
    mwg, mwg_other = mwg_regions(packet)
    mp, mp_other = mp_regions(packet)
    return mwg + mp, mwg_other + mp_other
