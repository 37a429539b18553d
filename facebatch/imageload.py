"""Decode one photo from its bytes into an upright RGB image.

Everything that can go wrong with a single photo becomes a `PhotoError` with a stable `kind`
(`empty_file`, `not_found`, `permission_denied`, `unreadable`, `not_an_image`, `truncated`,
`too_large`, `unsupported_format`, `decode_failed`); no Pillow, OS or value error escapes.

RAW files (CR2, CR3, NEF, ARW, DNG, RAF, ORF, RW2 and whatever else LibRaw reads) go through
rawpy, recognised by their content: the camera's embedded JPEG preview when it is large enough
and has the RAW's shape (fast), else a half-size demosaic. Either way the size is the RAW's own
as displayed, so boxes (and the XMP regions written from them) land where Lightroom and digiKam
show the photo.

Thread safety: nothing here changes Pillow's global settings per call. The only global changes
happen once, at import: Pillow's plugins are loaded, its decompression-bomb limit is set to ours
and the HEIF opener is registered.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pillow_heif
import rawpy
from PIL import Image

from facebatch.errors import PhotoError

# Decompression-bomb limit. A tiny file can declare a huge canvas (a 100000x100000 PNG is ~40 GB
# of RGBA once decoded), so the header size is checked before any pixel is decoded. 200 MP still
# admits every real camera (phones top out at 200 MP, medium format at ~150 MP); Pillow's own
# default (warn above ~89 MP, refuse above ~179 MP) would warn on, or refuse, genuine photos.
MAX_PIXELS: int = 200_000_000

# Pillow's limit becomes ours: it then only warns for images we refuse anyway, and its hard error
# (at twice the limit) stays a backstop inside plugins we cannot check from outside (GIF frames,
# TIFF tiles). Set once at import, never per call.
Image.MAX_IMAGE_PIXELS = MAX_PIXELS

# Load every plugin now so that concurrent first calls don't race to fill Pillow's registries.
Image.init()

# HEIC/HEIF (phones write them) through pillow-heif's wheels, in the default install.
pillow_heif.register_heif_opener()

# ISO-BMFF brands of HEIF still images (Apple .heic and friends).
_HEIF_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs", b"mif1", b"msf1"})

_JPEG_SIGNATURE = b"\xff\xd8\xff"
_JPEG_END_OF_IMAGE = b"\xff\xd9"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# A PNG's last chunk: zero length, "IEND", and its constant CRC.
_PNG_END_CHUNK = b"\x00\x00\x00\x00IEND\xaeB`\x82"

# Known image signatures: a file that starts like an image but that Pillow cannot identify is
# damaged, not "some other file that happens to have a photo extension".
_IMAGE_SIGNATURES = (
    _JPEG_SIGNATURE,
    _PNG_SIGNATURE,
    b"GIF87a",
    b"GIF89a",
    b"BM",
    b"II*\x00",
    b"MM\x00*",
)

# EXIF Orientation value -> the transpose that makes the stored pixels upright.
_ORIENTATION_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_ORIENTATIONS_SWAPPING_AXES = frozenset({5, 6, 7, 8})
_EXIF_ORIENTATION_TAG = 0x0112

# RAW files by name (discovery lists them; export-xmp reads their frame through LibRaw).
RAW_EXTENSIONS: frozenset[str] = frozenset(
    {".cr2", ".cr3", ".crw", ".nef", ".nrw", ".arw", ".srf", ".sr2", ".dng", ".raf", ".orf", ".rw2", ".pef",
     ".srw", ".x3f", ".3fr", ".erf", ".kdc", ".dcr", ".mrw", ".mos", ".iiq", ".rwl", ".raw"}
)
# What a RAW file starts with, besides TIFF's own signatures (CR2, NEF, ARW, DNG, PEF are TIFFs):
# Olympus ORF, Panasonic RW2, Fujifilm RAF, Sigma X3F, Canon CRW, Minolta MRW. Canon's CR3 is an
# ISO-BMFF box of brand crx.
_RAW_SIGNATURES = (b"IIRO", b"IIRS", b"MMOR", b"IIU\x00", b"FUJIFILMCCD-RAW", b"FOVb", b"II\x1a\x00\x00\x00HEAPCCDR",
                   b"\x00MRM")
# LibRaw's flip (how to turn the sensor's frame upright) as the EXIF orientation it means.
_RAW_FLIP_ORIENTATION = {0: 1, 3: 3, 5: 8, 6: 6}
# A preview whose aspect differs more than this from the RAW's is another crop: boxes found on it
# would not land on the RAW, so the RAW is demosaicked instead.
_PREVIEW_ASPECT_TOLERANCE = 0.01

_JPEG_DRAFT_REDUCTIONS = (8, 4, 2)
_WHITE = (255, 255, 255, 255)


@dataclass(frozen=True)
class DecodedPhoto:
    """An upright RGB image plus the photo's full-resolution size.

    `image` may be smaller than the photo (JPEG draft decoding); `scale` maps coordinates on
    `image` back to the full-resolution photo (full = reduced / scale).
    """

    image: Image.Image  # mode "RGB", EXIF orientation applied, possibly reduced by JPEG draft mode
    width: int  # full-resolution width after EXIF rotation
    height: int  # full-resolution height after EXIF rotation

    @property
    def scale(self) -> float:
        """image.width / width: 1.0 at full resolution, about 1/2, 1/4 or 1/8 after draft."""
        return self.image.width / self.width

    @cached_property
    def pixels(self) -> np.ndarray:
        """The image as a read-only (H, W, 3) uint8 array, made once (detection and every crop share it:
        9 MB for a photo drafted to 2016x1512)."""
        return np.asarray(self.image)


def read_photo_bytes(path: str) -> bytes:
    """Read a whole photo file; every OS failure becomes a PhotoError."""
    try:
        with open(path, "rb") as photo_file:
            data = photo_file.read()
    except FileNotFoundError:
        raise PhotoError("not_found", f"file not found: {path}") from None
    except PermissionError:
        raise PhotoError("permission_denied", f"permission denied: {path}") from None
    except OSError as error:
        reason = error.strerror or str(error)
        raise PhotoError("unreadable", f"cannot read {path}: {reason}") from None
    if not data:
        raise PhotoError("empty_file", f"file is empty (0 bytes): {path}")
    return data


def decode_photo(data: bytes, *, min_long_side: int | None = None) -> DecodedPhoto:
    """Decode photo bytes into an upright RGB image.

    min_long_side: for JPEGs, decode at the smallest DCT reduction (1/2, 1/4, 1/8) whose long side
    is still >= min_long_side; other formats, and None, decode at full resolution (the caller
    resizes). `width`/`height` are always the full-resolution size after EXIF rotation.

    Bad data raises PhotoError; only a bad `min_long_side` (a caller bug) raises ValueError.
    """
    if not data:
        raise PhotoError("empty_file", "file is empty (0 bytes)")
    if min_long_side is not None and min_long_side < 1:
        raise ValueError(f"min_long_side must be >= 1, got {min_long_side}")
    try:
        return _decode(data, min_long_side)
    except PhotoError:
        raise
    except Image.DecompressionBombError as error:
        raise PhotoError("too_large", f"image too large (limit {MAX_PIXELS:,} pixels): {error}") from None
    except Exception as error:  # noqa: BLE001 - Pillow plugins raise anything (SyntaxError, struct.error, ...)
        raise _photo_error_from_decoder(error) from None


def _decode(data: bytes, min_long_side: int | None) -> DecodedPhoto:
    if _may_be_raw(data) and (raw := _decode_raw(data, min_long_side)) is not None:
        return raw
    image = _open(data)
    rgb = None
    try:
        _check_pixel_count(image.size)
        _check_complete(data, image)
        stored_width, stored_height = image.size  # header size, before any draft reduction
        if min_long_side is not None and image.format in ("JPEG", "MPO"):
            _request_jpeg_reduction(image, min_long_side)
        # Decode before reading EXIF: for PNG, getexif() would decode the pixels itself, and
        # _exif_orientation() must not be the place where a decoding error is swallowed.
        image.load()
        orientation = _exif_orientation(image)
        rgb = _to_rgb(image)
    finally:
        if rgb is not image:
            image.close()
    if orientation in _ORIENTATION_TRANSPOSE:
        rgb = rgb.transpose(_ORIENTATION_TRANSPOSE[orientation])
    if orientation in _ORIENTATIONS_SWAPPING_AXES:
        stored_width, stored_height = stored_height, stored_width
    return DecodedPhoto(image=rgb, width=stored_width, height=stored_height)


def _may_be_raw(data: bytes) -> bool:
    return (data.startswith((b"II*\x00", b"MM\x00*", *_RAW_SIGNATURES))
            or (data[4:8] == b"ftyp" and data[8:11] == b"crx"))


@dataclass(frozen=True)
class RawFrame:
    """A RAW file's frame: its size as stored and how to show it (EXIF orientation)."""

    stored_width: int
    stored_height: int
    orientation: int


