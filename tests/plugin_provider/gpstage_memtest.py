"""``memtest://name/prefix``: gpstage storage in fsspec's in-memory filesystem (one per process).

The whole provider: which fsspec protocol serves the scheme, and where a URL lives in it. Listing,
transfers, retries, the manifest and the error messages come from gpstage's FsspecProvider/RemoteTree.
"""

from gpstage.storage.generic import FsspecProvider
from gpstage.urls import split_url


class MemtestProvider(FsspecProvider):
    scheme = "memtest"  # the URL scheme it serves
    protocol = "memory"  # the fsspec protocol that does the I/O
    extra = None  # no gpstage extra: fsspec is always installed

    def fs_path(self, url: str) -> str:
        return "/" + split_url(url).rest.strip("/")  # memtest://a/b -> /a/b in the memory filesystem
