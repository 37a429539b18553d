"""Decode the frames of one video that the scan looks at, through PyAV (FFmpeg inside its wheel).

A video is looked at on its keyframes only (nothing between two keyframes is decoded), at most one
every FRAME_GAP seconds and at most MAX_FRAMES a video, spread over its whole length; frames are
turned upright by the video's display matrix (phones record portrait video sideways). A video's
id is the hash of its bytes, read in chunks (a video is never held in memory whole).

Everything that goes wrong becomes a PhotoError, as for photos (imageload).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

import av
from PIL import Image

from facebatch.errors import PhotoError

VIDEO_EXTENSIONS: frozenset[str] = frozenset({".mp4", ".mov", ".m4v", ".avi", ".mkv", ".3gp"})
FRAME_GAP = 2.0  # seconds: at most one frame this often
MAX_FRAMES = 150  # a video's frames looked at: 5 minutes at FRAME_GAP, spread thinner over longer ones
_CHUNK = 1 << 20
# A frame's time as the faces table keeps it (float32: 30 microseconds apart at 10 minutes) finds
# its keyframe again: anything closer than this is that frame (frames are 10+ ms apart).
TIME_TOLERANCE = 0.005


@dataclass(frozen=True)
class VideoFrame:
    time: float  # seconds from the start
    image: Image.Image  # RGB, upright


@dataclass(frozen=True)
class VideoFrames:
    width: int  # of a frame, upright
    height: int
    duration: float | None  # seconds, when the container says
    frames: list[VideoFrame]


def video_id(path: str) -> str:
    """The hash of the video's bytes (the photos' kind of id: the same file anywhere is the same video)."""
    digest = hashlib.blake2b(digest_size=16)
    try:
        with open(path, "rb") as video:
            while chunk := video.read(_CHUNK):
                digest.update(chunk)
    except FileNotFoundError:
        raise PhotoError("not_found", f"file not found: {path}") from None
    except PermissionError:
        raise PhotoError("permission_denied", f"permission denied: {path}") from None
    except OSError as error:
        raise PhotoError("unreadable", f"cannot read {path}: {error.strerror or error}") from None
    return digest.hexdigest()


def sample_frames(path: str) -> VideoFrames:
    """The keyframes the scan looks at, spread over the video."""
    try:
        with av.open(path) as container:
            stream = _video_stream(container)
            duration = _duration(container, stream)
            frames = list(_spread(container, stream, duration))
    except PhotoError:
        raise
    except av.error.FFmpegError as error:
        raise PhotoError("decode_failed", f"cannot decode video: {_reason(error)}") from None
    if not frames:
        raise PhotoError("decode_failed", "the video has no frame that could be decoded")
    return VideoFrames(frames[0].image.width, frames[0].image.height, duration, frames)


def frame_at(path: str, time: float) -> Image.Image:
    """The keyframe at `time` (where a face was found: thumbnails, re-embedding), or the first after."""
    try:
        with av.open(path) as container:
            stream = _video_stream(container)
            frame = next(_keyframes_from(container, stream, time), None)
    except av.error.FFmpegError as error:
        raise PhotoError("decode_failed", f"cannot decode video: {_reason(error)}") from None
    if frame is None:
        raise PhotoError("decode_failed", f"no frame at {time:.1f} s")
    return frame.image


def _reason(error: av.error.FFmpegError) -> str:
    """FFmpeg's words for what went wrong, without its error number and the path (said already)."""
    return (getattr(error, "strerror", None) or str(error)).strip().lower()


def _video_stream(container: av.container.InputContainer) -> av.video.stream.VideoStream:
    if not container.streams.video:
        raise PhotoError("unsupported_format", "the file has no video stream")
    stream = container.streams.video[0]
    stream.codec_context.skip_frame = "NONKEY"  # keyframes only: nothing between them is decoded
    return stream


def _duration(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    return container.duration / av.time_base if container.duration else None


def _spread(container: av.container.InputContainer, stream: av.video.stream.VideoStream,
            duration: float | None) -> Iterator[VideoFrame]:
    """One keyframe at or after each of evenly spaced times; the keyframes in order when the length
    is unknown. A keyframe is taken once, however many times land before the next one."""
    gap = FRAME_GAP if duration is None else max(FRAME_GAP, duration / MAX_FRAMES)
    taken: set[float] = set()
    last = -gap
    if duration is None or duration <= gap * 4:  # short or of unknown length: read it through
        for frame in _keyframes_from(container, stream, 0.0):
            if frame.time - last >= gap and frame.time not in taken:
                taken.add(frame.time)
                last = frame.time
                yield frame
                if len(taken) >= MAX_FRAMES:
                    return
        return
    target = 0.0
    while target < duration and len(taken) < MAX_FRAMES:
        frame = next(_keyframes_from(container, stream, target), None)
        if frame is None:
            return
        if frame.time not in taken:
            taken.add(frame.time)
            yield frame
        target = max(target + gap, frame.time + gap)


def _keyframes_from(container: av.container.InputContainer, stream: av.video.stream.VideoStream,
                    time: float) -> Iterator[VideoFrame]:
    if time > 0 and stream.time_base:
        container.seek(int(time / stream.time_base), stream=stream, backward=True, any_frame=False)
    for frame in container.decode(stream):
        if frame.pts is None or stream.time_base is None:
            continue
        seconds = float(frame.pts * stream.time_base)
        if seconds + TIME_TOLERANCE < time and time > 0:
            continue  # before the target: the seek lands on the keyframe before it
        yield VideoFrame(seconds, _upright(frame))


def _upright(frame: av.VideoFrame) -> Image.Image:
    image = frame.to_image()  # RGB
    rotation = int(round(getattr(frame, "rotation", 0) or 0)) % 360
    # The display matrix's angle is counter-clockwise; Pillow's rotate turns counter-clockwise too.
    return image.rotate(rotation, expand=True) if rotation else image
