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
    assert result.exit_code == 3
    assert result.output == (
        f"Error: library {library.root} is in use by process {os.getpid()}; wait for it to finish\n"
    )


def test_library_comes_from_the_environment_or_either_side_of_the_command(tmp_path):
    missing = ("Error: no library at {}: run `facebatch scan FOLDER` first, or point at one with --library DIR "
               "or the FACEBATCH_LIBRARY variable\n")
    result = run("cluster", env={"FACEBATCH_LIBRARY": str(tmp_path / "envlib")})
    assert (result.exit_code, result.output) == (2, missing.format(tmp_path / "envlib"))
    result = run("clusters", "--library", tmp_path / "after", env={"FACEBATCH_LIBRARY": str(tmp_path / "envlib")})
    assert (result.exit_code, result.output) == (2, missing.format(tmp_path / "after"))
    result = run("--library", tmp_path / "before", "people")
    assert (result.exit_code, result.output) == (2, missing.format(tmp_path / "before"))


def test_click_usage_errors_are_one_line_and_exit_1():
    result = run("scan")
    assert (result.exit_code, result.output) == (1, "Error: Missing argument 'FOLDERS...'. (`facebatch scan --help`)\n")
    result = run("clusters", "--limit", "many")
    assert result.exit_code == 1 and result.output.count("\n") == 1
    result = run("nosuchcommand")
    assert result.exit_code == 1 and result.output.startswith("Error: No such command 'nosuchcommand'")


def test_top_level_help_shows_the_whole_flow_and_whole_descriptions():
    result = run("--help")
    assert result.exit_code == 0
    for step in ("facebatch run", "facebatch scan", "facebatch cluster", "facebatch label cluster", "facebatch export"):
        assert step in result.output
    commands = result.output.split("Commands:")[1].splitlines()
    assert all("..." not in line for line in commands), result.output  # no description cut mid-sentence


def test_every_command_has_help_with_an_example():
    for args in (["scan"], ["cluster"], ["clusters"], ["export"], ["identify"], ["verify"], ["report"], ["undo"]):
        result = run(*args, "--help")
        assert result.exit_code == 0 and "Example:" in result.output, args


def test_scan_on_a_missing_gpu_is_one_line_before_any_work(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.jpg").write_bytes(b"not read")
    result = run("--library", tmp_path / "lib", "scan", tmp_path / "photos", "--device", "cuda")
    assert result.exit_code == 2
    assert result.output == (f"Error: --device cuda: this machine has no CUDA GPU (torch {torch.__version__}); "
                             "use --device cpu\n")
    assert not (tmp_path / "lib").exists()  # no photo row touched


def test_an_empty_folder_says_what_was_looked_for(tmp_path):
    (tmp_path / "empty").mkdir()
    result = run("--library", tmp_path / "lib", "scan", tmp_path / "empty")
    assert result.exit_code == 0
    assert (f"warning: no photos under {tmp_path / 'empty'} (looked for photos (.bmp .gif .heic .heif .jpeg .jpg .png "
            ".tif .tiff .webp), RAW files (.cr2 .nef .arw .dng and the others LibRaw reads) and videos (.3gp .avi .m4v "
            ".mkv .mov .mp4), in any case)") in result.output


def test_ctrl_c_says_that_running_again_resumes_and_exits_130(monkeypatch, capsys, tmp_path):
    from facebatch import cli as cli_module
    from facebatch.scan import driver

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(driver, "scan", interrupted)
    monkeypatch.setattr("sys.argv", ["facebatch", "--library", str(tmp_path / "lib"), "scan", str(tmp_path)])
    with pytest.raises(SystemExit) as exit_:
        cli_module.cli_main()
    assert exit_.value.code == 130
    # click starts a new line first: on a terminal the ^C is left on the current one.
    assert capsys.readouterr().err == (
        "\nError: interrupted; run the same command again to go on (a scan resumes where it stopped)\n")


EXIT_PROBE = """
import atexit, sys, threading, time
from facebatch.cli import _exit_now
atexit.register(lambda: sys.stderr.write("atexit ran\\n"))  # stderr: flushing it leaves stdout as it is
if sys.argv[1] == "thread":  # a thread the interpreter would wait for: the usual exit waits too
    threading.Thread(target=lambda: (time.sleep(0.3), print("thread done"))).start()
print("output", end="")  # unflushed: a pipe is block-buffered
_exit_now(int(sys.argv[2]))
"""


@pytest.mark.parametrize(("case", "code"), [("plain", 0), ("plain", 3), ("thread", 0)])
def test_the_quick_exit_runs_atexit_flushes_and_keeps_the_code(case, code):
    import subprocess
    import sys

    buffered = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    done = subprocess.run([sys.executable, "-c", EXIT_PROBE, case, str(code)], capture_output=True, text=True,
                          timeout=60, env=buffered)
    assert done.returncode == code
    assert done.stdout.startswith("output") and done.stderr == "atexit ran\n"
    assert ("thread done" in done.stdout) == (case == "thread")
