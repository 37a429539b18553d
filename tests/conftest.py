"""Shared fixtures: where the real data lives, and skipping with a reason when it doesn't."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from facebatch.cli import cli

PROJECT = Path(__file__).resolve().parents[1]
SAMPLE_DATA = PROJECT / "sample_data"
DATASETS = PROJECT.parent / "shared" / "datasets"


def dataset(name: str) -> Path:
    """A folder of ../shared/datasets, or skip: those photos are internal and not in the repo."""
    folder = DATASETS / name
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent (internal test photos, see ../shared/datasets/README.md)")
    return folder


def hard_manifest(hard: Path) -> list[dict[str, str]]:
    """The hard dataset's manifest rows for images (its .xml rows are annotations)."""
    with open(hard / "manifest.csv", newline="") as manifest:
        return [row for row in csv.DictReader(manifest) if not row["path"].endswith(".xml")]


def run(*args: object, env: dict[str, str] | None = None) -> Result:
    """The CLI in-process, as a user would type it (arguments may be paths)."""
    return CliRunner().invoke(cli, [str(a) for a in args], env=env)
