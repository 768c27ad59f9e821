"""A recognisable fake secret as the S3 secret key: while the job runs and after it ended, it appears
in no process's argv, no log, no status.json, no job record, and nothing stored on S3 (the spec
included) — it only ever lives in the environment of gpstage's own processes."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import pytest

from examples.sample_job import lay_out_job
from gpstage.launching import get_launcher
from gpstage.states import JobState

pytestmark = pytest.mark.timeout(180)


def argv_of_every_process() -> list[bytes]:
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            out.append(Path(f"/proc/{pid}/cmdline").read_bytes())
        except OSError:
            pass
    return out


def test_the_secret_appears_nowhere(tmp_path: Path, bucket: str, s3_client, isolated_state: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    secret = f"GPSTAGE-FAKE-SECRET-{uuid.uuid4().hex}"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)  # the server does not check signatures: any secret works
    spec = lay_out_job(tmp_path / "srv", f"s3://{bucket}/gp", sleep_s=3)
    handle = get_launcher("local", {"poll_interval": 0.2, "log_push_interval": 0.5}).submit(spec)
    seen_running = False
    while not handle.status().state.terminal:
        seen_running |= handle.status().state is JobState.RUNNING
        assert not [a for a in argv_of_every_process() if secret.encode() in a], "the secret is in a process's argv"
        time.sleep(0.2)
    result = handle.wait(timeout=60)
    assert result.ok and seen_running
    leaks = []
    for root in (tmp_path, isolated_state):
        for path in root.rglob("*"):
            if path.is_file() and secret.encode() in path.read_bytes():
                leaks.append(str(path))
    for page in s3_client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", ()):
            if secret.encode() in s3_client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read():
                leaks.append(f"s3://{bucket}/{obj['Key']}")
    assert not leaks, f"the secret leaked into {leaks}"
    assert any(isolated_state.rglob("record.json")) and any(isolated_state.rglob("entry.log"))  # they were scanned
