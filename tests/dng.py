"""DNG files written in tests (nothing downloaded): linear RGB raw data, which LibRaw demosaics
with the DNG colour tags given here, with or without the JPEG preview a camera embeds (IFD0,
the raw data in a SubIFD, as cameras and Adobe's converter write them)."""
import io
import struct

import numpy as np
from PIL import Image

XYZ_TO_SRGB = (3.2406, -1.5372, -0.4986, -0.9689, 1.8758, 0.0415, 0.0557, -0.2040, 1.0570)
SHORT, LONG, RATIONAL, SRATIONAL, BYTE, ASCII = 3, 4, 5, 10, 1, 2
SIZES = {SHORT: 2, LONG: 4, RATIONAL: 8, SRATIONAL: 8, BYTE: 1, ASCII: 1}
FORMATS = {SHORT: "H", LONG: "I", BYTE: "B", ASCII: "B"}


def _values(kind, values):
    if kind in (RATIONAL, SRATIONAL):
        out = b""
        for v in values:
            out += struct.pack("<ii" if kind == SRATIONAL else "<II", int(round(v * 10000)), 10000)
        return out
    return struct.pack("<" + FORMATS[kind] * len(values), *values)


def _ifd(entries, start):
    """entries: (tag, kind, values); values longer than 4 bytes go to `blobs` after the IFD."""
    entries = sorted(entries)
    size = 2 + 12 * len(entries) + 4
    out, extra = struct.pack("<H", len(entries)), b""
    for tag, kind, values in entries:
        data = _values(kind, values)
        count = len(values)
        if len(data) <= 4:
            field = data.ljust(4, b"\0")
        else:
            field = struct.pack("<I", start + size + len(extra))
            extra += data + (b"\0" if len(data) % 2 else b"")
        out += struct.pack("<HHI", tag, kind, count) + field
    return out + struct.pack("<I", 0) + extra


def write_dng(path, image: Image.Image, preview_long_side: int | None = None, orientation: int = 1) -> None:
    """`image`'s pixels as a DNG's raw data (sRGB undone to linear), shown with EXIF `orientation`,
    with a JPEG preview of that long side (None: no preview: LibRaw demosaics the raw data)."""
    rgb = np.asarray(image.convert("RGB"), np.float64)
    linear = ((rgb / 255.0) ** 2.2 * 65535).astype("<u2")
    h, w = linear.shape[:2]
    raw = linear.tobytes()
    jpeg = b""
    if preview_long_side:
        small = image.convert("RGB").copy()
        small.thumbnail((preview_long_side, preview_long_side))
        buffer = io.BytesIO()
        small.save(buffer, "JPEG", quality=92)
        jpeg = buffer.getvalue()
        pw, ph = small.size
    dng = [(50706, BYTE, (1, 4, 0, 0)), (50708, ASCII, tuple(b"facebatch test\0")), (50721, SRATIONAL, XYZ_TO_SRGB),
           (50728, RATIONAL, (1, 1, 1)), (50778, SHORT, (21,)), (274, SHORT, (orientation,))]
    def raw_entries(offset):
        return [(254, LONG, (0,)), (256, LONG, (w,)), (257, LONG, (h,)), (258, SHORT, (16, 16, 16)),
                (259, SHORT, (1,)), (262, SHORT, (34892,)), (273, LONG, (offset,)), (277, SHORT, (3,)),
                (278, LONG, (h,)), (279, LONG, (len(raw),)), (284, SHORT, (1,))]
    # Layout: header, data (jpeg, raw), IFD0, IFD1.
    jpeg_at, raw_at = 8, 8 + len(jpeg) + (len(jpeg) % 2)
    ifd0_at = raw_at + len(raw) + (len(raw) % 2)
    if jpeg:
        # IFD0 the preview, the raw data in a SubIFD (as cameras and Adobe's converter write them).
        def first(sub):
            return [(254, LONG, (1,)), (256, LONG, (pw,)), (257, LONG, (ph,)), (258, SHORT, (8, 8, 8)),
                    (259, SHORT, (7,)), (262, SHORT, (6,)), (273, LONG, (jpeg_at,)), (277, SHORT, (3,)),
                    (278, LONG, (ph,)), (279, LONG, (len(jpeg),)), (330, LONG, (sub,)), *dng]
        ifd0 = _ifd(first(0), ifd0_at)
        ifd1_at = ifd0_at + len(ifd0) + (len(ifd0) % 2)
        ifd0 = _ifd(first(ifd1_at), ifd0_at)
        tail = ifd0 + b"\0" * (len(ifd0) % 2) + _ifd(raw_entries(raw_at), ifd1_at)
    else:
        tail = _ifd(raw_entries(raw_at) + dng, ifd0_at)
    data = b"II*\0" + struct.pack("<I", ifd0_at) + jpeg + b"\0" * (len(jpeg) % 2) + raw + b"\0" * (len(raw) % 2) + tail
    with open(path, "wb") as f:
        f.write(data)
