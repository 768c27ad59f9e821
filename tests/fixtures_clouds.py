"""Google Cloud Storage (gcp-storage-emulator) and Azure Blob (Azurite) for the tests: session fixtures
start each service through ``service_env`` and point the ecosystem's standard environment at it, so
gpstage's providers are configured exactly as a user's would be; a fresh bucket/container per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session")
def gcs_endpoint(service_env) -> Iterator[str]:
    """The emulator's URL, as ``STORAGE_EMULATOR_HOST`` (gpstage then uses anonymous access)."""
    endpoint = service_env("gcs")["GPSTAGE_TEST_GCS_ENDPOINT"]
    mp = pytest.MonkeyPatch()
    mp.setenv("STORAGE_EMULATOR_HOST", endpoint)
    mp.setenv("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")  # no gRPC bucket-type probe (a 60 s stall here)
    mp.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    yield endpoint
    mp.undo()


@pytest.fixture(scope="session")
def gcs_fs(gcs_endpoint: str):
    """A plain gcsfs client on the emulator for fixtures (raw JSON API calls: no listing cache involved)."""
    from gcsfs.core import GCSFileSystem  # the plain class, whatever gcsfs.GCSFileSystem was bound to

    return GCSFileSystem(endpoint_url=gcs_endpoint, token="anon", project="test", skip_instance_cache=True,
                         use_listings_cache=False)


@pytest.fixture
def gcs_bucket(gcs_fs) -> Iterator[str]:
    """A fresh bucket without soft delete (the emulator would keep, and rewrite, every deleted object),
    emptied and removed after the test."""
    name = f"gpstage-{uuid.uuid4().hex[:20]}"
    gcs_fs.call("POST", "b", json={"name": name}, project="test")
    gcs_fs.call("PATCH", "b/{}", name, json={"softDeletePolicy": {"retentionDurationSeconds": "0"}})
    yield name
    token = None
    while True:
        page = gcs_fs.call("GET", "b/{}/o", name, pageToken=token, json_out=True)
        for obj in page.get("items") or ():
            gcs_fs.call("DELETE", "b/{}/o/{}", name, obj["name"])
        token = page.get("nextPageToken")
        if not token:
            break
    gcs_fs.call("DELETE", "b/{}", name)


@pytest.fixture(scope="session")
def azure_connection_string(service_env) -> Iterator[str]:
    """Azurite's connection string, as ``AZURE_STORAGE_CONNECTION_STRING``; no other Azure variables."""
    conn = service_env("az")["GPSTAGE_TEST_AZURE_CONNECTION_STRING"]
    mp = pytest.MonkeyPatch()
    for k in list(os.environ):
        if k.startswith("AZURE_"):
            mp.delenv(k)
    mp.setenv("AZURE_STORAGE_CONNECTION_STRING", conn)
    yield conn
    mp.undo()


@pytest.fixture(scope="session")
def azure_service(azure_connection_string: str):
    from azure.storage.blob import BlobServiceClient

    return BlobServiceClient.from_connection_string(azure_connection_string)


@pytest.fixture
def azure_container(azure_service) -> Iterator[str]:
    """A fresh container, removed (with its blobs) after the test."""
    name = f"gpstage-{uuid.uuid4().hex[:20]}"
    azure_service.create_container(name)
    yield name
    azure_service.delete_container(name)
