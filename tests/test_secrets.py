"""A recognisable fake secret as the S3 secret key: while the job runs and after it ended, it appears
in no process's argv, no log, no status.json, no job record, and nothing stored on S3 (the spec
included) — it only ever lives in the environment of gpstage's own processes."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from examples.sample_job import lay_out_job
from gpstage.launching import get_launcher
from gpstage.states import JobState
from tests.fixtures_pairs import job

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


def secret_leaks(secret: str, roots: list[Path], bucket: str, s3_client) -> list[str]:
    leaks = [str(p) for root in roots for p in root.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
    for page in s3_client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", ()):
            if secret.encode() in s3_client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read():
                leaks.append(f"s3://{bucket}/{obj['Key']}")
    return leaks


def what_an_operator_sees(pair_name: str, backend_id: str, docker_client, batch_client, slurm_conf: str | None) -> str:
    """Everything the backend shows about the running job: docker inspect of every container, the Batch
    job's description, Slurm's view of the job and the environment slurmctld saved for it."""
    seen = [json.dumps(c.attrs) for c in docker_client.containers.list(all=True)]
    if pair_name.startswith("batch"):
        seen.append(json.dumps(batch_client.describe_jobs(jobs=[backend_id]), default=str))
    if pair_name.startswith("slurm"):
        env = {**os.environ, "SLURM_CONF": slurm_conf or ""}
        seen.append(subprocess.run(["scontrol", "show", "job", "-dd", backend_id], capture_output=True, text=True,
                                   env=env, check=False, timeout=30).stdout)
        state = Path(slurm_conf or "").parent / "state"
        seen += [p.read_bytes().decode(errors="replace") for p in state.rglob("*") if p.is_file()]
    return "\n".join(seen)


@pytest.mark.parametrize("name", ["docker+process", "docker+process:copy", "docker+docker", "slurm+process",
                                  "batch+process"])
def test_no_secret_in_what_an_operator_can_inspect(tmp_path: Path, bucket: str, s3_client, isolated_state: Path,
                                                   pair_for, docker_client, monkeypatch: pytest.MonkeyPatch,
                                                   request: pytest.FixtureRequest, name: str) -> None:
    """The credentials reach the entry as one file (design.md §11): the job works, and the secret is in no
    container's inspect, Batch description, Slurm job or saved environment, record, log or object."""
    secret = f"GPSTAGE-FAKE-SECRET-{uuid.uuid4().hex}"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    pair_name, _, delivery = name.partition(":")
    pair = pair_for(pair_name)
    settings = {**pair.settings, **({"credentials": delivery} if delivery else {})}
    spec = job(tmp_path, f"s3://{bucket}/gp", pair, sleep_s=3)
    Path(spec.executable_path).write_text(Path(spec.executable_path).read_text() + "\nenv > module-env.txt\n")
    handle = get_launcher(pair.launcher, settings).submit(spec)
    batch_client = request.getfixturevalue("batch_queue")["client"] if pair.launcher == "batch" else None
    slurm_conf = os.environ.get("SLURM_CONF")
    looked = False
    while not (record := handle.status()).state.terminal:
        if record.state is JobState.RUNNING:
            assert secret not in what_an_operator_sees(name, record.backend_id, docker_client, batch_client, slurm_conf)
            looked = True
        time.sleep(0.3)
    result = handle.wait(timeout=60)
    assert result.ok and looked, result.message
    assert "AWS_SECRET_ACCESS_KEY" not in Path(spec.workdir, "module-env.txt").read_text()
    assert not secret_leaks(secret, [tmp_path, isolated_state], bucket, s3_client)


def test_the_credentials_file_carries_every_scheme(tmp_path: Path) -> None:
    """S3 keys, a GCS key file's CONTENT, Azure's connection string: written 0600, read back on the other side."""
    from gpstage.credfile import gather, load, write

    key = tmp_path / "sa.json"
    key.write_text('{"type": "service_account", "private_key": "FAKE"}')
    env = {"AWS_ACCESS_KEY_ID": "AKIAFAKE", "AWS_SECRET_ACCESS_KEY": "s3cr3t", "GOOGLE_APPLICATION_CREDENTIALS": str(key),
           "AZURE_STORAGE_CONNECTION_STRING": "AccountName=a;AccountKey=k", "PATH": "/bin", "AWS_ENDPOINT_URL": "http://x"}
    doc = gather(env)
    assert set(doc["env"]) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AZURE_STORAGE_CONNECTION_STRING"}
    path = tmp_path / "credentials.json"
    write(str(path), doc)
    assert path.stat().st_mode & 0o777 == 0o600
    key.unlink()  # the other side has only the file
    got: dict[str, str] = {}
    names = load(str(path), got)
    assert names == {*doc["env"], "GOOGLE_APPLICATION_CREDENTIALS"}
    copied = Path(got["GOOGLE_APPLICATION_CREDENTIALS"])
    assert copied.read_text().endswith('"FAKE"}') and copied.stat().st_mode & 0o777 == 0o600
    assert got["AZURE_STORAGE_CONNECTION_STRING"] == "AccountName=a;AccountKey=k"
