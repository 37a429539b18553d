"""Face thumbnails: cropped once from the originals, cached in the library by face_id.

The crop is the face's box from the tables (original pixels, EXIF orientation applied) widened
to a square with some context, so a person is recognisable. Each photo is decoded once for all of
its faces, at the smallest JPEG draft size that still gives full-resolution thumbnails.
"""

from __future__ import annotations

import io
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

from facebatch.errors import PhotoError
from facebatch.imageload import DecodedPhoto, decode_photo, read_photo_bytes
from facebatch.models.detection import UPRIGHT
from facebatch.files import atomic_write_bytes
from facebatch.store import Library
from facebatch.videoload import frame_at

THUMBNAIL_SIZE = 200  # px: sharp at 100 css px on a 2x phone screen
CONTEXT = 0.35  # the box widened by this share on each side: hair and chin stay in view
MISSING_NAME = "_missing.png"


@dataclass(frozen=True)
class FaceBox:
    face_id: str
    path: str
    box: tuple[float, float, float, float]  # original pixels, after EXIF rotation
    photo_long_side: int  # of the photo at full resolution, from the photos table
    rotation: int = 0  # the turn that shows the face upright (--find-rotated): its thumbnail is turned so
    video_time: float | None = None  # a video's face: the frame it was found in (seconds)


def thumbnail_dir(library: Library) -> Path:
    return library.root / "thumbnails"


def thumbnail_path(library: Library, face_id: str) -> Path:
    """Two-level fan-out keeps folders small in a library of a million faces."""
    return thumbnail_dir(library) / face_id[:2] / f"{face_id}.jpg"


def missing_placeholder(library: Library) -> Path:
    """A grey square saying the photo is gone: shown where an original vanished."""
    path = thumbnail_dir(library) / MISSING_NAME
    if not path.exists():
        image = Image.new("RGB", (THUMBNAIL_SIZE, THUMBNAIL_SIZE), (200, 200, 200))
        draw = ImageDraw.Draw(image)
        draw.text((THUMBNAIL_SIZE // 2, THUMBNAIL_SIZE // 2), "photo\nmissing", fill=(90, 90, 90), anchor="mm",
                  align="center")
        buffer = io.BytesIO()
        image.save(buffer, "PNG")
        atomic_write_bytes(path, buffer.getvalue())
    return path


def square_around(box: Sequence[float], width: int, height: int) -> tuple[int, int, int, int]:
    """A square centred on the face, CONTEXT wider on each side, shifted (not squeezed) into the photo."""
    x1, y1, x2, y2 = box
    side = max(x2 - x1, y2 - y1) * (1 + 2 * CONTEXT)
    side = min(side, width, height)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    left = min(max(0.0, cx - side / 2), width - side)
    top = min(max(0.0, cy - side / 2), height - side)
    return round(left), round(top), round(left + side), round(top + side)


def make_thumbnails(
    library: Library,
    faces: Iterable[FaceBox],
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Path]:
    """face_id -> thumbnail file, making only those not cached yet; vanished photos get the placeholder."""
    result: dict[str, Path] = {}
    todo: dict[tuple[str, float | None], list[FaceBox]] = defaultdict(list)
    for face in faces:
        cached = thumbnail_path(library, face.face_id)
        if cached.exists():
            result[face.face_id] = cached
        else:
            todo[face.path, face.video_time].append(face)
    total, done = sum(len(v) for v in todo.values()), 0
    for (path, time), photo_faces in todo.items():
        result.update(_thumbnails_of_photo(library, path, photo_faces, time))
        done += len(photo_faces)
        if progress:
            progress(done, total)
    return result


def _thumbnails_of_photo(library: Library, path: str, faces: list[FaceBox], video_time: float | None) -> dict[str, Path]:
    """The faces of one photo (or of one frame of a video) cropped from one decode."""
    try:
        if video_time is not None:
            frame = frame_at(path, video_time)
            photo = DecodedPhoto(frame, frame.width, frame.height)
        else:
            photo = decode_photo(read_photo_bytes(path), min_long_side=_needed_long_side(faces))
    except PhotoError:
        placeholder = missing_placeholder(library)
        return {face.face_id: placeholder for face in faces}
    made = {}
    for face in faces:
        region = square_around(face.box, photo.width, photo.height)
        scaled = tuple(round(v * photo.scale) for v in region)
        crop = photo.image.crop(scaled)
        if face.rotation:
            crop = crop.transpose(UPRIGHT[face.rotation])
        crop = crop.resize((THUMBNAIL_SIZE, THUMBNAIL_SIZE), Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        crop.save(buffer, "JPEG", quality=85)
        target = thumbnail_path(library, face.face_id)
        atomic_write_bytes(target, buffer.getvalue())
        made[face.face_id] = target
    return made


def _needed_long_side(faces: list[FaceBox]) -> int | None:
    """The smallest decode in which every thumbnail square still has THUMBNAIL_SIZE pixels."""
    long_side = faces[0].photo_long_side
    smallest = min(max(f.box[2] - f.box[0], f.box[3] - f.box[1]) * (1 + 2 * CONTEXT) for f in faces)
    scale = THUMBNAIL_SIZE / max(1.0, smallest)
    return None if scale >= 1 else math.ceil(long_side * scale)
