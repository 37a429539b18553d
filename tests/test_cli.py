"""The CLI's user errors: one line, the right exit code, no traceback. No models are loaded here."""

from __future__ import annotations

import os

import pytest

from conftest import run
from facebatch.store import Library


def test_a_missing_folder_is_one_line_and_exit_2(tmp_path):
    result = run("--library", str(tmp_path / "lib"), "scan", str(tmp_path / "nope"))
    assert result.exit_code == 2
    assert result.output == f"Error: photo folder not found: {tmp_path / 'nope'}\n"
    assert not (tmp_path / "lib").exists()  # nothing written for a bad command


def test_a_file_that_is_not_a_photo_folder_is_exit_2(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("x")
    result = run("--library", str(tmp_path / "lib"), "scan", str(notes))
    assert result.exit_code == 2
    assert result.output == f"Error: not a folder: {notes}\n"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every folder")
def test_an_unreadable_folder_is_exit_2(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0)
    result = run("--library", str(tmp_path / "lib"), "scan", str(locked))
    assert result.exit_code == 2
    assert result.output == f"Error: cannot read photo folder {locked}: permission denied\n"


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--min-score", "1.5"], "--min-score must be between 0 and 1, got 1.5"),
        (["--min-face", "0"], "--min-face must be at least 1 pixel, got 0"),
        (["--detect-size", "100"], "--detect-size must be at least 160 pixels, got 100"),
        (["--batch-size", "0"], "--batch-size must be at least 1, got 0"),
        (["--workers", "0"], "--workers must be at least 1, got 0"),
        (["--device", "tpu"], "--device must be cpu, cuda or cuda:N, got 'tpu'"),
        (["--workers", "2", "--scheduler", "tcp://127.0.0.1:1"],
         "--workers starts a local cluster; it cannot be combined with --scheduler"),
    ],
)
def test_bad_options_are_one_line(tmp_path, option, message):
    result = run("--library", str(tmp_path / "lib"), "scan", str(tmp_path), *option)
    assert result.exit_code == 1
    assert result.output == f"Error: {message}\n"


def test_unknown_weights_are_one_line(tmp_path):
    result = run("--library", str(tmp_path / "lib"), "scan", str(tmp_path), "--weights", "imagenet")
    assert result.exit_code == 1
    assert result.output.startswith("Error: unknown weights 'imagenet'")
    assert result.output.count("\n") == 1


def test_a_second_concurrent_scan_is_refused(tmp_path):
    library = Library(tmp_path / "lib")
    with library.lock():
        result = run("--library", str(library.root), "scan", str(tmp_path))
    assert result.exit_code == 1
    assert result.output == (
        f"Error: library {library.root} is in use by process {os.getpid()}; wait for it to finish\n"
    )


def test_library_comes_from_the_environment(tmp_path):
    result = run("cluster", env={"FACEBATCH_LIBRARY": str(tmp_path / "envlib")})
    assert result.exit_code == 1
    assert result.output == f"Error: no library at {tmp_path / 'envlib'}: run `facebatch scan FOLDER` first\n"


def test_every_command_has_help_with_an_example():
    for args in ([], ["scan"]):
        result = run(*args, "--help")
        assert result.exit_code == 0
        assert "Example:" in result.output
