"""One rule from a TES task to a gpstage job (docs/tes.md), and back from the job's record to the task's state.

Every container path a task names — inputs, outputs, volumes, the executors' workdir, stdin, stdout and
stderr — lies in a **mount**: a DIRECTORY's or volume's own path, a FILE's parent directory, and a mount
inside another is part of the outer one. Each mount is a dir of the job (role ``inputs``, direction
``inout``), at ``<work_root>/<task id>/mnt<mount>`` on this side and ``mount_at=<mount>`` in the containers,
stored at ``<storage_root>`` + that path: every task has its own prefix and its own dirs, and host paths
never reach an executor. FILE inputs by URL are the dir's ``sources`` (server-side copies where the stores
allow), ``content`` literals are written into the task's dir before it is staged, DIRECTORY inputs are
synced into the dir's URL. Outputs go from the dirs' URLs to theirs after the run (:mod:`.outputs`).
"""

from __future__ import annotations

import os
import posixpath
import secrets
import time
from dataclasses import dataclass, field

from frontends.tes.models import CONTENT_MAX, TesFileType, TesInput, TesState, TesTask
from gpstage.errors import BadInput
from gpstage.records import JobRecord
from gpstage.spec import JobSpec
from gpstage.states import EXIT_GPSTAGE_ERROR, JobState
from gpstage.storage import provider_for
from gpstage.urls import dir_url, split_url

# Mount points that would hide the image's own system (or the container runtime's): refused.
SYSTEM_DIRS = ("/", "/bin", "/sbin", "/usr", "/lib", "/lib32", "/lib64", "/etc", "/proc", "/sys", "/dev", "/run",
               "/var", "/boot")
WILDCARDS = "*?["
RESERVED = "/.gpstage"  # where the executors' containers see the job's own workdir and metadata dir (never a task's)


@dataclass
class Placement:
    """What the task needs beyond its spec: literals to write and directories to copy before staging."""

    contents: dict[str, str] = field(default_factory=dict)  # host path -> text
    directories: list[tuple[str, str]] = field(default_factory=list)  # (source URL, destination URL)


def new_task_id() -> str:
    return f"tes-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{secrets.token_hex(4)}"


def check_path(path: str, what: str) -> str:
    if not path.startswith("/") or posixpath.normpath(path) != path.rstrip("/") or "\x00" in path:
        raise BadInput(f"{what} {path!r} is not an absolute, normalised container path", "write e.g. /data/file.txt")
    return path.rstrip("/") or "/"


def check_url(url: str, what: str, allow: list[str]) -> str:
    """A URL on a known scheme, under one of the allowed prefixes."""
    if "://" not in url:
        if url.startswith("/"):
            url = f"file://{url}"
        else:
            raise BadInput(f"{what} {url!r} is not a URL", "give scheme://bucket/key or an absolute path")
    split_url(url)
    provider_for(url)  # an unknown scheme: one line naming the known ones
    if not any(url == p.rstrip("/") or url.startswith(p.rstrip("/") + "/") for p in allow):
        raise BadInput(f"{what} {url} is outside the URL prefixes this server may use",
                       f"use a URL under {', '.join(allow) or '(none configured)'}")
    return url


def mounts_of(task: TesTask) -> list[str]:
    """The mounts the task's container paths need, outermost only, sorted."""
    wanted: set[str] = set()
    for i in task.inputs or ():
        p = check_path(i.path, "input path")
        wanted.add(p if i.type is TesFileType.DIRECTORY else posixpath.dirname(p))
    for o in task.outputs or ():
        p = check_path(o.path, "output path")
        if any(c in p for c in WILDCARDS):
            prefix = check_path(o.path_prefix or "", "output path_prefix") if o.path_prefix else None
            if prefix is None or not p.startswith(prefix.rstrip("/") + "/"):
                raise BadInput(f"output path {p} has wildcards but no path_prefix it starts with",
                               "set path_prefix to the directory part before the first wildcard (TES 1.1)")
            wanted.add(prefix)
        else:
            wanted.add(p if o.type is TesFileType.DIRECTORY else posixpath.dirname(p))
    for v in task.volumes or ():
        wanted.add(check_path(v, "volume"))
    for n, e in enumerate(task.executors):
        for what in ("workdir", "stdin", "stdout", "stderr"):
            p = getattr(e, what)
            if p:
                p = check_path(p, f"executor {n} {what}")
                wanted.add(p if what == "workdir" else posixpath.dirname(p))
    for m in wanted:
        if m == RESERVED or m.startswith(RESERVED + "/"):
            raise BadInput(f"container path {m} is under {RESERVED}, which gpstage keeps for itself", "use another path")
        if m in SYSTEM_DIRS:
            raise BadInput(f"container path {m} would be mounted over the image's own {m}",
                           "put inputs, outputs and volumes in a directory of their own, e.g. /data")
    return sorted(m for m in wanted if not any(o != m and m.startswith(o.rstrip("/") + "/") for o in wanted))


