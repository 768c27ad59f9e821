"""The launcher conformance class: every launcher+runner pair passes the same tests (docs/design.md §7).

A later backend adds its pair to ``PAIRS`` (and the fixtures it needs to ``pair_settings``); it does
not add tests. Jobs run the sample GenePattern-style module; status, logs and cancel are also asked
from a second process (the CLI), as the GenePattern server does.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from container_entry.dockerutil import LABEL_JOB
from examples.sample_job import expected_counts, lay_out_job
from gpstage.errors import BadInput
from gpstage.launching import get_launcher
from gpstage.records import RecordStore
from gpstage.spec import JobSpec, Role
from gpstage.stage import same_path
from tests.conftest import run_cli
from tests.jobs import stored, stored_json

pytestmark = pytest.mark.timeout(180)

PAIRS = ["local+process", "local+docker", "docker+process", "docker+docker", "batch+process", "batch+docker",
         "local+apptainer", "slurm+apptainer", "slurm+process"]


@dataclass
class Pair:
    launcher: str
    settings: dict[str, Any]
    image: str | None = None  # the module's image


@pytest.fixture(params=PAIRS)
def pair(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Pair:
    launcher, runner = request.param.split("+")
    settings: dict[str, Any] = {"runner": runner, "poll_interval": 0.2, "log_push_interval": 1}
    if request.param == "local+process":
        return Pair(launcher, settings)
    if launcher == "slurm" or runner == "apptainer":  # the shared-server deployment: Slurm, Apptainer, a SIF cache
        images = request.getfixturevalue("images")
        monkeypatch.setenv("DOCKER_HOST", request.getfixturevalue("docker_host"))  # the SIF is made from the local image
        monkeypatch.setenv("GPSTAGE_APPTAINER", request.getfixturevalue("apptainer"))
        monkeypatch.setenv("GPSTAGE_SIF_CACHE", str(request.getfixturevalue("sif_cache")))
        if launcher == "slurm":
            monkeypatch.setenv("SLURM_CONF", request.getfixturevalue("slurm_conf"))
            settings = {**settings, "poll_interval": 0.3, "staging_grace_s": 60}
        return Pair(launcher, settings, images["bash-module"])
    if launcher == "batch":  # a local Batch API that runs real containers on the private dockerd
        q = request.getfixturevalue("batch_queue")
        settings = {**settings, "poll_interval": 0.3, "job_queue": q["queue"], "endpoint": q["endpoint"],
                    "credentials_file": q["credentials_file"], "staging_grace_s": 60, "cancel_poll_interval": 0.5}
        if runner == "process":  # the entry in the module's image (gpstage/runtime)
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
    if launcher == "docker" and runner == "process":  # docker+process: the module's image contains the entry
        return Pair(launcher, {**settings, "docker_host": docker_host, "network": "host"}, images["runtime"])
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


def cli_json(*args: str) -> tuple[int, dict]:
    result = run_cli(*args, "--json", env=dict(os.environ))
    return result.returncode, json.loads(result.stdout)


def wait_for(predicate, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.1)


class TestLauncherConformance:
    def test_sample_module_succeeds_with_identical_outputs(self, tmp_path: Path, pair, job_storage_root: str) -> None:
        name, settings = pair.launcher, pair.settings
        spec = job(tmp_path, job_storage_root, pair)
        result = get_launcher(name, settings).submit(spec).wait(timeout=120)
        assert (result.state.value, result.exit_code) == ("SUCCEEDED", 0), result.message
        counts = Path(spec.workdir, "counts.txt")
        assert counts.read_text() == expected_counts()
        assert stored(spec, Role.WORKDIR, "counts.txt") == counts.read_bytes()
        assert Path(spec.dir(Role.TASKLIB).path, ".cache/last_run.txt").read_text() == "last input: words.txt\n"
        assert sorted(result.outputs) == sorted([str(counts), str(Path(spec.workdir, "results/summary.txt"))])
        assert "wordcount: reading" in Path(result.stdout).read_text()
        assert "wordcount: warning" in Path(result.stderr).read_text()
        assert json.loads(Path(result.exit_code_file).read_text()) == {"exit_code": 0}

    def test_exit_code_3_is_failed_everywhere(self, tmp_path: Path, pair, job_storage_root: str) -> None:
        name, settings = pair.launcher, pair.settings
        spec = job(tmp_path, job_storage_root, pair, exit_code=3)
        spec_file = tmp_path / "job.json"
        spec_file.write_text(spec.to_json())
        sets = [arg for k, v in settings.items() for arg in ("--set", f"{k}={v}")]
        code, doc = cli_json("run", str(spec_file), "--launcher", name, *sets)
        assert code == 3
        assert (doc["state"], doc["exit_code"], doc["launcher"], doc["job_id"]) == ("FAILED", 3, name, spec.job_id)
        for key in ("backend_id", "stdout", "stderr", "outputs", "exit_code_file"):
            assert key in doc
        assert RecordStore().load(spec.job_id).exit_code == 3
        assert stored_json(spec, "exit_code.txt") == {"exit_code": 3}
        assert json.loads(Path(doc["exit_code_file"]).read_text()) == {"exit_code": 3}

    def test_cancel_from_another_process(self, tmp_path: Path, pair) -> None:
        name, settings = pair.launcher, pair.settings
        spec = job(tmp_path, f"file://{tmp_path}/store", pair, sleep_s=120)
        handle = get_launcher(name, settings).submit(spec)
        wait_for(lambda: b"sleeping" in b"".join(handle.launcher.logs(spec.job_id)))
        started = time.monotonic()
        code, doc = cli_json("cancel", spec.job_id)
        assert code == 0 and doc["state"] == "CANCELLED", doc
        assert time.monotonic() - started < 10
        assert handle.status().state.value == "CANCELLED"

    def test_status_and_logs_from_another_process(self, tmp_path: Path, pair) -> None:
        name, settings = pair.launcher, pair.settings
        spec = job(tmp_path, f"file://{tmp_path}/store", pair, sleep_s=3)
        handle = get_launcher(name, settings).submit(spec)
        wait_for(lambda: cli_json("status", spec.job_id)[1]["state"] == "RUNNING")
        logs = run_cli("logs", spec.job_id, "--follow", env=dict(os.environ))
        assert logs.returncode == 0 and "wordcount: sleeping 3s" in logs.stdout and "done, exit code 0" in logs.stdout
        assert "wordcount: warning" in run_cli("logs", spec.job_id, "--stderr", env=dict(os.environ)).stdout
        assert "stage-in: done" in run_cli("logs", spec.job_id, "--entry", env=dict(os.environ)).stdout
        code, doc = cli_json("wait", spec.job_id)
        assert (code, doc["state"]) == (0, "SUCCEEDED")
        assert handle.status().state.value == "SUCCEEDED"

    def test_concurrent_jobs_share_nothing_and_max_parallel_holds(self, tmp_path: Path, pair) -> None:
        name, settings = pair.launcher, pair.settings
        limit = {"max_parallel": 1} if "max_parallel" in get_launcher(name, settings).Settings.model_fields else {}
        launcher = get_launcher(name, {**settings, **limit})
        specs = [job(tmp_path, f"file://{tmp_path}/store", pair, name=f"c{i}", sleep_s=1) for i in range(3)]
        handles = [launcher.submit(s) for s in specs]
        results = [h.wait(timeout=120) for h in handles]
        assert all(r.state.value == "SUCCEEDED" for r in results)
        spans = sorted((stored_json(s, "status.json")["started_at"], stored_json(s, "status.json")["ended_at"]) for s in specs)
        for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
            assert not limit or end <= start, f"two jobs ran at once with max_parallel=1: {spans}"
        assert len({r.workdir for r in results}) == 3
        for s in specs:
            assert Path(s.workdir, "counts.txt").read_text() == expected_counts()

    def test_live_job_id_is_refused(self, tmp_path: Path, pair) -> None:
        name, settings = pair.launcher, pair.settings
        spec = job(tmp_path, f"file://{tmp_path}/store", pair, sleep_s=60)
        launcher = get_launcher(name, settings)
        handle = launcher.submit(spec)
        with pytest.raises(BadInput, match="still"):
            launcher.submit(spec)
        spec_file = tmp_path / "job.json"
        spec_file.write_text(spec.to_json())
        assert run_cli("run", str(spec_file), "--detach", env=dict(os.environ)).returncode == 2
        assert handle.cancel().state.value == "CANCELLED"

    def test_clean_removes_the_jobs_own_dirs_and_nothing_else(self, tmp_path: Path, pair, job_storage_root: str) -> None:
        name, settings = pair.launcher, pair.settings
        spec = job(tmp_path, job_storage_root, pair)
        launcher = get_launcher(name, settings)
        assert launcher.submit(spec).wait(timeout=120).state.value == "SUCCEEDED"
        code, doc = cli_json("clean", spec.job_id)
        assert code == 0
        copies = [d for d in spec.dirs if not same_path(spec, d)]
        assert sorted(doc["removed"]) == sorted(spec.url_of(d) for d in copies
                                                if d.role in (Role.WORKDIR, Role.METADATA, Role.INPUTS))
        with pytest.raises(BadInput):
            RecordStore().load(spec.job_id)
        assert Path(spec.workdir, "counts.txt").exists()  # the server's own copy stays
        if copies:
            assert stored(spec, Role.TASKLIB, "wordcount.sh")  # shared dirs stay on storage
            assert stored(spec, Role.LIBRARIES, "stopwords.txt")
            with pytest.raises(Exception, match="not found|does not exist"):
                stored(spec, Role.WORKDIR, "counts.txt")
