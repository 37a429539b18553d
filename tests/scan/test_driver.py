"""Scan planning, shard plumbing and the local cluster, without models."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime, timezone

import pyarrow as pa
import pytest

from conftest import PROJECT

from facebatch.config import DEFAULT_SHARD_SIZE, ScanConfig
from facebatch.scan.discovery import PhotoFile
from facebatch.progress import format_seconds, render
from facebatch.scan import driver
from facebatch.scan.driver import (
    MIN_SHARD_SIZE,
    MODEL_RESOURCE,
    ScanSummary,
    _finished,
    dask_client,
    keep_face_ids,
    next_shard_size,
    plan_scan,
)
from facebatch.schema import PHOTOS_SCHEMA


def table(*rows: dict) -> pa.Table:
    now = datetime.now(timezone.utc)
    full = [
        {"photo_id": None, "size_bytes": 10, "mtime": 1000, "n_faces": 0, "status": "ok", "scanned_at": now, **r}
        for r in rows
    ]
    return pa.Table.from_pylist(full, PHOTOS_SCHEMA)


def config(tmp_path, **kwargs) -> ScanConfig:
    return ScanConfig(roots=(str(tmp_path),), library=tmp_path / "lib", **kwargs)


def test_unchanged_photos_need_no_work_and_changed_ones_do(tmp_path):
    root = str(tmp_path)
    photos = table(
        {"photo_id": "a", "path": f"{root}/a.jpg"},
        {"photo_id": "b", "path": f"{root}/b.jpg"},
        {"photo_id": "c", "path": f"{root}/c.jpg", "status": "error"},
    )
    found = [
        PhotoFile(f"{root}/a.jpg", 10, 1000),  # same
        PhotoFile(f"{root}/b.jpg", 10, 2000),  # touched: hashed on a worker, reused if the same content
        PhotoFile(f"{root}/c.jpg", 10, 1000),  # failed last time, unchanged
        PhotoFile(f"{root}/d.jpg", 10, 1000),  # new
    ]
    plan = plan_scan(photos, found, config(tmp_path))
    assert [f.path for f in plan.todo] == [f"{root}/b.jpg", f"{root}/d.jpg"]
    assert plan.unchanged == 2 and plan.still_failing == 1
    assert set(plan.previous) == {"a", "b"}
    assert plan.gone == []

    retry = plan_scan(photos, found, config(tmp_path, retry_errors=True))
    assert [f.path for f in retry.todo] == [f"{root}/b.jpg", f"{root}/c.jpg", f"{root}/d.jpg"]
    forced = plan_scan(photos, found, config(tmp_path, force=True))
    assert len(forced.todo) == 4 and forced.previous == {}


def test_photos_missing_under_the_root_are_gone_others_are_not(tmp_path):
    root = str(tmp_path)
    kept_but_excluded = tmp_path / "kept.png"
    kept_but_excluded.write_bytes(b"x")
    photos = table(
        {"photo_id": "a", "path": f"{root}/deleted.jpg"},
        {"photo_id": "b", "path": str(kept_but_excluded)},
        {"photo_id": "c", "path": "/elsewhere/x.jpg"},
        {"photo_id": "d", "path": f"{root}/already.jpg", "status": "gone"},
        {"photo_id": "e", "path": f"{root}-sibling/y.jpg"},
    )
    plan = plan_scan(photos, [], config(tmp_path))
    assert [row["path"] for row in plan.gone] == [f"{root}/deleted.jpg"]


def test_the_latest_row_of_a_path_decides(tmp_path):
    root = str(tmp_path)
    photos = table(
        {"photo_id": "old", "path": f"{root}/a.jpg", "mtime": 1},
        {"photo_id": "new", "path": f"{root}/a.jpg", "mtime": 1000},
    )
    plan = plan_scan(photos, [PhotoFile(f"{root}/a.jpg", 10, 1000)], config(tmp_path))
    assert plan.todo == [] and plan.unchanged == 1 and set(plan.previous) == {"new"}


def shard_sizes(photos: int, slots: int, shard_size: int | None = None) -> list[int]:
    sizes: list[int] = []
    while (left := photos - sum(sizes)) > 0:
        sizes.append(next_shard_size(left, slots, shard_size))
    return sizes


def test_shards_shrink_toward_the_end():
    # A quarter of what is left each (2 slots), down to MIN_SHARD_SIZE: the last shards are small.
    assert shard_sizes(465, 2) == [117, 87, 66, 49, 37, 28, 21, 15, 12, 9, 6, 5, 4, 3, 2, 2, 2]
    assert shard_sizes(5, 2) == [2, 2, 1]
    assert shard_sizes(10, 2, shard_size=4) == [4, 4, 2]  # --shard-size: as given
    big = shard_sizes(10_000, 2)
    assert big[0] == DEFAULT_SHARD_SIZE and big[-1] <= MIN_SHARD_SIZE and len(big) < 10_000 / DEFAULT_SHARD_SIZE + 20
    # On a big cluster the last shards keep a photo per slot: the scan writes each shard's files.
    assert min(shard_sizes(10_000, 64)[:-1]) == 64


def test_summary_line_counts_errors_by_kind():
    summary = ScanSummary(library="/lib", found=10, unchanged=3, processed=6, reused=1, gone=2, faces=9,
                          errors=Counter({"truncated": 2, "empty_file": 1}), elapsed=3.5)
    assert summary.line() == (
        "10 photos: 6 scanned, 1 moved, 3 unchanged, 2 gone; 9 new faces; "
        "3 errors (empty_file 1, truncated 2) (`facebatch errors` lists them); 3.5s (2.00 photos/s)"
    )
    summary.still_failing = 4
    assert ("; 3 errors (empty_file 1, truncated 2); 4 failed before (--retry-errors) (`facebatch errors` lists them); "
            in summary.line())
    assert summary.failed == 7


def test_progress_line():
    assert render(50, 200, 70, 0, 10.0) == (
        "[######..................] 50/200 photos  70 faces  5.0 photos/s  30s left"
    )
    assert render(200, 200, 1, 2, 100.0) == "[########################] 200/200 photos  1 faces  2 errors  2.0 photos/s"
    assert format_seconds(3725) == "1h02m"


def test_forced_redetection_keeps_the_ids_of_faces_found_again():
    def faces(*rows):
        return pa.table({"face_id": [r[0] for r in rows], "photo_id": [r[1] for r in rows],
                         "box": [r[2] for r in rows]})

    new = faces(("new1", "p", [10, 10, 50, 50]), ("new2", "p", [200, 10, 240, 50]), ("new3", "q", [0, 0, 9, 9]))
    old = {"p": [("old1", [12, 11, 51, 52]), ("old2", [100, 100, 140, 140])]}
    assert keep_face_ids(new, old)["face_id"].to_pylist() == ["old1", "new2", "new3"]
    assert keep_face_ids(new, {})["face_id"].to_pylist() == ["new1", "new2", "new3"]


def _malloc_trim_threshold() -> str | None:
    return os.environ.get("MALLOC_TRIM_THRESHOLD_")


def test_local_workers_keep_glibcs_adaptive_malloc(tmp_path):
    # Dask would set MALLOC_TRIM_THRESHOLD_=65536 in every worker, and the models run 35% slower.
    with dask_client(config(tmp_path, workers=1)) as client:
        assert list(client.run(_malloc_trim_threshold).values()) == [None]


def test_the_worker_recipe_config_unsets_it_too():
    code = "import dask, distributed; print(dask.config.get('distributed.nanny.pre-spawn-environ'))"
    env = {**os.environ, "DASK_CONFIG": str(PROJECT / "jobs" / "dask" / "worker-config.yaml")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert "'MALLOC_TRIM_THRESHOLD_': None" in out


def _first_photo(builder, shard):
    time.sleep(0.05)
    return shard[0]


class CountingClient:
    """A Dask client that records how many of its tasks are unfinished as each is given, and when
    told, reports that many workers."""

    def __init__(self, client, workers=None):
        self.client, self.futures, self.pending, self.shards, self.workers = client, [], [], [], workers

    def submit(self, *args, **kwargs):
        self.shards.append(args[2])
        self.futures.append(self.client.submit(*args, **kwargs))
        self.pending.append(sum(not f.done() for f in self.futures))
        return self.futures[-1]

    def scheduler_info(self):
        info = self.client.scheduler_info()
        if self.workers is None:
            return info
        return {**info, "workers": {f"w{i}": {"resources": {MODEL_RESOURCE: 1}} for i in range(self.workers)}}


@pytest.fixture(scope="module")
def two_workers():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0",
                      resources={MODEL_RESOURCE: 1}) as cluster, Client(cluster) as client:
        yield client


def test_shards_go_out_two_per_slot_and_all_come_back(two_workers):
    counting = CountingClient(two_workers)
    finished = [(shard, future.result()) for shard, future in
                _finished(counting, _first_photo, None, list(range(12)), 1, (), "test", {MODEL_RESOURCE: 1})]
    assert all(shard == [result] for shard, result in finished) and sorted(r for _, r in finished) == list(range(12))
    assert len(counting.futures) == 12 and max(counting.pending) == 4  # the rest waited here


def test_shards_go_out_in_order_of_the_guided_sizes(two_workers):
    counting = CountingClient(two_workers)
    finished = [shard for shard, _ in _finished(counting, _first_photo, None, list(range(40)), None, (), "test", None)]
    assert counting.shards == [list(range(0, 10)), list(range(10, 18)), list(range(18, 24)), list(range(24, 28)),
                               [28, 29, 30], [31, 32, 33], [34, 35], [36, 37], [38, 39]]
    assert sorted(finished) == counting.shards


def test_more_shards_go_out_as_workers_join(two_workers, monkeypatch):
    monkeypatch.setattr(driver, "_RECOUNT_SECONDS", 0.0)
    counting = CountingClient(two_workers, workers=1)  # a SLURM job still in the queue: one worker so far
    for _ in _finished(counting, _first_photo, None, list(range(30)), 1, (), "test", {MODEL_RESOURCE: 1}):
        counting.workers = 3  # two more joined
    assert counting.pending[:2] == [1, 2] and max(counting.pending) == 6 and len(counting.futures) == 30
