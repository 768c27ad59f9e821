"""The storage interfaces: what a provider for one URL scheme, and the tree it opens, must do.

The model. A storage URL names a directory: ``file:///abs/path``, ``nfs:///abs/path``, or a key prefix
in a bucket (``s3://bucket/prefix``). A :class:`StorageProvider` serves one scheme. Two kinds exist:

- a :class:`LocalProvider` (``file``, ``nfs``) maps a URL to a path on this machine; gpstage syncs it
  with plain file operations (:class:`~gpstage.storage.local.LocalTree`), and modes and mtimes are the
  file system's own;
- a :class:`RemoteProvider` (``s3``, ``gs``, ``az``, any fsspec protocol) connects a client for the URL
  and opens a :class:`RemoteTree` over it. A tree lists every object under its root in one pass, and
  moves whole files; gpstage's sync engine plans on top of it, and the tree's shared code (here)
  keeps the manifest of modes and mtimes (docs/storage-format.md), retries and counts every request
  by gpstage's one policy (docs/design.md §6), and turns the final failure into one line that says what
  to do. Object stores drop what the manifest keeps, so a tree never writes modes or mtimes itself.

What a provider author implements: for a remote scheme, :meth:`RemoteProvider.connect`,
:meth:`RemoteProvider.fs_path` and :meth:`RemoteProvider.tree` (plus :meth:`~RemoteProvider.disconnect`
and :meth:`~RemoteProvider.specific_error` where it has something to say), and a :class:`RemoteTree`
subclass with its abstract methods. For a scheme an fsspec filesystem already serves,
:class:`~gpstage.storage.generic.FsspecProvider` implements all of it: set ``scheme`` and ``protocol``.
Register the class under the ``gpstage.storage`` entry-point group; docs/storage-providers.md.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, ClassVar, TypeVar

from gpstage import aio
from gpstage.errors import GpstageError, StorageError
from gpstage.report import TransferReport
from gpstage.retry import RetryPolicy
from gpstage.storage import manifestcache
from gpstage.storage.errorfacts import ErrorFacts
from gpstage.storage.listing import KnownKeys
from gpstage.storage.local import LocalTree, unlink_quietly
from gpstage.storage.manifest import Manifest
from gpstage.storage.source import ByteSource
from gpstage.storage.tree import MANIFEST_NAME, Entry, Tree, check_key, is_reserved
from gpstage.urls import join_url

T = TypeVar("T")


class StorageProvider(ABC):  # noqa: B024 - abstract by kind: implement LocalProvider or RemoteProvider
    """Serves the URLs of one ``scheme``. Built once per scheme and shared: it must hold no per-URL state."""

    scheme: ClassVar[str] = ""
    local: ClassVar[bool] = False  # True: URLs are paths on this machine (LocalProvider)
    extra: ClassVar[str | None] = None  # the pip extra that installs its packages, named in error messages
    keeps_metadata: ClassVar[bool] = True  # objects keep user metadata (RemoteTree.upload/stat): the input cache needs it

    def __init__(self, scheme: str | None = None) -> None:
        if scheme:  # one class may serve several spellings (gs/gcs, az/abfs): the instance knows which
            self.scheme = scheme

    def runs_on_threads(self, url: str) -> bool:
        """Whether the client and trees for ``url`` await only :mod:`gpstage.aio`'s primitives (no asyncio
        object, no loop-bound client), so that a sync through them can run without asyncio. False unless
        a provider knows better: an async SDK's client belongs to a loop."""
        return False


class LocalProvider(StorageProvider):
    local: ClassVar[bool] = True

    def runs_on_threads(self, url: str) -> bool:
        return True

    @abstractmethod
    def local_path(self, url: str) -> str:
        """The absolute, normalised path ``url`` names on this machine. Raises ``BadInput`` for a URL
        that is not an absolute path. Pure: no file system access."""


