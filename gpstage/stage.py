"""Staging a job's dirs between their local paths and storage (docs/design.md §1-§3).

``stage_in`` pushes every ``in``/``inout`` dir from its local path to its URL and stores the spec at
``<metadata URL>/job.json``; ``stage_out`` pulls every ``out``/``inout`` dir back. A dir nested in
another is skipped by its parent's sync and synced once under its own role. A dir whose URL is its
own path (``nfs:///`` on a shared file system) is not copied: it only has to exist. The container
entry uses the same code with ``node=True``: it pulls the ``in`` dirs and pushes the ``out`` dirs.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gpstage.aio import run_sync
from gpstage.errors import BadInput
from gpstage.inputcache.policy import cache_for, cache_roots, cache_wanted
from gpstage.jobfiles import spec_url
from gpstage.report import TransferReport
from gpstage.retry import RetryPolicy
from gpstage.sources import check_sources, place_sources
from gpstage.spec import DEFAULT_STAGE_IN_EXCLUDES, DirSpec, JobSpec, Role, load_spec, parse_spec
from gpstage.storage import local_path_of, provider_for, read_url_sync, remove_tree, runs_on_threads, write_url
from gpstage.sync import Progress, async_sync

# Dirs that may not exist yet when a job is staged in: the module creates their content.
MAY_BE_EMPTY = (Role.WORKDIR, Role.METADATA)
OWN_ROLES = (Role.WORKDIR, Role.METADATA, Role.INPUTS)  # a job's own dirs; tasklib and libraries are shared


@dataclass
class DirTransfer:
    role: str
    path: str
    url: str
    direction: str
    report: TransferReport | None = None
    skipped: str | None = None  # why nothing was copied

    def to_dict(self) -> dict[str, Any]:
        return {"role": self.role, "path": self.path, "url": self.url, "direction": self.direction,
                "skipped": self.skipped, "report": self.report.to_dict() if self.report else None}


def nested_excludes(spec: JobSpec, d: DirSpec) -> list[str]:
    """Globs that keep ``d``'s sync out of the dirs nested in it (matched literally)."""
    out = []
    for child in spec.nested_in(d):
        rel = glob.escape(os.path.relpath(child.path, d.path))
        out += [rel, f"{rel}/*"]
    return out


def read_spec(source: str) -> JobSpec:
    """A spec from a local path or from a storage URL (``s3://…/job.json``, as :func:`stage_in` stores it)."""
    if "://" not in source:
        return load_spec(source)
    return parse_spec(read_url_sync(source).decode("utf-8", errors="replace"), source=f"job spec {source}")


def check_storage(spec: JobSpec) -> None:
    """Fail early, before anything is created or copied: a dir's URL without a usable provider, an input cache
    that cannot work where it is asked for, an input source that is unknown or missing."""
    for d in spec.dirs:
        provider_for(spec.url_of(d))
        cache_for(spec, d)
    sources = [s for d in spec.dirs for s in d.sources or ()]
    if sources:
        run_sync(check_sources(sources))


def same_path(spec: JobSpec, d: DirSpec) -> bool:
    """True when the dir's URL is the dir itself (shared file system: nothing to copy)."""
    path = local_path_of(spec.url_of(d))
    return path is not None and os.path.realpath(path) == os.path.realpath(d.path)


