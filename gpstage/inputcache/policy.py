"""Whether, and where, a job dir's files go through the input cache: the spec's ``input_cache`` first, else
the storage profile of the dir's URL; the cache root is the profile's ``input_cache_root``, else
``<storage_root>/.gpstage-cache``. Only ``inputs`` dirs that are not ``private`` are cached."""

from __future__ import annotations

from gpstage.errors import BadInput
from gpstage.inputcache import CACHE_DIR_NAME, DEFAULT_MIN_SIZE
from gpstage.inputcache.place import InputCache
from gpstage.spec import DirSpec, JobSpec, Role
from gpstage.storage import local_path_of, provider_for
from gpstage.storage.base import RemoteProvider
from gpstage.urls import join_url


def cache_root(storage_root: str, url: str) -> str:
    """The cache root serving ``url`` (a dir under ``storage_root``)."""
    from gpstage.profiles import settings_for

    return settings_for(url).input_cache_root or join_url(storage_root, CACHE_DIR_NAME)


def cache_wanted(spec: JobSpec, d: DirSpec) -> bool:
    if d.role is not Role.INPUTS or d.private:
        return False
    if spec.input_cache is not None:
        return spec.input_cache
    from gpstage.profiles import settings_for

    return bool(settings_for(spec.url_of(d)).input_cache)


def cache_for(spec: JobSpec, d: DirSpec) -> InputCache | None:
    """The cache ``d``'s stage-in goes through, or None. Refuses (one line) a cache root that is not on the
    dir's store, and a store that cannot keep the cache's metadata."""
    if not cache_wanted(spec, d):
        return None
    from gpstage.profiles import settings_for

    url = spec.url_of(d)
    root = cache_root(spec.storage_root, url)
    check_same_store(root, url)
    min_size = settings_for(url).input_cache_min_size
    return InputCache(root, spec.job_id, DEFAULT_MIN_SIZE if min_size is None else min_size)


def check_same_store(root: str, url: str) -> None:
    provider, root_provider = provider_for(url), provider_for(root)
    if isinstance(provider, RemoteProvider):
        if not provider.keeps_metadata:
            raise BadInput(f"the input cache cannot verify objects on {provider.scheme}:// (its objects keep no metadata)",
                           "turn input_cache off for this storage")
        if type(root_provider) is type(provider) and provider.same_store(root, url):
            return
    elif local_path_of(root) is not None:
        return
    raise BadInput(f"input cache root {root} is not on the same store as {url}, so it cannot copy server-side",
                   "set input_cache_root in the storage profile to a URL on that store (or leave it unset)")


def cache_roots(spec: JobSpec) -> list[str]:
    """The cache roots a job's stage-in may have referenced (for ``gpstage clean``)."""
    return sorted({cache_root(spec.storage_root, spec.url_of(d)) for d in spec.dirs if cache_wanted(spec, d)})
