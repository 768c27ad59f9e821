"""Launcher+runner pairs as tests use them: each pair's settings, module image and services, the
sample job laid out for it, and the check that no container, volume or staging dir outlives a test."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from container_entry.dockerutil import LABEL_JOB
from examples.sample_job import lay_out_job
from gpstage.spec import JobSpec


@dataclass
class Pair:
    launcher: str
    settings: dict[str, Any]
    image: str | None = None  # the module's image


@pytest.fixture
def pair_for(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], Pair]:
    """``pair_for("docker+process")``: the pair's launcher settings and module image, its services started."""
    return lambda name: _pair(name, request, monkeypatch)


def _pair(name: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Pair:
    launcher, runner = name.split("+")
    settings: dict[str, Any] = {"runner": runner, "poll_interval": 0.2, "log_push_interval": 1}
    if name == "local+process":
        return Pair(launcher, settings)
    if launcher == "slurm" or runner == "apptainer":  # the shared-server deployment: Slurm, Apptainer, a SIF cache
        images = request.getfixturevalue("images")
        monkeypatch.setenv("DOCKER_HOST", request.getfixturevalue("docker_host"))  # the SIF is made from the local image
        monkeypatch.setenv("GPSTAGE_APPTAINER", request.getfixturevalue("apptainer"))
        monkeypatch.setenv("GPSTAGE_SIF_CACHE", str(request.getfixturevalue("sif_cache")))
        if launcher == "slurm":
            monkeypatch.setenv("SLURM_CONF", request.getfixturevalue("slurm_conf"))
            settings = {**settings, "poll_interval": 0.3, "staging_grace_s": 60, "cancel_grace_s": 10}
        return Pair(launcher, settings, images["bash-module"])
    if launcher == "batch":  # a local Batch API that runs real containers on the private dockerd
        q = request.getfixturevalue("batch_queue")
        settings = {**settings, "poll_interval": 0.3, "job_queue": q["queue"], "endpoint": q["endpoint"],
                    "credentials_file": q["credentials_file"], "staging_grace_s": 60, "cancel_poll_interval": 0.5}
        if runner == "process":  # a module image with nothing of gpstage: the entry bundle is mounted into it
            return Pair(launcher, settings, q["image"])
        # batch+docker: the entry image with the node's docker socket and staging dir; a bash-only module image
        docker_host = request.getfixturevalue("docker_host")
        images = request.getfixturevalue("images")
        request.getfixturevalue("no_containers_left")
        staging = request.getfixturevalue("batch_staging_dir")
        monkeypatch.setenv("DOCKER_HOST", docker_host)
        return Pair(launcher, {**settings, "entry_image": images["runtime"], "docker_socket": docker_host[len("unix://"):],
                               "staging_dir": str(staging)}, images["bash-module"])
    docker_host = request.getfixturevalue("docker_host")
    images = request.getfixturevalue("images")
    request.getfixturevalue("no_containers_left")
    monkeypatch.setenv("DOCKER_HOST", docker_host)
    if launcher == "docker" and runner == "process":  # docker+process: the entry bundle mounted into a bash-only image
        return Pair(launcher, {**settings, "docker_host": docker_host, "network": "host"}, images["bash-module"])
    if launcher == "docker":  # docker+docker: the entry image (wrapper) starts a bash-only module image
        return Pair(launcher, {**settings, "docker_host": docker_host, "network": "host", "entry_image": images["runtime"]},
                    images["bash-module"])
    return Pair(launcher, settings, images["bash-module"])  # local+docker: a bash-only third-party image


@pytest.fixture(scope="session")
def batch_staging_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """batch+docker's node-local staging dir (the node is this machine: the local Batch API's dockerd)."""
    return tmp_path_factory.mktemp("batch-staging")


@pytest.fixture
def no_containers_left(docker_client, request: pytest.FixtureRequest) -> Iterator[None]:
    """No job's container (entry or module) nor staging volume outlives its test; for batch+docker, no
    staging dir either (each entry removes its own)."""
    yield
    staging = request.getfixturevalue("batch_staging_dir") if "batch+docker" in request.node.name else None
    deadline = time.monotonic() + 15  # the local Batch API removes an ended job's container a moment later
    while time.monotonic() < deadline and (
            docker_client.containers.list(all=True, filters={"label": LABEL_JOB})
            or (staging is not None and any(staging.iterdir()))):
        time.sleep(0.2)
    left = docker_client.containers.list(all=True, filters={"label": LABEL_JOB})
    for c in left:
        c.remove(force=True)
    volumes = docker_client.volumes.list(filters={"label": LABEL_JOB})
    for v in volumes:
        v.remove(force=True)
    leftovers = sorted(p.name for p in staging.iterdir()) if staging is not None else []
    assert not left, f"containers left behind: {[c.name for c in left]}"
    assert not volumes, f"staging volumes left behind: {[v.name for v in volumes]}"
    assert not leftovers, f"staging dirs left behind in {staging}: {leftovers}"


def job(tmp_path: Path, storage_root: str, pair: Pair, name: str = "j1", **kwargs: Any) -> JobSpec:
    if pair.image:
        kwargs["image"] = pair.image
    return lay_out_job(tmp_path / name, storage_root, job_id=name, **kwargs)
