"""Wrapper mode (``docker+docker``, ``batch+docker``) on the real private dockerd and moto's S3 and Batch,
beyond the launcher conformance class: the wrapper behaves exactly as direct mode (``local+docker``);
the module can neither outlive its entry nor reach the docker socket; Batch cancel is cooperative;
nothing is left behind. Commit-and-push: tests/test_commit_push.py.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import time
from pathlib import Path

import pytest

from container_entry.dockerutil import LABEL_JOB, LABEL_STAGING
from examples.sample_job import expected_counts, lay_out_job
from gpstage.spec import Role
from tests.jobs import stored, stored_json
from tests.wrapper_helpers import batch_wrapper, direct, sample, tree, unique, wrapper

pytestmark = [pytest.mark.timeout(300), pytest.mark.usefixtures("nothing_left")]


# ---- wrapper mode is direct mode, seen from outside --------------------------------------------------
@pytest.mark.parametrize("outcome", ["0", "3", "signal"])
@pytest.mark.parametrize("storage", ["file", "s3"])
def test_wrapper_gives_what_direct_mode_gives(tmp_path: Path, storage: str, outcome: str, images, docker_host: str,
                                              request: pytest.FixtureRequest) -> None:
    root = f"s3://{request.getfixturevalue('bucket')}" if storage == "s3" else f"file://{tmp_path}/store"
    results = {}
    for mode in ("direct", "wrapper"):
        spec = sample(tmp_path / mode, f"{root}/{mode}", unique(f"{mode[0]}"), images["bash-module"], outcome)
        launcher = direct() if mode == "direct" else wrapper(docker_host, images)
        result = launcher.submit(spec).wait(timeout=120)
        status = stored_json(spec, "status.json")
        base = str(tmp_path / mode)
        results[mode] = {
            "record": (result.state.value, result.exit_code, result.reason, result.message),
            "status": {k: status[k] for k in ("state", "exit_code", "reason", "signal", "message")},
            "exit_code.txt": json.loads(Path(result.exit_code_file).read_text()),
            "stdout": Path(result.stdout).read_text().replace(base, "BASE"),
            "stderr": Path(result.stderr).read_text().replace(base, "BASE"),
            "workdir": tree(spec.workdir, spec.metadata_dir),
            "tasklib": tree(spec.dir(Role.TASKLIB).path, ""),
            "entry log": stored(spec, Role.METADATA, "gpstage-entry.log").decode(),
        }
    d, w = results["direct"], results["wrapper"]
    expected = {"0": ("SUCCEEDED", 0), "3": ("FAILED", 3), "signal": ("FAILED", 137)}[outcome]
    assert d["record"][:2] == expected, d["record"]
    for key in ("record", "status", "exit_code.txt", "stdout", "stderr", "workdir", "tasklib"):
        assert w[key] == d[key], key
    assert d["workdir"]["counts.txt"].decode() == expected_counts()
    assert "wordcount: reading BASE/gp/users/test user/uploads/words.txt" in w["stdout"]
    assert "wordcount: warning" in w["stderr"]
    assert "wrapper mode: 4 dir(s) staged under" in w["entry log"] and "removed the staging dir" not in w["entry log"]


def test_module_cannot_reach_the_docker_socket_nor_the_storage_secret(tmp_path: Path, images, docker_host: str,
                                                                       bucket: str) -> None:
    spec = lay_out_job(tmp_path / "srv", f"s3://{bucket}/gp", job_id=unique("w"), image=images["bash-module"])
    Path(spec.executable_path).write_text("for s in /var/run/docker.sock /run/docker.sock; do [ -e $s ] && echo SOCKET $s; done\n"
                                          "env\nmount\n")
    result = wrapper(docker_host, images).submit(spec).wait(timeout=120)
    assert result.ok, result.message
    out = Path(result.stdout).read_text()
    assert "SOCKET" not in out and "docker.sock" not in out
    assert os.environ["AWS_SECRET_ACCESS_KEY"] not in out and "AWS_" not in out and "DOCKER_" not in out
    assert f"WORKING_DIR={spec.workdir}" in out


def test_the_module_dies_with_its_entry_and_cleanup_removes_everything(tmp_path: Path, images, docker_host: str,
                                                                       docker_client) -> None:
    """An entry killed hard (SIGKILL: no chance to clean up) takes its module's container down with it;
    the launcher's cleanup then removes what is left (the module's stopped container, the staging volume)."""
    spec = lay_out_job(tmp_path / "srv", f"file://{tmp_path}/store", job_id=unique("w"), image=images["bash-module"],
                       sleep_s=120)
    launcher = wrapper(docker_host, images)
    handle = launcher.submit(spec)
    deadline = time.monotonic() + 60
    while not (modules := docker_client.containers.list(filters={"label": f"{LABEL_JOB}={spec.job_id}", "status": "running"})) \
            or len(modules) < 2:
        assert time.monotonic() < deadline, "the module's container never started"
        time.sleep(0.2)
    module = next(c for c in modules if c.labels.get("org.gpstage.role") == "module")
    assert LABEL_STAGING in module.labels
    docker_client.containers.get(handle.status().backend_id).kill()  # SIGKILL to the entry
    deadline = time.monotonic() + 15
    while True:
        module.reload()
        if module.status != "running":
            break
        assert time.monotonic() < deadline, "the module outlived its entry"
        time.sleep(0.1)
    assert module.attrs["State"]["ExitCode"] == 137
    record = handle.status()
    assert (record.state.value, record.exit_code) == ("ERROR", 125)  # the entry could not record anything
    assert not docker_client.containers.list(all=True, filters={"label": f"{LABEL_JOB}={spec.job_id}"})
    assert not docker_client.volumes.list(filters={"label": f"{LABEL_JOB}={spec.job_id}"})


# ---- batch+docker: cooperative cancel, staging dirs -------------------------------------------------
def test_batch_cancel_is_recorded_by_the_entry_which_cleans_up(tmp_path: Path, images, docker_host: str, batch_queue,
                                                               staging_dir: Path) -> None:
    spec = lay_out_job(tmp_path / "srv", f"file://{tmp_path}/store", job_id=unique("w"), image=images["bash-module"],
                       sleep_s=120)
    launcher = batch_wrapper(batch_queue, docker_host, images, staging_dir)
    handle = launcher.submit(spec)
    deadline = time.monotonic() + 60
    while b"sleeping" not in b"".join(launcher.logs(spec.job_id)):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert any(staging_dir.iterdir()), "the job stages under staging_dir"
    started = time.monotonic()
    record = handle.cancel()
    assert record.state.value == "CANCELLED" and time.monotonic() - started < 15
    status = stored_json(spec, "status.json")  # written by the entry itself, not inferred by the launcher
    assert (status["state"], status["exit_code"], status["signal"]) == ("CANCELLED", 143, "SIGTERM")
    assert "cancel requested on storage" in stored(spec, Role.METADATA, "gpstage-entry.log").decode()
    assert not list(staging_dir.iterdir())


def test_batch_entry_sweeps_the_staging_dir_of_a_dead_entry(tmp_path: Path, images, docker_host: str, batch_queue,
                                                            staging_dir: Path, docker_client) -> None:
    """A wrapper that died (SIGKILL) left its staging dir and its module's stopped container: the next
    wrapper on the node removes both (the dead one's lock is free); a live one's is never touched."""
    dead = staging_dir / "dead-job-0123"
    (dead / "opt/gp/jobResults/1").mkdir(parents=True)
    (dead / "opt/gp/jobResults/1/counts.txt").write_text("left over\n")
    (dead / ".gpstage-staging.lock").write_text("")
    os.utime(dead / ".gpstage-staging.lock", (time.time() - 3600, time.time() - 3600))
    leftover = docker_client.containers.create(images["bash-module"], ["true"], labels={LABEL_STAGING: str(dead)})
    live = staging_dir / "live-job-4567"
    live.mkdir()
    import fcntl

    with open(live / ".gpstage-staging.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        os.utime(live / ".gpstage-staging.lock", (time.time() - 3600, time.time() - 3600))
        spec = lay_out_job(tmp_path / "srv", f"file://{tmp_path}/store", job_id=unique("w"), image=images["bash-module"])
        result = batch_wrapper(batch_queue, docker_host, images, staging_dir).submit(spec).wait(timeout=120)
        assert result.ok, result.message
        assert not dead.exists()
        assert live.exists()
    shutil.rmtree(live)
    with pytest.raises(Exception, match="No such container|404"):
        docker_client.containers.get(leftover.id)
    assert "removed the stale staging dir" in stored(spec, Role.METADATA, "gpstage-entry.log").decode()


# ---- what the wrapper costs ---------------------------------------------------------------------------
def test_wrapper_overhead_on_an_empty_job(tmp_path: Path, images, docker_host: str, bucket: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """Wall time from submit to collected result of a job whose exec.sh does nothing, direct (local+docker)
    and in the wrapper (docker+docker), on a shared file system and on S3; median of 3 after a warm-up."""
    rows = []
    for storage in ("nfs:///", f"s3://{bucket}/gp"):
        times: dict[str, list[float]] = {"direct": [], "wrapper": []}
        for i in range(4):
            for mode in ("direct", "wrapper"):
                spec = lay_out_job(tmp_path / f"{mode}{i}{len(rows)}", storage, job_id=unique(mode[0]),
                                   image=images["bash-module"])
                Path(spec.executable_path).write_text("true\n")
                launcher = direct() if mode == "direct" else wrapper(docker_host, images)
                started = time.monotonic()
                result = launcher.submit(spec).wait(timeout=120)
                elapsed = time.monotonic() - started
                assert result.ok, result.message
                if i:  # the first round warms caches (images, python imports)
                    times[mode].append(elapsed)
        d, w = statistics.median(times["direct"]), statistics.median(times["wrapper"])
        rows.append((storage.split(":")[0], d, w))
    with capsys.disabled():
        print("\n[wrapper overhead, empty job, median of 3]")
        for storage, d, w in rows:
            print(f"  {storage:4} direct (local+docker) {d:.2f} s   wrapper (docker+docker) {w:.2f} s   extra {w - d:+.2f} s")
    for _, d, w in rows:
        assert w - d < 5, "the wrapper costs more than a container start and a Python start-up"


def test_entry_refuses_a_commit_it_cannot_make_and_a_bad_staging_root(tmp_path: Path) -> None:
    from tests.jobs import run_entry, write_spec

    spec = lay_out_job(tmp_path / "srv", "nfs:///", job_id=unique("w"), module={"name": "wc"}, image="gpstage/bash-module:1")
    path = write_spec(spec, tmp_path / "job.json")
    done = run_entry("--spec", path, "--runner", "process", "--commit-tag", "127.0.0.1:5001/gp/wc:1")
    assert done.returncode == 125 and "needs a runner that starts the module's image" in done.stderr
    done = run_entry("--spec", path, "--runner", "docker", "--commit-tag", "127.0.0.1:5001/gp/")
    assert done.returncode == 125 and "no tag" in done.stderr  # module.version missing: refused before the run
    done = run_entry("--spec", path, "--runner", "process", env={**os.environ, "GPSTAGE_STAGING_ROOT": "relative/dir"})
    assert done.returncode == 125 and "GPSTAGE_STAGING_ROOT" in done.stderr
    assert not Path(spec.metadata_dir, "status.json").exists()  # nothing ran
