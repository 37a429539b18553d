"""Where the default models spend a core: what is left to win in the scan without other hardware.

On one thread, as a scan worker runs them (ONNX Runtime, FaceNet int8):
  1. FaceNet int8 at batch 32: ONNX Runtime's profile by operator type.
  2. MTCNN on LFW-size photos (250x250): seconds per photo in each net and in the glue.
  3. Batching: P-Net over several photos' pyramids at once, R-Net and O-Net over more crops, per
     photo or per crop, against one photo at a time. If the nets were bound by per-call overhead,
     a scan could batch detection across the photos of a shard; this measures whether it pays.
  4. MTCNN's nets as exported against the graphs the scan runs (models.mtcnn_graph: channels
     padded to blocks, PReLU split), taking turns: each net alone, then detection per LFW photo
     and per 12 MP photo (6 made as scan_throughput.py makes them), and how far the boxes moved.

    .venv/bin/python benchmarks/net_costs.py
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scan_throughput import TimedNets, lfw_paths, make_12mp  # noqa: E402

from facebatch.models import mtcnn  # noqa: E402
from facebatch.models.onnx_models import OnnxMtcnnNets, prepare_onnx_models  # noqa: E402
from facebatch.models.weights import resolve_weights  # noqa: E402


def facenet_profile(path: Path, batch: int, rounds: int) -> tuple[float, list[tuple[str, float, int]]]:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    with tempfile.TemporaryDirectory() as tmp:
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "facenet")
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: np.random.default_rng(0).random((batch, 3, 160, 160), np.float32)}
        session.run(None, feed)
        started = time.perf_counter()
        for _ in range(rounds):
            session.run(None, feed)
        faces_per_second = batch * rounds / (time.perf_counter() - started)
        events = json.loads(Path(session.end_profiling()).read_text())
    spent: collections.Counter = collections.Counter()
    calls: collections.Counter = collections.Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            spent[event["args"]["op_name"]] += event["dur"]
            calls[event["args"]["op_name"]] += 1
    total = sum(spent.values())
    return faces_per_second, [(op, spent[op] / total, calls[op]) for op, _ in spent.most_common(6)]


def per_call(run: Callable[[], object], rounds: int) -> float:
    return _medians({"run": run}, rounds)["run"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--photos", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    models = prepare_onnx_models(resolve_weights(), "int8")
    nets = OnnxMtcnnNets(models, threads=1)

    speed, ops = facenet_profile(models.facenet.path, 32, args.rounds)
    print(f"FaceNet int8, batch 32, 1 thread: {speed:.1f} faces/s\n")
    print("| operator | share of FaceNet time | calls |\n|---|---|---|")
    for op, share, calls in ops:
        print(f"| {op} | {100 * share:.1f}% | {calls} |")

    photos = [np.asarray(Image.open(p).convert("RGB")) for p in lfw_paths(args.photos, seed=3)]
    timed = TimedNets(nets)
    for pixels in photos[:5]:
        mtcnn.detect_faces(pixels, 20, timed)
    timed.seconds.clear()
    timed.items.clear()
    started = time.perf_counter()
    for pixels in photos:
        mtcnn.detect_faces(pixels, 20, timed)
    total = (time.perf_counter() - started) / len(photos)
    print(f"\nMTCNN on {len(photos)} LFW photos (250x250), 1 thread: {1000 * total:.1f} ms per photo\n")
    print("| part | ms per photo | inputs per photo |\n|---|---|---|")
    for name in ("pnet", "rnet", "onet"):
        print(f"| {name} | {1000 * timed.seconds[name] / len(photos):.1f} | {timed.items[name] / len(photos):.1f} |")
    glue = total - sum(timed.seconds.values()) / len(photos)
    print(f"| glue (pyramid, crops, NMS) | {1000 * glue:.1f} | |")

    rng = np.random.default_rng(0)
    height, width = photos[0].shape[:2]
    scales = mtcnn.pyramid_scales(height, width, 20)
    print("\n| batching | batch | ms per photo or per crop |\n|---|---|---|")
    for batch in (1, 4, 16):
        levels = [rng.random((batch, 3, int(height * s + 1), int(width * s + 1)), np.float32) for s in scales]
        seconds = per_call(lambda levels=levels: [nets.pnet(level) for level in levels], args.rounds)
        print(f"| P-Net, every pyramid level of {batch} photo(s) in one call | {batch} | {1000 * seconds / batch:.2f} |")
    for name, size, batches in (("rnet", mtcnn.RNET_SIZE, (64, 256, 2048)), ("onet", mtcnn.ONET_SIZE, (8, 64, 256))):
        net = getattr(nets, name)
        for batch in batches:
            crops = rng.random((batch, 3, size, size), np.float32)
            seconds = per_call(lambda net=net, crops=crops: net(crops), args.rounds)
            print(f"| {name.upper().replace('NET', '-Net')} | {batch} | {1000 * seconds / batch:.3f} |")

    plain_against_rewritten(photos, args.rounds)


class SessionNets:
    """MTCNN's three nets from ONNX bytes, on one thread."""

    def __init__(self, files: dict[str, bytes]) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.log_severity_level = 3
        self.sessions = {name: onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])
                         for name, data in files.items()}

    def run(self, name: str, batch: np.ndarray) -> list[np.ndarray]:
        return self.sessions[name].run(None, {"input": batch})

    def pnet(self, image: np.ndarray) -> list[np.ndarray]:
        return self.run("pnet", image)

    def rnet(self, crops: np.ndarray) -> list[np.ndarray]:
        return self.run("rnet", crops)

    def onet(self, crops: np.ndarray) -> list[np.ndarray]:
        return self.run("onet", crops)


