"""A local AWS Batch API (moto in server mode) that runs each job's container on the private dockerd,
with host networking so jobs reach the S3 server on 127.0.0.1; a compute environment and a queue for
the test session; a credentials FILE for the jobs (docs/design.md §11: never keys in a job's environment)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session")
def batch_queue(service_env, docker_host: str, images, s3_endpoint: str,
                tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    import os

    import boto3

    endpoint = service_env("batch")["GPSTAGE_TEST_BATCH_ENDPOINT"]
    kw = {"endpoint_url": endpoint, "region_name": "us-east-1"}
    batch, iam = boto3.client("batch", **kw), boto3.client("iam", **kw)
    tag = uuid.uuid4().hex[:8]
    role = iam.create_role(RoleName=f"gpstage-batch-{tag}", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    ce = batch.create_compute_environment(computeEnvironmentName=f"gpstage-ce-{tag}", type="UNMANAGED", state="ENABLED",
                                          serviceRole=role)
    queue = batch.create_job_queue(jobQueueName=f"gpstage-q-{tag}", state="ENABLED", priority=1,
                                   computeEnvironmentOrder=[{"order": 1, "computeEnvironment": ce["computeEnvironmentArn"]}])
    creds = Path(tmp_path_factory.mktemp("batch-credentials")) / "credentials"
    creds.write_text(f"[default]\naws_access_key_id = {os.environ['AWS_ACCESS_KEY_ID']}\n"
                     f"aws_secret_access_key = {os.environ['AWS_SECRET_ACCESS_KEY']}\n")
    return {"endpoint": endpoint, "queue": queue["jobQueueName"], "credentials_file": str(creds), "client": batch,
            "image": images["bash-module"]}
