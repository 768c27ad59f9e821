"""The launcher conformance class: every launcher+runner pair passes the same tests (docs/design.md §7).

A later backend adds its pair to ``PAIRS`` (and the fixtures it needs to ``pair_settings``); it does
not add tests. Jobs run the sample GenePattern-style module; status, logs and cancel are also asked
from a second process (the CLI), as the GenePattern server does.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from examples.sample_job import expected_counts
from gpstage.errors import BadInput
from gpstage.launching import get_launcher
from gpstage.records import RecordStore
from gpstage.spec import Role
from gpstage.stage import same_path
from tests.conftest import run_cli
from tests.fixtures_pairs import Pair, job
from tests.jobs import stored, stored_json

pytestmark = pytest.mark.timeout(180)

PAIRS = ["local+process", "local+docker", "docker+process", "docker+docker", "batch+process", "batch+docker",
         "local+apptainer", "slurm+apptainer", "slurm+process"]


@pytest.fixture(params=PAIRS)
def pair(request: pytest.FixtureRequest) -> Pair:
    return request.getfixturevalue("pair_for")(request.param)


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


CLOUD_PAIRS = ["local+process", "local+docker", "docker+process", "docker+docker", "slurm+apptainer", "batch+process"]


@pytest.mark.parametrize("cloud", ["gs", "az"])
@pytest.mark.parametrize("name", CLOUD_PAIRS)
def test_the_sample_module_on_google_and_azure_storage(tmp_path: Path, pair_for, request: pytest.FixtureRequest,
                                                       name: str, cloud: str) -> None:
    """One end-to-end job per launcher+runner pair on the GCS emulator and Azurite, reached from every
    container and node as S3 is (the deeper launcher tests stay on file, nfs and s3)."""
    root = (f"gs://{request.getfixturevalue('gcs_bucket')}/gp" if cloud == "gs"
            else f"az://{request.getfixturevalue('azure_container')}/gp")
    pair = pair_for(name)
    settings = dict(pair.settings)
    if pair.launcher == "batch":  # no job role serves gs/az: a gpstage credentials file on the node
        from gpstage.credfile import gather, write

        write(str(tmp_path / "node-credentials.json"), gather(os.environ) or {"version": 1, "env": {}, "files": {}})
        settings["node_credentials_file"] = str(tmp_path / "node-credentials.json")
    spec = job(tmp_path, root, pair)
    result = get_launcher(pair.launcher, settings).submit(spec).wait(timeout=150)
    assert (result.state.value, result.exit_code) == ("SUCCEEDED", 0), result.message
    assert Path(spec.workdir, "counts.txt").read_text() == expected_counts()
    assert stored(spec, Role.WORKDIR, "counts.txt").decode() == expected_counts()
