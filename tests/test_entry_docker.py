"""gpstage-entry inside the gpstage/runtime image on a real dockerd, against the moto S3 server on the
host's loopback (host networking), called exactly as a GenePattern AWS Batch job definition calls
runS3OnBatch.sh. The container starts with none of the job's files: everything comes from S3."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from examples.sample_job import expected_counts, lay_out_job
from gpstage.spec import Role
from gpstage.stage import stage_in
from tests.jobs import stored, stored_json

pytestmark = pytest.mark.timeout(600)  # the first build of the runtime image is part of this budget


def credential_env() -> dict[str, str]:
    """What the job definition's environment carries (in production the job role replaces the keys)."""
    return {k: os.environ[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL")}


@pytest.mark.parametrize("exit_code", [0, 3])
def test_runS3OnBatch_in_the_runtime_image(tmp_path: Path, bucket: str, s3_endpoint: str, images, run_container,
                                           exit_code: int) -> None:
    spec = lay_out_job(tmp_path / "gp server", f"s3://{bucket}", exit_code=exit_code, libraries_in_tasklib=True)
    stage_in(spec)
    args = [spec.dir(Role.TASKLIB).path, spec.dir(Role.INPUTS).path, f"s3://{bucket}", spec.workdir, spec.executable_path]
    code, logs = run_container(images["runtime"], ["/usr/local/bin/runS3OnBatch.sh", *args], environment=credential_env())
    assert code == exit_code, logs
    assert stored_json(spec, "exit_code.txt") == {"exit_code": exit_code}
    assert stored_json(spec, "status.json")["state"] == ("SUCCEEDED" if exit_code == 0 else "FAILED")
    assert stored(spec, Role.WORKDIR, "counts.txt").decode() == expected_counts()
    assert stored(spec, Role.TASKLIB, ".cache/last_run.txt") == b"last input: words.txt\n"
    assert b"wordcount: reading" in stored(spec, Role.METADATA, "stdout.txt")
    assert b"wordcount: warning" in stored(spec, Role.METADATA, "stderr.txt")
    assert "stage-in: done" in logs  # the entry's log goes to the container's stderr; module output does not
    assert "wordcount:" not in logs
