"""A spec's ``executors`` (a GA4GH TES task, docs/tes.md) run by gpstage-entry on every runner: in order,
each in its own image, over dirs mounted at their ``mount_at``; the first failure stops the sequence
(unless ignored), one time limit for all, a cancel stops it; ``status.json`` records each executor.

Real services only: the private dockerd and two of gpstage's local images (``gpstage/busybox-module:1``, no
bash; ``gpstage/bash-module:1``: built alone, in about a second, not the whole ``images`` set), Apptainer
from scripts/services.py. Jobs live on ``nfs:///`` (no staging).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from fixtures_docker import load_image_builder

from container_entry.dockerutil import LABEL_JOB
from gpstage.spec import JobSpec, Role
from gpstage.stage import stage_in
from tests.jobs import BIN, fresh_node, run_entry, stored, write_spec

pytestmark = pytest.mark.timeout(180)
JOB_ID = f"tes-{uuid.uuid4().hex[:12]}"  # this session's: a session sharing the daemon is left alone


def executor_job(tmp_path: Path, runner: str, executors: list[dict[str, Any]], mount_at: str | None = "/vol",
                 storage_root: str = "nfs:///", **fields: Any) -> tuple[JobSpec, str]:
    """A task: its working dir (``tmp_path/work``) mounted at ``mount_at``, its metadata dir at its own path."""
    spec = JobSpec.model_validate({
        "job_id": JOB_ID, "storage_root": storage_root, "runner": runner, "executors": executors, **fields,
        "dirs": [{"role": "workdir", "path": str(tmp_path / "work"), "mount_at": mount_at},
                 {"role": "metadata", "path": str(tmp_path / "meta")}]})
    return spec, write_spec(spec, tmp_path / "job.json")


def status(spec: JobSpec) -> dict[str, Any]:
    return json.loads(local(spec, Role.METADATA, "status.json"))


def local(spec: JobSpec, role: Role, name: str) -> str:
    return Path(spec.dir(role).path, name).read_text()


def on_storage(spec: JobSpec, role: Role, name: str) -> str:
    return stored(spec, role, name).decode()


def work(tmp_path: Path, name: str) -> Path:
    return tmp_path / "work" / name


def run(path: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_entry("--spec", path, "--log-push-interval", "0", env=env, timeout=120)


def two_step(images: list[str], vol: str = "/vol") -> list[dict[str, Any]]:
    """The first executor writes ``vol``/a.txt (and its own logs); the second upper-cases it, stdin to stdout."""
    return [
        {"image": images[0], "workdir": vol, "env": {"GREETING": "hi"},
         "command": ["sh", "-c", 'echo "hello from the first" > a.txt; echo "pwd=$(pwd) greeting=$GREETING"; echo oops >&2']},
        {"image": images[1], "command": ["tr", "a-z", "A-Z"], "stdin": f"{vol}/a.txt", "stdout": f"{vol}/out.txt"},
    ]


def check_two_step_run(spec: JobSpec, result: subprocess.CompletedProcess[str], images: list[str], pwd: str = "/vol",
                       read: Callable[[JobSpec, Role, str], str] = local) -> None:
    """What :func:`two_step` leaves (``read`` from the job's dirs, or its storage): the second read the first's
    file through stdin, each recorded in order."""
    assert result.returncode == 0, result.stderr
    assert read(spec, Role.WORKDIR, "a.txt") == "hello from the first\n"
    assert read(spec, Role.WORKDIR, "out.txt") == "HELLO FROM THE FIRST\n"
    st = json.loads(read(spec, Role.METADATA, "status.json"))
    assert (st["state"], st["exit_code"], st["module_exit_code"]) == ("SUCCEEDED", 0, 0)
    first, second = st["executors"]
    assert [(e["index"], e["image"], e["exit_code"]) for e in (first, second)] == [(0, images[0], 0), (1, images[1], 0)]
    assert (first["stdout"], first["stderr"]) == (f"pwd={pwd} greeting=hi\n", "oops\n")
    assert (second["stdout"], second["stderr"]) == ("HELLO FROM THE FIRST\n", "")
    assert read(spec, Role.METADATA, "executor-0.stdout") == first["stdout"]
    times = [datetime.fromisoformat(e[k].replace("Z", "+00:00")) for e in (first, second) for k in ("start_time", "end_time")]
    assert times == sorted(times) and all(t.utcoffset().total_seconds() == 0 for t in times)


@pytest.fixture(scope="session")
def images(docker_host: str) -> dict[str, str]:
    """Only the module images these tests run (the ``images`` fixture of fixtures_docker builds every image)."""
    return load_image_builder().ensure_images(docker_host, which=("busybox-module", "bash-module"))


# ---- docker ----------------------------------------------------------------------------------------
@pytest.fixture
def docker_env(docker_host: str, docker_client) -> Iterator[dict[str, str]]:
    yield {**os.environ, "DOCKER_HOST": docker_host}
    left = docker_client.containers.list(all=True, filters={"label": f"{LABEL_JOB}={JOB_ID}"})
    for c in left:
        c.remove(force=True)
    assert not left, "containers left behind"


def test_docker_runs_executors_in_their_own_images_over_a_shared_mount(tmp_path: Path, images, docker_env) -> None:
    used = [images["busybox-module"], images["bash-module"]]  # busybox has no bash: no shell is needed
    spec, path = executor_job(tmp_path, "docker", two_step(used))
    check_two_step_run(spec, run(path, docker_env), used)


def test_docker_wrapper_mode_mounts_the_staged_copies_at_mount_at(tmp_path: Path, images, docker_env) -> None:
    """The docker host mounts ROOT + P (the entry's staging dir) at the executor's mount_at."""
    used = [images["busybox-module"], images["bash-module"]]
    spec, path = executor_job(tmp_path, "docker", two_step(used), storage_root=f"file://{tmp_path}/store")
    os.makedirs(spec.workdir)
    stage_in(spec)
    fresh_node(spec)
    result = run(path, {**docker_env, "GPSTAGE_STAGING_ROOT": str(tmp_path / "staging")})
    check_two_step_run(spec, result, used, read=on_storage)
    assert "wrapper mode: 2 dir(s) staged under" in on_storage(spec, Role.METADATA, "gpstage-entry.log")
    assert not (tmp_path / "staging").exists() and not os.path.lexists(spec.workdir)


@pytest.mark.parametrize("ignore_error", [False, True])
def test_docker_a_failing_executor_stops_the_sequence_unless_ignored(tmp_path: Path, images, docker_env,
                                                                    ignore_error: bool) -> None:
    image = images["busybox-module"]
    spec, path = executor_job(tmp_path, "docker", [
        {"image": image, "command": ["sh", "-c", "echo failing; exit 3"], "ignore_error": ignore_error},
        {"image": image, "command": ["touch", "/vol/second-ran"]}])
    result = run(path, docker_env)
    st = status(spec)
    assert [e["exit_code"] for e in st["executors"]] == ([3, 0] if ignore_error else [3])
    assert st["executors"][0]["stdout"] == "failing\n"
    assert work(tmp_path, "second-ran").exists() == ignore_error
    code, state = (0, "SUCCEEDED") if ignore_error else (3, "FAILED")
    assert (result.returncode, st["exit_code"], st["module_exit_code"], st["state"]) == (code, code, code, state), result.stderr


# ---- apptainer --------------------------------------------------------------------------------------
def test_apptainer_runs_executors_in_their_own_images_over_a_shared_mount(tmp_path: Path, images, apptainer: str,
                                                                         docker_host: str, sif_cache: Path) -> None:
    used = [images["busybox-module"], images["bash-module"]]
    spec, path = executor_job(tmp_path, "apptainer", two_step(used))
    env = {**os.environ, "GPSTAGE_APPTAINER": apptainer, "DOCKER_HOST": docker_host, "GPSTAGE_SIF_CACHE": str(sif_cache),
           "GPSTAGE_APPTAINER_SCRATCH": str(tmp_path / "scratch")}
    check_two_step_run(spec, run(path, env), used)
    assert not list((tmp_path / "scratch").iterdir()), "a run's scratch dir was left behind"


# ---- process ----------------------------------------------------------------------------------------
@pytest.fixture
def mount_point() -> Iterator[str]:
    """A path of this machine's own for ``mount_at`` (the process runner links it), removed afterwards."""
    path = f"/tmp/gpstage-mnt-{uuid.uuid4().hex[:12]}"
    yield path
    if os.path.islink(path) or os.path.isfile(path):
        os.unlink(path)
    elif os.path.isdir(path):
        os.rmdir(path)


def test_process_links_each_mount_at_to_its_dir_and_removes_the_link(tmp_path: Path, mount_point: str) -> None:
    spec, path = executor_job(tmp_path, "process", two_step(["local", "local"], vol=mount_point), mount_at=mount_point)
    # the executor runs in its workdir's path on this side (a link would show the same files)
    check_two_step_run(spec, run(path), ["local", "local"], pwd=str(work(tmp_path, "")).rstrip("/"))
    assert not os.path.lexists(mount_point), "the mount_at link was left behind"


def test_process_refuses_a_mount_at_that_exists(tmp_path: Path, mount_point: str) -> None:
    os.mkdir(mount_point)
    spec, path = executor_job(tmp_path, "process", [{"image": "local", "command": ["true"]}], mount_at=mount_point)
    assert run(path).returncode == 125
    assert f"mount_at {mount_point} already exists" in status(spec)["message"]
    assert os.path.isdir(mount_point) and not os.path.islink(mount_point)


def test_process_refuses_executors_in_two_images_at_start(tmp_path: Path) -> None:
    spec, path = executor_job(tmp_path, "process", [{"image": "one", "command": ["touch", str(tmp_path / "ran")]},
                                                    {"image": "two", "command": ["true"]}], mount_at=None)
    result = run(path)
    assert result.returncode == 125
    assert result.stderr == ("gpstage-entry: error: the process runner runs every executor in the image it runs in; "
                             "this job's executors use 2 images (one, two) — use the docker or apptainer runner\n")
    assert not (tmp_path / "ran").exists() and not (tmp_path / "work").exists()  # nothing started


def test_an_output_path_in_no_dir_is_refused_before_any_executor_runs(tmp_path: Path) -> None:
    spec, path = executor_job(tmp_path, "process", [{"image": "one", "command": ["touch", str(tmp_path / "ran")]},
                                                    {"image": "one", "command": ["true"], "stderr": "/elsewhere/e.txt"}])
    assert run(path).returncode == 125
    st = status(spec)
    assert (st["state"], st["failed_phase"], st["executors"]) == ("ERROR", "run", [])
    assert st["message"].startswith("executors[1].stderr /elsewhere/e.txt is in none of the job's dirs — ")
    assert not (tmp_path / "ran").exists()


def test_process_one_time_limit_covers_the_whole_sequence(tmp_path: Path) -> None:
    spec, path = executor_job(tmp_path, "process", [{"image": "local", "command": ["sleep", "0.7"]}] * 2
                              + [{"image": "local", "command": ["sleep", "30"]}], mount_at=None, resources={"time_s": 2})
    started = time.monotonic()
    result = run_entry("--spec", path, "--log-push-interval", "0", "--kill-grace", "1", timeout=60)
    assert result.returncode == 142, result.stderr
    assert time.monotonic() - started < 10
    st = status(spec)
    assert (st["state"], st["reason"]) == ("FAILED", "timeout")
    assert [e["exit_code"] for e in st["executors"]] == [0, 0, 128 + signal.SIGTERM]


def test_process_a_cancel_stops_the_running_executor_and_the_sequence(tmp_path: Path) -> None:
    spec, path = executor_job(tmp_path, "process", [{"image": "local", "command": ["sleep", "30"]},
                                                    {"image": "local", "command": ["touch", str(tmp_path / "ran")]}],
                              mount_at=None)
    proc = subprocess.Popen([str(BIN / "gpstage-entry"), "--spec", path, "--log-push-interval", "0"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not (Path(spec.metadata_dir, "status.json").exists() and status(spec)["state"] == "RUNNING"):
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 128 + signal.SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
    st = status(spec)
    assert (st["state"], st["signal"]) == ("CANCELLED", "SIGTERM")
    assert [e["exit_code"] for e in st["executors"]] == [128 + signal.SIGTERM]
    assert not (tmp_path / "ran").exists()


def test_a_commit_tag_is_refused_for_a_sequence_of_executors(tmp_path: Path) -> None:
    from container_entry.commit import commit_reference
    from gpstage.errors import BadInput

    spec, _ = executor_job(tmp_path, "docker", [{"image": "one", "command": ["true"]}])
    with pytest.raises(BadInput, match="sequence of executors"):
        commit_reference("registry.example.org/gp/x:1", spec)
