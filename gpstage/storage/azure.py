"""Azure Blob storage (``az://container/prefix``, ``abfs://``) through adlfs, configured from Azure's
standard environment.

Credentials, first found wins: a storage profile's ``connection_string_env``; the account named in the
URL (``abfs://container@ACCOUNT.dfs.core.windows.net/prefix``) or the profile's ``account_name``;
``AZURE_STORAGE_CONNECTION_STRING``; ``AZURE_STORAGE_ACCOUNT_NAME`` / ``AZURE_STORAGE_ACCOUNT`` with
``AZURE_STORAGE_KEY`` / ``AZURE_STORAGE_ACCOUNT_KEY``, or ``AZURE_STORAGE_SAS_TOKEN``, or else an Azure
identity (``DefaultAzureCredential``: ``AZURE_CLIENT_ID``/``AZURE_TENANT_ID``/``AZURE_CLIENT_SECRET``,
workload or managed identity, ``az login``). A profile's ``endpoint`` replaces
``https://ACCOUNT.blob.core.windows.net``.

adlfs builds the filesystem; its blob client is created here with the SDK's retries off
(``retry_total=0``), so gpstage's one policy retries and counts every request (docs/design.md §6) — except
that the SDK's downloader re-reads a truncated chunk body itself, which cannot be switched off. Listings
are one request per 5,000 blobs (no per-blob HEADs). Files up to 8 MiB are one Put Blob with a
Content-MD5 the service checks; larger ones are 8 MiB blocks (each checked the same way, a bounded
number in memory) committed with the MD5 of the whole file, so every blob gpstage writes lists its MD5.
Blobs written by other tools in blocks usually list none: ``md5`` is then unknown (None).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import secrets
import weakref
from collections.abc import Mapping
from typing import Any, ClassVar

from gpstage.errors import BadInput, GpstageError, MissingDependency, StorageError
from gpstage.report import TransferReport
from gpstage.retry import RetryPolicy
from gpstage.storage.azure_fs import filesystem_class, parse_connection_string
from gpstage.storage.base import RemoteProvider, RemoteTree
from gpstage.storage.buckets import BucketTree, to_ns
from gpstage.storage.errorfacts import ErrorFacts
from gpstage.storage.local import LocalTree
from gpstage.storage.source import ByteSource
from gpstage.storage.tree import SHA256_META, Entry
from gpstage.urls import split_url

SINGLE_PUT = 8 * 2**20  # files up to this size are one Put Blob
BLOCK = 8 * 2**20  # larger files: blocks of this size
BLOCKS_IN_FLIGHT = 4  # per file; with LARGE_JOBS files at once this bounds the memory held in blocks
GET_CHUNK = 4 * 2**20  # downloads stream in ranged GETs of this size
WRITE_IN_LOOP = 64 * 2**10  # smaller downloads are written in the event loop (as fast as threads here: 1,000 x 4 KiB 2.2 s)
GET_WHOLE = 2**20  # smaller blobs are fetched into memory and written in one go, larger ones streamed
LIST_PAGE = 5000  # the service's maximum
DELETE_JOBS = 16
COPY_POLL_S = 0.2  # an asynchronous Copy Blob (large, or across accounts) is polled this often until it ends
CONNECT_TIMEOUT_S = 10
READ_TIMEOUT_S = 60
_ACCOUNT_HOST = re.compile(r"^(?P<container>[^@/]+)@(?P<account>[^./]+)\.(dfs|blob)\.core\.windows\.net$")

class AzureProvider(RemoteProvider):
    """adlfs's filesystem is the client: it builds the blob service client and its credential."""

    scheme: ClassVar[str] = "az"
    extra: ClassVar[str | None] = "azure"

    def _split(self, url: str) -> tuple[str, str | None, str]:
        """(container, account named in the URL or None, key prefix)."""
        rest = split_url(url).rest
        head, _, key = rest.partition("/")
        m = _ACCOUNT_HOST.match(head)
        container, account = (m["container"], m["account"]) if m else (head, None)
        if not container or "@" in container:
            raise BadInput(f"{url!r} names no container", f"write {self.scheme}://CONTAINER/prefix")
        return container, account, key.rstrip("/")

    def fs_path(self, url: str) -> str:
        container, _, key = self._split(url)  # keys are literal: no decoding, no normalising
        return f"{container}/{key}" if key else container

    def same_store(self, a: str, b: str) -> bool:
        """One account (containers may differ), reached with the same settings."""
        return super().same_store(a, b) and self._split(a)[1] == self._split(b)[1]

    def connection(self, url: str) -> dict[str, Any]:
        """How to reach the account of ``url``: ``connection_string``, or ``account_url`` + one credential."""
        from gpstage.profiles import settings_for

        profile = settings_for(url)
        env = os.environ
        _, url_account, _ = self._split(url)
        conn = profile.secret("connection_string")
        if conn:
            return {"connection_string": conn}
        account = url_account or profile.account_name
        env_conn = env.get("AZURE_STORAGE_CONNECTION_STRING")
        if env_conn and (not account or parse_connection_string(env_conn).get("AccountName") == account):
            return {"connection_string": env_conn}
        account = account or env.get("AZURE_STORAGE_ACCOUNT_NAME") or env.get("AZURE_STORAGE_ACCOUNT")
        if not account:
            raise StorageError(f"{url}: no Azure storage account configured",
                               "set AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_ACCOUNT_NAME with AZURE_STORAGE_KEY "
                               "(or an Azure login)")
        out: dict[str, Any] = {"account_name": account,
                               "account_url": (profile.endpoint or f"https://{account}.blob.core.windows.net").rstrip("/")}
        key = profile.secret("account_key") or env.get("AZURE_STORAGE_KEY") or env.get("AZURE_STORAGE_ACCOUNT_KEY")
        sas = profile.secret("sas_token") or env.get("AZURE_STORAGE_SAS_TOKEN")
        if key:
            out["account_key"] = key
        elif sas:
            out["sas_token"] = sas.lstrip("?")
        return out  # neither: an Azure identity (DefaultAzureCredential), as adlfs does with anon=False

    def client_options(self, url: str) -> dict[str, Any]:
        from gpstage.profiles import settings_for

        profile = settings_for(url)
        return {"retry_total": 0, "connection_timeout": profile.connect_timeout or CONNECT_TIMEOUT_S,
                "read_timeout": profile.read_timeout or READ_TIMEOUT_S, "max_single_put_size": SINGLE_PUT,
                "max_block_size": BLOCK, "max_single_get_size": GET_CHUNK, "max_chunk_get_size": GET_CHUNK}

    def connect(self, url: str) -> Any:
        cls = filesystem_class()
        conn = self.connection(url)
        client_opts = self.client_options(url)

        def client_factory(fs: Any) -> Any:
            from azure.storage.blob.aio import BlobServiceClient

            if "connection_string" in conn:
                return BlobServiceClient.from_connection_string(conn["connection_string"], **client_opts)
            if "account_key" in conn:
                from azure.core.credentials import AzureNamedKeyCredential

                credential: Any = AzureNamedKeyCredential(conn["account_name"], conn["account_key"])
            elif "sas_token" in conn:
                from azure.core.credentials import AzureSasCredential

                credential = AzureSasCredential(conn["sas_token"])
            else:
                if fs.credential is None:  # adlfs made none (e.g. another account's key in the environment)
                    from azure.identity.aio import DefaultAzureCredential

                    fs.credential = DefaultAzureCredential()
                credential = fs.credential
            return BlobServiceClient(conn["account_url"], credential=credential, **client_opts)

        opts: dict[str, Any] = {k: v for k, v in conn.items()
                                if k in ("connection_string", "account_name", "account_key", "sas_token")}
        opts["anon"] = False
        try:
            return cls(**opts, client_factory=client_factory, asynchronous=True, loop=asyncio.get_running_loop(),
                       skip_instance_cache=True)
        except ImportError as err:
            raise MissingDependency(f"the az:// scheme needs {err.name}, which is not installed",
                                    "pip install 'gpstage[azure]'") from None
        except ValueError as err:  # a malformed connection string or account URL
            raise BadInput(f"{url}: cannot use the Azure settings ({' '.join(str(err).split())[:200]})",
                           "check AZURE_STORAGE_CONNECTION_STRING / AZURE_STORAGE_ACCOUNT_NAME and the storage profile") from None

    async def disconnect(self, client: Any) -> None:
        """Close the blob client and the identity's token client; drop adlfs's exit-time finalizers, which
        would try again on a loop that is closed by then."""
        try:
            await client.service_client.close()
        finally:
            credential = getattr(client, "credential", None)
            close = getattr(credential, "close", None)
            if close is not None and asyncio.iscoroutinefunction(close):
                await close()
            for finalizer in list(getattr(weakref.finalize, "_registry", {})):
                info = finalizer.peek()
                if info is not None and info[0] is client:
                    finalizer.detach()

    def tree(self, url: str, client: Any, retry: RetryPolicy, report: TransferReport) -> RemoteTree:
        return AzureTree(self, url, client, retry, report)

    def specific_error(self, facts: ErrorFacts, url: str) -> GpstageError | None:
        names, status, text = facts.names, facts.status, facts.text
        codes = {str(getattr(c, "value", c)) for c in (getattr(e, "error_code", None) for e in facts.chain) if c}
        container = self.fs_path(url).split("/", 1)[0]
        if "ContainerNotFound" in codes:
            return StorageError(f"{url}: container {container!r} does not exist",
                                "create it, or fix the container name in the URL")
        if "CredentialUnavailableError" in names or (status is None and "ClientAuthenticationError" in names):
            return StorageError(f"{url}: no usable Azure credentials ({text.split('. ')[0][:160]})",
                                "set AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_KEY, "
                                "or log in (az login / a managed identity)")
        if "ServiceRequestError" in names or "ServiceRequestTimeoutError" in names:
            return StorageError(f"{url}: cannot reach the Azure blob endpoint ({text[:160]})",
                                "check the account name / BlobEndpoint and that the server is running")
        if (codes & {"AuthenticationFailed", "InvalidAuthenticationInfo"} or status == 401
                or "failed to authenticate" in text):  # Azurite says AuthorizationFailure for a wrong key
            return StorageError(f"{url}: Azure refused the credentials ({text[:160]})",
                                "check AZURE_STORAGE_KEY / the connection string / the SAS token")
        if status == 403 or codes & {"AuthorizationFailure", "AuthorizationPermissionMismatch", "InsufficientAccountPermissions"}:
            return StorageError(f"{url}: access denied by Azure ({text[:160]})",
                                "give the identity a Storage Blob Data role on the container, or use a key with access")
        return None


