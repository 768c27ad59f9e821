"""Amazon S3 and S3-compatible stores (s3fs), configured from the standard AWS environment.

Endpoint: ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL``; credentials: ``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN``, ``AWS_PROFILE``, or whatever else botocore's
credential chain finds (job roles on AWS Batch); region: ``AWS_DEFAULT_REGION`` / ``AWS_REGION``.
botocore's and s3fs's own retries are switched off: gpstage's policy retries and counts (DESIGN.md §6).
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

from gpstage.errors import BadInput, GpstageError, StorageError
from gpstage.retry import cause_chain, error_code
from gpstage.storage.base import FsspecProvider
from gpstage.storage.remote import RemoteTree
from gpstage.storage.tree import Entry
from gpstage.urls import split_url

PART_SIZE = 8 * 2**20  # multipart part size: bounds memory per transfer (s3fs reads a part at a time)
PARTS_IN_FLIGHT = 4
CONNECT_TIMEOUT_S = 10
READ_TIMEOUT_S = 60


def endpoint_url() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


class S3Provider(FsspecProvider):
    scheme: ClassVar[str] = "s3"
    protocol: ClassVar[str] = "s3"
    extra: ClassVar[str | None] = "s3"

    def fs_path(self, url: str) -> str:
        path = split_url(url).rest.rstrip("/")  # keys are literal: no decoding, no normalising
        if not path or path.startswith("/"):
            raise BadInput(f"{url!r} names no bucket", "write s3://BUCKET/prefix")
        return path

    def filesystem_options(self, url: str) -> dict[str, Any]:
        config: dict[str, Any] = {
            "retries": {"total_max_attempts": 1, "mode": "standard"},
            "connect_timeout": CONNECT_TIMEOUT_S,
            "read_timeout": READ_TIMEOUT_S,
            "max_pool_connections": 64,
        }
        opts: dict[str, Any] = {"config_kwargs": config, "max_concurrency": 1}
        if endpoint_url():
            opts["endpoint_url"] = endpoint_url()
        if os.environ.get("AWS_PROFILE"):
            opts["profile"] = os.environ["AWS_PROFILE"]
        return opts

    def make_filesystem(self, url: str) -> Any:
        fs = super().make_filesystem(url)
        fs.retries = 1  # s3fs's own retry loop: one attempt, gpstage's policy does the rest
        return fs

    async def close_filesystem(self, fs: Any) -> None:
        client = getattr(fs, "_s3", None)
        if client is not None:
            await client.close()

    def entry_from_info(self, info: dict[str, Any]) -> Entry:
        entry = super().entry_from_info(info)
        etag = (entry.etag or "").strip('"')
        if etag and "-" not in etag and len(etag) == 32:
            entry.md5 = etag  # single-part uploads: the ETag is the MD5 of the content
        return entry

    def upload_options(self, size: int) -> dict[str, Any]:
        return {"chunksize": PART_SIZE, "max_concurrency": PARTS_IN_FLIGHT}

    def tree(self, url: str, fs: Any, retry: Any, report: Any) -> RemoteTree:
        return S3Tree(self, url, fs, retry, report)

    def describe_error(self, exc: BaseException, url: str) -> GpstageError:
        names = {type(e).__name__ for e in cause_chain(exc)}
        code = error_code(exc)
        if "NoCredentialsError" in names or "PartialCredentialsError" in names:
            return StorageError(f"{url}: no AWS credentials found",
                                "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, in the environment")
        if names & {"EndpointConnectionError", "ConnectTimeoutError", "ClientConnectorError"}:
            where = endpoint_url() or "the AWS default endpoint"
            return StorageError(f"{url}: cannot reach the S3 endpoint {where}",
                                "check AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_S3 and that the server is running")
        if code == "NoSuchBucket":
            bucket = self.fs_path(url).split("/", 1)[0]
            return StorageError(f"{url}: bucket {bucket!r} does not exist", "create it, or fix the bucket name in the URL")
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "ExpiredToken"):
            return StorageError(f"{url}: S3 refused the credentials ({code})",
                                "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_PROFILE and the bucket policy")
        return super().describe_error(exc, url)


class S3Tree(RemoteTree):
    """Lists with ListObjectsV2 directly: one request per 1,000 keys, nothing else (no HEADs)."""

    async def raw_listing(self) -> dict[str, dict[str, Any]]:
        bucket, _, key = self.root.partition("/")
        prefix = f"{key}/" if key else ""
        client = await self.fs.set_session()
        out: dict[str, dict[str, Any]] = {}
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
            if token:
                kwargs["ContinuationToken"] = token
            page = await self.call(lambda kw=kwargs: client.list_objects_v2(**kw))
            for obj in page.get("Contents", ()):
                out[obj["Key"][len(prefix):]] = {"size": obj["Size"], "ETag": obj.get("ETag"), "LastModified": obj.get("LastModified")}
            token = page.get("NextContinuationToken") if page.get("IsTruncated") else None
            if not token:
                return out
