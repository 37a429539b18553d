"""Tests for facebatch.imageload: reading, decoding, orientation, modes, reduction, bad input."""

from __future__ import annotations

import io
import random
import struct
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from conftest import DATASETS, dataset, hard_manifest
from facebatch import imageload
from facebatch.errors import PhotoError
from facebatch.imageload import MAX_PIXELS, DecodedPhoto, decode_photo, jpeg_reduction_for, read_photo_bytes


EXIF_ORIENTATION_TAG = 0x0112


@pytest.fixture
def hard() -> Path:
    return dataset("hard")


def encode(image: Image.Image, image_format: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, image_format, **options)
    return buffer.getvalue()


def pixels(photo: DecodedPhoto) -> np.ndarray:
    return np.asarray(photo.image, dtype=np.int16)


def photo_error(data: bytes, **options: object) -> PhotoError:
    with pytest.raises(PhotoError) as raised:
        decode_photo(data, **options)  # type: ignore[arg-type]
    return raised.value


def gradient_rgb(width: int, height: int) -> Image.Image:
    """Smooth content (JPEG-friendly) that differs in every direction."""
    x = np.linspace(0, 255, width)[None, :].repeat(height, 0)
    y = np.linspace(0, 255, height)[:, None].repeat(width, 1)
    return Image.fromarray(np.stack([x, y, 255 - x], axis=2).astype(np.uint8), "RGB")


# --- read_photo_bytes ------------------------------------------------------------------------


