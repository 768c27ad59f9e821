"""Fixtures on real services: the S3 server (moto) started by scripts/services.py, a bucket per test.

Nothing here skips: a service that cannot be started fails the tests that need it (docs/design.md §17).
Every test talks to 127.0.0.1 only; the AWS environment is replaced by dummy credentials so that no
request can reach a real cloud.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

# dockerd + images, Batch, HPC, GCS + Azure
pytest_plugins = ["fixtures_docker", "fixtures_batch", "fixtures_hpc", "fixtures_clouds", "wrapper_helpers",
                  "fixtures_pairs"]

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ROOT / "scripts" / "services.py"
sys.path.insert(0, str(ROOT))  # examples/ (the sample module) is shared by the tests and the demo
# The entry bundle the images fixture builds and the container launchers mount by default
# (docs/entry-bundle.md): under images/.cache, never the user's ~/.local/share; subprocesses inherit it.
os.environ["GPSTAGE_BUNDLE_DIR"] = str(ROOT / "images" / ".cache" / "entry-bundle")

# Storage every job-level test runs on; the entry's tests also run on ALL_STORAGE (gs, az).
JOB_STORAGE = ["file", "nfs", "s3"]
ALL_STORAGE = [*JOB_STORAGE, "gs", "az"]


def _services(*args: str) -> str:
    proc = subprocess.run([sys.executable, str(SERVICES), *args], capture_output=True, text=True, timeout=300, check=False)
    if proc.returncode:  # the reason (a failed apt or npm install, a port) is in its stderr
        raise RuntimeError(f"scripts/services.py {' '.join(args)} failed (exit {proc.returncode}):\n{proc.stderr}")
    return proc.stdout


def _env_values() -> dict[str, str]:
    return dict(line.split("=", 1) for line in _services("env").splitlines() if "=" in line)


@pytest.fixture(scope="session")
def service_env(request: pytest.FixtureRequest):
    """Start services on demand (idempotent); stop at the end those this session started itself."""
    started: list[str] = []

    def need(name: str) -> dict[str, str]:
        before = _env_values()
        _services("start", name)
        after = _env_values()
        if before.keys() != after.keys():
            started.append(name)
        return after

    yield need
    for name in started:
        _services("stop", name)


@pytest.fixture(autouse=True)
def isolated_state(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test its own job record store, cache dir and an empty settings file: no test sees another's
    jobs or cached manifests, nor the settings of the user running the tests (CLI processes inherit the same variables).
    Outside ``tmp_path``, which tests list."""
    home = tmp_path_factory.mktemp("gpstage-home")
    state = home / "state"
    config = home / "config.toml"
    config.write_text("")
    monkeypatch.setenv("GPSTAGE_STATE_DIR", str(state))
    monkeypatch.setenv("GPSTAGE_CONFIG", str(config))
    monkeypatch.setenv("GPSTAGE_CACHE_DIR", str(home / "cache"))
    return state


@pytest.fixture(scope="session", autouse=True)
def _hermetic_aws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Dummy credentials, no instance metadata, no user config: nothing leaves this machine."""
    saved = dict(os.environ)
    empty = tmp_path_factory.mktemp("aws") / "none"
    for k in list(os.environ):
        if k.startswith("AWS_"):
            del os.environ[k]
    os.environ.update(
        AWS_ACCESS_KEY_ID="gpstage-test-key", AWS_SECRET_ACCESS_KEY="gpstage-test-secret",
        AWS_DEFAULT_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true",
        AWS_CONFIG_FILE=str(empty), AWS_SHARED_CREDENTIALS_FILE=str(empty),
    )
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="session")
def s3_endpoint(_hermetic_aws: None, service_env) -> str:
    endpoint = service_env("s3")["GPSTAGE_TEST_S3_ENDPOINT"]
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    return endpoint


@pytest.fixture(scope="session")
def s3_client(s3_endpoint: str):
    import boto3

    return boto3.client("s3", endpoint_url=s3_endpoint)


@pytest.fixture
def bucket(s3_client) -> Iterator[str]:
    """A fresh bucket, emptied and removed after the test."""
    name = f"gpstage-{uuid.uuid4().hex[:20]}"
    s3_client.create_bucket(Bucket=name)
    yield name
    for page in s3_client.get_paginator("list_objects_v2").paginate(Bucket=name):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", ())]
        if keys:
            s3_client.delete_objects(Bucket=name, Delete={"Objects": keys})
    s3_client.delete_bucket(Bucket=name)


@pytest.fixture(params=JOB_STORAGE)
def job_storage_root(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A storage root for a whole job: a copy on local disk, a shared file system (``nfs:///``: staging
    is a no-op), or an S3 bucket on the moto server."""
    if request.param == "file":
        return f"file://{tmp_path}/storage root"
    if request.param == "nfs":
        return "nfs:///"
    if request.param == "gs":
        return f"gs://{request.getfixturevalue('gcs_bucket')}/gp"
    if request.param == "az":
        return f"az://{request.getfixturevalue('azure_container')}/gp"
    return f"s3://{request.getfixturevalue('bucket')}/gp"


@pytest.fixture
def cli_env() -> dict[str, str]:
    """The environment for running the ``gpstage`` CLI as a subprocess."""
    return dict(os.environ)


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / "gpstage"
    return subprocess.run([str(exe), *args], capture_output=True, text=True, env=env, timeout=timeout)
