"""Exit codes under every death (docs/design.md §9), through the whole local launcher: each ends with a record,
an ``exit_code.txt`` and a ``status.json`` that say what happened, and none hangs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from examples.sample_job import lay_out_job
from gpstage.launching import get_launcher
from gpstage.records import RecordStore

pytestmark = pytest.mark.timeout(180)

DEATHS = [  # (exec.sh, exit code, state, reason, signal)
    ("exit 0", 0, "SUCCEEDED", "exited", None),
    ("exit 1", 1, "FAILED", "exited", None),
    ("exit 255", 255, "FAILED", "exited", None),
    ("kill -TERM $$", 143, "FAILED", "signal", "SIGTERM"),
    ("kill -KILL $$", 137, "FAILED", "signal", "SIGKILL"),
    ("sleep 60", 142, "FAILED", "timeout", None),
]


def run(tmp_path: Path, script: str | None, *, mode: int = 0o755, settings: dict | None = None, **job) -> tuple:
    spec = lay_out_job(tmp_path / "srv", f"file://{tmp_path}/store", **job)
    exe = Path(spec.executable_path)
    if script is None:
        exe.unlink()
    else:
        exe.write_text(f"#!/bin/bash\n{script}\n")
        exe.chmod(mode)
    result = get_launcher("local", {"poll_interval": 0.2, "kill_grace": 1, **(settings or {})}).submit(spec).wait(timeout=120)
    status = json.loads(Path(spec.metadata_dir, "status.json").read_text())
    code = json.loads(Path(spec.metadata_dir, "exit_code.txt").read_text())["exit_code"]
    record = RecordStore().load(spec.job_id)
    assert result.exit_code == code == status["exit_code"] == record.exit_code
    assert result.state.value == status["state"] == record.state.value
    return code, status["state"], status["reason"], status.get("signal")


@pytest.mark.parametrize(("script", "code", "state", "reason", "sig"), DEATHS)
def test_process_runner(tmp_path: Path, script: str, code: int, state: str, reason: str, sig: str | None) -> None:
    assert run(tmp_path, script, resources={"time_s": 2}) == (code, state, reason, sig)


def test_exec_sh_without_its_exec_bit_runs_anyway(tmp_path: Path) -> None:
    assert run(tmp_path, "exit 0", mode=0o644) == (0, "SUCCEEDED", "exited", None)


def test_missing_exec_sh_is_127(tmp_path: Path) -> None:
    assert run(tmp_path, None) == (127, "ERROR", "missing-executable", None)


def test_killed_for_memory_in_docker(tmp_path: Path, images, docker_host: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", docker_host)
    script = "x=$(yes | head -c 300000000); echo survived ${#x}"  # bash holds 300 MB in a 32 MiB container
    got = run(tmp_path, script, image=images["bash-module"], resources={"memory_mib": 32}, settings={"runner": "docker"})
    assert got[1] == "FAILED" and got[0] == 137, got


def test_missing_image_is_an_error(tmp_path: Path, docker_host: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", docker_host)
    got = run(tmp_path, "exit 0", image="127.0.0.1:9/nope:1", settings={"runner": "docker"})
    assert got[:3] == (125, "ERROR", "error")