def test_read_photo_bytes_returns_the_content(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(b"\xff\xd8\xffdata")
    assert read_photo_bytes(str(tmp_path / "a.jpg")) == b"\xff\xd8\xffdata"


@pytest.mark.parametrize(
    ("make", "kind"),
    [
        (lambda path: path.write_bytes(b""), "empty_file"),
        (lambda path: None, "not_found"),
        (lambda path: path.mkdir(), "unreadable"),
    ],
    ids=["zero-bytes", "missing", "a-folder"],
)
def test_read_photo_bytes_errors(tmp_path: Path, make: Callable[[Path], object], kind: str) -> None:
    path = tmp_path / "photo.jpg"
    make(path)
    with pytest.raises(PhotoError) as raised:
        read_photo_bytes(str(path))
    assert raised.value.kind == kind
    assert str(path) in raised.value.message


def test_read_photo_bytes_permission_denied_for_real(tmp_path: Path) -> None:
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(b"\xff\xd8\xff")
    secret.chmod(0)
    try:
        try:
            secret.open("rb").close()
        except PermissionError:
            pass
        else:
            pytest.skip("file permissions are not enforced for this user (root?)")
        with pytest.raises(PhotoError) as raised:
            read_photo_bytes(str(secret))
    finally:
        secret.chmod(0o644)
    assert raised.value.kind == "permission_denied"


def test_read_photo_bytes_permission_denied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Simulated: the suite may run as root, which reads mode-000 files anyway.
    def refuse(path: str, mode: str = "r") -> object:
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(imageload, "open", refuse, raising=False)
    with pytest.raises(PhotoError) as raised:
        read_photo_bytes(str(tmp_path / "secret.jpg"))
    assert raised.value.kind == "permission_denied"


# --- decoding basics and modes ---------------------------------------------------------------


def test_decodes_rgb_jpeg_at_full_resolution() -> None:
    photo = decode_photo(encode(gradient_rgb(64, 48), "JPEG", quality=95))
    assert (photo.image.mode, photo.image.size, photo.width, photo.height) == ("RGB", (64, 48), 64, 48)
    assert photo.scale == 1.0


def test_pixels_are_the_images_made_once() -> None:
    written = gradient_rgb(64, 48)
    photo = decode_photo(encode(written, "PNG"))  # lossless: the pixels come back as written
    assert photo.pixels is photo.pixels and photo.pixels.shape == (48, 64, 3)
    np.testing.assert_array_equal(photo.pixels, np.asarray(written))
    np.testing.assert_array_equal(np.asarray(photo.image), np.asarray(written))  # the image is still open


def test_empty_bytes_are_an_empty_file() -> None:
    assert photo_error(b"").kind == "empty_file"


def rgba_with_transparent_left_half() -> Image.Image:
    image = Image.new("RGBA", (8, 4), (200, 10, 10, 255))
    image.paste((0, 0, 0, 0), (0, 0, 4, 4))  # transparent black, like the NASA alpha PNG
    return image


def one_bit_black_then_white() -> Image.Image:
    image = Image.new("1", (8, 4), 0)
    image.paste(1, (4, 0, 8, 4))
    return image


def palette_with_transparent_index() -> Image.Image:
    image = Image.new("P", (8, 4), 1)
    image.putpalette([0, 0, 0, 200, 10, 10] + [0, 0, 0] * 254)
    image.paste(0, (0, 0, 4, 4))
    return image


# (fixture bytes, expected colour of the left half, expected colour of the right half)
MODE_CASES: dict[str, tuple[Callable[[], bytes], tuple[int, int, int], tuple[int, int, int]]] = {
    "L-png": (lambda: encode(Image.new("L", (8, 4), 77), "PNG"), (77, 77, 77), (77, 77, 77)),
    "1-bit-png": (lambda: encode(one_bit_black_then_white(), "PNG"), (0, 0, 0), (255, 255, 255)),
    "RGBA-transparent-on-white": (
        lambda: encode(rgba_with_transparent_left_half(), "PNG"), (255, 255, 255), (200, 10, 10),
    ),
    "LA-transparent-on-white": (
        lambda: encode(rgba_with_transparent_left_half().convert("LA"), "PNG"), (255, 255, 255), (69, 69, 69),
    ),
    "P-no-transparency": (
        lambda: encode(palette_with_transparent_index(), "PNG"), (0, 0, 0), (200, 10, 10),
    ),
    "P-transparency-png": (
        lambda: encode(palette_with_transparent_index(), "PNG", transparency=0), (255, 255, 255), (200, 10, 10),
    ),
    "P-transparency-gif": (
        lambda: encode(palette_with_transparent_index(), "GIF", transparency=0), (255, 255, 255), (200, 10, 10),
    ),
    "CMYK-jpeg": (
        lambda: encode(Image.new("CMYK", (8, 4), (0, 255, 255, 0)), "JPEG", quality=95), (254, 0, 0), (254, 0, 0),
    ),
    "CMYK-tiff": (lambda: encode(Image.new("CMYK", (8, 4), (0, 255, 255, 0)), "TIFF"), (255, 0, 0), (255, 0, 0)),
    "RGB-webp-lossless": (
        lambda: encode(Image.new("RGB", (8, 4), (1, 2, 3)), "WEBP", lossless=True), (1, 2, 3), (1, 2, 3),
    ),
    "RGB-bmp": (lambda: encode(Image.new("RGB", (8, 4), (1, 2, 3)), "BMP"), (1, 2, 3), (1, 2, 3)),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(MODE_CASES))
def test_every_mode_becomes_rgb(case: str) -> None:
    make, left, right = MODE_CASES[case]
    photo = decode_photo(make())
    assert photo.image.mode == "RGB" and photo.image.size == (8, 4)
    values = pixels(photo)
    assert np.abs(values[:, :4] - left).max() <= 2, values[0, 0]
    assert np.abs(values[:, 4:] - right).max() <= 2, values[0, 7]


def test_opaque_rgba_is_left_unchanged() -> None:
    rgba = Image.new("RGBA", (8, 4), (12, 34, 56, 255))
    assert pixels(decode_photo(encode(rgba, "PNG")))[0, 0].tolist() == [12, 34, 56]


def test_partial_alpha_is_blended_with_white() -> None:
    half_transparent_black = Image.new("RGBA", (4, 4), (0, 0, 0, 128))
    value = pixels(decode_photo(encode(half_transparent_black, "PNG")))[0, 0]
    assert np.all(np.abs(value - 127) <= 1)


HIGH_BIT_DEPTH_CASES = {
    # name: (array, Pillow mode it opens as, format)
    "I;16-png": (np.linspace(0, 65535, 256).astype(np.uint16), "I;16", "PNG"),
    "I;16-tiff": (np.linspace(0, 65535, 256).astype(np.uint16), "I;16", "TIFF"),
    "I-32bit-tiff": (np.linspace(0, 65535, 256).astype(np.int32), "I", "TIFF"),
    "F-32bit-float-tiff": (np.linspace(0.0, 1.0, 256).astype(np.float32), "F", "TIFF"),
}


@pytest.mark.parametrize("case", sorted(HIGH_BIT_DEPTH_CASES))
def test_high_bit_depth_greyscale_is_scaled_not_clipped(case: str) -> None:
    row, opened_mode, image_format = HIGH_BIT_DEPTH_CASES[case]
    data = encode(Image.fromarray(np.tile(row, (4, 1))), image_format)
    assert Image.open(io.BytesIO(data)).mode == opened_mode  # the fixture really is high-bit
    values = pixels(decode_photo(data))
    assert np.array_equal(values[..., 0], values[..., 2])
    grey = values[0, :, 0]
    assert grey[0] == 0 and grey[-1] == 255
    assert abs(int(grey[128]) - 128) <= 1  # the middle stays mid-grey instead of clipping to white
    assert np.all(np.diff(grey) >= 0)


def test_wide_range_32bit_integers_are_stretched() -> None:
    row = np.linspace(-1_000_000, 3_000_000, 256).astype(np.int32)
    grey = pixels(decode_photo(encode(Image.fromarray(np.tile(row, (4, 1))), "TIFF")))[0, :, 0]
    assert grey[0] == 0 and grey[-1] == 255 and abs(int(grey[128]) - 128) <= 1


@pytest.mark.parametrize("image_format", ["GIF", "WEBP", "PNG"])
def test_animated_images_give_their_first_frame(image_format: str) -> None:
    frames = [Image.new("RGB", (16, 16), colour) for colour in ((220, 20, 20), (20, 20, 220))]
    data = encode(frames[0], image_format, save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 2
    red, green, blue = pixels(decode_photo(data))[8, 8]
    assert red > 180 and blue < 60


# --- EXIF orientation ------------------------------------------------------------------------

# What a viewer shows for each EXIF Orientation value, written from the EXIF spec with numpy so
# that the test does not reuse the code's own table.
UPRIGHT_FROM_STORED: dict[int, Callable[[np.ndarray], np.ndarray]] = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],  # mirrored horizontally
    3: lambda a: a[::-1, ::-1],  # rotated 180
    4: lambda a: a[::-1, :],  # mirrored vertically
    5: lambda a: a.transpose(1, 0, 2),  # mirrored horizontally, then rotated 90 counter-clockwise
    6: lambda a: np.rot90(a, -1),  # needs a 90 degree clockwise turn
    7: lambda a: np.rot90(a, 2).transpose(1, 0, 2),  # mirrored horizontally, then rotated 90 clockwise
    8: lambda a: np.rot90(a, 1),  # needs a 90 degree counter-clockwise turn
}


