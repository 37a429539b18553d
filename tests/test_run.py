"""`facebatch run`: the whole job on sample_data, as the README's first command does it."""

from __future__ import annotations

import json

from conftest import PROJECT, SAMPLE_DATA, run
from facebatch.store import Library


def test_run_scans_clusters_exports_and_writes_the_site(tmp_path):
    library = tmp_path / "lib"
    result = run("--library", library, "run", SAMPLE_DATA, "--quiet")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [f"tags: 11 photos, 21 faces (0 with a person) -> {library / 'tags.json'}",
                                          f"site: {library / 'report' / 'index.html'}"]  # -q: where, nothing more
    told = run("--library", library, "run", SAMPLE_DATA, "--no-report")
    assert told.output.splitlines()[-1] == ("next: name people with `facebatch label cluster N NAME` (2 clusters "
                                            "unnamed: numbers in `facebatch clusters` or the site), then run again")
    tags = json.loads((library / "tags.json").read_text())
    assert len(tags["photos"]) == 11 and (library / "report" / "index.html").is_file()
    again = run("--library", library, "run", SAMPLE_DATA, "--quiet", "--no-report", "--tags", tmp_path / "t.jsonl")
    assert again.exit_code == 0 and again.output.splitlines()[0].endswith(f"-> {tmp_path / 't.jsonl'}")
    piped = run("--library", library, "run", SAMPLE_DATA, "--no-report", "--tags", "-")
    assert piped.exit_code == 0, piped.output
    assert [json.loads(line)["path"] for line in piped.stdout.splitlines()] == [p["path"] for p in tags["photos"]]
    assert "tags: 11 photos, 21 faces (0 with a person) -> standard output" in piped.stderr
    for cluster in Library(library).read_clusters()["cluster_id"].to_pylist():
        if cluster >= 0:
            run("--library", library, "label", "cluster", cluster, f"Person {cluster}")
    named = run("--library", library, "run", SAMPLE_DATA, "--no-report")
    assert named.exit_code == 0 and "next:" not in named.output  # every cluster named: nothing to do next


def test_run_says_a_bad_tags_path_before_any_work(tmp_path):
    library = tmp_path / "lib"
    typo = run("--library", library, "run", SAMPLE_DATA, "--tags", tmp_path / "nope" / "t.json")
    assert (typo.exit_code, typo.output) == (
        1, f"Error: folder {tmp_path / 'nope'} does not exist (for {tmp_path / 'nope' / 't.json'})\n")
    unknown = run("--library", library, "run", SAMPLE_DATA, "--tags", tmp_path / "t.csv")
    assert unknown.exit_code == 1 and "or give --format" in unknown.output
    assert not library.exists()


def test_the_nightly_recipe_runs_the_whole_job(sample_library):
    import subprocess

    result = subprocess.run(["bash", str(PROJECT / "jobs" / "nightly.sh"), str(SAMPLE_DATA), str(sample_library.root)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert (sample_library.root / "tags.json").is_file() and (sample_library.root / "report" / "index.html").is_file()
    assert sample_library.has_clusters()
