"""Amazon S3 and S3-compatible stores, configured from the standard AWS environment.

Endpoint: ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL``; credentials: ``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN``, else whatever botocore's credential chain finds
(``AWS_PROFILE``, SSO, job roles on AWS Batch); region: ``AWS_REGION`` / ``AWS_DEFAULT_REGION``.
Requests go through gpstage's lean client (:mod:`gpstage.storage.s3client`); there is no SDK retry
loop underneath, gpstage's policy retries and counts every request (docs/design.md §6). Why a client of
gpstage's own and not botocore/s3fs: docs/design.md, "Why gpstage's own S3 client".
"""

from __future__ import annotations

import functools
import os
from collections.abc import Awaitable, Mapping
from contextlib import suppress
from typing import Any, ClassVar

from gpstage import aio
from gpstage.errors import GpstageError, MissingDependency, StorageError
from gpstage.report import TransferReport
from gpstage.retry import RetryPolicy
from gpstage.storage.base import RemoteProvider, RemoteTree
from gpstage.storage.buckets import BucketTree, bucket_path, to_ns
from gpstage.storage.errorfacts import ErrorFacts
from gpstage.storage.listing import PagedListing
from gpstage.storage.local import LocalTree
from gpstage.storage.s3xml import ListPage
from gpstage.storage.source import ByteSource, FileRange
from gpstage.storage.tree import SHA256_META, Entry

PART_SIZE = 16 * 2**20  # files above this go multipart, in parts of this size (measured: design.md, "The S3 fast lane")
PARTS_IN_FLIGHT = 4  # per file; with LARGE_JOBS files at once this bounds the memory held in parts
MAX_PARTS = 10_000  # S3's limit on the parts of one upload: larger files get larger parts (part_size)
COPY_MAX = 5 * 2**30  # CopyObject's limit; larger objects are copied part by part (UploadPartCopy)
COPY_PART = 512 * 2**20
GET_WHOLE = 1 * 2**20  # smaller objects are fetched into memory and written in one go, larger ones streamed
RANGE_PART = 64 * 2**20  # objects of two parts or more are downloaded as ranges of this size...
RANGES_IN_FLIGHT = 4  # ...this many at a time (per object; the sync runs at most 4 large files at once)
DELETE_BATCH = 1000  # DeleteObjects' limit
CONNECT_TIMEOUT_S = 10
READ_TIMEOUT_S = 60
POOL = 64