def blocks_image() -> Image.Image:
    """4x2 blocks of distinct flat colours: every flip/rotation gives a different layout."""
    colours = [(230, 25, 25), (25, 230, 25), (25, 25, 230), (230, 230, 25),
               (230, 25, 230), (25, 230, 230), (128, 128, 128), (250, 250, 250)]  # fmt: skip
    grid = np.zeros((2 * 16, 4 * 16, 3), dtype=np.uint8)
    for index, colour in enumerate(colours):
        row, column = divmod(index, 4)
        grid[row * 16 : (row + 1) * 16, column * 16 : (column + 1) * 16] = colour
    return Image.fromarray(grid, "RGB")


def with_orientation(image: Image.Image, orientation: int, image_format: str = "JPEG") -> bytes:
    exif = Image.Exif()
    exif[EXIF_ORIENTATION_TAG] = orientation
    return encode(image, image_format, exif=exif.tobytes(), **({"quality": 95} if image_format == "JPEG" else {}))


def block_centres(values: np.ndarray) -> np.ndarray:
    return values[8::16, 8::16]


@pytest.mark.parametrize("orientation", range(1, 9))
def test_all_eight_exif_orientations_come_out_upright(orientation: int) -> None:
    stored = blocks_image()
    photo = decode_photo(with_orientation(stored, orientation))
    expected = UPRIGHT_FROM_STORED[orientation](np.asarray(stored, dtype=np.int16))
    assert photo.image.size == (expected.shape[1], expected.shape[0])
    assert (photo.width, photo.height) == photo.image.size
    assert np.abs(block_centres(pixels(photo)) - block_centres(expected)).max() <= 12


@pytest.mark.parametrize("orientation", [0, 9, 65535])
def test_out_of_range_orientation_is_ignored(orientation: int) -> None:
    photo = decode_photo(with_orientation(blocks_image(), orientation))
    assert photo.image.size == (64, 32)