def raw_frame(source: str | bytes) -> RawFrame | None:
    """The frame of a RAW file (a path or its bytes); None when LibRaw does not read it."""
    try:
        with rawpy.imread(io.BytesIO(source) if isinstance(source, bytes) else source) as raw:
            return _frame_of(raw)
    except (rawpy.LibRawError, OSError):
        return None


def _frame_of(raw: rawpy.RawPy) -> RawFrame:
    return RawFrame(raw.sizes.width, raw.sizes.height, _RAW_FLIP_ORIENTATION.get(raw.sizes.flip, 1))


def _decode_raw(data: bytes, min_long_side: int | None) -> DecodedPhoto | None:
    """A RAW photo upright: its preview when good enough, else a half-size demosaic. None when
    LibRaw does not read the file (a plain TIFF): Pillow gets it."""
    try:
        with rawpy.imread(io.BytesIO(data)) as raw:
            frame = _frame_of(raw)
            width, height = frame.stored_width, frame.stored_height
            if frame.orientation in _ORIENTATIONS_SWAPPING_AXES:
                width, height = height, width
            _check_pixel_count((width, height))
            image = _raw_preview(raw, frame, width, height, min_long_side)
            if image is None:
                image = Image.fromarray(raw.postprocess(half_size=True, use_camera_wb=True, output_bps=8))
    except rawpy.LibRawFileUnsupportedError:
        return None
    except rawpy.LibRawError as error:
        raise PhotoError("decode_failed", f"cannot decode RAW file: {type(error).__name__}: {error}") from None
    return DecodedPhoto(image=image, width=width, height=height)