def part_size(size: int, least: int) -> int:
    """The part size for a ``size``-byte multipart upload: ``least``, or, for a file that would need more
    than S3's 10,000 parts of that size (above 156 GiB at 16 MiB), the smallest whole number of MiB that
    fits it in 10,000 (5 TiB, S3's largest object, in parts of 525 MiB; S3 allows up to 5 GiB)."""
    fits = -(-size // MAX_PARTS)
    return max(least, -(-fits // 2**20) * 2**20)


def endpoint_url() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


class S3Provider(RemoteProvider):
    scheme: ClassVar[str] = "s3"
    extra: ClassVar[str | None] = "s3"

    def fs_path(self, url: str) -> str:
        return bucket_path(url)

    def connect(self, url: str) -> Any:
        """A client for ``url``: its storage profile first, then the standard AWS environment."""
        from importlib.util import find_spec

        from gpstage.profiles import settings_for
        from gpstage.storage.s3client import S3Client
        from gpstage.storage.s3creds import NoCredentialsError, credential_source, default_region

        for needed in ("aiohttp", "yarl"):  # imported on first use (streams and parts), checked here
            if find_spec(needed) is None:
                raise MissingDependency(f"the s3:// scheme needs {needed}, which is not installed", "pip install 'gpstage[s3]'")
        profile = settings_for(url)
        try:
            creds = credential_source(profile.secret("access_key_id"), profile.secret("secret_access_key"),
                                      profile.secret("session_token"), profile.aws_profile, profile.key_file)
        except NoCredentialsError:
            raise self.describe_error(NoCredentialsError(), url) from None
        except GpstageError:
            raise
        except ImportError:
            raise MissingDependency("no AWS credentials in the environment, and botocore (to read profiles and roles) "
                                    "is not installed",
                                    "set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or pip install 'gpstage[s3]'") from None
        except Exception as err:  # noqa: BLE001 - botocore's profile errors (ProfileNotFound, ...) in one line
            raise StorageError(f"{url}: cannot load AWS credentials ({err})",
                               "check aws_profile / key_file / AWS_PROFILE") from None
        endpoint, region = profile.endpoint or endpoint_url(), profile.region or default_region(profile.aws_profile)
        timeouts = {"connect_timeout": profile.connect_timeout or CONNECT_TIMEOUT_S,
                    "read_timeout": profile.read_timeout or READ_TIMEOUT_S}
        lane = fast_lane(endpoint, region, creds, timeouts) if profile.s3_fast_lane else None
        return S3Client(endpoint, region, creds, **timeouts, pool=POOL, write_headers=profile.s3_write_headers(), lane=lane)

    async def disconnect(self, client: Any) -> None:
        await client.close()

    def runs_on_threads(self, url: str) -> bool:
        """Without a proxy: every request then goes over the plain transport (s3plain) in a thread (s3client's docstring)."""
        from gpstage.storage.s3plain import proxied

        return not proxied()

    def tree(self, url: str, client: Any, retry: RetryPolicy, report: TransferReport) -> RemoteTree:
        return S3Tree(self, url, client, retry, report)

    def specific_error(self, facts: ErrorFacts, url: str) -> GpstageError | None:
        names, code = facts.names, facts.code
        if "NoCredentialsError" in names or "PartialCredentialsError" in names:
            return StorageError(f"{url}: no AWS credentials found",
                                "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, in the environment")
        if facts.unreachable:
            from gpstage.profiles import settings_for

            where = settings_for(url).endpoint or endpoint_url() or "the AWS default endpoint"
            return StorageError(f"{url}: cannot reach the S3 endpoint {where}",
                                "check AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_S3 and that the server is running")
        if code == "NoSuchBucket":
            bucket = self.fs_path(url).split("/", 1)[0]
            return StorageError(f"{url}: bucket {bucket!r} does not exist", "create it, or fix the bucket name in the URL")
        if code == "RequestTimeTooSkewed":
            return StorageError(f"{url}: this machine's clock differs from the S3 store's by more than it allows "
                                "(even after adopting the store's time)", "set the clock right (NTP), then re-run")
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "ExpiredToken"):
            return StorageError(f"{url}: S3 refused the credentials ({code})",
                                "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_PROFILE and the bucket policy")
        if code == "PreconditionFailed":  # a download's If-Match, or the listed size, no longer holds
            return StorageError(f"{url}: the object changed while it was being copied",
                                "re-run the same command once whoever writes it is done: it copies what differs")
        if code in ("PermanentRedirect", "AuthorizationHeaderMalformed", "IncorrectEndpoint"):
            region = next((e.headers.get("x-amz-bucket-region") for e in facts.chain if hasattr(e, "headers")), None)
            return StorageError(f"{url}: the bucket is in another region{f' ({region})' if region else ''}",
                                f"set AWS_REGION={region or 'the bucket region'}")
        return None


def fast_lane(endpoint: str | None, region: str, creds: Any, timeouts: dict[str, float]) -> Any:
    """obstore's lane for downloads and small PUTs (:mod:`gpstage.storage.s3lane`), or None: obstore is
    not installed; the credentials expire (botocore refreshes those, and only the own client asks it);
    or they carry no session token while the environment has one (obstore would add it to them)."""
    from gpstage.storage.s3creds import Credentials

    if not isinstance(creds, Credentials) or (not creds.token and os.environ.get("AWS_SESSION_TOKEN")):
        return None
    try:
        from gpstage.storage.s3lane import ObstoreLane

        return ObstoreLane(endpoint, region, creds.access_key, creds.secret_key, creds.token, **timeouts, workers=POOL)
    except ImportError:
        return None


class S3Tree(BucketTree):
    """Lists with ListObjectsV2 only (one request per 1,000 keys, no HEADs); small files are one PUT
    with Content-MD5, large ones a multipart upload with a bounded number of parts in memory."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.part_slots = aio.Semaphore(PARTS_IN_FLIGHT)  # parts in memory across all files of this sync (RSS bound)

    async def list_objects(self) -> dict[str, Entry]:
        out: dict[str, Entry] = {}
        cut = len(self.prefix)

        def read(page: ListPage) -> tuple[str | None, str | None]:
            try:
                objects, token = page.read()
            except Exception as exc:  # a malformed answer, read outside the request's call: worded the same
                raise self.provider.describe_error(exc, self.url) from exc
            times: dict[str | None, int | None] = {}  # LastModified -> ns: objects written together share a second
            for key, size, etag, modified in objects:
                plain = etag.strip('"')
                md5 = plain if "-" not in plain and len(plain) == 32 else None  # single-part uploads: the ETag is the MD5
                ns = times[modified] if modified in times else times.setdefault(modified, to_ns(modified))
                out[key[cut:]] = Entry(size=size, etag=etag, modified_ns=ns, md5=md5)
            return token, objects[-1][0][cut:] if objects else None

        def fetch(start: str | None, token: str | None) -> Awaitable[ListPage]:
            after = self.prefix + start if start is not None else None
            return self.call(lambda: self.client.list_page(self.bucket, self.prefix, token, after))

        def last_hint(page: ListPage) -> str | None:
            key = page.last_hint
            return key[cut:] if key is not None else None

        await PagedListing(fetch, lambda page: page.next_hint, read, last_hint, self.known).run()
        return out

    async def read_bytes(self, rel: str) -> bytes:
        return await self.call(lambda: self.client.get_bytes(self.bucket, self.object_key(rel)), rel)

    async def write_bytes(self, rel: str, data: bytes) -> str | None:
        return await self.call(lambda: self.client.put_bytes(self.bucket, self.object_key(rel), data), rel) or None

    def multipart(self, size: int) -> bool:
        return size > PART_SIZE

    async def upload(self, src: ByteSource, rel: str, metadata: Mapping[str, str] | None = None) -> None:
        """Upload exactly ``src.size`` bytes (the listed size: a growing log arrives as a consistent prefix)."""
        meta = dict(metadata) if metadata else None
        if self.multipart(src.size):
            return await self._multipart(src, rel, meta)
        data = await src.read(0, src.size)
        await self.call(lambda: self.client.put_bytes(self.bucket, self.object_key(rel), data, meta), rel)

    async def _multipart(self, src: ByteSource, rel: str, metadata: dict[str, str] | None) -> None:
        key = self.object_key(rel)
        size = src.size
        step = part_size(size, PART_SIZE)

        async def part(i: int, upload_id: str) -> str:
            async with self.part_slots:
                offset = i * step
                length = min(step, size - offset)
                data = FileRange(src.path, offset, length) if src.path else await src.read(offset, length)
                return await self.call(lambda: self.client.upload_part(self.bucket, key, upload_id, i + 1, data), rel)

        await self._in_parts(rel, -(-size // step), part, metadata)

    async def _in_parts(self, rel: str, count: int, part: Any, metadata: dict[str, str] | None) -> None:
        """A multipart upload of ``count`` parts, ``part(i, upload_id)`` making each (PARTS_IN_FLIGHT at a time);
        aborted on any failure, so a failed upload leaves nothing behind. After a failure no part starts,
        and the abort waits for the parts in flight: a part that lands after the abort may be kept by the
        store ("you might need to abort a multipart upload multiple times", S3's documentation)."""
        key = self.object_key(rel)
        upload_id = await self.call(lambda: self.client.create_multipart(self.bucket, key, metadata), rel)
        etags = [""] * count
        in_flight = aio.Semaphore(PARTS_IN_FLIGHT)
        failed: list[BaseException] = []

        async def one(i: int) -> None:
            async with in_flight:
                if failed:
                    return
                try:
                    etags[i] = await part(i, upload_id)
                except Exception as exc:  # noqa: BLE001 - raised below, once the parts in flight ended
                    failed.append(exc)

        try:
            await aio.gather(*(one(i) for i in range(count)))
            if failed:
                raise failed[0]
            await self.call(lambda: self.client.complete_multipart(self.bucket, key, upload_id, etags), rel)
        except BaseException:
            with suppress(Exception):
                await self.client.abort_multipart(self.bucket, key, upload_id)
            raise

    async def stat(self, rel: str) -> Entry | None:
        found = await self.call(lambda: self.client.head(self.bucket, self.object_key(rel)), rel)
        if found is None:
            return None
        etag = found["ETag"].strip('"')
        return Entry(size=found["Size"], etag=found["ETag"], modified_ns=to_ns(found["LastModified"]),
                     md5=etag if "-" not in etag and len(etag) == 32 else None, sha256=found["meta"].get(SHA256_META))

    async def read_range(self, rel: str, offset: int, length: int) -> bytes:
        return await self.call(lambda: self.client.get_range(self.bucket, self.object_key(rel), offset, length), rel)

    async def copy_from(self, src: RemoteTree, src_rel: str, rel: str, size: int,
                        metadata: Mapping[str, str] | None = None) -> None:
        """CopyObject; above 5 GiB a multipart upload whose parts are UploadPartCopy ranges of the source."""
        assert isinstance(src, S3Tree)
        src_key, meta = src.object_key(src_rel), dict(metadata) if metadata is not None else None
        if size <= COPY_MAX:
            await self.call(lambda: self.client.copy_object(self.bucket, self.object_key(rel), src.bucket, src_key, meta), rel)
            return
        if meta is None:  # a multipart copy does not carry the source's metadata: read it, as CopyObject would
            found = await src.stat(src_rel)
            meta = {SHA256_META: found.sha256} if found is not None and found.sha256 else None
        key = self.object_key(rel)
        step = part_size(size, COPY_PART)

        async def part(i: int, upload_id: str) -> str:
            first = i * step
            last = min(size, first + step) - 1
            return await self.call(lambda: self.client.upload_part_copy(self.bucket, key, upload_id, i + 1, src.bucket,
                                                                        src_key, first, last), rel)

        await self._in_parts(rel, -(-size // step), part, meta)

    async def download(self, rel: str, entry: Entry, dst: LocalTree, dst_rel: str | None = None) -> None:
        """Fetch ``rel`` into a temp file in ``dst``, renamed into place once its size is verified. Objects
        up to 1 MiB (most GenePattern outputs) take one GET and one write; larger ones are written into the
        file as they arrive, from two RANGE_PARTs up in ranges of that size, RANGES_IN_FLIGHT at a time (one
        stream cannot fill a fast link), each range its own request under the retry policy."""
        if entry.size <= GET_WHOLE:  # fetched and written in one worker thread: file creations overlap
            return await self._download_whole(rel, entry, dst, dst_rel)

        key, size = self.object_key(rel), entry.size
        step = size if size < 2 * RANGE_PART else RANGE_PART
        gate = aio.Semaphore(RANGES_IN_FLIGHT)

        async def one(tmp: str, start: int) -> None:
            into = FileRange(tmp, start, min(size, start + step) - start)
            async with gate:
                await self.call(lambda: self.client.get_into(self.bucket, key, into, entry.etag, ranged=step < size), rel)

        async def fetch(tmp: str) -> None:
            from gpstage.storage.s3plain import create_sized

            await aio.to_thread(create_sized, tmp, size)  # every range then writes into place
            results = await aio.gather(*(one(tmp, start) for start in range(0, size, step)), return_exceptions=True)
            failed = next((r for r in results if isinstance(r, BaseException)), None)
            if failed is not None:
                raise failed

        await self.fetch_into(rel, entry, dst, dst_rel, fetch, calls_itself=True)

    async def _download_whole(self, rel: str, entry: Entry, dst: LocalTree, dst_rel: str | None = None,
                              failed: Exception | None = None) -> None:
        write = functools.partial(dst.write_file, dst_rel or rel, entry=entry)
        key = self.object_key(rel)
        local = await self.call(lambda: self.client.get_then(self.bucket, key, write), rel, failed)
        if local is not None:
            raise local

    def batch(self, items: list[tuple[str, Entry]]) -> list[tuple[str, Entry]]:
        """The objects up to GET_WHOLE that the fast lane takes, if they are many (:meth:`S3Client.batchable`)."""
        small = [(rel, e) for rel, e in items if e.size <= GET_WHOLE]
        return [small[i] for i in self.client.batchable([self.object_key(rel) for rel, _ in small])]

    async def download_batch(self, items: list[tuple[str, Entry]], dst: LocalTree, workers: int) -> dict[str, Exception]:
        """One GET each through the lane's threads; a failed GET goes on under the retry policy from its
        second attempt, alone (a refused clock: from the start, through the own client)."""
        from gpstage.storage.s3lane import ClockSkewed

        calls = [(self.object_key(rel), functools.partial(dst.write_file, rel, entry=e)) for rel, e in items]
        self.report.requests += len(calls)
        requests, local = await self.client.get_many(self.bucket, calls, workers)
        errors: dict[str, Exception] = {}
        for i, exc in local.items():
            if not isinstance(exc, (GpstageError, OSError)):
                raise exc  # a bug, not a failed write
            errors[items[i][0]] = exc
        gate = aio.Semaphore(workers)

        async def again(rel: str, entry: Entry, exc: Exception) -> None:
            async with gate:
                try:
                    if isinstance(exc, ClockSkewed):
                        await self.download(rel, entry, dst)
                    else:
                        await self._download_whole(rel, entry, dst, failed=exc)
                except (GpstageError, OSError) as err:
                    errors[rel] = err

        await aio.gather(*(again(*items[i], exc) for i, exc in requests.items()))
        return errors

    async def abort_incomplete(self, rels: list[str] | None = None) -> int:
        """Abort multipart uploads left under the root by a killed writer: those of ``rels`` (about to be
        written anew), or all of them (the tree is being removed). Returns how many were aborted."""
        wanted = None if rels is None else {self.object_key(r) for r in rels}
        found: list[tuple[str, str]] = []
        markers: tuple[str, str] | None = None
        while True:
            page, markers = await self.call(lambda m=markers: self.client.list_multipart_page(self.bucket, self.prefix, m))
            found += [(k, u) for k, u in page if wanted is None or k in wanted]
            if not markers:
                break
        for key, upload_id in found:
            await self.call(lambda k=key, u=upload_id: self.client.abort_multipart(self.bucket, k, u))
        return len(found)

    async def delete(self, rels: list[str]) -> None:
        keys = [self.object_key(r) for r in rels]
        for i in range(0, len(keys), DELETE_BATCH):
            batch = keys[i:i + DELETE_BATCH]
            await self.call(lambda b=batch: self.client.delete_objects(self.bucket, b))

