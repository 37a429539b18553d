"""Scan throughput: facebatch against a naive facenet-pytorch loop and face_recognition, in one run.

Photo sets, made from ../shared/datasets (never copied into the repo):
- `12mp`: 4032x3024 JPEGs (quality 90): LFW faces placed at realistic sizes (box 120-600 px), one
  to six per photo, blended onto upscaled no-face photos; where each face went is recorded.
- `lfw`: LFW originals (250x250), one face each.

Methods, each in its own process tree, alternating over --rounds:
- facebatch: `facebatch scan` with its defaults (local cluster, all cores: ONNX Runtime, SFace in
  int8, MTCNN's batched glue), fresh library, as installed: without this venv's pandas (a test
  extra; where it is, pyarrow imports it in every process: `--with-pandas` keeps it);
- facebatch torch: the same with `--runtime torch` (torch fp32 nets, the same batched glue);
- facebatch before: with `--before DIR`, `facebatch scan` from another source tree (e.g. `git
  archive cb47748 | tar -x -C /tmp/before`: torch and facenet-pytorch's detect_face), this venv;
- facebatch LABEL: with `--tree LABEL=DIR` (repeatable), the same for any other source tree, e.g.
  the commit before a change, to compare it in the same run;
- naive: PIL open at full size, facenet-pytorch MTCNN(keep_all=True) on the full image, then each
  face through InceptionResnetV1 one at a time (what facenet-pytorch's README leads to);
- face_recognition: dlib HOG detector + dlib ResNet, as many processes as cores (when installed:
  `pip install dlib-bin face_recognition_models && pip install --no-deps face_recognition`).

Prints a markdown table (photos/s, faces/s, ratio to naive and to face_recognition, peak memory
per process, faces found of those placed), each facebatch method's worker time per stage on each
set, where detection's time goes (each net against the glue around them, on 6 of the 12mp photos,
one thread), the model-only ceiling, and the reproducing command.

    .venv/bin/python benchmarks/scan_throughput.py [--photos 24] [--small 200] [--rounds 1] [--before DIR] [--tree LABEL=DIR]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

PROJECT = Path(__file__).resolve().parents[1]
DATASETS = PROJECT.parent / "shared" / "datasets"
WIDTH, HEIGHT = 4032, 3024
LFW_FACE = (68, 68, 182, 182)  # where the face sits in a deep-funneled 250x250 LFW image


# --------------------------------------------------------------------------- photo sets


def lfw_paths(count: int, seed: int = 0) -> list[Path]:
    with open(DATASETS / "lfw-dev" / "manifest.csv") as f:
        paths = [DATASETS / "lfw-dev" / "images" / row["path"] for row in csv.DictReader(f)]
    rng = np.random.default_rng(seed)
    return [paths[i] for i in rng.choice(len(paths), size=min(count, len(paths)), replace=False)]


def make_12mp(folder: Path, count: int) -> dict[str, list[list[float]]]:
    """Photos with 1-6 placed faces each; returns path -> placed face boxes."""
    rng = np.random.default_rng(1)
    backgrounds = sorted((DATASETS / "hard" / "no_faces").glob("*.jpg"))
    faces = lfw_paths(count * 6, seed=2)
    truth: dict[str, list[list[float]]] = {}
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        photo = Image.open(backgrounds[i % len(backgrounds)]).convert("RGB").resize((WIDTH, HEIGHT))
        boxes: list[list[float]] = []
        for _ in range(int(rng.integers(1, 7))):
            face_px = float(rng.uniform(120, 600))
            scale = face_px / (LFW_FACE[2] - LFW_FACE[0])
            size = int(250 * scale)
            for _try in range(30):  # no overlaps
                x, y = int(rng.integers(0, WIDTH - size)), int(rng.integers(0, HEIGHT - size))
                box = [x + LFW_FACE[0] * scale, y + LFW_FACE[1] * scale, x + LFW_FACE[2] * scale,
                       y + LFW_FACE[3] * scale]
                if all(box[2] < b[0] - size / 3 or box[0] > b[2] + size / 3 or box[3] < b[1] - size / 3
                       or box[1] > b[3] + size / 3 for b in boxes):
                    break
            else:
                continue
            face = Image.open(faces.pop()).convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
            mask = Image.new("L", (size, size), 0)
            ImageDraw.Draw(mask).ellipse((size * 0.12, size * 0.08, size * 0.88, size * 0.95), fill=255)
            photo.paste(face, (x, y), mask.filter(ImageFilter.GaussianBlur(size / 30)))
            boxes.append(box)
        path = folder / f"photo_{i:04d}.jpg"
        photo.save(path, "JPEG", quality=90)
        truth[str(path)] = boxes
    return truth


def make_small(folder: Path, count: int) -> dict[str, list[list[float]]]:
    folder.mkdir(parents=True, exist_ok=True)
    truth = {}
    for source in lfw_paths(count, seed=3):
        path = folder / source.name
        path.write_bytes(source.read_bytes())
        truth[str(path)] = [list(map(float, LFW_FACE))]
    return truth


# --------------------------------------------------------------------------- methods (run as children)


def run_naive(folder: Path) -> dict[str, list[list[float]]]:
    import torch
    from facenet_pytorch import MTCNN, InceptionResnetV1

    from facebatch.models.weights import resolve_weights

    mtcnn = MTCNN(keep_all=True)
    resnet = InceptionResnetV1().eval()
    resnet.load_state_dict(torch.load(resolve_weights().path, weights_only=True))
    found = {}
    for path in sorted(folder.iterdir()):
        image = Image.open(path).convert("RGB")
        boxes, _ = mtcnn.detect(image)
        found[str(path)] = [] if boxes is None else np.asarray(boxes, float).tolist()
        crops = mtcnn.extract(image, boxes, None) if boxes is not None else None
        with torch.no_grad():
            for crop in [] if crops is None else crops:
                resnet(crop.unsqueeze(0))
    return found


def _pkg_resources_shim() -> None:
    """face_recognition_models imports pkg_resources, which setuptools >= 81 no longer ships."""
    import importlib.util
    import types

    if "pkg_resources" not in sys.modules and importlib.util.find_spec("pkg_resources") is None:
        shim = types.ModuleType("pkg_resources")
        shim.resource_filename = lambda package, name: os.path.join(  # type: ignore[attr-defined]
            os.path.dirname(importlib.util.find_spec(package).origin), name
        )
        sys.modules["pkg_resources"] = shim


def _face_recognition_one(path: str) -> tuple[str, list[list[float]]]:
    _pkg_resources_shim()
    import face_recognition

    image = face_recognition.load_image_file(path)
    locations = face_recognition.face_locations(image)  # HOG, upsample once (its default)
    face_recognition.face_encodings(image, locations)
    return path, [[float(l), float(t), float(r), float(b)] for t, r, b, l in locations]


def run_face_recognition(folder: Path) -> dict[str, list[list[float]]]:
    from multiprocessing import Pool

    with Pool(os.cpu_count()) as pool:
        return dict(pool.map(_face_recognition_one, [str(p) for p in sorted(folder.iterdir())], chunksize=1))


def face_recognition_available() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) for m in ("face_recognition", "face_recognition_models", "dlib"))


# --------------------------------------------------------------------------- measuring


class PeakMemory(threading.Thread):
    """Samples the RSS of a process tree; keeps each process's peak."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        import psutil

        self.root = psutil.Process(pid)
        self.peaks: dict[int, int] = {}
        self.stopped = threading.Event()

    def run(self) -> None:
        import psutil

        while not self.stopped.is_set():
            try:
                for process in [self.root, *self.root.children(recursive=True)]:
                    try:
                        rss = process.memory_info().rss
                    except psutil.Error:
                        continue
                    self.peaks[process.pid] = max(self.peaks.get(process.pid, 0), rss)
            except psutil.Error:
                pass
            self.stopped.wait(0.1)

    def max_mb(self) -> float:
        return max(self.peaks.values(), default=0) / 2**20