def test_exif_orientation_in_png_is_applied() -> None:
    photo = decode_photo(with_orientation(blocks_image(), 6, image_format="PNG"))
    assert (photo.width, photo.height, photo.image.size) == (32, 64, (32, 64))


# --- JPEG draft reduction --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("min_long_side", "expected_reduction"),
    [(1, 8), (250, 8), (251, 4), (500, 4), (501, 2), (1000, 2), (1001, 1), (5000, 1)],
)
def test_reduction_is_the_smallest_image_still_long_enough(min_long_side: int, expected_reduction: int) -> None:
    assert jpeg_reduction_for(2000, 1000, min_long_side) == expected_reduction
    assert jpeg_reduction_for(1000, 2000, min_long_side) == expected_reduction  # orientation-free


@pytest.fixture(scope="module")
def jpeg_2000x1000() -> bytes:
    return encode(gradient_rgb(2000, 1000), "JPEG", quality=90)


@pytest.mark.parametrize("min_long_side", [None, 1, 250, 251, 500, 999, 1000, 1001, 4000])
def test_draft_decoding_never_goes_below_min_long_side(jpeg_2000x1000: bytes, min_long_side: int | None) -> None:
    photo = decode_photo(jpeg_2000x1000, min_long_side=min_long_side)
    assert (photo.width, photo.height) == (2000, 1000)  # always the full-resolution size
    long_side = max(photo.image.size)
    if min_long_side is None or min_long_side > 1000:
        assert photo.image.size == (2000, 1000)
    else:
        assert min_long_side <= long_side < 2 * min_long_side or long_side == 250
    assert photo.scale == pytest.approx(photo.image.width / 2000)
    assert photo.image.height == pytest.approx(1000 * photo.scale, abs=1)


def test_draft_with_rotation_reports_full_size_after_rotation() -> None:
    data = with_orientation(gradient_rgb(1600, 800), 6)
    photo = decode_photo(data, min_long_side=400)
    assert (photo.width, photo.height) == (800, 1600)
    assert photo.image.size == (200, 400)  # 1/4, upright
    assert photo.scale == 0.25
    full = decode_photo(data)
    reduced_up = np.asarray(photo.image.resize(full.image.size, Image.Resampling.BILINEAR), dtype=np.int16)
    assert np.abs(reduced_up - pixels(full)).mean() < 4  # same content, same orientation


def test_draft_on_a_greyscale_jpeg() -> None:
    photo = decode_photo(encode(gradient_rgb(800, 400).convert("L"), "JPEG"), min_long_side=100)
    assert photo.image.mode == "RGB" and photo.image.size == (100, 50)


def test_non_jpeg_formats_decode_at_full_size_with_min_long_side() -> None:
    photo = decode_photo(encode(gradient_rgb(800, 400), "PNG"), min_long_side=100)
    assert photo.image.size == (800, 400) and photo.scale == 1.0


def test_min_long_side_must_be_positive(jpeg_2000x1000: bytes) -> None:
    with pytest.raises(ValueError):
        decode_photo(jpeg_2000x1000, min_long_side=0)


# --- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [b"this is a text file named photo.jpg\n" * 20, bytes(range(256)) * 4, b"%PDF-1.7\n" + b"\0" * 500, b"x"],
    ids=["text", "binary-noise", "pdf", "one-byte"],
)
def test_non_images_are_not_an_image(data: bytes) -> None:
    error = photo_error(data)
    assert error.kind == "not_an_image" and "not an image" in error.message


@pytest.fixture(scope="module")
def sample_jpeg() -> bytes:
    return encode(gradient_rgb(320, 240), "JPEG", quality=90)


@pytest.fixture(scope="module")
def sample_progressive_jpeg() -> bytes:
    return encode(gradient_rgb(320, 240), "JPEG", quality=90, progressive=True)


@pytest.fixture(scope="module")
def sample_png() -> bytes:
    noise = np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    return encode(Image.fromarray(noise, "RGB"), "PNG")