class RemoteProvider(StorageProvider):
    """A scheme whose bytes live behind a client: object stores, and fsspec protocols."""

    @abstractmethod
    def fs_path(self, url: str) -> str:
        """The store's own name for the directory ``url`` (``bucket/key/prefix``), without a trailing
        '/'. Keys are literal: never %-decoded or normalised. Raises ``BadInput`` for a URL that names
        no bucket. Pure: no request."""

    @abstractmethod
    def connect(self, url: str) -> Any:
        """A client for ``url`` from its storage profile (gpstage.profiles) and the ecosystem's standard
        environment, created inside the running event loop (async clients bind to it). Makes no request.
        Raises ``MissingDependency`` naming the extra to install, ``StorageError`` for missing or
        unusable credentials, ``BadInput`` for malformed settings — one line each."""

    def same_store(self, a: str, b: str) -> bool:
        """Whether URLs ``a`` and ``b`` of this provider are on one store, so that one client reaches both and a
        server-side copy (:meth:`RemoteTree.copy_from`) can go from one to the other. Default: the same
        storage profile settings (endpoint, region, credentials)."""
        from gpstage.profiles import settings_for

        return settings_for(a) == settings_for(b)

    async def disconnect(self, client: Any) -> None:  # noqa: B027 - a client without connections needs nothing
        """Release what :meth:`connect` opened. Called exactly once per client, also after a failure."""

    @abstractmethod
    def tree(self, url: str, client: Any, retry: RetryPolicy, report: TransferReport) -> RemoteTree:
        """The tree under ``url``, using ``client``; every request it makes is counted in ``report``."""

    def describe_error(self, exc: BaseException, url: str) -> GpstageError:
        """The one-line error for a final (not, or no longer, retried) failure at ``url``: what this
        provider knows (:meth:`specific_error`) first, then what any HTTP store means by it."""
        if isinstance(exc, GpstageError):
            return exc
        facts = ErrorFacts.of(exc)
        return self.specific_error(facts, url) or generic_error(facts, url)

    def specific_error(self, facts: ErrorFacts, url: str) -> GpstageError | None:
        """This store's reading of an error (missing bucket, refused credentials, unreachable
        endpoint…), or None to leave it to the generic reading."""
        return None


def generic_error(facts: ErrorFacts, url: str) -> GpstageError:
    if facts.not_found:
        return StorageError(f"{url}: not found ({facts.text})", "check the bucket/container name and the path")
    if facts.denied:
        return StorageError(f"{url}: access denied ({facts.text})", "check the credentials and their permissions")
    return StorageError(f"{url}: {facts.text}", "check the endpoint and credentials; the operation was retried")


