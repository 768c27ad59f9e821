"""adlfs as the az:// provider's client: its filesystem class with gpstage's blob service client (no SDK
retries, gpstage's timeouts), imported on first use; and connection strings read into their fields."""

from __future__ import annotations

from typing import Any

from gpstage.errors import MissingDependency
from gpstage.storage.buckets import quiet_library_logs

_fs_class: Any = None


def filesystem_class() -> Any:
    """adlfs's filesystem whose blob client is gpstage's (no SDK retries, gpstage's timeouts)."""
    global _fs_class
    if _fs_class is None:
        try:
            from adlfs import AzureBlobFileSystem
        except ImportError as err:
            raise MissingDependency(f"the az:// scheme needs {err.name or 'adlfs'}, which is not installed",
                                    "pip install 'gpstage[azure]'") from None

        quiet_library_logs("azure")

        class GpstageBlobFileSystem(AzureBlobFileSystem):
            """adlfs with the blob service client made by ``client_factory(fs)``."""

            def __init__(self, *args: Any, client_factory: Any, **kwargs: Any) -> None:
                self._client_factory = client_factory
                super().__init__(*args, **kwargs)

            def do_connect(self) -> None:
                self.service_client = self._client_factory(self)

        _fs_class = GpstageBlobFileSystem
    return _fs_class


def parse_connection_string(conn: str) -> dict[str, str]:
    return {k.strip(): v for k, _, v in (p.partition("=") for p in conn.split(";") if "=" in p)}
