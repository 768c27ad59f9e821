"""Shared by the wrapper-mode and commit-and-push tests (a pytest plugin of tests/conftest.py for the
fixtures): the local registry, the no-leftovers check, launchers in direct and wrapper mode, the
sample job with a chosen outcome."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from container_entry.dockerutil import LABEL_JOB
from examples.sample_job import lay_out_job
from gpstage.launching import get_launcher
from gpstage.spec import JobSpec

NEVER_IN_IMAGE = ("words.txt", "counts.txt", "summary.txt", "exec.sh", "stdout.txt", "stderr.txt", "exit_code.txt",
                  "status.json", "job.json", "gpstage-entry.log", "cancel.json")


# ---- services and helpers ---------------------------------------------------------------------------
@pytest.fixture(scope="session")
def registry(service_env) -> str:
    """``127.0.0.1:PORT`` of the local registry (scripts/services.py)."""
    return service_env("registry")["GPSTAGE_TEST_REGISTRY"]


@pytest.fixture
def nothing_left(monkeypatch: pytest.MonkeyPatch, docker_host: str, docker_client) -> Iterator[None]:
    """DOCKER_HOST for direct mode; after each test no job container (entry, module, commit) nor staging volume."""
    monkeypatch.setenv("DOCKER_HOST", docker_host)
    yield
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and _leftovers(docker_client)[0]:
        time.sleep(0.2)
    containers, volumes = _leftovers(docker_client)
    for c in containers:
        c.remove(force=True)
    for v in volumes:
        v.remove(force=True)
    assert not containers, f"containers left behind: {[c.name for c in containers]}"
    assert not volumes, f"staging volumes left behind: {[v.name for v in volumes]}"


def _leftovers(client) -> tuple[list, list]:
    containers = [c for c in client.containers.list(all=True)
                  if LABEL_JOB in (c.labels or {}) or c.name.startswith("gpstage-commit-w")]
    return containers, client.volumes.list(filters={"label": LABEL_JOB})


@pytest.fixture(scope="session")
def staging_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("wrapper-staging")


def direct(**settings: Any):
    """local+docker: the entry on this machine starts the module's container (seed deployment 1)."""
    return get_launcher("local", {"runner": "docker", "poll_interval": 0.2, **settings})


def wrapper(docker_host: str, images: dict[str, str], **settings: Any):
    """docker+docker: the entry in gpstage/runtime with the docker socket starts the module's container."""
    return get_launcher("docker", {"runner": "docker", "docker_host": docker_host, "network": "host", "poll_interval": 0.2,
                                   "entry_image": images["runtime"], **settings})


def batch_wrapper(batch_queue: dict[str, Any], docker_host: str, images: dict[str, str], staging: Path, **settings: Any):
    return get_launcher("batch", {"runner": "docker", "job_queue": batch_queue["queue"], "endpoint": batch_queue["endpoint"],
                                  "credentials_file": batch_queue["credentials_file"], "poll_interval": 0.3,
                                  "staging_grace_s": 60, "cancel_poll_interval": 0.5, "entry_image": images["runtime"],
                                  "docker_socket": docker_host[len("unix://"):], "staging_dir": str(staging), **settings})


def sample(base: Path, storage_root: str, job_id: str, image: str, outcome: str = "0", **kw: Any) -> JobSpec:
    spec = lay_out_job(base, storage_root, job_id=job_id, image=image, exit_code=3 if outcome == "3" else 0, **kw)
    if outcome == "signal":  # the module runs, then its shell is killed by SIGKILL
        exe = Path(spec.executable_path)
        exe.write_text(exe.read_text() + "kill -KILL $$\n")
    return spec


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def tree(root: str, skip: str) -> dict[str, bytes]:
    """Every file under ``root`` (relative name -> bytes), without the nested dir ``skip``."""
    out = {}
    for top, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if os.path.join(top, d) != skip]
        for f in files:
            out[os.path.relpath(os.path.join(top, f), root)] = Path(top, f).read_bytes()
    return out