class RemoteTree(ABC):
    """The objects under ``url`` (a key prefix), as one tree of files.

    Every abstract method makes its requests through :meth:`call`, so each is retried by gpstage's
    policy, counted, and ends — when it fails for good — in the provider's one-line error. Relative
    keys (``rel``) use '/' and have been checked by :func:`~gpstage.storage.tree.check_key`.
    """

    def __init__(self, provider: RemoteProvider, url: str, client: Any, retry: RetryPolicy, report: TransferReport) -> None:
        self.provider = provider
        self.url = url
        self.client = client
        self.root = provider.fs_path(url)
        self.retry = retry
        self.report = report
        self.manifest = Manifest()  # every manifest the listing found, merged
        self.known: KnownKeys | None = None  # while scanned in a sync: the keys its other side holds
        self.root_manifest = Manifest()  # the one stored at the root, which write_manifest replaces

    # ---- what a store implements ---------------------------------------------------------------
    @abstractmethod
    async def list_objects(self) -> dict[str, Entry]:
        """Every object under the root, in as few requests as the store allows (no per-object HEADs):
        relative key → :class:`Entry` with ``size``, an ``etag`` that changes exactly when the bytes do,
        ``modified_ns`` and, where the listing gives it, ``md5``. Nothing is filtered: reserved names,
        directory markers (keys ending in '/') and unsafe keys are returned as listed. During a sync's
        scan, :attr:`known` holds the keys the other side has (once its walk ends): a store that can list
        from a start key may read its listing in ranges cut along them (:mod:`gpstage.storage.listing`)."""

    @abstractmethod
    async def read_bytes(self, rel: str) -> bytes:
        """The whole object ``rel``; a missing one raises (FileNotFoundError or the store's 404)."""

    @abstractmethod
    async def write_bytes(self, rel: str, data: bytes) -> str | None:
        """Store ``data`` as ``rel``, replacing it; readers see the old or the new object, never a mix.
        Return the new object's ETag as a listing shows it, when the store answers with one (the
        manifest cache keys on it: :mod:`gpstage.storage.manifestcache`), else None."""

    @abstractmethod
    async def upload(self, src: ByteSource, rel: str, metadata: Mapping[str, str] | None = None) -> None:
        """Store exactly ``src.size`` bytes of ``src`` as ``rel``, read in ranges (a local file, or another
        store's object streamed through: :mod:`gpstage.storage.source`). Verify the bytes where the store
        can (a Content-MD5, a returned checksum). Bound memory: large sources go in parts. A killed upload
        leaves no object under ``rel`` (parts at most: :meth:`abort_incomplete`). ``metadata``: user
        metadata to store with the object (the input cache's ``gpstagesha256``), returned by :meth:`stat`."""

    @abstractmethod
    async def stat(self, rel: str) -> Entry | None:
        """The entry of the one object ``rel`` (size, etag, md5 where the store keeps one, ``sha256`` from
        its ``gpstagesha256`` metadata), or None if there is none: one request (a HEAD), never a listing."""

    @abstractmethod
    async def read_range(self, rel: str, offset: int, length: int) -> bytes:
        """``length`` bytes of object ``rel`` from ``offset``: one ranged GET."""

    @abstractmethod
    async def copy_from(self, src: RemoteTree, src_rel: str, rel: str, size: int,
                        metadata: Mapping[str, str] | None = None) -> None:
        """Copy object ``src_rel`` of ``src`` — a tree of the same store, opened with this tree's client
        (:meth:`subtree`) — to ``rel`` server-side: no byte passes through this process (S3 CopyObject,
        and UploadPartCopy above its 5 GiB limit; GCS rewrite; Azure Copy Blob). ``size`` is the
        source's listed size; ``metadata`` replaces the copy's user metadata when given. A missing source
        raises FileNotFoundError (or the store's 404), so a caller can tell it from other failures."""

    @abstractmethod
    async def download(self, rel: str, entry: Entry, dst: LocalTree, dst_rel: str | None = None) -> None:
        """Fetch ``rel`` (listed as ``entry``) to ``dst_rel or rel`` in ``dst`` atomically, with the
        entry's mode and mtime: :meth:`fetch_into` does the temp-file, verify and rename part."""

    @abstractmethod
    async def delete(self, rels: list[str]) -> None:
        """Remove these objects (batched where the store allows); a missing one is not an error."""

    def multipart(self, size: int) -> bool:
        """Whether an upload of ``size`` bytes leaves resumable state behind if killed (S3 multipart)."""
        return False

    def batch(self, items: list[tuple[str, Entry]]) -> list[tuple[str, Entry]]:
        """Which of these downloads :meth:`download_batch` takes: none here. A store whose client pays
        an event-loop round trip per small object takes the many small ones (S3: docs/design.md, "The S3 fast lane")."""
        return []

    async def download_batch(self, items: list[tuple[str, Entry]], dst: LocalTree, workers: int) -> dict[str, Exception]:
        """Download what :meth:`batch` took, as :meth:`download` does each (atomic, mode and mtime, every
        request retried by the policy and counted), ``workers`` at a time. Returns the final error of
        each one that failed for good: a described storage error, or the local write's own error."""
        raise NotImplementedError(f"{type(self).__name__} batches no downloads")  # batch() took none

    async def abort_incomplete(self, rels: list[str] | None = None) -> int:
        """Abort uploads a killed writer left unfinished (for ``rels``, or all); stores without them: 0."""
        return 0

    # ---- written once, for every store -----------------------------------------------------------
    def subtree(self, url: str) -> RemoteTree:
        """The tree under another ``url`` of this store, sharing this tree's client, retry policy and report
        (so that :meth:`copy_from` can reach both)."""
        return self.provider.tree(url, self.client, self.retry, self.report)

    async def call(self, op: Callable[[], Awaitable[T]], rel: str = "", failed: Exception | None = None) -> T:
        """Run ``op`` under the retry policy; count requests and retries; translate the final error.
        ``failed``: a first attempt, made and counted elsewhere (a batch), raised this."""

        async def counted() -> T:
            self.report.requests += 1
            return await op()

        def on_retry(_: BaseException) -> None:
            self.report.retries += 1

        try:
            return await self.retry.run(counted, on_retry, failed=failed)
        except Exception as exc:
            raise self.provider.describe_error(exc, join_url(self.url, rel)) from exc

    async def scan(self, known: KnownKeys | None = None) -> Tree:
        """The tree as gpstage sees it: reserved names hidden, unsafe keys refused, manifest applied.
        ``known``: the keys the sync's other side holds, told when its own scan ends (see :meth:`list_objects`)."""
        tree = Tree()
        manifests: dict[str, str | None] = {}  # where manifests are (relative dir) -> their listed ETag
        self.known = known
        try:
            listed = await self.list_objects()
        finally:
            self.known = None
        for rel, entry in listed.items():
            if not rel:
                continue  # a "folder" marker object for the root itself
            head, _, name = rel.rpartition("/")
            if rel.endswith("/"):  # a "directory marker" object written by some tools
                tree.dirs[check_key(rel.rstrip("/"), self.url)] = None
                continue
            if is_reserved(name):
                if name == MANIFEST_NAME:
                    manifests[head] = entry.etag
                continue
            tree.files[check_key(rel, self.url)] = entry
        for rel in sorted(p.rpartition("/")[0] for p in tree.files):
            while rel and rel not in tree.dirs:
                tree.dirs[rel] = None
                rel = rel.rpartition("/")[0]
        self.manifest = Manifest()
        for prefix in sorted(manifests, key=len):
            found = Manifest.parse(await self._manifest_bytes(prefix, manifests[prefix]), prefix)
            if not prefix:
                self.root_manifest = found
            if len(manifests) == 1:
                self.manifest = found  # the one manifest, not a copy of it (100,000 entries are ~5 MiB of dict)
            else:
                self.manifest.merge(found)
        self.manifest.apply(tree, self.url)
        return tree

    async def fetch_into(self, rel: str, entry: Entry, dst: LocalTree, dst_rel: str | None,
                         fetch: Callable[[str], Awaitable[Any]], calls_itself: bool = False) -> None:
        """``fetch(tmp)`` (retried as one request) writes the object to a temp file beside its final name in
        ``dst``; it is renamed into place once its size is verified, and removed whatever happens.
        ``calls_itself``: ``fetch`` sends several requests, each through :meth:`call` (retried alone)."""
        final, tmp = await aio.to_thread(dst.prepare, dst_rel or rel)
        try:
            await (fetch(tmp) if calls_itself else self.call(lambda: fetch(tmp), rel))
            await aio.to_thread(dst.commit, tmp, final, entry.size, entry.mode, entry.time_ns)
        finally:
            await aio.to_thread(unlink_quietly, tmp)

    async def fetch_whole(self, rel: str, entry: Entry, dst: LocalTree, dst_rel: str | None, in_loop_max: int = 0) -> None:
        """A small object in one request and one atomic write, with the entry's mode and mtime. The write
        happens in the event loop up to ``in_loop_max`` bytes (a thread hop would cost more), else in a
        worker thread, where creating files (~0.2 ms of kernel time each) overlaps the loop's requests."""
        data = await self.read_bytes(rel)
        if entry.size <= in_loop_max:
            dst.write_file(dst_rel or rel, data, entry)
        else:
            await aio.to_thread(dst.write_file, dst_rel or rel, data, entry)

    async def _manifest_bytes(self, prefix: str, etag: str | None) -> bytes:
        """The manifest in dir ``prefix``: this machine's copy if the store still lists the object it
        wrote or read (same ETag), else read from the store, and kept for next time."""
        rel = f"{prefix}/{MANIFEST_NAME}" if prefix else MANIFEST_NAME
        url = join_url(self.url, rel)
        kept = await aio.to_thread(manifestcache.load, url, etag)
        if kept is not None:
            return kept
        data = await self.read_bytes(rel)
        await aio.to_thread(manifestcache.store, url, etag, data)
        return data

    async def write_manifest(self, tree: Tree) -> bool:
        """Store the manifest of ``tree`` at the root unless the stored one already says the same; True if written."""
        if self.root_manifest.describes(tree):
            return False
        manifest = Manifest.build(tree)
        data = manifest.dumps()
        etag = await self.write_bytes(MANIFEST_NAME, data)
        await aio.to_thread(manifestcache.store, join_url(self.url, MANIFEST_NAME), etag, data)
        self.root_manifest = manifest
        return True