def plain_against_rewritten(lfw: list[np.ndarray], rounds: int) -> None:
    from facebatch.config import DEFAULT_DETECT_MAX_SIDE
    from facebatch.imageload import decode_photo
    from facebatch.models.detection import detection_copy
    from facebatch.models.onnx_models import MTCNN_NETS, export_mtcnn_net

    variants = {label: SessionNets({name: export_mtcnn_net(name, rewritten=rewritten) for name in MTCNN_NETS})
                for label, rewritten in (("as exported", False), ("rewritten", True))}
    rng = np.random.default_rng(0)
    inputs = {"pnet": rng.uniform(-1, 1, (1, 3, 577, 769)), "rnet": rng.uniform(-1, 1, (700, 3, 24, 24)),
              "onet": rng.uniform(-1, 1, (60, 3, 48, 48))}
    print("\n| MTCNN net, one thread | input | as exported, ms | rewritten, ms |\n|---|---|---|---|")
    for name, batch in inputs.items():
        batch = batch.astype(np.float32)
        ms = {label: 1000 * seconds for label, seconds in _medians(
            {label: lambda n=nets, b=batch, k=name: n.run(k, b) for label, nets in variants.items()}, rounds).items()}
        print(f"| {name} | {'x'.join(map(str, batch.shape))} | {ms['as exported']:.1f} | {ms['rewritten']:.1f} |")
    with tempfile.TemporaryDirectory() as tmp:
        make_12mp(Path(tmp), 6)
        big = [np.asarray(detection_copy(decode_photo(p.read_bytes(), min_long_side=DEFAULT_DETECT_MAX_SIDE),
                                         DEFAULT_DETECT_MAX_SIDE)[0]) for p in sorted(Path(tmp).glob("*.jpg"))]
    print("\n| detection, one thread | photos | as exported, ms per photo | rewritten, ms per photo "
          "| faces | largest box difference, px |\n|---|---|---|---|---|---|")
    for label, photos in (("LFW-size (250x250)", lfw), ("12 MP, at 1280x960", big)):
        runs = {variant: lambda n=nets, ps=photos: [mtcnn.detect_faces(p, 20, n)[0] for p in ps]
                for variant, nets in variants.items()}
        ms = {variant: 1000 * seconds / len(photos) for variant, seconds in _medians(runs, rounds).items()}
        found = {variant: run() for variant, run in runs.items()}
        pairs = list(zip(found["as exported"], found["rewritten"]))
        same_count = all(len(a) == len(b) for a, b in pairs)
        moved = max((float(np.abs(a[:, :4] - b[:, :4]).max()) for a, b in pairs if len(a) and len(a) == len(b)),
                    default=0.0)
        faces = sum(len(a) for a, _ in pairs)
        print(f"| {label} | {len(photos)} | {ms['as exported']:.1f} | {ms['rewritten']:.1f} | "
              f"{faces}{'' if same_count else ' (counts differ)'} | {moved:.1e} |")


def _medians(runs: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Median seconds of each run over `rounds` calls, the runs taking turns, after a warm-up."""
    times: dict[str, list[float]] = {label: [] for label in runs}
    for label, run in runs.items():
        run()
    for _ in range(rounds):
        for label, run in runs.items():
            started = time.perf_counter()
            run()
            times[label].append(time.perf_counter() - started)
    return {label: float(np.median(seconds)) for label, seconds in times.items()}


if __name__ == "__main__":
    main()
