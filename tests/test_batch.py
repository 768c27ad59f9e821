"""The batch launcher beyond the conformance class: legacy runS3OnBatch.sh mode end to end, job
definitions reused, time limits end FAILED (never SUCCEEDED: GenePattern's GP-9100), status of many
jobs in one describe_jobs call — on a local Batch API that runs real containers."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from examples.sample_job import expected_counts, lay_out_job
from gpstage.launching import get_launcher
from gpstage.records import JobRecord, RecordStore
from gpstage.spec import JobSpec, Role
from gpstage.states import JobState
from launchers.base import BackendState
from launchers.batch import BatchLauncher, batch_name
from tests.jobs import stored

pytestmark = pytest.mark.timeout(300)


def launcher(batch_queue: dict[str, Any], **overrides: Any) -> BatchLauncher:
    settings = {"job_queue": batch_queue["queue"], "endpoint": batch_queue["endpoint"], "poll_interval": 0.3,
                "credentials_file": batch_queue["credentials_file"], "staging_grace_s": 60, "log_push_interval": 1, **overrides}
    return get_launcher("batch", settings)


@pytest.mark.parametrize("entry", ["bundle", "image"])
def test_legacy_five_argument_mode_end_to_end(tmp_path: Path, batch_queue, bucket: str, images, entry: str) -> None:
    """GenePattern's five arguments: to the mounted entry bundle in a module image that has no runS3OnBatch.sh
    (nothing of gpstage), or — entry=image — to the image's own runS3OnBatch.sh (gpstage/runtime's)."""
    image = batch_queue["image"] if entry == "bundle" else images["runtime"]
    spec = lay_out_job(tmp_path / "gp", f"s3://{bucket}", image=image, libraries_in_tasklib=True)
    result = launcher(batch_queue, legacy=True, entry=entry).submit(spec).wait(timeout=180)
    assert result.ok, result.message
    assert Path(spec.workdir, "counts.txt").read_text() == expected_counts()
    assert stored(spec, Role.WORKDIR, "counts.txt").decode() == expected_counts()
    command = batch_queue["client"].describe_jobs(jobs=[result.backend_id])["jobs"][0]["container"]["command"]
    legacy_args = [spec.dir(Role.TASKLIB).path, spec.dir(Role.INPUTS).path, spec.storage_root, spec.workdir,
                   spec.executable_path]
    first = ["/opt/gpstage-entry/bin/bash", "/opt/gpstage-entry/gpstage-entry"] if entry == "bundle" else \
        ["/usr/local/bin/runS3OnBatch.sh"]
    assert command == [*first, *legacy_args]


def test_a_job_definition_is_reused_by_the_next_job_with_the_same_image(tmp_path: Path, batch_queue, bucket: str) -> None:
    """On object storage nothing is mounted, so one definition serves every job of an image and size."""
    specs = [lay_out_job(tmp_path / f"j{i}", f"s3://{bucket}", job_id=f"reuse-{i}", image=batch_queue["image"]) for i in range(2)]
    handles = [launcher(batch_queue).submit(s) for s in specs]  # two launchers: the second finds it on Batch
    results = [h.wait(timeout=180) for h in handles]
    assert all(r.ok for r in results)
    client = batch_queue["client"]
    definitions = {client.describe_jobs(jobs=[r.backend_id])["jobs"][0]["jobDefinition"] for r in results}
    assert len(definitions) == 1
    name = definitions.pop().rsplit("/", 1)[1].split(":")[0]
    assert len(client.describe_job_definitions(jobDefinitionName=name)["jobDefinitions"]) == 1


def test_time_limit_ends_failed_with_142(tmp_path: Path, batch_queue) -> None:
    spec = lay_out_job(tmp_path / "j", "nfs:///", image=batch_queue["image"], sleep_s=60, resources={"time_s": 1})
    result = launcher(batch_queue, kill_grace=1).submit(spec).wait(timeout=180)
    assert (result.state, result.exit_code, result.reason) == (JobState.FAILED, 142, "timeout")


def test_a_backend_timeout_without_a_record_is_failed_142_never_succeeded(tmp_path: Path, batch_queue) -> None:
    """Batch stopped the container at its own limit before the entry could write status.json."""
    spec = lay_out_job(tmp_path / "j", f"file://{tmp_path}/empty-store", image=batch_queue["image"])
    record = JobRecord(job_id=spec.job_id, launcher="batch", runner="process", spec=spec, backend_id="x")
    seen = launcher(batch_queue)._state({"status": "SUCCEEDED", "jobId": "x", "container": {"exitCode": 0},
                                         "statusReason": "Job attempt duration exceeded timeout"})
    assert seen.timed_out
    final = launcher(batch_queue)._final(record, seen)
    assert (final["state"], final["exit_code"]) == (JobState.FAILED, 142)
    assert launcher(batch_queue)._final(record, BackendState(JobState.SUCCEEDED, 0))["state"] is JobState.ERROR


def test_twenty_jobs_are_polled_with_one_describe_jobs_call(tmp_path: Path, batch_queue) -> None:
    batch = launcher(batch_queue)
    specs: list[JobSpec] = []
    for i in range(20):
        spec = lay_out_job(tmp_path / f"j{i}", "nfs:///", job_id=f"many-{i}", image=batch_queue["image"])
        Path(spec.executable_path).write_text("true\n")
        specs.append(spec)
    for spec in specs:
        batch.submit(spec)
    calls: list[str] = []
    batch.client.meta.events.register("before-call.batch.DescribeJobs", lambda **kw: calls.append("describe"))
    records = batch.status_many([s.job_id for s in specs])
    assert len(records) == 20 and calls == ["describe"]
    for spec in specs:
        batch.wait(spec.job_id, timeout=240)
    assert all(RecordStore().load(s.job_id).state is JobState.SUCCEEDED for s in specs)


def test_batch_names_are_sanitised() -> None:
    assert batch_name("gpstage-job 42/ü.x") == "gpstage-job-42-x"
    assert len(batch_name("a" * 300)) == 128
    assert os.path.basename(batch_name("--x--")) == "x"


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_batchs_own_time_limit_ends_failed_142_never_succeeded(tmp_path: Path, batch_queue) -> None:
    """The job has no time_s of its own, so only Batch's attemptDurationSeconds (its 60 s minimum) stops
    it; the local Batch API gives no statusReason, so the launcher tells from the attempt's run time."""
    spec = lay_out_job(tmp_path / "j", "nfs:///", image=batch_queue["image"], sleep_s=600)
    result = launcher(batch_queue, default_time_s=1, staging_grace_s=0).submit(spec).wait(timeout=200)
    assert (result.state, result.exit_code, result.reason) == (JobState.FAILED, 142, "timeout")
    job = batch_queue["client"].describe_jobs(jobs=[result.backend_id])["jobs"][0]
    assert job["timeout"]["attemptDurationSeconds"] == 60 and job["status"] == "FAILED"
