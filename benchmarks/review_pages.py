"""Review server page times on a big library: the people page and a 5,000-face cluster page.

Builds LIBRARY with N synthetic faces shaped like lfw-dev's (benchmarks/cluster_scale.py): one
person with 5,000 photos, the rest 1 to 20 photos each and 10% strangers; clusters it, names the
big person, then times each page through the server's own app (the HTML only: thumbnails are
made once per face and cached, and the browser loads them lazily). The first request builds the
page model from the tables; later ones reuse it until a table changes (a click that names,
rejects or merges makes it again once).

    .venv/bin/python benchmarks/review_pages.py --lfw /tmp/lfw-lib --faces 100000 --library /tmp/review100k
"""

from __future__ import annotations

import argparse
import resource
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cluster_library import build  # noqa: E402
from cluster_scale import lfw_shape  # noqa: E402


def library_faces(n: int, lfw: Path, big: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centre, between, within = lfw_shape(lfw)
    sizes = [big]
    while sum(sizes) < n:
        sizes.append(1 if rng.random() < 0.1 else int(rng.integers(1, 21)))
    sizes[-1] -= sum(sizes) - n
    centres = centre + (rng.normal(size=(len(sizes), len(between))) / np.sqrt(len(between))) @ between
    truth = np.repeat(np.arange(len(sizes)), sizes)
    x = centres[truth] + (rng.normal(size=(n, len(within))) / np.sqrt(len(within))) @ within
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), truth


def timed(label: str, step):
    started = time.perf_counter()
    result = step()
    print(f"| {label} | {time.perf_counter() - started:.2f} |", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lfw", type=Path, required=True, help="a scanned library of lfw-dev")
    parser.add_argument("--faces", type=int, default=100_000)
    parser.add_argument("--big", type=int, default=5_000, help="photos of the one big person")
    parser.add_argument("--library", type=Path, required=True)
    args = parser.parse_args()
    from starlette.testclient import TestClient

    from facebatch.people.actions import label_cluster
    from facebatch.people.clustering import cluster_library, read_assignments
    from facebatch.people.grouping import GroupingSettings
    from facebatch.review.server import create_app, prepare
    from facebatch.store import Library

    shutil.rmtree(args.library, ignore_errors=True)
    x, truth = library_faces(args.faces, args.lfw, args.big)
    library = Library(args.library)
    print(f"{args.faces:,} faces, one person with {args.big:,}\n\n| step | seconds |\n|---|---|")
    timed("write the library", lambda: build(library, x, truth))
    timed("facebatch cluster", lambda: cluster_library(library, GroupingSettings()))
    assignments = read_assignments(library)
    big = max(set(assignments.values()) - {-1}, key=list(assignments.values()).count)
    timed("facebatch label cluster (the big one)", lambda: label_cluster(library, big, "Big"))
    review = timed("start: page model from the tables", lambda: prepare(library))
    client = TestClient(create_app(review, ["testserver"]))
    for label, path in (("people page", "/"), ("people page, again", "/"), (f"cluster page ({args.big:,} faces, "
                        "page 1 of its 200-face pages)", f"/cluster/{big}"), ("its last page", f"/cluster/{big}?page=25"),
                        ("person page", "/person/Big")):
        response = timed(label, lambda p=path: client.get(p))
        assert response.status_code == 200, (path, response.status_code)
    form = {"token": review.token, "back": f"/cluster/{big}", "face": [str(f) for f, c in assignments.items() if c == big][:1],
            "action": "not", "person": "Big"}
    timed("a click: \"not Big\" on one face (write + redirect)", lambda: client.post("/faces", data=form,
                                                                                    follow_redirects=False))
    timed("the page after it (model made again)", lambda: client.get(f"/cluster/{big}"))
    print(f"\npeak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
