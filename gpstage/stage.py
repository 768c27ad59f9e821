"""Server-side staging of a job's dirs (DESIGN.md §1-§3).

``stage_in`` pushes every ``in``/``inout`` dir from its local path to its URL and stores the spec at
``<metadata URL>/job.json``; ``stage_out`` pulls every ``out``/``inout`` dir back. A dir nested in
another is skipped by its parent's sync and synced once under its own role. A dir whose URL is its
own path (``nfs:///`` on a shared file system) is not copied: it only has to exist.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gpstage.aio import run_sync
from gpstage.errors import BadInput
from gpstage.report import TransferReport
from gpstage.retry import RetryPolicy
from gpstage.spec import DEFAULT_STAGE_IN_EXCLUDES, DirSpec, JobSpec, Role
from gpstage.storage import provider_for, write_url
from gpstage.sync import Progress, async_sync

# Dirs that may not exist yet when a job is staged in: the module creates their content.
MAY_BE_EMPTY = (Role.WORKDIR, Role.METADATA)


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


def same_path(spec: JobSpec, d: DirSpec) -> bool:
    """True when the dir's URL is the dir itself (shared file system: nothing to copy)."""
    url = spec.url_of(d)
    provider = provider_for(url)
    return provider.local and os.path.realpath(provider.local_path(url)) == os.path.realpath(d.path)


async def async_stage(spec: JobSpec, inbound: bool, *, jobs: int | None = None, dry_run: bool = False,
                      progress: Callable[[DirSpec], Progress | None] | None = None,
                      retry: RetryPolicy | None = None, roles: tuple[Role, ...] | None = None) -> list[DirTransfer]:
    """Sync each dir of ``spec`` that moves in this direction: local → URL when ``inbound``, else back."""
    out = []
    for d in spec.dirs:
        direction = d.effective_direction
        if not (direction.pushes_in if inbound else direction.pulls_out) or (roles and d.role not in roles):
            continue
        url = spec.url_of(d)
        t = DirTransfer(d.role.value, d.path, url, direction.value)
        out.append(t)
        if same_path(spec, d):
            if inbound and not os.path.isdir(d.path) and d.role not in MAY_BE_EMPTY:
                raise BadInput(f"{d.role.value} dir {d.path} does not exist", "create it or fix the path in the job spec")
            t.skipped = "shared file system: the URL is the dir itself"
            continue
        if inbound and not os.path.isdir(d.path):
            if d.role in MAY_BE_EMPTY:
                t.skipped = "does not exist yet"
                continue
            raise BadInput(f"{d.role.value} dir {d.path} does not exist", "create it or fix the path in the job spec")
        excludes = list(d.exclude if d.exclude is not None else (DEFAULT_STAGE_IN_EXCLUDES if inbound else ()))
        excludes += nested_excludes(spec, d)
        src, dst = (d.path, url) if inbound else (url, d.path)
        t.report = await async_sync(src, dst, jobs=jobs, exclude=excludes, dry_run=dry_run,
                                    progress=progress(d) if progress else None, retry=retry)
    if inbound and not dry_run:
        await write_url(spec.spec_url, spec.to_json().encode(), retry)
    return out


def stage_in(spec: JobSpec, **kwargs: Any) -> list[DirTransfer]:
    """Push the job's ``in``/``inout`` dirs to storage and store the spec beside them."""
    return run_sync(async_stage(spec, True, **kwargs))


def stage_out(spec: JobSpec, **kwargs: Any) -> list[DirTransfer]:
    """Pull the job's ``out``/``inout`` dirs back from storage to their server paths."""
    return run_sync(async_stage(spec, False, **kwargs))
