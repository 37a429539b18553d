"""Video clips written in tests and benchmarks (PyAV's MPEG-4 encoder, nothing downloaded): photos
shown one after another, each for some seconds, on a grey background."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
from PIL import Image


def write_clip(path: Path, scenes: list[Path], seconds_each: int, size: tuple[int, int], fps: int,
               gop_seconds: int = 2, bit_rate: int = 4_000_000) -> None:
    """An MPEG-4 clip, a keyframe every `gop_seconds` (phones write one every 1-2 s)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt, stream.bit_rate = *size, "yuv420p", bit_rate
        stream.codec_context.gop_size = gop_seconds * fps
        n = 0
        for scene in scenes:
            frame_image = on_canvas(scene, size)
            for _ in range(seconds_each * fps):
                frame = av.VideoFrame.from_image(frame_image)
                frame.pts, frame.time_base = n, Fraction(1, fps)
                n += 1
                for packet in stream.encode(frame):
                    container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def on_canvas(photo: Path, size: tuple[int, int]) -> Image.Image:
    image = Image.open(photo).convert("RGB")
    image.thumbnail(size)
    canvas = Image.new("RGB", size, (40, 40, 40))
    canvas.paste(image, ((size[0] - image.width) // 2, (size[1] - image.height) // 2))
    return canvas
