"""Make facebatch/models/population_means.npz: each net's mean embedding over many different people.

One face of each of lfw-strangers' people (the central face of the first of their photos, in
manifest order), embedded exactly as the scan embeds it (MTCNN, the default runtime and precision),
before any centring. The mean of those unit vectors is stored per net, keyed as models.means keys
it, with `how` saying what made it. Run again only when a net's weights or crop change (the model
tag of a centred model carries a checksum of its means, so libraries would re-embed).

    .venv/bin/python benchmarks/population_means.py                 # writes the package file
    .venv/bin/python benchmarks/population_means.py --out /tmp/m.npz --limit 200
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from facebatch.config import DetectionSettings, ModelSettings  # noqa: E402
from facebatch.imageload import read_photo_bytes  # noqa: E402
from facebatch.models.catalog import EmbeddingModel  # noqa: E402
from facebatch.models.embedding import ModelEmbedder  # noqa: E402
from facebatch.models.faces import FacePipeline, prepare_builder  # noqa: E402
from facebatch.models.means import MEANS_FILE, net_key  # noqa: E402
from facebatch.models.sface import prepare_sface  # noqa: E402
from facebatch.models.weights import resolve_weights  # noqa: E402
from facebatch.people.verification import central_face  # noqa: E402

DATASET = ROOT.parent / "shared" / "datasets" / "lfw-strangers"
RAW = EmbeddingModel("raw", ("facenet", "sface"), centred=False, scale=None, about="each net's own output")


def one_photo_per_person(folder: Path, limit: int | None) -> list[Path]:
    seen: dict[str, Path] = {}
    with open(folder / "manifest.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            seen.setdefault(row["identity"], folder / "images" / row["path"])
    photos = list(seen.values())
    return photos[:limit] if limit else photos


def raw_embeddings(photos: list[Path]) -> dict[str, np.ndarray]:
    """Each net's unit vectors for the central face of each photo (photos without a face skipped)."""
    weights = resolve_weights()
    builder = replace(prepare_builder(DetectionSettings(), weights, ModelSettings(), threads=2), sface=prepare_sface())
    nets = [builder.net_embedder(net, 2) for net in RAW.nets]
    pipeline = FacePipeline(builder.build().detector, ModelEmbedder(RAW, weights, nets, "raw"))
    crops = []
    for path in photos:
        data = read_photo_bytes(str(path))
        photo, faces, face_crops = pipeline.find_faces(data)
        if faces:
            crops.append(face_crops[central_face(faces, photo.width, photo.height)])
    x = pipeline.embed(crops) * np.sqrt(2.0)  # undo the joint normalisation: each half is a unit vector
    return {"facenet": x[:, :512], "sface": x[:, 512:]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, default=DATASET)
    parser.add_argument("--out", type=Path, default=MEANS_FILE)
    parser.add_argument("--limit", type=int, help="people used (default: all)")
    args = parser.parse_args()
    started = time.monotonic()
    photos = one_photo_per_person(args.dataset, args.limit)
    parts = raw_embeddings(photos)
    weights = resolve_weights()
    how = (f"benchmarks/population_means.py: the central face of one photo of each of {len(photos)} people of "
           f"lfw-strangers ({len(parts['facenet'])} with a face), MTCNN + each net as the scan runs it, mean of the "
           "unit vectors before centring")
    means = {net_key(net, weights): x.mean(axis=0).astype(np.float32) for net, x in parts.items()}
    np.savez(args.out, how=np.array(how), **means)
    for key, mean in means.items():
        print(f"{key:50s} |mean| {np.linalg.norm(mean):.3f}")
    print(f"{how}\nwritten {args.out} in {time.monotonic() - started:.0f}s")


if __name__ == "__main__":
    main()