def without_pandas(folder: Path) -> Path:
    """A folder that, first on PYTHONPATH, makes `import pandas` fail, as on a user's install: pandas
    is only a test extra of this venv, and where it is installed pyarrow imports it (0.5 s of CPU)
    in every process that makes an Arrow array, the driver and each worker."""
    (folder / "pandas").mkdir(parents=True, exist_ok=True)
    (folder / "pandas" / "__init__.py").write_text('raise ImportError("facebatch does not install pandas")\n')
    return folder


def measure(command: list[str], tree: Path | None = None, hidden: Path | None = None) -> tuple[float, float, str]:
    """Seconds, peak MB of any process of its tree, stdout; `tree`: the facebatch source it runs;
    `hidden`: a without_pandas() folder."""
    paths = [str(p) for p in (hidden, tree) if p is not None]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)} if paths else None
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env, cwd=tree)
    sampler = PeakMemory(process.pid)
    sampler.start()
    out, _ = process.communicate()
    seconds = time.perf_counter() - started
    sampler.stopped.set()
    if process.returncode:
        raise SystemExit(f"{command} failed")
    return seconds, sampler.max_mb(), out


def matched(truth: dict[str, list[list[float]]], found: dict[str, list[list[float]]]) -> tuple[int, int]:
    """Placed faces with a detection whose centre lies inside them; detections in all."""
    hits = 0
    for path, boxes in truth.items():
        centres = [((b[0] + b[2]) / 2, (b[1] + b[3]) / 2) for b in found.get(path, [])]
        hits += sum(any(b[0] <= x <= b[2] and b[1] <= y <= b[3] for x, y in centres) for b in boxes)
    return hits, sum(len(v) for v in found.values())


