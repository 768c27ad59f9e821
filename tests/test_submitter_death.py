"""The submitter may die anywhere: a later ``status`` / ``wait`` / ``collect`` from a new process reaches a
final, true state, and no job stays QUEUED/STAGING/RUNNING with nothing running for it.

``gpstage run`` is SIGKILLed at each point of a job's life (storage is S3 behind a proxy that sends
bodies slowly, so that stage-in and stage-out take seconds); the kill of a submitter between the
backend's start and the record of its id is made exactly, by giving the record a dead owner.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from examples.sample_job import expected_counts, lay_out_job
from gpstage.launching import get_launcher
from gpstage.procs import start_ticks, this_host
from gpstage.records import JobRecord, Owner, RecordStore
from gpstage.spec import JobSpec, Role
from tests.conftest import run_cli
from tests.faultproxy import FaultProxy
from tests.fixtures_pairs import Pair, job

pytestmark = pytest.mark.timeout(240)
GPSTAGE = str(Path(sys.executable).parent / "gpstage")
BIG = 5 * 2**20  # behind the proxy (1 MiB per 0.2 s, every response at least 0.2 s) a transfer takes 1 s


@pytest.fixture
def slow_s3(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """The CLI's environment with S3 behind a slow network (the entries it starts get the endpoint too)."""
    with FaultProxy(s3_endpoint, rate=0.0, trickle_s=0.2) as proxy:
        yield {**os.environ, "AWS_ENDPOINT_URL": proxy.url}


LAUNCHERS = ["local+process", "docker+process", "batch+process"]


def big_job(tmp_path: Path, bucket: str, script: str, pair: Pair) -> JobSpec:
    spec = job(tmp_path, f"s3://{bucket}/gp", pair)
    Path(spec.dir(Role.INPUTS).path, "big.bin").write_bytes(os.urandom(BIG))
    Path(spec.executable_path).write_text(f"#!/bin/bash\n{script}\n")
    return spec


def record(spec: JobSpec) -> JobRecord | None:
    try:
        return RecordStore().load(spec.job_id)
    except Exception:  # noqa: BLE001 - not written yet
        return None


def kill_run_when(spec: JobSpec, pair: Pair, env: dict[str, str], when: Callable[[JobRecord], bool],
                  tmp_path: Path) -> None:
    """Start ``gpstage run`` on the pair's launcher, SIGKILL it as soon as its record satisfies ``when``."""
    (tmp_path / "job.json").write_text(spec.to_json())
    sets = [arg for k, v in {**pair.settings, "poll_interval": 0.1}.items() for arg in ("--set", f"{k}={v}")]
    proc = subprocess.Popen([GPSTAGE, "run", str(tmp_path / "job.json"), "--launcher", pair.launcher, *sets], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    try:
        while not ((r := record(spec)) is not None and when(r)):
            assert proc.poll() is None, "gpstage run ended before the point to kill it"
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)


def final_from_a_new_process(spec: JobSpec, env: dict[str, str], command: str = "wait") -> dict:
    result = run_cli(command, spec.job_id, "--json", env=env, timeout=180)
    doc = json.loads(result.stdout)
    assert doc["ok"], doc
    return doc


@pytest.mark.parametrize("name", LAUNCHERS)
def test_killed_during_stage_in_is_an_error_with_the_reason(tmp_path: Path, bucket: str, slow_s3: dict, pair_for,
                                                            name: str) -> None:
    spec = big_job(tmp_path, bucket, "exit 0", pair := pair_for(name))
    kill_run_when(spec, pair, slow_s3, lambda r: r.state.value == "STAGING", tmp_path)
    time.sleep(0.3)
    doc = final_from_a_new_process(spec, slow_s3, "status")
    assert (doc["state"], doc["exit_code"]) == ("ERROR", 125)
    assert "submitting process" in doc["message"] and "died while the job was STAGING" in doc["message"]


@pytest.mark.parametrize("name", LAUNCHERS)
def test_killed_right_after_submit_a_new_process_waits_and_collects(tmp_path: Path, bucket: str, pair_for,
                                                                     name: str) -> None:
    spec = job(tmp_path, f"s3://{bucket}/gp", pair := pair_for(name), sleep_s=1)
    kill_run_when(spec, pair, dict(os.environ), lambda r: r.backend_id is not None, tmp_path)
    doc = final_from_a_new_process(spec, dict(os.environ))
    assert (doc["state"], doc["exit_code"], doc["collected"]) == ("SUCCEEDED", 0, True)
    assert Path(spec.workdir, "counts.txt").read_text() == expected_counts()


