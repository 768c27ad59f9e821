"""The storage provider interface: what gpstage needs to know about one URL scheme.

A provider is small on purpose (fsspec does the I/O): it names the fsspec protocol, builds the
filesystem from the ecosystem's standard environment, turns a listing's ``info`` dict into an
:class:`Entry`, and turns an SDK exception into a one-line error that says what to do. Local schemes
(``file``, ``nfs``) set ``local = True`` and are synced with plain file operations.

Writing a provider for a new fsspec protocol: subclass :class:`FsspecProvider`, set ``scheme``,
``protocol`` and ``extra``, override :meth:`filesystem_options` if the SDK needs options, register the
class under the ``gpstage.storage`` entry-point group. See docs/storage-providers.md.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any, ClassVar

from gpstage.errors import BadInput, GpstageError, MissingDependency, StorageError
from gpstage.retry import cause_chain, http_status
from gpstage.storage.tree import Entry
from gpstage.urls import split_url


class StorageProvider:
    """Base of every provider. ``scheme`` is the URL scheme it serves."""

    scheme: ClassVar[str] = ""
    local: ClassVar[bool] = False  # paths live on this machine's file system
    extra: ClassVar[str | None] = None  # the pip extra that installs its packages, for error messages

    def __init__(self, scheme: str | None = None) -> None:
        if scheme:
            self.scheme = scheme

    def local_path(self, url: str) -> str:
        raise NotImplementedError


class FsspecProvider(StorageProvider):
    """A provider backed by an fsspec filesystem; async implementations are used natively."""

    protocol: ClassVar[str] = ""

    @property
    def fs_protocol(self) -> str:
        return self.protocol or self.scheme

    def fs_path(self, url: str) -> str:
        """The path fsspec uses for ``url`` (for object stores: ``bucket/key``), without trailing '/'."""
        import fsspec

        return fsspec.get_filesystem_class(self.fs_protocol)._strip_protocol(url).rstrip("/")

    def filesystem_options(self, url: str) -> dict[str, Any]:
        """Keyword arguments for the fsspec filesystem, from the ecosystem's standard environment."""
        return {}

    def make_filesystem(self, url: str) -> Any:
        """Create the filesystem; called inside the running event loop so async ones bind to it."""
        import fsspec

        try:
            cls = fsspec.get_filesystem_class(self.fs_protocol)
        except ImportError as err:
            raise MissingDependency(
                f"the {self.scheme}:// scheme needs a package that is not installed ({err})",
                f"pip install 'gpstage[{self.extra}]'" if self.extra else "install the package named above",
            ) from None
        opts = {"skip_instance_cache": True, **self.filesystem_options(url)}
        if getattr(cls, "async_impl", False):
            opts.update(asynchronous=True, loop=asyncio.get_running_loop())
        return cls(**opts)

    async def close_filesystem(self, fs: Any) -> None:
        """Release connections; the default does nothing."""

    def entry_from_info(self, info: dict[str, Any]) -> Entry:
        """An :class:`Entry` from a listing's info dict; ``etag`` must identify the stored bytes."""
        modified = _to_ns(info.get("LastModified") or info.get("last_modified") or info.get("updated") or info.get("mtime") or info.get("created"))
        etag = info.get("ETag") or info.get("etag")
        if not etag and modified is not None:
            etag = f"t{modified}"  # no ETag: size + write time identify the object well enough
        return Entry(size=int(info.get("size") or 0), etag=etag, modified_ns=modified)

    def tree(self, url: str, fs: Any, retry: Any, report: Any) -> Any:
        """The :class:`~gpstage.storage.remote.RemoteTree` for ``url``; providers may return a subclass."""
        from gpstage.storage.remote import RemoteTree

        return RemoteTree(self, url, fs, retry, report)

    def upload_options(self, size: int) -> dict[str, Any]:
        """Extra keyword arguments for ``put_file`` (e.g. chunk sizes that bound memory)."""
        return {}

    def describe_error(self, exc: BaseException, url: str) -> GpstageError:
        """Turn a final (non-retried or retried-out) SDK error into a one-line error with a fix."""
        if isinstance(exc, GpstageError):
            return exc
        status = http_status(exc)
        text = _first_line(exc)
        for e in cause_chain(exc):
            if isinstance(e, FileNotFoundError) or status == 404:
                return StorageError(f"{url}: not found ({text})", "check the bucket/container name and the path")
            if isinstance(e, PermissionError) or status in (401, 403):
                return StorageError(f"{url}: access denied ({text})", "check the credentials and their permissions")
        return StorageError(f"{url}: {text}", "check the endpoint and credentials; the operation was retried")


def bucket_path(url: str) -> str:
    """``bucket/key/prefix`` of an object-store URL; keys are literal (never decoded or normalised)."""
    scheme, rest = split_url(url)
    path = rest.rstrip("/")
    if not path or path.startswith("/"):
        raise BadInput(f"{url!r} names no bucket", f"write {scheme}://BUCKET/prefix")
    return path


def quiet_library_logs(name: str) -> None:
    """A NullHandler on an SDK's logger: its warnings reach an application's logging setup if there is
    one, and are otherwise not printed by Python's last-resort handler (errors are gpstage's one line)."""
    import logging

    logger = logging.getLogger(name)
    if not any(isinstance(h, logging.NullHandler) for h in logger.handlers):
        logger.addHandler(logging.NullHandler())


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


def _to_ns(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return int(value.timestamp() * 1e9)
    if isinstance(value, (int, float)):
        return int(value * 1e9) if value < 1e11 else int(value)
    try:
        return int(datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp() * 1e9)
    except ValueError:
        return None


def require_absolute_local(url: str) -> str:
    scheme, rest = split_url(url)
    if not rest.startswith("/"):
        raise BadInput(f"{url!r}: {scheme}:// URLs need an absolute path", f"write {scheme}:///absolute/path (three slashes)")
    return rest