def to_spec(task: TesTask, task_id: str, *, storage_root: str, work_root: str, allow: list[str],
            runner: str | None) -> tuple[JobSpec, Placement]:
    """The job that runs ``task``, and what to place before it is staged; every problem is a one-line BadInput."""
    if not task.executors:
        raise BadInput("the task has no executors", "give at least one executor with an image and a command")
    for n, e in enumerate(task.executors):
        if not e.command:
            raise BadInput(f"executor {n} has an empty command", "give the argv to run, e.g. [\"md5sum\", \"/data/in\"]")
    res = task.resources
    if res is not None and res.backend_parameters and res.backend_parameters_strict:
        raise BadInput(f"backend_parameters {sorted(res.backend_parameters)} are not supported",
                       "drop them, or set backend_parameters_strict to false")
    mounts = mounts_of(task)
    base = f"{work_root.rstrip('/')}/{task_id}"
    host = {m: f"{base}/mnt{m}" for m in mounts}
    placement = Placement()
    sources: dict[str, list[dict[str, str]]] = {m: [] for m in mounts}
    for i in task.inputs or ():
        mount, rel = _locate(i.path, mounts)
        _place_input(i, mount, rel, host, sources, placement, storage_root, allow)
    for o in task.outputs or ():
        check_url(o.url, "output URL", allow)
    # the job's own dirs are mounted out of the way, so that a task mounting e.g. /tmp gets no stray mount points
    dirs = [{"role": "workdir", "path": f"{base}/work", "mount_at": f"{RESERVED}/work"},
            {"role": "metadata", "path": f"{base}/meta", "mount_at": f"{RESERVED}/meta"}]
    dirs += [{"role": "inputs", "path": host[m], "mount_at": m, "direction": "inout",
              **({"sources": sources[m]} if sources[m] else {})} for m in mounts]
    spec = JobSpec.model_validate({
        "job_id": task_id, "storage_root": storage_root, "dirs": dirs, "runner": runner,
        "image": task.executors[0].image,
        "executors": [{"image": e.image, "command": e.command, "workdir": e.workdir, "stdin": e.stdin,
                       "stdout": e.stdout, "stderr": e.stderr, "env": e.env or {}, "ignore_error": bool(e.ignore_error)}
                      for e in task.executors],
        "resources": {"cpus": res.cpu_cores if res else None,
                      "memory_mib": int(res.ram_gb * 1024) if res and res.ram_gb else None},
        "module": {"name": task.name} if task.name else None,
    })
    return spec, placement


def _locate(path: str, mounts: list[str]) -> tuple[str, str]:
    for m in mounts:
        if path == m:
            return m, ""
        if path.startswith(m.rstrip("/") + "/"):
            return m, path[len(m.rstrip("/")) + 1:]
    raise AssertionError(f"{path} is in no mount")  # mounts_of() made one for every path


def _place_input(i: TesInput, mount: str, rel: str, host: dict[str, str], sources: dict[str, list[dict[str, str]]],
                 placement: Placement, storage_root: str, allow: list[str]) -> None:
    if i.content is not None:
        if i.type is TesFileType.DIRECTORY or len(i.content.encode()) > CONTENT_MAX:
            raise BadInput(f"input {i.path}: content must be a FILE of at most {CONTENT_MAX // 1024} KiB",
                           "give larger inputs by URL")
        placement.contents[os.path.join(host[mount], rel)] = i.content
        return
    if not i.url:
        raise BadInput(f"input {i.path} has neither url nor content", "give one of them")
    url = check_url(i.url, "input URL", allow)
    if i.type is TesFileType.DIRECTORY:
        target = dir_url(storage_root, host[mount])
        placement.directories.append((url, f"{target}/{rel}" if rel else target))
    else:
        sources[mount].append({"source": url, "name": rel})


def task_state(record: JobRecord, delivered: bool | None, delivery_error: str | None) -> TesState:
    """The TES state of a task from its job record and the delivery of its outputs (None: not tried yet)."""
    s = record.state
    if not s.terminal:
        if record.cancel_requested:
            return TesState.CANCELING
        return {JobState.QUEUED: TesState.QUEUED, JobState.STAGING: TesState.INITIALIZING}.get(s, TesState.RUNNING)
    if s is JobState.CANCELLED:
        return TesState.CANCELED
    if s is JobState.ERROR or record.exit_code == EXIT_GPSTAGE_ERROR or delivery_error:
        return TesState.SYSTEM_ERROR
    if s is JobState.FAILED:
        return TesState.EXECUTOR_ERROR
    return TesState.COMPLETE if delivered else TesState.RUNNING  # outputs still on their way: part of the task
