"""Minutes of video scanned per second, and what a scan finds in them.

Clips are made here (PyAV's MPEG-4 encoder, nothing downloaded): 1280x720 at 30 frames a second,
a keyframe every 2 seconds (phones write one every 1-2 s), each showing sample_data's people one
after another, 20 seconds each. `facebatch scan` (a whole command, start-up included, fresh
library) scans the folder; the table gives video minutes per second of scan, faces found against
people shown, and, in the same run, the same number of frames as photos for comparison.

    .venv/bin/python benchmarks/video_scan.py --clips 3 --minutes 2
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT / "tests"))
from clips import on_canvas, write_clip  # noqa: E402
from raw_photos import cpu_flags, scan_seconds  # noqa: E402

PEOPLE = sorted((ROOT / "sample_data" / "people").glob("*/*.*"))
SIZE, FPS, GOP_SECONDS, SCENE_SECONDS = (1280, 720), 30, 2, 20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=int, default=3)
    parser.add_argument("--minutes", type=int, default=2)
    args = parser.parse_args()
    scenes_per_clip = args.minutes * 60 // SCENE_SECONDS
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "videos").mkdir()
        (root / "frames").mkdir()
        shown = 0
        for k in range(args.clips):
            scenes = [PEOPLE[(k * scenes_per_clip + i) % len(PEOPLE)] for i in range(scenes_per_clip)]
            write_clip(root / "videos" / f"clip{k}.mp4", scenes, SCENE_SECONDS, SIZE, FPS, GOP_SECONDS, 6_000_000)
            shown += len({p.parent.name for p in scenes})
            # The keyframes a scan looks at (one per 2 s), as photos: the same detection work.
            for i in range(args.minutes * 60 // GOP_SECONDS):
                on_canvas(scenes[i * GOP_SECONDS // SCENE_SECONDS], SIZE).save(root / "frames" / f"c{k}-{i:03d}.jpg", quality=92)
        minutes = args.clips * args.minutes
        print(f"{args.clips} clips of {args.minutes} min, {SIZE[0]}x{SIZE[1]} at {FPS} fps, a keyframe every "
              f"{GOP_SECONDS} s; {cpu_flags()}; `facebatch scan`, whole commands, fresh libraries\n")
        print("| scanned | s | video minutes per second | faces (people shown) |\n|---|---|---|---|")
        seconds, summary = scan_seconds(root / "videos", root / "lib-videos")
        faces = re.search(r"(\d+) new faces", summary)
        print(f"| {minutes} min of video | {seconds:.1f} | {minutes / seconds:.2f} | "
              f"{faces.group(1) if faces else summary} ({shown}) |", flush=True)
        count = len(list((root / "frames").iterdir()))
        seconds, summary = scan_seconds(root / "frames", root / "lib-frames")
        faces = re.search(r"(\d+) new faces", summary)
        print(f"| its {count} keyframes as JPEG photos | {seconds:.1f} | | {faces.group(1) if faces else summary} |")


if __name__ == "__main__":
    main()
