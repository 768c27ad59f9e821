"""Google Cloud Storage (``gs://bucket/prefix``) through gcsfs, configured from Google's standard environment.

Endpoint: ``STORAGE_EMULATOR_HOST`` (an emulator; access is then anonymous, as Google's own libraries
do) or a storage profile's ``endpoint``; credentials: a profile's ``key_file``, else Application Default
Credentials (``GOOGLE_APPLICATION_CREDENTIALS``, ``gcloud auth application-default login``, the metadata
server on Google Cloud); project: ``GOOGLE_CLOUD_PROJECT`` (or the profile's, or the credentials' own).

gcsfs only carries the requests (its session, auth headers and error mapping): its retry loops are
removed, so gpstage's one policy retries and counts every request (docs/design.md §6). Listings are one
request per 1,000 objects and give ``md5Hash`` and ``generation``, so there are no per-object HEADs, the
MD5 is known for ``--checksum`` and the ETag is the generation (it changes exactly when the bytes do).
Uploads send exactly the listed number of bytes: up to 8 MiB in one request whose MD5 the store checks,
larger files as a resumable upload in 8 MiB chunks whose final MD5 is compared with the one sent.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import os
import secrets
from collections.abc import Mapping
from contextlib import suppress
from typing import Any, ClassVar

from gpstage.errors import GpstageError, MissingDependency, StorageError
from gpstage.report import TransferReport
from gpstage.retry import RetryPolicy, http_status
from gpstage.storage.base import RemoteProvider, RemoteTree
from gpstage.storage.buckets import BucketTree, bucket_path, quiet_library_logs, to_ns
from gpstage.storage.errorfacts import ErrorFacts
from gpstage.storage.gcs_auth import credentials_from_file, default_credentials
from gpstage.storage.local import LocalTree
from gpstage.storage.source import ByteSource
from gpstage.storage.tree import SHA256_META, Entry

HNS_ENV = "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"  # gcsfs's bucket-type probe (gRPC): a 60 s stall off Google
SIMPLE_MAX = 8 * 2**20  # files up to this size are one upload request
CHUNK = 8 * 2**20  # resumable upload chunk (a multiple of 256 KiB, as GCS requires)
LIST_PAGE = 1000
LIST_FIELDS = "items(name,size,etag,md5Hash,generation,timeCreated,updated),nextPageToken"
WRITE_IN_LOOP = 64 * 2**10  # smaller downloads are written in the event loop (1,000 x 4 KiB: 0.5 s, not 1.1 s in threads)
GET_WHOLE = 2**20  # smaller objects are fetched into memory and written in one go, larger ones streamed
DELETE_JOBS = 16
CONNECT_TIMEOUT_S = 10
READ_TIMEOUT_S = 60

_fs_class: Any = None


def emulator_host() -> str | None:
    """``STORAGE_EMULATOR_HOST`` as a URL (Google's libraries accept ``host:port`` too)."""
    host = os.environ.get("STORAGE_EMULATOR_HOST", "").strip()
    if host in ("", "default"):
        return None
    return host.rstrip("/") if "://" in host else f"http://{host.rstrip('/')}"


def filesystem_class() -> Any:
    """gcsfs's filesystem without its own retry loops (built once, on first use)."""
    global _fs_class
    if _fs_class is None:
        os.environ.setdefault(HNS_ENV, "false")  # before gcsfs is imported, unless the user chose
        try:
            import gcsfs
        except ImportError as err:
            raise MissingDependency(f"the gs:// scheme needs {err.name or 'gcsfs'}, which is not installed",
                                    "pip install 'gpstage[gcs]'") from None
        from gcsfs.core import GCSFileSystem as plain

        # gcsfs picks its class when first imported; whoever imported it first, the variable decides
        hns = os.environ.get(HNS_ENV, "false").lower() in ("true", "1")
        base = gcsfs.GCSFileSystem if hns else plain
        quiet_library_logs("gcsfs")

        def unretried(name: str) -> Any:
            method = getattr(base, name)
            return getattr(method, "__wrapped__", method)  # gcsfs wraps them in retry_request(retries=6)

        request = unretried("_request")

        async def _request(self: Any, *args: Any, **kwargs: Any) -> Any:
            """One request; the two failures gcsfs retried by type, re-raised as ones gpstage's policy retries."""
            import google.auth.exceptions
            import requests.exceptions
            from gcsfs.retry import HttpError

            try:
                return await request(self, *args, **kwargs)
            except requests.exceptions.ProxyError as err:  # what gcsfs makes of a 502
                raise HttpError({"code": 502, "message": "Bad Gateway"}) from err
            except google.auth.exceptions.TransportError as err:  # the token endpoint did not answer
                raise TokenUnavailable(f"cannot refresh the Google access token ({err})") from err

        _fs_class = type("GpstageGCSFileSystem", (base,), {
            "__doc__": "gcsfs with one attempt per request: gpstage's retry policy retries and counts.",
            "_request": _request,
            "_get_file_request": unretried("_get_file_request"),
            "_get_file_concurrent": unretried("_get_file_concurrent"),
        })
    return _fs_class


class NoSuchBucket(FileNotFoundError):
    """A listing of a bucket that does not exist (GCS answers 404 only then; an empty prefix lists empty)."""


class ChecksumMismatch(ConnectionError):
    """The store holds other bytes than were sent (the object is deleted again): damaged in transit, so
    transient like a reset connection (S3's BadDigest is retried too)."""


class UploadStalled(ConnectionError):
    """A resumable upload session did not take the bytes sent; transient: the upload starts over."""


class TokenUnavailable(ConnectionError):
    """The OAuth token endpoint (or the metadata server) could not be reached; transient."""


class GcsProvider(RemoteProvider):
    """gcsfs's filesystem is the client: its session, auth headers and error mapping, nothing more."""

    scheme: ClassVar[str] = "gs"
    extra: ClassVar[str | None] = "gcs"

    def fs_path(self, url: str) -> str:
        return bucket_path(url)

    def _endpoint(self, url: str) -> str | None:
        from gpstage.profiles import settings_for

        return settings_for(url).endpoint or emulator_host()

    def filesystem_options(self, url: str) -> dict[str, Any]:
        """Endpoint, credentials and project, from the storage profile first, then Google's environment."""
        from gpstage.profiles import settings_for

        profile = settings_for(url)
        endpoint = profile.endpoint or emulator_host()
        project = profile.project or os.environ.get("GOOGLE_CLOUD_PROJECT") or None
        if profile.key_file:
            token, found = credentials_from_file(profile.key_file, url)
        elif endpoint:
            token, found = "anon", None  # an emulator: no credentials (what Google's libraries do)
        else:
            token, found = default_credentials(url)
        try:
            import aiohttp
        except ImportError:
            raise MissingDependency("the gs:// scheme needs aiohttp, which is not installed",
                                    "pip install 'gpstage[gcs]'") from None
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=profile.connect_timeout or CONNECT_TIMEOUT_S,
                                        sock_read=profile.read_timeout or READ_TIMEOUT_S)
        return {"token": token, "project": project or found or "", "endpoint_url": endpoint,
                "requests_timeout": timeout, "consistency": "none"}

    def connect(self, url: str) -> Any:
        cls = filesystem_class()
        return cls(**self.filesystem_options(url), asynchronous=True, loop=asyncio.get_running_loop(), skip_instance_cache=True)

    async def disconnect(self, client: Any) -> None:
        session = getattr(client, "_session", None)
        if session is not None and not session.closed:
            await session.close()

    def tree(self, url: str, client: Any, retry: RetryPolicy, report: TransferReport) -> RemoteTree:
        return GcsTree(self, url, client, retry, report)

    def specific_error(self, facts: ErrorFacts, url: str) -> GpstageError | None:
        chain, names, status, text = facts.chain, facts.names, facts.status, facts.text
        bucket = self.fs_path(url).split("/", 1)[0]
        if any(isinstance(e, NoSuchBucket) for e in chain):
            return StorageError(f"{url}: bucket {bucket!r} does not exist", "create it, or fix the bucket name in the URL")
        if facts.unreachable:
            where = self._endpoint(url) or "storage.googleapis.com"
            return StorageError(f"{url}: cannot reach the GCS endpoint {where}",
                                "check STORAGE_EMULATOR_HOST (or the network to Google) and that the server is running")
        if "RefreshError" in names or "NonRetryableError" in names or status == 401:
            return StorageError(f"{url}: GCS refused the credentials ({text})",
                                "check GOOGLE_APPLICATION_CREDENTIALS or run `gcloud auth application-default login`")
        if status == 403 or any(isinstance(e, PermissionError) or str(e).startswith("Forbidden") for e in chain):
            return StorageError(f"{url}: access denied by GCS ({text})",
                                "give the credentials' account storage.objects permissions on the bucket")
        if "ChecksumMismatch" in names:
            return StorageError(f"{url}: {text}", "re-run the same command: it transfers only what is missing")
        if "TokenUnavailable" in names:
            return StorageError(f"{url}: {text}", "check the network to Google's token endpoint (or the metadata server)")
        return None