class AzureTree(BucketTree):
    """Lists with List Blobs only; uploads exactly the listed bytes, every request MD5-checked."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.container = self.client.service_client.get_container_client(self.bucket)
        self.block_slots = asyncio.Semaphore(2 * BLOCKS_IN_FLIGHT)  # blocks in memory across all files of this sync

    def blob(self, rel: str) -> Any:
        return self.container.get_blob_client(f"{self.prefix}{rel}")

    async def list_objects(self) -> dict[str, Entry]:
        out: dict[str, Entry] = {}
        pages = self.container.list_blobs(name_starts_with=self.prefix or None, include=["metadata"],
                                          results_per_page=LIST_PAGE).by_page()

        async def next_page() -> list[Any]:
            try:
                page = await pages.__anext__()  # a failed page is fetched again with the same continuation
            except StopAsyncIteration:
                return []
            return [b async for b in page]

        while True:
            for b in await self.call(next_page):
                rel = b.name[len(self.prefix):]
                if (b.metadata or {}).get("hdi_isfolder") == "true":
                    rel += "/"  # a directory of a hierarchical-namespace account: a marker, not a file
                md5 = b.content_settings.content_md5 if b.content_settings else None  # single-shot uploads, and gpstage's
                out[rel] = Entry(size=int(b.size or 0), etag=b.etag, modified_ns=to_ns(b.last_modified),
                                 md5=bytes(md5).hex() if md5 else None)
            if not pages.continuation_token:
                return out

    async def read_bytes(self, rel: str) -> bytes:
        async def get() -> bytes:
            stream = await self.blob(rel).download_blob(max_concurrency=1)
            return await stream.readall()

        return await self.call(get, rel)

    async def write_bytes(self, rel: str, data: bytes) -> None:
        await self.call(lambda: self._put(rel, data), rel)

    async def _put(self, rel: str, data: bytes, metadata: dict[str, str] | None = None) -> None:
        from azure.storage.blob import ContentSettings

        md5 = hashlib.md5(data, usedforsecurity=False).digest()
        await self.blob(rel).upload_blob(data, length=len(data), overwrite=True, validate_content=True, metadata=metadata,
                                         content_settings=ContentSettings(content_md5=bytearray(md5)))

    async def upload(self, src: ByteSource, rel: str, metadata: Mapping[str, str] | None = None) -> None:
        """Upload exactly ``src.size`` bytes (the listed size: a growing log arrives as a consistent prefix)."""
        meta = dict(metadata) if metadata else None
        if src.size <= SINGLE_PUT:
            data = await src.read(0, src.size)
            await self.call(lambda: self._put(rel, data, meta), rel)
        else:
            await self._blocks(src, rel, meta)

    async def _blocks(self, src: ByteSource, rel: str, metadata: dict[str, str] | None) -> None:
        """Blocks read in order (hashing the whole source on the way), staged concurrently, then committed."""
        from azure.storage.blob import BlobBlock, ContentSettings

        blob = self.blob(rel)
        size = src.size
        token = secrets.token_hex(6)  # block ids of this upload only, whoever else writes the blob meanwhile
        ids = [f"{token}-{i:08d}" for i in range(-(-size // BLOCK))]
        md5 = hashlib.md5(usedforsecurity=False)
        in_flight = asyncio.Semaphore(BLOCKS_IN_FLIGHT)
        tasks: list[asyncio.Task[None]] = []

        async def stage(block_id: str, data: bytes) -> None:
            try:
                await self.call(lambda: blob.stage_block(block_id, data, length=len(data), validate_content=True), rel)
            finally:
                in_flight.release()
                self.block_slots.release()

        try:
            for i, block_id in enumerate(ids):
                await in_flight.acquire()
                await self.block_slots.acquire()
                try:
                    offset = i * BLOCK
                    data = await src.read(offset, min(BLOCK, size - offset))
                    await asyncio.to_thread(md5.update, data)
                except BaseException:
                    in_flight.release()
                    self.block_slots.release()
                    raise
                tasks.append(asyncio.ensure_future(stage(block_id, data)))
                if any(t.done() and t.exception() for t in tasks):
                    break
            await asyncio.gather(*tasks)
        except BaseException:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise  # staged blocks that are never committed are discarded by the service
        settings = ContentSettings(content_md5=bytearray(md5.digest()))
        await self.call(lambda: blob.commit_block_list([BlobBlock(block_id=b) for b in ids], content_settings=settings,
                                                       metadata=metadata), rel)

    async def stat(self, rel: str) -> Entry | None:
        from azure.core.exceptions import ResourceNotFoundError

        async def get() -> Any:
            try:
                return await self.blob(rel).get_blob_properties()
            except ResourceNotFoundError:
                return None

        p = await self.call(get, rel)
        if p is None:
            return None
        md5 = p.content_settings.content_md5 if p.content_settings else None
        return Entry(size=int(p.size or 0), etag=p.etag, modified_ns=to_ns(p.last_modified),
                     md5=bytes(md5).hex() if md5 else None, sha256=(p.metadata or {}).get(SHA256_META))

    async def read_range(self, rel: str, offset: int, length: int) -> bytes:
        async def get() -> bytes:
            stream = await self.blob(rel).download_blob(offset=offset, length=length, max_concurrency=1)
            return await stream.readall()

        return await self.call(get, rel)

    async def copy_from(self, src: RemoteTree, src_rel: str, rel: str, size: int,
                        metadata: Mapping[str, str] | None = None) -> None:
        """Copy Blob within the account (the destination's credential authorises the source); a copy the
        service runs asynchronously is polled until it ends, and a failed or aborted one raises."""
        assert isinstance(src, AzureTree)
        blob = self.blob(rel)
        meta = dict(metadata) if metadata is not None else None
        started = await self.call(lambda: blob.start_copy_from_url(src.blob(src_rel).url, metadata=meta), rel)
        status = started.get("copy_status")
        while status == "pending":
            await asyncio.sleep(COPY_POLL_S)
            props = await self.call(blob.get_blob_properties, rel)
            status = props.copy.status
        if status != "success":
            raise StorageError(f"az://{self.bucket}/{self.object_key(rel)}: the server-side copy ended {status}",
                               "re-run the same command")

    async def download(self, rel: str, entry: Entry, dst: LocalTree, dst_rel: str | None = None) -> None:
        """Small blobs into memory and one write, larger ones streamed into a temp file in ``dst``; either
        is renamed into place once its size is verified."""
        if entry.size <= GET_WHOLE:
            return await self.fetch_whole(rel, entry, dst, dst_rel, in_loop_max=WRITE_IN_LOOP)
        async def fetch(tmp: str) -> None:
            stream = await self.blob(rel).download_blob(max_concurrency=1)  # later chunks pinned to its ETag
            with open(tmp, "wb") as f:
                async for chunk in stream.chunks():
                    f.write(chunk)

        await self.fetch_into(rel, entry, dst, dst_rel, fetch)

    async def delete(self, rels: list[str]) -> None:
        """One Delete Blob per blob (every request under the retry policy); a blob already gone is fine.
        Directory markers of hierarchical accounts go last, deepest first, once they are empty."""
        from azure.core.exceptions import ResourceNotFoundError

        slots = asyncio.Semaphore(DELETE_JOBS)

        async def one(rel: str) -> None:
            async def op() -> None:
                try:
                    await self.blob(rel.rstrip("/")).delete_blob()
                except ResourceNotFoundError:
                    pass

            async with slots:
                await self.call(op, rel)

        await asyncio.gather(*(one(r) for r in rels if not r.endswith("/")))
        for marker in sorted((r for r in rels if r.endswith("/")), key=lambda r: r.count("/"), reverse=True):
            await one(marker)