def facebatch_found(library: Path) -> tuple[dict[str, list[list[float]]], Counter]:
    from facebatch.store import Library

    lib = Library(library)
    found: dict[str, list[list[float]]] = {}
    for face in lib.read_faces(["path", "box"]).to_pylist():
        found.setdefault(face["path"], []).append(face["box"])
    stages: Counter = Counter()
    for stats in lib.shard_stats():
        stages.update(stats.get("stage_seconds", {}))
    return found, stages


def ceiling(batch_size: int) -> tuple[float, float]:
    """Model-only, default models (ONNX Runtime, the default embedding model at the default
    precision), all cores: the embedding net's faces/s at the batch size used; MTCNN s/photo on a
    face-less photo at the detection size."""
    from facebatch.config import DEFAULT_DETECT_MAX_SIDE, DetectionSettings, ModelSettings
    from facebatch.imageload import DecodedPhoto
    from facebatch.models.faces import facenet_weights, prepare_builder
    from facebatch.models.weights import DEFAULT_WEIGHTS

    models = ModelSettings()
    builder = prepare_builder(DetectionSettings(), facenet_weights(models.embedding, DEFAULT_WEIGHTS), models,
                              batch_size, threads=os.cpu_count() or 1)
    pipeline = builder.build()
    (net,) = builder.model.nets
    embedder = builder.net_embedder(net, os.cpu_count() or 1)
    crop_side = 160 if net == "facenet" else 112
    crops = np.random.default_rng(0).integers(0, 255, (batch_size, crop_side, crop_side, 3), np.uint8)
    embedder.embed(crops)
    started = time.perf_counter()
    for _ in range(3):
        embedder.embed(crops)
    faces_per_s = 3 * batch_size / (time.perf_counter() - started)
    side = DEFAULT_DETECT_MAX_SIDE
    image = Image.open(sorted((DATASETS / "hard" / "no_faces").glob("*.jpg"))[0]).convert("RGB")
    photo = DecodedPhoto(image.resize((side, side * 3 // 4)), side, side * 3 // 4)
    pipeline.detector.detect(photo)
    started = time.perf_counter()
    for _ in range(3):
        pipeline.detector.detect(photo)
    return faces_per_s, (time.perf_counter() - started) / 3


class TimedNets:
    """MTCNN nets that add up the seconds spent in each of them, and the inputs they took."""

    def __init__(self, nets: object) -> None:
        self.nets = nets
        self.seconds: Counter = Counter()
        self.items: Counter = Counter()

    def _timed(self, name: str, batch: np.ndarray) -> tuple[np.ndarray, ...]:
        started = time.perf_counter()
        out = getattr(self.nets, name)(batch)
        self.seconds[name] += time.perf_counter() - started
        self.items[name] += len(batch)
        return out

    def pnet(self, image: np.ndarray) -> tuple[np.ndarray, ...]:
        return self._timed("pnet", image)

    def rnet(self, crops: np.ndarray) -> tuple[np.ndarray, ...]:
        return self._timed("rnet", crops)

    def onet(self, crops: np.ndarray) -> tuple[np.ndarray, ...]:
        return self._timed("onet", crops)


def detection_breakdown(folder: Path, count: int = 6) -> list[tuple[str, float, dict[str, float]]]:
    """Seconds per photo in detection on one thread, and each net's share, for facenet-pytorch's
    detect_face (a resize call per box) and for the batched glue with torch and with ONNX nets."""
    import torch
    from facenet_pytorch.models.utils.detect_face import detect_face

    from facebatch.config import DEFAULT_DETECT_MAX_SIDE
    from facebatch.imageload import decode_photo
    from facebatch.models.detection import MTCNN_MIN_SIZE, detection_copy
    from facebatch.models.mtcnn import MTCNN_SCALE_FACTOR, MTCNN_THRESHOLDS, TorchMtcnnNets, detect_faces
    from facebatch.models.onnx_models import OnnxMtcnnNets, prepare_onnx_models
    from facebatch.models.weights import resolve_weights

    torch.set_num_threads(1)
    photos = []
    for path in sorted(folder.iterdir())[:count]:
        photo = decode_photo(path.read_bytes(), min_long_side=DEFAULT_DETECT_MAX_SIDE)
        photos.append(np.asarray(detection_copy(photo, DEFAULT_DETECT_MAX_SIDE)[0]))
    torch_nets = TorchMtcnnNets()
    onnx_nets = OnnxMtcnnNets(prepare_onnx_models(resolve_weights(), "int8"), threads=1)

    class TimedModule(torch.nn.Module):  # facenet-pytorch calls its nets as modules
        def __init__(self, net: torch.nn.Module, name: str, seconds: Counter) -> None:
            super().__init__()
            self.net, self.name, self.seconds = net, name, seconds

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
            started = time.perf_counter()
            out = self.net(x)
            self.seconds[self.name] += time.perf_counter() - started
            return out

    rows = []
    seconds: Counter = Counter()
    modules = [TimedModule(net, name, seconds) for net, name in zip(torch_nets._nets, ("pnet", "rnet", "onet"))]
    started = time.perf_counter()
    with torch.inference_mode():
        for pixels in photos:
            detect_face(pixels[None], MTCNN_MIN_SIZE, *modules, list(MTCNN_THRESHOLDS), MTCNN_SCALE_FACTOR, "cpu")
    rows.append(("facenet-pytorch detect_face, torch nets (before)", time.perf_counter() - started, dict(seconds)))
    for name, nets in (("batched glue, torch nets (--runtime torch)", torch_nets),
                       ("batched glue, ONNX Runtime nets (default)", onnx_nets)):
        timed = TimedNets(nets)
        started = time.perf_counter()
        for pixels in photos:
            detect_faces(pixels, MTCNN_MIN_SIZE, timed)
        rows.append((name, time.perf_counter() - started, dict(timed.seconds)))
    return [(name, total / len(photos), {k: v / total for k, v in shares.items()}) for name, total, shares in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=24, help="12-megapixel photos")
    parser.add_argument("--small", type=int, default=200, help="LFW-size photos")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--before", type=Path, help="another facebatch source tree, scanned with as `facebatch before`")
    parser.add_argument("--tree", action="append", default=[], metavar="LABEL=DIR",
                        help="another source tree, scanned with as `facebatch LABEL` (repeatable)")
    parser.add_argument("--model", action="append", default=[], metavar="NAME",
                        help="also `facebatch scan --model NAME`, as `facebatch NAME`, and with each --tree (repeatable)")
    parser.add_argument("--no-torch", action="store_true", help="leave out `facebatch --runtime torch`")
    parser.add_argument("--no-baselines", action="store_true",
                        help="leave out the naive loop and face_recognition (facebatch against itself: no ratios)")
    parser.add_argument("--with-pandas", action="store_true",
                        help="let facebatch see this venv's pandas (a test extra, which a user's install lacks)")
    parser.add_argument("--child", nargs=2, metavar=("METHOD", "FOLDER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        method, folder = args.child
        runner = run_naive if method == "naive" else run_face_recognition
        print(json.dumps(runner(Path(folder))))
        return
    if not DATASETS.is_dir():
        sys.exit(f"{DATASETS} is absent: this benchmark needs the internal test photos")

    cli = [sys.executable, "-c", "import sys; sys.argv[0] = 'facebatch'; from facebatch.cli import main; main()"]
    facebatch_runs = {"facebatch": (PROJECT, [])}
    if not args.no_torch:
        facebatch_runs["facebatch torch"] = (PROJECT, ["--runtime", "torch"])
    for model in args.model:
        facebatch_runs[f"facebatch {model}"] = (PROJECT, ["--model", model])
    if args.before:
        facebatch_runs["facebatch before"] = (args.before.resolve(), [])
    for tree in args.tree:
        label, _, folder = tree.partition("=")
        facebatch_runs[f"facebatch {label}"] = (Path(folder).resolve(), [])
        for model in args.model:
            facebatch_runs[f"facebatch {label} {model}"] = (Path(folder).resolve(), ["--model", model])
    me = [sys.executable, __file__, "--child"]
    baselines = [] if args.no_baselines else ["naive"] + (["face_recognition"] if face_recognition_available() else [])
    methods = [*facebatch_runs, *baselines]
    rows: list[tuple] = []
    stage_totals: dict[tuple[str, str], Counter] = {}  # (photo set, facebatch method): worker seconds per stage
    with tempfile.TemporaryDirectory() as tmp:
        sets = {"12mp": make_12mp(Path(tmp) / "12mp", args.photos), "lfw": make_small(Path(tmp) / "lfw", args.small)}
        # The photos just written are flushed, and each tree scans a few photos untimed, so that the
        # first timed run pays neither for the disk's write-back nor for a cold start.
        os.sync()
        make_small(Path(tmp) / "warm-up", 8)
        hidden = None if args.with_pandas else without_pandas(Path(tmp) / "no-pandas")
        for method, (tree, options) in facebatch_runs.items():
            measure([*cli, "--library", str(Path(tmp) / f"lib-warm-up-{method.replace(' ', '-')}"), "scan",
                     str(Path(tmp) / "warm-up"), "-q", *options], tree, hidden)
        results: dict[tuple[str, str], list[tuple[float, float, int, int]]] = {}
        for round_ in range(args.rounds):
            for name, truth in sets.items():
                folder = Path(tmp) / name
                for method in methods:
                    if method in facebatch_runs:
                        tree, options = facebatch_runs[method]
                        library = Path(tmp) / f"lib-{name}-{method.replace(' ', '-')}-{round_}"
                        seconds, peak, _ = measure([*cli, "--library", str(library), "scan", str(folder), "-q",
                                                    *options], tree, hidden)
                        found, stages = facebatch_found(library)
                        stage_totals.setdefault((name, method), Counter()).update(stages)
                    else:
                        seconds, peak, out = measure([*me, method, str(folder)])
                        found = json.loads(out)
                    hits, detections = matched(truth, found)
                    results.setdefault((name, method), []).append((seconds, peak, hits, detections))
        for (name, method), runs in results.items():
            seconds = float(np.median([r[0] for r in runs]))
            peak = max(r[1] for r in runs)
            hits, detections = runs[-1][2], runs[-1][3]
            photos, placed = len(sets[name]), sum(len(v) for v in sets[name].values())
            rows.append((name, method, photos, seconds, photos / seconds, detections / seconds, peak, hits, placed))
    naive = {r[0]: r[4] for r in rows if r[1] == "naive"}
    dlib = {r[0]: r[4] for r in rows if r[1] == "face_recognition"}
    print("| photos | method | n | seconds | photos/s | faces/s | x naive | x face_recognition | peak MB/process | "
          "faces found/placed |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, method, photos, seconds, pps, fps, peak, hits, placed in rows:
        versus_dlib = f"{pps / dlib[name]:.2f}" if name in dlib else "-"
        versus_naive = f"{pps / naive[name]:.1f}" if name in naive else "-"
        print(f"| {name} | {method} | {photos} | {seconds:.1f} | {pps:.2f} | {fps:.2f} | {versus_naive} | "
              f"{versus_dlib} | {peak:.0f} | {hits}/{placed} |")

    for name in sets:
        print_stages(name, {method: totals for (set_name, method), totals in stage_totals.items() if set_name == name})
    print("\nwhere detection's time goes, 6 of the 12mp photos at the detection size, one thread:\n")
    print("| detection | s/photo | P-Net | R-Net | O-Net | glue (pyramid, crops, NMS) |\n|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name, per_photo, shares in detection_breakdown(_six_12mp(Path(tmp))):
            nets = [shares.get(net, 0.0) for net in ("pnet", "rnet", "onet")]
            print(f"| {name} | {per_photo:.3f} | " + " | ".join(f"{x:.0%}" for x in nets) + f" | {1 - sum(nets):.0%} |")
    ours = stage_totals[("12mp", "facebatch")]
    faces_per_s, detect_s = ceiling(32)
    print(f"\nmodel-only ceiling on this machine (default models, all cores): the embedding net {faces_per_s:.1f} "
          f"faces/s at batch 32; MTCNN {detect_s:.2f} s per face-less photo at the detection size")
    print(f"model forward share (detect + embed) of worker time: "
          f"{(ours['detect'] + ours['embed']) / sum(ours.values()):.0%}")
    before = (f" --before {args.before}" if args.before else "") + "".join(f" --tree {t}" for t in args.tree)
    before += "".join(f" --model {m}" for m in args.model) + (" --no-torch" if args.no_torch else "")
    before += " --with-pandas" if args.with_pandas else ""
    before += " --no-baselines" if args.no_baselines else ""
    print(f"\nmachine: {os.cpu_count()} cores, CPU flags {cpu_flags()}, load {os.getloadavg()[0]:.1f} at the end; "
          "reproduce: .venv/bin/python "
          f"benchmarks/scan_throughput.py --photos {args.photos} --small {args.small} --rounds {args.rounds}{before}")


def print_stages(name: str, by_method: dict[str, Counter]) -> None:
    """Worker seconds per stage (summed over the workers, over the rounds) and their share, a column pair per method."""
    from facebatch.scan.pipeline import STAGES

    print(f"\nworker time per stage on {name} (all workers, all rounds):\n")
    print("| stage | " + " | ".join(f"{method} s | share" for method in by_method) + " |")
    print("|---|" + "---|---|" * len(by_method))
    for stage in STAGES:
        cells = [f"{t[stage]:.1f} | {t[stage] / max(sum(t.values()), 1e-9):.0%}" for t in by_method.values()]
        print(f"| {stage} | " + " | ".join(cells) + " |")
    print("| all | " + " | ".join(f"{sum(t.values()):.1f} | 100%" for t in by_method.values()) + " |")


def cpu_flags() -> str:
    """The vector extensions that decide int8 and fp32 speed here (AVX2, AVX-512, VNNI, bf16)."""
    try:
        flags = set(next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split(":")[1].split())
    except (OSError, StopIteration):
        return "unknown"
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8")
    return " ".join(f for f in wanted if f in flags) or "no AVX2"


def _six_12mp(folder: Path) -> Path:
    make_12mp(folder, 6)
    return folder


if __name__ == "__main__":
    main()