@pytest.mark.parametrize("name", LAUNCHERS)
def test_killed_during_stage_out_then_two_collects_finish_it_once(tmp_path: Path, bucket: str, slow_s3: dict, pair_for,
                                                                  name: str) -> None:
    spec = big_job(tmp_path, bucket, 'cp "$INPUT_FILES_DIR/big.bin" out.bin', pair := pair_for(name))
    kill_run_when(spec, pair, slow_s3, lambda r: r.state.terminal, tmp_path)  # collect has begun: outputs coming
    assert not record(spec).collected
    with ThreadPoolExecutor(2) as pool:
        docs = list(pool.map(lambda _: final_from_a_new_process(spec, slow_s3, "collect"), range(2)))
    assert all((d["state"], d["collected"]) == ("SUCCEEDED", True) for d in docs)
    assert Path(spec.workdir, "out.bin").read_bytes() == Path(spec.dir(Role.INPUTS).path, "big.bin").read_bytes()
    outs = [t for t in record(spec).transfers if t["phase"] == "out"]
    assert len(outs) == len({(t["role"], t["path"]) for t in outs})  # staged back once, not twice


def dead_owner() -> Owner:
    proc = subprocess.Popen(["sleep", "0"])
    started = start_ticks(proc.pid)
    proc.wait()
    return Owner(pid=proc.pid, host=this_host(), started=started)


def test_a_pid_reused_by_another_process_is_not_the_owner() -> None:
    me = Owner.current()
    assert me.alive()
    assert not Owner(pid=me.pid, host=me.host, started=(me.started or 0) + 1).alive()
    assert not dead_owner().alive()


@pytest.mark.parametrize("started", [True, False])
def test_a_submitter_killed_between_the_start_and_its_record(tmp_path: Path, started: bool) -> None:
    """Exactly at the worst moment: the backend started the entry (or not), the record has no id yet."""
    spec = lay_out_job(tmp_path / "server", f"file://{tmp_path}/store")
    launcher = get_launcher("local", {"poll_interval": 0.1})
    if started:
        launcher.submit(spec)
        backend = RecordStore().job_dir(spec.job_id) / "backend.json"
        deadline = time.monotonic() + 30
        while not backend.exists():  # the worker's account, written first thing
            assert time.monotonic() < deadline
            time.sleep(0.02)
    else:
        from gpstage.records import utcnow
        from gpstage.states import JobState

        RecordStore().create(JobRecord(job_id=spec.job_id, launcher="local", runner="process", state=JobState.QUEUED,
                                       settings=launcher.settings.model_dump(mode="json"), spec=spec,
                                       submitted_at=utcnow()))
    RecordStore().update(spec.job_id, lambda r: (setattr(r, "backend_id", None), setattr(r, "owner", dead_owner())))
    result = launcher.wait(spec.job_id, timeout=120)
    if started:  # found again by the worker's own account, and finished
        assert (result.state.value, result.exit_code) == ("SUCCEEDED", 0)
        assert Path(spec.workdir, "counts.txt").read_text() == expected_counts()
    else:
        assert (result.state.value, result.exit_code) == ("ERROR", 125) and "died" in result.message


NOTEBOOK = """import json, sys
from gpstage.launching import get_launcher
from gpstage.spec import load_spec
get_launcher(sys.argv[1], json.loads(sys.argv[2])).submit(load_spec(sys.argv[3])).wait()
"""


@pytest.mark.parametrize("name", LAUNCHERS)
def test_a_notebook_killed_while_waiting_leaves_a_job_a_new_process_finishes(tmp_path: Path, bucket: str, pair_for,
                                                                              name: str) -> None:
    pair = pair_for(name)
    spec = job(tmp_path, f"s3://{bucket}/gp", pair, sleep_s=2)
    (tmp_path / "job.json").write_text(spec.to_json())
    proc = subprocess.Popen([sys.executable, "-c", NOTEBOOK, pair.launcher, json.dumps(pair.settings),
                             str(tmp_path / "job.json")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not ((r := record(spec)) is not None and r.state.value == "RUNNING"):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    result = get_launcher(pair.launcher, pair.settings).wait(spec.job_id, timeout=120)
    assert (result.state.value, result.exit_code, result.collected) == ("SUCCEEDED", 0, True)
    assert Path(spec.workdir, "counts.txt").read_text() == expected_counts()


@pytest.mark.parametrize("name", ["docker+process", "batch+process"])
def test_a_backend_job_whose_id_was_never_recorded_is_found_again(tmp_path: Path, bucket: str, pair_for,
                                                                  name: str) -> None:
    pair = pair_for(name)
    spec = job(tmp_path, f"s3://{bucket}/gp", pair)
    launcher = get_launcher(pair.launcher, pair.settings)
    started = launcher.submit(spec).status().backend_id
    RecordStore().update(spec.job_id, lambda r: (setattr(r, "backend_id", None), setattr(r, "owner", dead_owner())))
    result = launcher.wait(spec.job_id, timeout=120)
    assert (result.state.value, result.exit_code, result.backend_id) == ("SUCCEEDED", 0, started)
