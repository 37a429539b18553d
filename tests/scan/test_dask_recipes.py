"""Dask settings for real clusters: one `model` slot per worker process, the same in the local
cluster, jobs/dask/worker.sh and the SLURM and Kubernetes recipes (checked by dry runs)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from conftest import PROJECT
from facebatch.scan.driver import MODEL_RESOURCE, task_resources, worker_arguments


def test_shards_ask_for_a_model_slot_when_every_worker_has_one():
    slots = {"a": {"nthreads": 1, "resources": {"model": 1}}, "b": {"nthreads": 4, "resources": {"model": 1}}}
    assert task_resources(slots) == ({MODEL_RESOURCE: 1}, None)


def test_workers_without_slots_get_no_resources_and_a_warning_when_crowded():
    assert task_resources({"a": {"nthreads": 1, "resources": {}}}) == (None, None)
    resources, warning = task_resources({"a": {"nthreads": 8}, "b": {"nthreads": 1, "resources": {"model": 1}}})
    assert resources is None  # asking for a slot a worker lacks would leave its shards waiting for ever
    assert warning.startswith("1 Dask workers have several threads and no `model` resource")


def test_worker_arguments_share_the_cores_out_by_model():
    assert worker_arguments(32, 4) == ["--nworkers", "8", "--nthreads", "4", "--resources", "model=1"]
    assert worker_arguments(2) == ["--nworkers", "2", "--nthreads", "1", "--resources", "model=1"]
    assert worker_arguments(2, 8)[:2] == ["--nworkers", "1"]


def recipe(name: str, *args: str) -> str:
    result = subprocess.run([sys.executable, str(PROJECT / "jobs" / "dask" / name), *args], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_slurm_job_script_names_the_worker_options():
    pytest.importorskip("dask_jobqueue")
    script = recipe("slurm.py", "/photos", "--library", "/lib", "--cores", "32", "--model-threads", "4", "--dry-run")
    assert script.startswith("#!/usr/bin/env bash") and "#SBATCH --cpus-per-task=32" in script
    command = next(line for line in script.splitlines() if "dask_worker" in line).split()
    assert command[command.index("--nworkers") + 1] == "8" and command[command.index("--nthreads") + 1] == "4"
    assert command[command.index("--resources") + 1] == "model=1"
    assert f"export DASK_CONFIG={PROJECT / 'jobs' / 'dask' / 'worker-config.yaml'}" in script


def test_kubernetes_manifest_names_the_worker_options():
    pytest.importorskip("dask_kubernetes")
    manifest = yaml.safe_load(recipe("kubernetes.py", "/photos", "--library", "/lib", "--image", "reg/facebatch:1",
                                     "--cores", "8", "--workers", "3", "--dry-run"))
    assert (manifest["apiVersion"], manifest["kind"]) == ("kubernetes.dask.org/v1", "DaskCluster")
    worker = manifest["spec"]["worker"]
    assert worker["replicas"] == 3
    container = worker["spec"]["containers"][0]
    assert container["image"] == "reg/facebatch:1" and container["resources"]["limits"]["cpu"] == "8"
    assert container["args"][:2] == ["dask", "worker"] and container["args"][-6:] == worker_arguments(8)
    assert {"name": "DASK_DISTRIBUTED__NANNY__PRE_SPAWN_ENVIRON__MALLOC_TRIM_THRESHOLD_", "value": "None"} \
        in container["env"]


def test_worker_sh_uses_the_same_options():
    text = (PROJECT / "jobs" / "dask" / "worker.sh").read_text()
    assert "--resources model=1" in text and "--nthreads \"$threads\"" in text and "--nworkers" in text
