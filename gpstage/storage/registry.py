"""URL scheme → storage provider, imported only when a URL of that scheme is used.

Built-ins are listed here by import path (as fsspec's registry does); third parties add schemes
through the ``gpstage.storage`` entry-point group (``scheme = "package.module:ProviderClass"``). A
scheme neither knows but fsspec does is served by the generic :class:`FsspecProvider`.
"""

from __future__ import annotations

from functools import cache

from gpstage.errors import BadInput
from gpstage.plugins import PluginRegistry
from gpstage.storage.base import LocalProvider, StorageProvider
from gpstage.urls import split_url

ENTRY_POINT_GROUP = "gpstage.storage"

PROVIDERS = PluginRegistry(ENTRY_POINT_GROUP, "storage scheme", {
    # scheme: (import path, pip extra that provides its packages)
    "file": ("gpstage.storage.localfs:FileProvider", None),
    "nfs": ("gpstage.storage.localfs:NfsProvider", None),
    "s3": ("gpstage.storage.s3:S3Provider", "s3"),
    "gs": ("gpstage.storage.gcs:GcsProvider", "gcs"),
    "gcs": ("gpstage.storage.gcs:GcsProvider", "gcs"),  # gcsfs's other name for gs://
    "az": ("gpstage.storage.azure:AzureProvider", "azure"),
    "abfs": ("gpstage.storage.azure:AzureProvider", "azure"),
    "abfss": ("gpstage.storage.azure:AzureProvider", "azure"),  # adlfs's TLS spelling of abfs://
})


def known_schemes() -> list[str]:
    return PROVIDERS.names()


@cache
def get_provider(scheme: str) -> StorageProvider:
    """The provider for ``scheme``; a clear error names the extra to install or the schemes known."""
    scheme = scheme.lower()
    if scheme in PROVIDERS:
        return PROVIDERS.load(scheme)(scheme)
    from fsspec.registry import known_implementations, registry

    if scheme in known_implementations or scheme in registry:
        from gpstage.storage.generic import FsspecProvider

        return FsspecProvider(scheme)
    raise BadInput(f"unknown storage scheme {scheme}://",
                   f"use one of {', '.join(s + '://' for s in known_schemes())}, a path, or install a provider plugin")


def provider_for(url: str) -> StorageProvider:
    return get_provider(split_url(url).scheme)


def local_path_of(url: str) -> str | None:
    """The path ``url`` names on this machine (``file``/``nfs``), or None for a remote URL."""
    provider = provider_for(url)
    return provider.local_path(url) if isinstance(provider, LocalProvider) else None