def _raw_preview(raw: rawpy.RawPy, frame: RawFrame, width: int, height: int,
                 min_long_side: int | None) -> Image.Image | None:
    """The camera's embedded preview, upright, when it is big enough (`min_long_side`; half the
    RAW's long side when the caller wants full resolution) and has the RAW's shape."""
    try:
        thumb = raw.extract_thumb()
    except (rawpy.LibRawNoThumbnailError, rawpy.LibRawUnsupportedThumbnailError):
        return None
    if thumb.format == rawpy.ThumbFormat.JPEG:
        try:
            with Image.open(io.BytesIO(thumb.data)) as jpeg:
                preview = jpeg.convert("RGB")
        except Exception:  # noqa: BLE001 - a damaged preview: the RAW itself is still there
            return None
    else:
        preview = Image.fromarray(thumb.data).convert("RGB")
    if frame.orientation in _ORIENTATION_TRANSPOSE:
        preview = preview.transpose(_ORIENTATION_TRANSPOSE[frame.orientation])
    needed = min_long_side if min_long_side is not None else max(width, height) // 2
    aspect = (preview.width / preview.height) / (width / height)
    if max(preview.size) < needed or abs(aspect - 1.0) > _PREVIEW_ASPECT_TOLERANCE:
        return None
    return preview


