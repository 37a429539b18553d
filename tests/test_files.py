"""files: the JSON caches beside the models (weights' verified.json, the ONNX manifest)."""

from __future__ import annotations

import json
from pathlib import Path

from facebatch.files import read_json_map, record_in_json_map


def test_a_missing_damaged_or_foreign_cache_reads_as_empty(tmp_path: Path) -> None:
    assert read_json_map(tmp_path / "missing.json") == {}
    damaged = tmp_path / "damaged.json"
    damaged.write_text('{"a": ')
    assert read_json_map(damaged) == {}
    foreign = tmp_path / "list.json"
    foreign.write_text("[1, 2]")
    assert read_json_map(foreign) == {}


def test_recording_keeps_what_another_process_recorded(tmp_path: Path) -> None:
    cache = tmp_path / "home" / "manifest.json"
    record_in_json_map(cache, "a.onnx", {"sha256": "1"})
    cache.write_text(json.dumps({**json.loads(cache.read_text()), "b.onnx": {"sha256": "2"}}))  # another process
    record_in_json_map(cache, "c.onnx", {"sha256": "3"})
    assert read_json_map(cache) == {"a.onnx": {"sha256": "1"}, "b.onnx": {"sha256": "2"}, "c.onnx": {"sha256": "3"}}
    assert not [p.name for p in cache.parent.iterdir() if p.name != "manifest.json"]  # no temp file left