def entry_from_object(obj: dict[str, Any]) -> Entry:
    """An :class:`Entry` from an objects.list item: the ETag is the generation, which changes exactly
    when the bytes do, and the time is when this generation was written."""
    generation = obj.get("generation")
    return Entry(size=int(obj.get("size") or 0), etag=f"g{generation}" if generation else obj.get("etag"),
                 modified_ns=to_ns(obj.get("timeCreated") or obj.get("updated")), md5=b64_to_hex(obj.get("md5Hash")),
                 sha256=(obj.get("metadata") or {}).get(SHA256_META))


def b64_to_hex(value: Any) -> str | None:
    if not value:
        return None
    try:
        return base64.b64decode(value).hex()
    except (binascii.Error, ValueError):
        return None


class GcsTree(BucketTree):
    """Lists with objects.list only (no HEADs); uploads exactly the listed bytes with their MD5 checked."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.upload_base = f"{self.client._location}/upload/storage/v1/b/{_quote(self.bucket)}/o"

    async def list_objects(self) -> dict[str, Entry]:
        out: dict[str, Entry] = {}
        token: str | None = None
        while True:
            page = await self.call(lambda t=token: self._list_page(t))
            for obj in page.get("items") or ():
                out[obj["name"][len(self.prefix):]] = entry_from_object(obj)
            token = page.get("nextPageToken")
            if not token:
                return out

    async def _list_page(self, token: str | None) -> dict[str, Any]:
        try:
            return await self.client._call("GET", "b/{}/o", self.bucket, prefix=self.prefix or None, pageToken=token,
                                       maxResults=LIST_PAGE, fields=LIST_FIELDS, json_out=True)
        except FileNotFoundError as err:
            raise NoSuchBucket(f"bucket {self.bucket!r} does not exist") from err

    async def read_bytes(self, rel: str) -> bytes:
        async def get() -> bytes:
            _, body = await self.client._call("GET", "b/{}/o/{}", self.bucket, self.object_key(rel), alt="media")
            return body

        return await self.call(get, rel)

    async def write_bytes(self, rel: str, data: bytes) -> None:
        await self.call(lambda: self._simple_upload(self.object_key(rel), data), rel)

    async def upload(self, src: ByteSource, rel: str, metadata: Mapping[str, str] | None = None) -> None:
        """Upload exactly ``src.size`` bytes (the listed size: a growing log arrives as a consistent prefix)."""
        key, meta = self.object_key(rel), dict(metadata or {})
        if src.size <= SIMPLE_MAX:
            data = await src.read(0, src.size)
            await self.call(lambda: self._simple_upload(key, data, meta), rel)
        else:
            await self.call(lambda: self._resumable_upload(src, key, meta), rel)

    async def _simple_upload(self, key: str, data: bytes, metadata: dict[str, str] | None = None) -> dict[str, Any]:
        """One multipart request; the md5Hash in its metadata makes the store refuse damaged bytes."""
        md5 = base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()
        boundary = f"gpstage-{secrets.token_hex(16)}"
        meta = json.dumps({"name": key, "md5Hash": md5, **({"metadata": metadata} if metadata else {})})
        closing_boundary = f"\r\n--{boundary}--\r\n".encode()
        body = (f"--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{meta}\r\n"
                f"--{boundary}\r\nContent-Type: application/octet-stream\r\n\r\n").encode() + data + closing_boundary
        try:
            obj = await self.client._call("POST", self.upload_base, uploadType="multipart", data=body, json_out=True,
                                      headers={"Content-Type": f'multipart/related; boundary="{boundary}"'})
        except Exception as err:  # GCS refuses bytes whose MD5 differs from md5Hash (400)
            if "md5" in str(err).lower() and http_status(err) in (None, 400):
                raise ChecksumMismatch(f"gs://{self.bucket}/{key}: the bytes arrived damaged "
                                       f"({' '.join(str(err).split())[:120]})") from err
            raise
        return await self._check_md5(key, obj, md5)

    async def _resumable_upload(self, src: ByteSource, key: str, metadata: dict[str, str]) -> None:
        size = src.size
        headers, _ = await self.client._call("POST", self.upload_base, uploadType="resumable",
                                         json={"name": key, **({"metadata": metadata} if metadata else {})},
                                         headers={"X-Upload-Content-Type": "application/octet-stream",
                                                  "X-Upload-Content-Length": str(size)})
        session = headers["Location"]
        md5 = hashlib.md5(usedforsecurity=False)
        offset, obj = 0, None
        while offset < size:
            data = await src.read(offset, min(CHUNK, size - offset))
            if not data:
                raise StorageError(f"the source of gs://{self.bucket}/{key} shrank while it was uploaded",
                                   "re-run the sync once the file is complete")
            end = offset + len(data) - 1
            self.report.requests += 1  # the call that runs this counted the session's start; each chunk is one more
            resp_headers, body = await self.client._call("PUT", session, data=data, headers={
                "Content-Range": f"bytes {offset}-{end}/{size}", "Content-Type": "application/octet-stream"})
            if body:  # the last chunk: the object resource
                obj = json.loads(body)
                md5.update(data)
                break
            stored = _persisted(resp_headers)  # 308 Resume Incomplete, Range: what the store kept
            if not offset < stored <= end + 1:
                raise UploadStalled(f"resumable upload of gs://{self.bucket}/{key} kept bytes up to {stored}, "
                                    f"sent {offset}-{end}")
            md5.update(data[:stored - offset])
            offset = stored
        if obj is None:
            raise UploadStalled(f"resumable upload of gs://{self.bucket}/{key} ended without an object")
        await self._check_md5(key, obj, base64.b64encode(md5.digest()).decode())

    async def stat(self, rel: str) -> Entry | None:
        async def get() -> dict[str, Any] | None:
            try:
                return await self.client._call("GET", "b/{}/o/{}", self.bucket, self.object_key(rel), json_out=True)
            except FileNotFoundError:
                return None

        obj = await self.call(get, rel)
        return None if obj is None else entry_from_object(obj)

    async def read_range(self, rel: str, offset: int, length: int) -> bytes:
        async def get() -> bytes:
            _, body = await self.client._call("GET", "b/{}/o/{}", self.bucket, self.object_key(rel), alt="media",
                                              headers={"Range": f"bytes={offset}-{offset + length - 1}"})
            return body

        return await self.call(get, rel)

    async def copy_from(self, src: RemoteTree, src_rel: str, rel: str, size: int,
                        metadata: Mapping[str, str] | None = None) -> None:
        """objects.rewrite, repeated with its token until the store says done (large objects take several)."""
        assert isinstance(src, GcsTree)
        body = {} if metadata is None else {"metadata": dict(metadata) or None}
        args = (src.bucket, src.object_key(src_rel), self.bucket, self.object_key(rel))
        token: str | None = None
        while True:
            out = await self.call(lambda t=token: self.client._call(
                "POST", "b/{}/o/{}/rewriteTo/b/{}/o/{}", *args, json=body, rewriteToken=t, json_out=True), rel)
            if out.get("done"):
                return
            token = out["rewriteToken"]

    async def _check_md5(self, key: str, obj: dict[str, Any], sent: str) -> dict[str, Any]:
        stored = obj.get("md5Hash")
        if stored and stored != sent:
            with suppress(Exception):  # never leave damaged bytes under the name: the next sync would believe them
                await self.client._call("DELETE", "b/{}/o/{}", self.bucket, key)
            raise ChecksumMismatch(f"gs://{self.bucket}/{key} was stored with MD5 {b64_to_hex(stored)}, not {b64_to_hex(sent)}")
        return obj

    async def download(self, rel: str, entry: Entry, dst: LocalTree, dst_rel: str | None = None) -> None:
        """One GET: small objects into memory and one write, larger ones streamed into a temp file in
        ``dst``; either is renamed into place once its size is verified."""
        if entry.size <= GET_WHOLE:
            return await self.fetch_whole(rel, entry, dst, dst_rel, in_loop_max=WRITE_IN_LOOP)
        await self.fetch_into(rel, entry, dst, dst_rel, lambda tmp: self.client._get_file_request(
            f"{self.bucket}/{self.object_key(rel)}", tmp, consistency="none"))

    async def delete(self, rels: list[str]) -> None:
        """One DELETE per object (every request under the retry policy); an object already gone is fine."""
        slots = asyncio.Semaphore(DELETE_JOBS)

        async def one(rel: str) -> None:
            async def op() -> None:
                try:
                    await self.client._call("DELETE", "b/{}/o/{}", self.bucket, self.object_key(rel))
                except FileNotFoundError:
                    pass

            async with slots:
                await self.call(op, rel)

        await asyncio.gather(*(one(r) for r in rels))


def _persisted(headers: Any) -> int:
    """The end of what a resumable upload session holds, from a 308's ``Range: bytes=0-N``."""
    rng = headers.get("Range") if headers is not None else None
    return int(rng.rsplit("-", 1)[1]) + 1 if rng else 0


def _quote(s: str) -> str:
    from urllib.parse import quote

    return quote(s, safe="")
