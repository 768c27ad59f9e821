"""URL scheme → storage provider, imported only when a URL of that scheme is used.

Built-ins are listed here by import path (as fsspec's registry does); third parties add schemes
through the ``gpstage.storage`` entry-point group (``scheme = "package.module:ProviderClass"``). A
scheme neither knows but fsspec does is served by the generic :class:`FsspecProvider`.
"""

from __future__ import annotations

import importlib
from functools import lru_cache

from gpstage.errors import BadInput, MissingDependency
from gpstage.storage.base import FsspecProvider, StorageProvider
from gpstage.urls import split_url

ENTRY_POINT_GROUP = "gpstage.storage"

BUILTIN: dict[str, tuple[str, str | None]] = {
    # scheme: (import path, pip extra that provides its packages)
    "file": ("gpstage.storage.localfs:FileProvider", None),
    "nfs": ("gpstage.storage.localfs:NfsProvider", None),
    "s3": ("gpstage.storage.s3:S3Provider", "s3"),
}


def _load(target: str) -> type[StorageProvider]:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


@lru_cache(maxsize=1)
def _plugins() -> dict[str, object]:
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def known_schemes() -> list[str]:
    return sorted({*BUILTIN, *_plugins()})


@lru_cache(maxsize=None)
def get_provider(scheme: str) -> StorageProvider:
    """The provider for ``scheme``; a clear error names the extra to install or the schemes known."""
    scheme = scheme.lower()
    if scheme in BUILTIN:
        target, extra = BUILTIN[scheme]
        try:
            cls = _load(target)
        except ImportError as err:
            raise MissingDependency(f"the {scheme}:// scheme needs {err.name or 'a package'}, which is not installed",
                                    f"pip install 'gpstage[{extra}]'") from None
        return cls(scheme)
    if scheme in _plugins():
        ep = _plugins()[scheme]
        try:
            cls = ep.load()  # type: ignore[attr-defined]
        except ImportError as err:
            raise MissingDependency(f"the {scheme}:// storage plugin {ep.value} cannot be imported ({err})",  # type: ignore[attr-defined]
                                    "install the plugin's package and its dependencies") from None
        return cls(scheme)
    from fsspec.registry import known_implementations, registry

    if scheme in known_implementations or scheme in registry:
        return FsspecProvider(scheme)
    raise BadInput(f"unknown storage scheme {scheme}://",
                   f"use one of {', '.join(s + '://' for s in known_schemes())}, a path, or install a provider plugin")


def provider_for(url: str) -> StorageProvider:
    return get_provider(split_url(url).scheme)