def _open(data: bytes) -> Image.Image:
    """Identify the format and read the header only (no pixels decoded yet)."""
    try:
        return Image.open(io.BytesIO(data))
    except Image.UnidentifiedImageError:
        pass
    if _is_heif(data):
        raise PhotoError("decode_failed", "HEIF image could not be read (damaged file?)")
    if _looks_cut_short(data):
        raise PhotoError("truncated", "image is cut short (its header is incomplete)")
    if data.startswith(_IMAGE_SIGNATURES) or _is_riff_webp(data):
        raise PhotoError("decode_failed", "image header is damaged")
    raise PhotoError("not_an_image", "not an image (unrecognised file format)")


def _check_pixel_count(size: tuple[int, int]) -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise PhotoError("decode_failed", f"image header declares an empty size {width}x{height}")
    if width * height > MAX_PIXELS:
        raise PhotoError(
            "too_large",
            f"image too large: {width}x{height} is {width * height:,} pixels (limit {MAX_PIXELS:,})",
        )


def _check_complete(data: bytes, image: Image.Image) -> None:
    """Refuse visibly cut files ourselves, whatever ImageFile.LOAD_TRUNCATED_IMAGES says.

    Some library in the same process may set that global to True; Pillow would then pad a cut
    JPEG/PNG with grey and report success. JPEG, PNG and WebP carry an end marker or a declared
    length that we can check cheaply; other formats rely on Pillow raising. (BMP's declared size
    is too often wrong in valid files to refuse a photo over it.)
    """
    if image.format in ("JPEG", "MPO"):
        # The compressed scan data cannot contain FF D9 (FF bytes are stuffed), so an end-of-image
        # marker after the start of the first scan means the scan data is all there. (An EXIF
        # thumbnail's marker, earlier in the file, doesn't count.)
        if data.find(_JPEG_END_OF_IMAGE, _jpeg_scan_start(data)) < 0:
            raise PhotoError("truncated", "JPEG is truncated (no end-of-image marker after its data)")
    elif image.format in ("PNG", "WEBP") and _looks_cut_short(data):
        raise PhotoError("truncated", f"{image.format} file is truncated (end marker or declared length missing)")


def _jpeg_scan_start(data: bytes) -> int:
    """Offset of the first start-of-scan marker, found by walking the header segments.

    Returns 0 when the header can't be walked (then the whole file is searched).
    """
    position = 2  # after the start-of-image marker
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            return 0
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte before a marker
            position += 1
        elif marker == 0xDA:  # start of scan
            return position
        elif marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            position += 2
        else:
            position += 2 + int.from_bytes(data[position + 2 : position + 4], "big")
    return 0


def _exif_orientation(image: Image.Image) -> int:
    """EXIF Orientation 1-8; anything missing, unreadable or out of range counts as upright (1)."""
    try:
        orientation = image.getexif().get(_EXIF_ORIENTATION_TAG, 1)
    except Exception:  # noqa: BLE001 - a broken EXIF block must not cost us the photo
        return 1
    return orientation if isinstance(orientation, int) and 1 <= orientation <= 8 else 1


def jpeg_reduction_for(width: int, height: int, min_long_side: int) -> int:
    """Largest DCT reduction (8, 4, 2 or 1) whose reduced long side is still >= min_long_side."""
    long_side = max(width, height)
    for reduction in _JPEG_DRAFT_REDUCTIONS:
        if math.ceil(long_side / reduction) >= min_long_side:
            return reduction
    return 1