@pytest.mark.parametrize("pillow_pads_truncated_images", [False, True])
@pytest.mark.parametrize("sample", ["sample_jpeg", "sample_progressive_jpeg", "sample_png"])
@pytest.mark.parametrize("keep_fraction", [0.15, 0.5, 0.9, -2])
def test_truncated_files_are_truncated_errors(
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    pillow_pads_truncated_images: bool,
    sample: str,
    keep_fraction: float,
) -> None:
    # Another library in the process may set LOAD_TRUNCATED_IMAGES; a cut file must still fail
    # instead of coming back half grey.
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", pillow_pads_truncated_images)
    data: bytes = request.getfixturevalue(sample)
    cut = data[:-2] if keep_fraction == -2 else data[: int(len(data) * keep_fraction)]
    error = photo_error(cut)
    assert error.kind == "truncated", error.message


@pytest.mark.parametrize("pillow_pads_truncated_images", [False, True])
def test_truncated_jpeg_with_an_embedded_thumbnail_is_truncated(
    monkeypatch: pytest.MonkeyPatch, pillow_pads_truncated_images: bool
) -> None:
    # The thumbnail in the EXIF block ends with its own end-of-image marker, before the main scan.
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", pillow_pads_truncated_images)
    thumbnail = encode(Image.new("RGB", (8, 8), (9, 9, 9)), "JPEG")
    data = encode(gradient_rgb(320, 240), "JPEG", exif=Image.Exif().tobytes() + thumbnail)
    assert data.find(b"\xff\xd9") < len(data) // 4
    assert decode_photo(data).image.size == (320, 240)
    assert photo_error(data[: len(data) // 2]).kind == "truncated"


def test_damaged_header_is_decode_failed(sample_png: bytes) -> None:
    damaged = bytearray(sample_png)
    damaged[29] ^= 0xFF  # IHDR checksum: the file is complete but its header is wrong
    error = photo_error(bytes(damaged))
    assert error.kind == "decode_failed" and "damaged" in error.message


def test_header_cut_short_is_truncated(sample_jpeg: bytes, sample_png: bytes) -> None:
    assert photo_error(sample_jpeg[:40]).kind == "truncated"
    assert photo_error(sample_png[:20]).kind == "truncated"


def png_chunk(chunk_type: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + chunk_type + body + struct.pack(">I", zlib.crc32(chunk_type + body))


def png_claiming_size(width: int, height: int) -> bytes:
    """A few dozen bytes whose header claims width x height RGB pixels."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + png_chunk(b"IEND", b"")
    )


def jpeg_claiming_size(width: int, height: int) -> bytes:
    data = bytearray(encode(Image.new("RGB", (16, 16)), "JPEG"))
    frame_header = data.find(b"\xff\xc0")
    data[frame_header + 5 : frame_header + 9] = struct.pack(">HH", height, width)
    return bytes(data)


@pytest.mark.parametrize(
    "data",
    [png_claiming_size(100_000, 100_000), jpeg_claiming_size(60_000, 60_000)],
    ids=["png-100000x100000", "jpeg-60000x60000"],
)
def test_absurd_header_dimensions_are_too_large_before_decoding(data: bytes) -> None:
    error = photo_error(data)
    assert error.kind == "too_large"


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_just_over_max_pixels_is_too_large() -> None:
    side = int(MAX_PIXELS**0.5) + 10  # over our limit, under Pillow's hard error
    error = photo_error(jpeg_claiming_size(side, side))
    assert error.kind == "too_large" and f"{side}x{side}" in error.message


def test_pixel_limit_is_checked_on_the_header(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(imageload, "MAX_PIXELS", 99)
    assert photo_error(encode(Image.new("RGB", (10, 10)), "PNG")).kind == "too_large"
    assert decode_photo(encode(Image.new("RGB", (9, 11)), "PNG")).image.size == (9, 11)


def test_broken_png_data_is_decode_failed(sample_png: bytes) -> None:
    start = sample_png.find(b"IDAT")
    length = struct.unpack(">I", sample_png[start - 4 : start])[0]
    body = sample_png[start + 4 : start + 4 + length]
    garbled = body[:2] + bytes(byte ^ 0xFF for byte in body[2:])  # not a zlib stream any more
    data = sample_png[: start - 4] + png_chunk(b"IDAT", garbled) + sample_png[start + 8 + length :]
    assert photo_error(data).kind == "decode_failed"


def test_unsupported_variant_is_decode_failed() -> None:
    bmp = bytearray(encode(Image.new("RGB", (8, 8)), "BMP"))
    bmp[28] = 7  # bits per pixel
    error = photo_error(bytes(bmp))
    assert error.kind == "decode_failed" and "7" in error.message


def heic_like_bytes() -> bytes:
    ftyp = b"ftyp" + b"heic" + b"\0\0\0\0" + b"mif1heic"
    return struct.pack(">I", len(ftyp) + 4) + ftyp + b"\0" * 200


def test_heic_photos_decode_in_the_default_install_and_a_damaged_one_is_one_error() -> None:
    image = Image.new("RGB", (96, 64), (200, 40, 10))
    heic = encode(image, "HEIF", quality=90)
    assert heic[4:12] == b"ftypheic"
    photo = decode_photo(heic)
    assert (photo.width, photo.height) == (96, 64)
    assert np.abs(np.asarray(photo.image, np.int16).mean(axis=(0, 1)) - (200, 40, 10)).max() < 8
    error = photo_error(heic_like_bytes())
    assert error.kind == "decode_failed" and "HEIF" in error.message


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow warns about the corrupt TIFF tags
def test_damaged_files_never_raise_anything_but_photo_error(
    sample_jpeg: bytes, sample_progressive_jpeg: bytes, sample_png: bytes
) -> None:
    samples = [
        sample_jpeg,
        sample_progressive_jpeg,
        sample_png,
        encode(palette_with_transparent_index(), "GIF"),
        encode(gradient_rgb(64, 48), "WEBP"),
        encode(gradient_rgb(64, 48), "TIFF"),
        encode(gradient_rgb(64, 48), "BMP"),
    ]
    rng = random.Random(1234)
    outcomes: dict[str, int] = {}
    for sample in samples:
        for _ in range(40):
            damaged = bytearray(sample)
            for _ in range(rng.randint(1, 8)):
                damaged[rng.randrange(len(damaged))] = rng.randrange(256)
            if rng.random() < 0.3:
                damaged = damaged[: rng.randrange(1, len(damaged))]
            try:
                photo = decode_photo(bytes(damaged), min_long_side=rng.choice([None, 16]))
            except PhotoError as error:
                outcomes[error.kind] = outcomes.get(error.kind, 0) + 1
            else:
                assert photo.image.mode == "RGB"
                outcomes["decoded"] = outcomes.get("decoded", 0) + 1
    assert set(outcomes) <= {"decoded", "not_an_image", "truncated", "too_large", "decode_failed"}, outcomes


def test_decoding_from_several_threads_matches_serial(sample_jpeg: bytes, jpeg_2000x1000: bytes) -> None:
    jobs = [
        (jpeg_2000x1000, 300),
        (jpeg_2000x1000, None),
        (sample_jpeg, None),
        (encode(rgba_with_transparent_left_half(), "PNG"), None),
        (with_orientation(blocks_image(), 6), 8),
    ] * 6
    serial = [decode_photo(data, min_long_side=size).image.tobytes() for data, size in jobs]
    with ThreadPoolExecutor(max_workers=8) as pool:
        threaded = list(pool.map(lambda job: decode_photo(job[0], min_long_side=job[1]).image.tobytes(), jobs))
    assert threaded == serial


# --- real photos (../shared/datasets/hard) ---------------------------------------------------

# EXIF-rotated copy in hard/ -> the upright photo it was made from.
EXIF_SOURCES = {
    "exif_orientation/nasa_andrew_morgan_exif6.jpg": "faces-dev/andrew_morgan/nasa_portrait_Andrew_Morgan.jpg",
    "exif_orientation/nasa_nick_hague_exif3.jpg": "faces-dev/nick_hague/nasa_portrait_Nick_Hague.jpg",
    "exif_orientation/nasa_alexander_gerst_exif8.jpg": "faces-dev/alexander_gerst/nasa_portrait_Alexander_Gerst.jpg",
    # recurser's *_0 files are the same photos stored upright (their Orientation tag is 0: invalid).
    "exif_orientation/recurser_Landscape_3.jpg": "hard/no_faces/recurser_Landscape_0.jpg",
    "exif_orientation/recurser_Landscape_6.jpg": "hard/no_faces/recurser_Landscape_0.jpg",
    "exif_orientation/recurser_Landscape_8.jpg": "hard/no_faces/recurser_Landscape_0.jpg",
    "exif_orientation/recurser_Portrait_6.jpg": "hard/no_faces/recurser_Portrait_0.jpg",
}


@pytest.mark.parametrize("rotated", sorted(EXIF_SOURCES))
def test_real_exif_rotated_photos_match_their_upright_source(hard: Path, rotated: str) -> None:
    photo = decode_photo(read_photo_bytes(str(hard / rotated)))
    source_path = DATASETS / EXIF_SOURCES[rotated]
    source = np.asarray(Image.open(source_path).convert("RGB"), dtype=np.int16)
    assert photo.image.size == (source.shape[1], source.shape[0])
    assert (photo.width, photo.height) == photo.image.size
    decoded = pixels(photo)
    difference = np.abs(decoded - source).mean()
    upside_down = np.abs(decoded - source[::-1, ::-1]).mean()
    assert difference < 6 and upside_down > 8 * difference, (difference, upside_down)


def test_real_exif_rotated_portraits_are_portrait(hard: Path) -> None:
    for name in ("nasa_andrew_morgan_exif6.jpg", "nasa_nick_hague_exif3.jpg", "nasa_alexander_gerst_exif8.jpg"):
        data = read_photo_bytes(str(hard / "exif_orientation" / name))
        for min_long_side in (None, 300):
            photo = decode_photo(data, min_long_side=min_long_side)
            assert photo.height > photo.width and photo.image.height > photo.image.width, name


def test_real_alpha_png_is_composited_on_white(hard: Path) -> None:
    path = hard / "png_alpha" / "nasa_andrew_morgan_alpha.png"
    rgba = np.asarray(Image.open(path), dtype=np.int16)
    decoded = pixels(decode_photo(read_photo_bytes(str(path))))
    transparent = rgba[..., 3] == 0
    opaque = rgba[..., 3] == 255
    assert transparent.mean() > 0.3  # the fixture is what NOTES.md says
    assert np.all(decoded[transparent] == 255)  # white, not the black a naive convert gives
    assert np.array_equal(decoded[opaque], rgba[..., :3][opaque])


def test_real_opaque_rgba_png_equals_its_rgb(hard: Path) -> None:
    path = hard / "png_alpha" / "fr_32bit.png"
    expected = np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)
    assert np.array_equal(pixels(decode_photo(read_photo_bytes(str(path)))), expected)


@pytest.mark.parametrize("name", ["skimage_camera.png", "nasa_nick_hague_gray.jpg"])
def test_real_greyscale_photos_become_grey_rgb(hard: Path, name: str) -> None:
    path = hard / "grayscale" / name
    photo = decode_photo(read_photo_bytes(str(path)))
    values = pixels(photo)
    assert photo.image.mode == "RGB" and photo.image.size == Image.open(path).size
    assert np.array_equal(values[..., 0], values[..., 1]) and np.array_equal(values[..., 1], values[..., 2])
    assert np.array_equal(values[..., 0], np.asarray(Image.open(path)))


@pytest.mark.parametrize(
    "name",
    [
        "nasa_iss_morgan_hague_interview_48708316717_o.jpg",
        "nasa_iss_morgan_spheres_48537462412_o.jpg",
        "nasa_iss_gerst_sextant_42403293545_o.jpg",
    ],
)
def test_real_very_large_photos_decode_reduced_with_full_size(hard: Path, name: str) -> None:
    photo = decode_photo(read_photo_bytes(str(hard / "very_large" / name)), min_long_side=1024)
    assert (photo.width, photo.height) == (5568, 3712)
    assert 1024 <= max(photo.image.size) < 2048
    assert photo.image.size == (1392, 928) and photo.scale == 0.25


def test_every_manifest_image_decodes_or_is_a_photo_error(hard: Path) -> None:
    paths = [row["path"] for row in hard_manifest(hard)]
    assert len(paths) == 90
    failures: dict[str, str] = {}
    for relative_path in paths:
        data = read_photo_bytes(str(hard / relative_path))
        for min_long_side in (None, 160):
            try:
                photo = decode_photo(data, min_long_side=min_long_side)
            except PhotoError as error:  # anything else fails the test on the spot
                failures[relative_path] = f"{error.kind}: {error.message}"
                continue
            assert photo.image.mode == "RGB", relative_path
            if min_long_side is not None:
                assert max(photo.image.size) >= min(min_long_side, max(photo.width, photo.height))
    # Every file in the manifest is a valid image, so none should even be a PhotoError.
    assert failures == {}
