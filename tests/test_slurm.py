"""Seed deployment 2 on a real one-node Slurm cluster: slurm+apptainer (the module's bash-only image as
a SIF) and slurm+process on a shared file system (nfs:///: nothing copied)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from examples.sample_job import expected_counts, lay_out_job
from gpstage.errors import GpstageError
from gpstage.launching import get_launcher
from gpstage.states import JobState

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def slurm(slurm_conf: str, apptainer: str, docker_host: str, sif_cache: Path, images, monkeypatch: pytest.MonkeyPatch):
    """The environment a site sets for its users (sbatch passes it to the job), and a launcher factory."""
    monkeypatch.setenv("SLURM_CONF", slurm_conf)
    monkeypatch.setenv("GPSTAGE_APPTAINER", apptainer)
    monkeypatch.setenv("GPSTAGE_SIF_CACHE", str(sif_cache))
    monkeypatch.setenv("DOCKER_HOST", docker_host)

    def launcher(runner: str, **settings):
        return get_launcher("slurm", {"runner": runner, "poll_interval": 0.3, "staging_grace_s": 60, **settings})

    return launcher


@pytest.mark.parametrize("runner", ["apptainer", "process"])
def test_the_sample_module_on_slurm(tmp_path: Path, slurm, images, runner: str) -> None:
    spec = lay_out_job(tmp_path / "shared fs", "nfs:///", image=images["bash-module"])
    result = slurm(runner).submit(spec).wait(timeout=180)
    assert result.ok, result.message
    assert Path(spec.workdir, "counts.txt").read_text() == expected_counts()
    assert "wordcount: reading" in Path(result.stdout).read_text()
    assert result.backend_id and result.backend_id.isdigit()


def test_exit_code_and_time_limit_on_slurm(tmp_path: Path, slurm, images) -> None:
    failed = lay_out_job(tmp_path / "a", "nfs:///", job_id="fails", image=images["bash-module"], exit_code=3)
    timed = lay_out_job(tmp_path / "b", "nfs:///", job_id="times-out", image=images["bash-module"], sleep_s=60,
                        resources={"time_s": 1})
    launcher = slurm("apptainer", kill_grace=1)
    handles = [launcher.submit(failed), launcher.submit(timed)]
    results = [h.wait(timeout=180) for h in handles]
    assert (results[0].state, results[0].exit_code) == (JobState.FAILED, 3)
    assert (results[1].state, results[1].exit_code, results[1].reason) == (JobState.FAILED, 142, "timeout")


def test_cancel_a_running_slurm_job(tmp_path: Path, slurm, images) -> None:
    spec = lay_out_job(tmp_path / "c", "nfs:///", image=images["bash-module"], sleep_s=120)
    handle = slurm("apptainer").submit(spec)
    deadline = time.monotonic() + 60
    stdout_txt = Path(spec.metadata_dir, "stdout.txt")
    while "sleeping" not in (stdout_txt.read_text() if stdout_txt.exists() else ""):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    started = time.monotonic()
    assert handle.cancel().state is JobState.CANCELLED
    assert time.monotonic() - started < 30


def test_a_job_cancelled_as_slurm_starts_it_ends_cancelled(tmp_path: Path, slurm, images) -> None:
    """The cancel comes at once: the job is pending, or allocated with its batch step not started, when a
    signal reaches no one; it must still end, not run its 120 s. (Which of the two it meets depends on
    timing: CI once met the second, in a conformance test, and the job ran its whole 60 s.)"""
    spec = lay_out_job(tmp_path / "e", "nfs:///", image=images["bash-module"], sleep_s=120)
    handle = slurm("apptainer").submit(spec)
    started = time.monotonic()
    assert handle.cancel().state is JobState.CANCELLED
    assert time.monotonic() - started < 45


def test_sbatch_missing_partition_is_a_clear_error(tmp_path: Path, slurm, images) -> None:
    spec = lay_out_job(tmp_path / "d", "nfs:///", image=images["bash-module"])
    with pytest.raises(GpstageError, match="sbatch failed"):
        slurm("process", partition="no-such-partition").submit(spec)


def test_a_job_whose_entry_missed_the_signal_is_ended_by_slurm(tmp_path: Path, slurm, images) -> None:
    """The entry's SIGTERM can be lost as the batch step starts (CI saw a job then run its whole 60 s):
    after ``cancel_grace_s`` Slurm ends the job itself, and the record says CANCELLED. Here the entry
    is one that ignores SIGTERM and never records anything."""
    started_file = tmp_path / "deaf-started"
    deaf = tmp_path / "deaf-entry"
    deaf.write_text(f"#!/bin/bash\ntrap '' TERM\ntouch '{started_file}'\nsleep 120\n")
    deaf.chmod(0o755)
    spec = lay_out_job(tmp_path / "g", "nfs:///", image=images["bash-module"], sleep_s=120)
    handle = slurm("process", entry_command=str(deaf), cancel_grace_s=2).submit(spec)
    deadline = time.monotonic() + 60
    while not started_file.exists():  # the batch step runs: the signal reaches it, and it is ignored
        assert time.monotonic() < deadline
        time.sleep(0.2)
    started = time.monotonic()
    record = handle.cancel()
    assert (record.state, record.message) == (JobState.CANCELLED, "cancelled before the entry recorded an end")
    assert time.monotonic() - started < 30