def _request_jpeg_reduction(image: Image.Image, min_long_side: int) -> None:
    width, height = image.size  # stored orientation: draft works before EXIF rotation
    reduction = jpeg_reduction_for(width, height, min_long_side)
    if reduction == 1:
        return
    # Pillow picks the largest power of two <= min(width // w, height // h); asking for the
    # floor-divided size makes that exactly `reduction` (or smaller for a side shorter than
    # `reduction` pixels, which only makes the image bigger, never smaller than asked).
    image.draft("RGB", (max(1, width // reduction), max(1, height // reduction)))


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any decoded mode in RGB: the decoded image itself when it is RGB already (a copy would cost
    31 ms on a 12 MP photo), else a new image."""
    mode = image.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        return _high_bit_depth_to_rgb(image)
    if image.has_transparency_data:  # an alpha band, or palette/colour-key transparency
        return _composite_on_white(image)
    return image if mode == "RGB" else image.convert("RGB")


def _composite_on_white(image: Image.Image) -> Image.Image:
    # Transparent pixels often hold RGB=0: a plain convert("RGB") would paint them black, which
    # looks like a dark object to the face detector. White is what a viewer shows.
    rgba = image.convert("RGBA")
    lowest_alpha, _ = rgba.getchannel("A").getextrema()
    if lowest_alpha == 255:
        return rgba.convert("RGB")
    background = Image.new("RGBA", rgba.size, _WHITE)
    return Image.alpha_composite(background, rgba).convert("RGB")


def _high_bit_depth_to_rgb(image: Image.Image) -> Image.Image:
    # Pillow's convert() clips 16/32-bit greyscale to 0..255, turning most photos white.
    values = np.asarray(image)
    grey = _scale_to_8bit(values, image.mode)
    return Image.fromarray(grey, mode="L").convert("RGB")


def _scale_to_8bit(values: np.ndarray, mode: str) -> np.ndarray:
    """Map greyscale samples to uint8 by their nominal range, or by the data range if unknown."""
    samples = values.astype(np.float64)
    if mode.startswith("I;16"):
        low, high = 0.0, 65535.0
    elif mode == "F" and samples.size and samples.min() >= 0.0 and samples.max() <= 1.0:
        low, high = 0.0, 1.0  # normalised float image
    elif mode == "I" and samples.size and samples.min() >= 0 and samples.max() <= 65535:
        low, high = 0.0, 65535.0  # 16-bit samples carried in a 32-bit mode (PNG, PGM, TIFF)
    else:
        finite = samples[np.isfinite(samples)]
        low = float(finite.min()) if finite.size else 0.0
        high = float(finite.max()) if finite.size else 1.0
    span = high - low if high > low else 1.0
    scaled = np.nan_to_num((samples - low) * (255.0 / span), nan=0.0, posinf=255.0, neginf=0.0)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _is_heif(data: bytes) -> bool:
    """ISO-BMFF 'ftyp' box naming a HEIF brand (major or compatible)."""
    if data[4:8] != b"ftyp":
        return False
    box_size = int.from_bytes(data[0:4], "big")
    box = data[8 : max(8, min(box_size, 256))]
    brands = {box[i : i + 4] for i in range(0, len(box) - 3, 4)}
    return bool(brands & _HEIF_BRANDS)


def _looks_cut_short(data: bytes) -> bool:
    """True when a file with a known signature lacks its end marker or declared length."""
    if data.startswith(_JPEG_SIGNATURE):
        return _JPEG_END_OF_IMAGE not in data
    if data.startswith(_PNG_SIGNATURE):
        return _PNG_END_CHUNK not in data
    if _is_riff_webp(data):
        return len(data) < int.from_bytes(data[4:8], "little") + 8
    if data.startswith(b"BM") and len(data) >= 6:
        return len(data) < int.from_bytes(data[2:6], "little")  # only to name an unreadable header
    return False


def _is_riff_webp(data: bytes) -> bool:
    return data[0:4] == b"RIFF" and data[8:12] == b"WEBP"


def _photo_error_from_decoder(error: Exception) -> PhotoError:
    message = str(error) or type(error).__name__
    if "truncated" in message.lower() or isinstance(error, EOFError):
        return PhotoError("truncated", f"image data is truncated: {message}")
    if isinstance(error, MemoryError):
        return PhotoError("too_large", "ran out of memory while decoding the image")
    return PhotoError("decode_failed", f"cannot decode image: {message}")
