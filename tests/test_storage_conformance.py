"""The storage conformance class, run against every built-in scheme on real storage."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from gpstage.testing.storage import StorageConformance

BACKENDS = ["file", "nfs", "s3"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def storage_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if backend == "s3":
        bucket = request.getfixturevalue("bucket")
        return f"s3://{bucket}/gp/{uuid.uuid4().hex[:8]}/job dir"
    store = tmp_path / "store"
    store.mkdir()
    return f"{backend}://{store}/job dir"


@pytest.fixture
def plant_unsafe(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[str], None]:
    """s3: an object whose key climbs out with '..'; file/nfs: a symlink pointing out of the tree."""
    outside = tmp_path / "escape.txt"

    def plant(url: str) -> None:
        if backend == "s3":
            bucket, _, prefix = url.removeprefix("s3://").partition("/")
            request.getfixturevalue("s3_client").put_object(Bucket=bucket, Key=f"{prefix}/sub/../../escape.txt", Body=b"x")
        else:
            path = url.split("://", 1)[1]
            os.symlink("/etc/hostname", f"{path}/escape.txt")

    assert not outside.exists()
    return plant


class TestStorage(StorageConformance):
    """file, nfs and s3 (moto server) must all pass the conformance class."""
