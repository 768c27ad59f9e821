"""Google Cloud Storage (gcp-storage-emulator) and Azure Blob (Azurite) for the tests: session fixtures
start each service through ``service_env`` and point the ecosystem's standard environment at it, so
gpstage's providers are configured exactly as a user's would be; a fresh bucket/container per test."""

from __future__ import annotations

import http.client
import os
import urllib.parse
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

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


# ---- objects written by other tools, whatever their keys ----------------------------------------------
def gcs_put(gcs_fs, endpoint: str, bucket: str, key: str, data: bytes) -> None:
    """An object written by another tool, whatever its key (the name travels as a query parameter)."""
    gcs_fs.call("POST", f"{endpoint}/upload/storage/v1/b/{bucket}/o", uploadType="media", name=key, data=data,
                headers={"Content-Type": "application/octet-stream"})


def azure_put_raw(connection_string: str, container: str, name: str, data: bytes) -> None:
    """A blob written by another tool under a literal name: the SDK's HTTP stack would resolve '..' in
    the URL path, so this is one PUT with a SAS through http.client, which sends the path as given."""
    from azure.storage.blob import BlobSasPermissions, generate_blob_sas

    kv = dict(p.split("=", 1) for p in connection_string.split(";") if "=" in p)
    sas = generate_blob_sas(kv["AccountName"], container, name, account_key=kv["AccountKey"],
                            permission=BlobSasPermissions(create=True, write=True),
                            expiry=datetime.now(timezone.utc) + timedelta(minutes=10))
    endpoint = urllib.parse.urlsplit(kv["BlobEndpoint"])
    conn = http.client.HTTPConnection(endpoint.hostname, endpoint.port, timeout=30)
    try:
        conn.request("PUT", f"{endpoint.path.rstrip('/')}/{container}/{urllib.parse.quote(name, safe='/')}?{sas}", body=data,
                     headers={"x-ms-blob-type": "BlockBlob", "x-ms-version": "2021-08-06"})
        resp = conn.getresponse()
        assert resp.status == 201, resp.read()
    finally:
        conn.close()