async def async_stage(spec: JobSpec, inbound: bool, *, node: bool = False, jobs: int | None = None,
                      dry_run: bool = False, progress: Callable[[DirSpec], Progress | None] | None = None,
                      retry: RetryPolicy | None = None, roles: tuple[Role, ...] | None = None) -> list[DirTransfer]:
    """Sync each dir of ``spec`` that moves in this direction (``inbound``: the ``in``/``inout`` dirs).

    On the server (``node=False``) inbound pushes local → URL (inputs through the input cache where it is on)
    and places the inputs named by URL, then stores the spec; outbound pulls back.
    On the compute node (``node=True``, the container entry) it is the mirror image: inbound pulls
    URL → local path, outbound pushes local → URL.
    """
    out = []
    to_storage = inbound != node
    for d in _moving(spec, inbound, roles):
        direction = d.effective_direction
        url = spec.url_of(d)
        t = DirTransfer(d.role.value, d.path, url, direction.value)
        out.append(t)
        server_in = inbound and not node  # the server's stage-in: where sources and the input cache act
        if same_path(spec, d):
            if inbound and not os.path.isdir(d.path) and d.role not in MAY_BE_EMPTY and not (server_in and d.sources):
                raise BadInput(f"{d.role.value} dir {d.path} does not exist", "create it or fix the path in the job spec")
            t.skipped = "shared file system: the URL is the dir itself (nothing to copy, nor to cache)"
        else:
            src, dst = (d.path, url) if to_storage else (url, d.path)
            if await _source_exists(src):
                excludes = list(d.exclude if d.exclude is not None else (DEFAULT_STAGE_IN_EXCLUDES if inbound else ()))
                excludes += nested_excludes(spec, d)
                t.report = await async_sync(src, dst, jobs=jobs, exclude=excludes, include=d.include, dry_run=dry_run,
                                            progress=progress(d) if progress else None, retry=retry,
                                            cache=cache_for(spec, d) if server_in else None)
            elif server_in and d.sources:
                pass  # nothing of its own on this side: only the files it names by URL, placed below
            elif d.role in MAY_BE_EMPTY or (node and not inbound):
                t.skipped = "does not exist yet"
            else:
                raise BadInput(f"{d.role.value} dir {src} does not exist", "create it or fix the path in the job spec")
        if server_in and d.sources and not dry_run:  # the files it names by URL, wherever the dir itself is
            t.report = t.report or TransferReport("", url)
            await place_sources(url, d.sources, t.report, retry)
    if inbound and not node and not dry_run:
        await write_url(spec_url(spec), spec.to_json().encode(), retry)
    return out


async def _source_exists(src: str) -> bool:
    """Local sources must exist; a remote prefix counts as existing (an empty one is simply empty)."""
    path = local_path_of(src)
    return path is None or os.path.isdir(path)


def _moving(spec: JobSpec, inbound: bool, roles: tuple[Role, ...] | None) -> list[DirSpec]:
    """The dirs that move in this direction (``inbound``: the ``in``/``inout`` dirs), of ``roles`` if given."""
    return [d for d in spec.dirs if (d.effective_direction.pushes_in if inbound else d.effective_direction.pulls_out)
            and not (roles and d.role not in roles)]


def _threadable(spec: JobSpec, inbound: bool, node: bool = False, roles: tuple[Role, ...] | None = None,
                **_: Any) -> bool:
    """Whether this stage may run on gpstage.aio's threads, without asyncio (~15-25 ms of a job's start-up
    on a shared file system, where nothing is copied): every dir that moves is the dir itself or a sync
    :func:`gpstage.storage.runs_on_threads` allows; on the server's stage-in, no dir has inputs named by URL
    or goes through the input cache (their store-to-store copies need a loop), and the spec's store can be
    written from threads."""
    server_in = inbound and not node
    pairs = []
    for d in _moving(spec, inbound, roles):
        if server_in and (d.sources or cache_wanted(spec, d)):
            return False
        if not same_path(spec, d):
            pairs.append((d.path, spec.url_of(d)))
    if server_in and not provider_for(spec_url(spec)).runs_on_threads(spec_url(spec)):
        return False
    return all(runs_on_threads(*pair) for pair in pairs)


def run_stage(spec: JobSpec, inbound: bool, **kwargs: Any) -> list[DirTransfer]:
    """:func:`async_stage` from synchronous code: on gpstage.aio's threads where it can, else on a loop."""
    return run_sync(async_stage(spec, inbound, **kwargs), threads=_threadable(spec, inbound, **kwargs))


def stage_in(spec: JobSpec, **kwargs: Any) -> list[DirTransfer]:
    """Push the job's ``in``/``inout`` dirs to storage and store the spec beside them."""
    return run_stage(spec, True, **kwargs)


def stage_out(spec: JobSpec, **kwargs: Any) -> list[DirTransfer]:
    """Pull the job's ``out``/``inout`` dirs back from storage to their server paths."""
    return run_stage(spec, False, **kwargs)


def remove_job_dirs(spec: JobSpec) -> list[str]:
    """Delete the job's own dirs on storage (``OWN_ROLES``) and its input-cache references, and return the
    dirs' URLs; a dir that IS its server path (a shared file system) is the server's copy and is kept."""
    removed = []
    for d in spec.dirs:
        if d.role in OWN_ROLES and not same_path(spec, d):
            url = spec.url_of(d)
            run_sync(remove_tree(url))
            removed.append(url)
    for root in cache_roots(spec):
        run_sync(_forget(root, spec.job_id))
    return removed


async def _forget(root: str, job_id: str) -> None:
    from gpstage.inputcache.manage import forget_job, open_cache

    async with open_cache(root) as store:
        await forget_job(store, job_id)
