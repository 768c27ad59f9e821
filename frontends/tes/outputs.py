"""A finished task's outputs, from its dirs on storage to the URLs the task names (TES 1.1 semantics):
a FILE to its URL; a DIRECTORY's files under its URL; a path with wildcards (``*``, ``?``, ``[``) selects
every file it matches, each going to ``url`` + its path without ``path_prefix``. Copies are server-side
when both ends are on one store, else streamed through this process (gpstage.sources.copy_file)."""

from __future__ import annotations

import fnmatch

from frontends.tes.mapping import WILDCARDS
from frontends.tes.models import TesFileType, TesOutput, TesOutputFileLog
from gpstage.aio import run_sync
from gpstage.errors import GpstageError, StorageError
from gpstage.listing import list_url
from gpstage.report import TransferReport
from gpstage.sources import copy_file
from gpstage.spec import JobSpec
from gpstage.urls import join_url


def _stored_files(spec: JobSpec) -> dict[str, str]:
    """Container path -> storage URL of every file the job left in its mounts: one listing per mount, once."""
    out: dict[str, str] = {}
    for d in spec.dirs:
        if d.mount_at is not None:
            url = spec.url_of(d)
            out |= {f"{d.mount_at.rstrip('/')}/{rel}": join_url(url, rel) for rel in list_url(url).files}
    return out


def _under(files: dict[str, str], container_dir: str) -> dict[str, str]:
    prefix = container_dir.rstrip("/") + "/"
    return {p: url for p, url in files.items() if p.startswith(prefix)}


def plan(spec: JobSpec, outputs: list[TesOutput]) -> list[tuple[str, str, str]]:
    """(container path, source URL, destination URL) of every file to deliver; a missing FILE output raises."""
    files = _stored_files(spec)
    todo: list[tuple[str, str, str]] = []
    for o in outputs:
        if any(c in o.path for c in WILDCARDS):
            prefix = (o.path_prefix or "").rstrip("/")
            todo += [(p, src, f"{o.url.rstrip('/')}/{p[len(prefix) + 1:]}")
                     for p, src in sorted(_under(files, prefix).items()) if fnmatch.fnmatchcase(p, o.path)]
        elif o.type is TesFileType.DIRECTORY:
            todo += [(p, src, f"{o.url.rstrip('/')}/{p[len(o.path.rstrip('/')) + 1:]}")
                     for p, src in sorted(_under(files, o.path).items())]
        elif o.path in files:
            todo.append((o.path, files[o.path], o.url))
        else:
            raise StorageError(f"output {o.path} was not created by the task", "check the executors' commands")
    return todo


def deliver(spec: JobSpec, outputs: list[TesOutput]) -> list[TesOutputFileLog]:
    """Copy every output; the logs of what was delivered. Raises the first failure (one line)."""
    logs = []
    report = TransferReport("", "")
    for path, src, dst in plan(spec, outputs):
        try:
            size = run_sync(copy_file(src, dst, report))
        except GpstageError as err:
            raise StorageError(f"output {path} could not be delivered to {dst}: {err.problem}", err.fix) from err
        logs.append(TesOutputFileLog(url=dst, path=path, size_bytes=str(size)))
    return logs
