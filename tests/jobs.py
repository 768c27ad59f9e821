"""Helpers for job-level tests (entry now, launchers later): simulate a fresh node, read what a job
left on storage, run ``gpstage-entry`` as a process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from gpstage.aio import run_sync
from gpstage.spec import JobSpec, Role
from gpstage.stage import same_path
from gpstage.storage import read_url
from gpstage.urls import join_url

BIN = Path(sys.executable).parent


def fresh_node(spec: JobSpec) -> None:
    """Remove the local copies of the job's dirs, as a new container would not have them (no-op for
    dirs that live on a shared file system: there the node sees the server's files)."""
    for d in spec.dirs:
        if not same_path(spec, d):
            shutil.rmtree(d.path, ignore_errors=True)


def stored(spec: JobSpec, role: Role, rel: str) -> bytes:
    """The bytes of ``rel`` inside the job's ``role`` dir, as stored on the job's storage."""
    return run_sync(read_url(join_url(spec.url_of(spec.dir(role)), rel)))


def stored_json(spec: JobSpec, rel: str) -> dict:
    return json.loads(stored(spec, Role.METADATA, rel))


def run_entry(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "gpstage-entry"), *args], capture_output=True, text=True,
                          env=env if env is not None else dict(os.environ), timeout=timeout, check=False)


def write_spec(spec: JobSpec, path: Path) -> str:
    path.write_text(spec.to_json())
    return str(path)
