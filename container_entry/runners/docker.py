"""The ``docker`` runner: ``bash exec.sh`` in the job's ``image``, the role dirs bind-mounted at their
identical paths (a dir's ``mount_at`` when it has one) — module images need only bash and stay
unmodified third-party images.

Seed deployment 1 (local server + docker) is the local launcher with this runner. The container runs
as the submitting user (outputs belong to the server's user), with ``resources`` as limits, under
docker's init (signals reach bash), labelled with the job id, and is removed when the run ends —
also on failure or cancel. stdout/stderr are redirected by bash inside the container straight into
the metadata dir, so they stream to the same files as with the process runner.

**Wrapper mode** (``docker+docker``, ``batch+docker``; docs/wrapper-mode.md): the entry itself runs in
a container (``gpstage/runtime``) with the docker socket mounted. The module's container is started by
the docker HOST, which resolves bind-mount sources in ITS file system — not the entry container's. So
``GPSTAGE_STAGING_ROOT`` names a host dir mounted at the same path in the entry's container; every
staged dir ``P`` is placed at ``ROOT + P`` (``P`` itself becomes a symlink to it inside the entry's
container, so the entry stages, hooks and records at ``P`` as usual) and the module's container gets
``ROOT + P`` mounted at ``P``. Dirs on a shared file system (their URL is their path) are mounted by
the launcher at their own path and need no mapping.

The module's container keeps its stdin attached to the entry: when the entry dies (SIGKILL, OOM), the
docker host closes that stdin and a watcher inside the container kills the module — a module never
outlives its entry. ``commit`` makes a finished module image (container_entry/commit.py).

**Executors** (a spec's ``executors``, docs/tes.md): each runs in its own ``image`` (pulled if missing,
as the module's), its command as the container's entrypoint and argv exactly (no shell needed in the
image: its ENTRYPOINT and CMD are replaced), in its ``workdir`` (default: the image's WORKDIR), as the
same user, with the same limits, labels and mounts. Its stdin, stdout and stderr travel over the
container's attach stream, written by the entry (:mod:`container_entry.runners.docker_run`); the output
files are owned by the user the container runs as.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import time
from collections.abc import Callable
from typing import Any

from container_entry.dockerutil import LABEL_JOB, LABEL_ROLE, LABEL_STAGING, docker_client, ensure_image
from container_entry.runners.base import ContainerRunner, ModuleRun, RunRequest, make_link, mounts, open_streams
from container_entry.runners.docker_run import AttachedRun, DockerRun, close_socket
from container_entry.settings import EntrySettings
from gpstage.errors import BadInput, GpstageError
from gpstage.spec import JobSpec

# Inside the module's container: $1 the executable, $2 stdout file, $3 stderr file. The module runs as
# a child with stdin from /dev/null; signals docker delivers (through its init) are passed on to it and
# its own exit status (128+N when signal N killed it) becomes the container's. The watcher holds the
# container's stdin, which the entry keeps attached: EOF means the entry is gone, so the module goes too.
MODULE_SCRIPT = r"""exec 9<&0 </dev/null
bash "$1" >>"$2" 2>>"$3" 9<&- &
m=$!
for s in TERM INT HUP QUIT USR1 USR2; do trap "kill -s $s $m 2>/dev/null" "$s"; done
{ read -r -u 9 _; kill -s KILL "$m" 2>/dev/null; } &
exec 9<&-
while :; do wait "$m"; rc=$?; kill -0 "$m" 2>/dev/null || exit "$rc"; done
"""
STAGING_LOCK = ".gpstage-staging.lock"  # held (flock) by the entry that owns a staging dir, for its lifetime
STALE_AFTER_S = 60  # a sibling staging dir is only swept when its lock is free AND it is at least this old


def run_as(spec: JobSpec) -> str:
    """``GPSTAGE_DOCKER_USER``, else this process's uid:gid — or, when that is root (a server running
    as root for its users), the owner of the working dir."""
    if os.environ.get("GPSTAGE_DOCKER_USER"):
        return os.environ["GPSTAGE_DOCKER_USER"]
    if os.getuid() != 0:
        return f"{os.getuid()}:{os.getgid()}"
    st = os.stat(spec.workdir)
    return f"{st.st_uid}:{st.st_gid}"


class DockerRunner(ContainerRunner):
    name = "docker"
    can_commit = True

    def __init__(self) -> None:
        self.staging_root: str | None = None
        self.host_of: dict[str, str] = {}  # wrapper mode: outermost staged dir P -> ROOT + P on the docker host
        self._lock_fd: int | None = None

    # ---- wrapper mode: where the job's dirs live on the docker host ----------------------------------
    def prepare(self, spec: JobSpec, settings: EntrySettings, log: Callable[[str], None]) -> None:
        root = settings.staging_root
        if not root:
            return
        from gpstage.stage import same_path

        shared = [d.path for d in spec.dirs if same_path(spec, d)]
        staged = [d for d in spec.dirs if d.path not in shared]
        for d in staged:
            inner = next((s for s in shared if _within(s, d.path)), None)
            if inner:
                raise BadInput(f"{inner} is on a shared file system but nested in the staged dir {d.path}",
                               "in wrapper mode, stage both dirs or share both")
        try:
            os.makedirs(root, exist_ok=True)
        except OSError as e:
            raise GpstageError(f"cannot create the staging dir {root}: {e.strerror}",
                               "mount the docker host's staging dir at the same path in the entry's container") from None
        self.staging_root = root
        self._lock(root)
        self._sweep(root, log)
        for d in staged:
            if any(_within(d.path, o.path) for o in spec.dirs if o is not d):
                continue  # nested: placed with its parent (or, inside a shared dir, simply there)
            target = root + d.path
            os.makedirs(target, exist_ok=True)
            _link(d.path, target)
            self.host_of[d.path] = target
        log(f"wrapper mode: {len(self.host_of)} dir(s) staged under {root} on the docker host"
            + (f", {len(shared)} on a shared file system" if shared else ""))

    def host_path(self, path: str) -> str:
        """The docker host's path of ``path`` (a path inside the job's dirs, as the entry sees it)."""
        for inside, outside in self.host_of.items():
            if path == inside or _within(path, inside):
                return outside + path[len(inside):]
        return path

    def release(self, log: Callable[[str], None]) -> None:
        """Remove the staging dir (it holds a copy of the job) once everything is pushed."""
        root, self.staging_root = self.staging_root, None
        if not root:
            return
        for inside in self.host_of:
            with contextlib.suppress(OSError):
                os.unlink(inside)
        failed = _empty_dir(root, keep=STAGING_LOCK)
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(root, STAGING_LOCK))
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        with contextlib.suppress(OSError):
            os.rmdir(root)  # a mount point (a docker volume) stays: its owner removes it
        log(f"removed the staging dir {root}" + (f" ({failed} entries could not be removed)" if failed else ""))

    def _lock(self, root: str) -> None:
        """Hold ROOT/.gpstage-staging.lock while this entry lives (the kernel drops it when we die). The
        file is locked under a temporary name first, so a sweeper never finds it unlocked."""
        tmp = os.path.join(root, f"{STAGING_LOCK}.{os.getpid()}")
        fd = os.open(tmp, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.replace(tmp, os.path.join(root, STAGING_LOCK))
        self._lock_fd = fd

    def _sweep(self, root: str, log: Callable[[str], None]) -> None:
        """Remove staging dirs beside ours whose entry died without cleaning up (SIGKILL, OOM): their lock
        is free. Their module containers (already stopped by the watcher) go with them."""
        parent = os.path.dirname(root)
        try:
            names = os.listdir(parent)
        except OSError:
            return
        for name in names:
            other = os.path.join(parent, name)
            lock = os.path.join(other, STAGING_LOCK)
            if other == root or not os.path.isfile(lock):
                continue
            try:
                if time.time() - os.stat(lock).st_mtime < STALE_AFTER_S:
                    continue
                fd = os.open(lock, os.O_RDWR | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue  # alive
            try:
                removed = _remove_containers({"label": f"{LABEL_STAGING}={other}"})
                shutil.rmtree(other, ignore_errors=True)
                log(f"removed the stale staging dir {other} of a dead entry"
                    + (f" and {removed} container(s)" if removed else ""))
            finally:
                os.close(fd)

    # ---- the module's container ---------------------------------------------------------------------
    def prepare_image(self, image: str, log: Callable[[str], None]) -> None:
        ensure_image(docker_client(), image)

    def start(self, request: RunRequest) -> ModuleRun:
        spec, image = request.spec, request.run_image
        assert image
        if request.executor is None:
            self.require_outputs_in_dirs(request)
            command: dict[str, Any] = {"command": ["bash", "-c", MODULE_SCRIPT, "gpstage-module", request.argv[-1],
                                                   request.stdout_path, request.stderr_path],
                                       "stdin_open": True}  # StdinOnce: the entry's attachment is the module's lifeline
        else:
            command = {"entrypoint": request.argv[:1], "command": request.argv[1:],
                       "stdin_open": request.stdin_path is not None}
        client = docker_client()  # DOCKER_HOST, as every docker tool
        ensure_image(client, image)
        limits: dict[str, Any] = {}
        if spec.resources.cpus:
            limits["nano_cpus"] = int(spec.resources.cpus * 1e9)
        if spec.resources.memory_mib:
            limits["mem_limit"] = f"{spec.resources.memory_mib}m"
        labels = {LABEL_JOB: spec.job_id, LABEL_ROLE: "module"}
        if self.staging_root:
            labels[LABEL_STAGING] = self.staging_root
        user = run_as(spec)
        streams = open_streams(request, _numeric(user)) if request.executor is not None else None
        try:
            container = client.containers.create(
                image, detach=False, init=True, working_dir=request.cwd, environment=request.job_env, user=user,
                volumes={self.host_path(path): {"bind": at, "mode": "rw"} for path, at in mounts(spec)},
                labels=labels, network_mode=os.environ.get("GPSTAGE_DOCKER_NETWORK") or None, **command, **limits)
        except Exception as err:  # noqa: BLE001 - the engine refused: one line
            if streams:
                streams.close()
            raise _cannot_start(image, err) from None
        attached = None
        try:
            if streams:
                attached = client.api.attach_socket(container.id, params={
                    "stdin": int(streams.stdin is not None), "stdout": 1, "stderr": 1, "stream": 1})
                return AttachedRun(container, attached, streams).begin()
            attached = client.api.attach_socket(container.id, params={"stdin": 1, "stream": 1})
            container.start()
        except Exception as err:  # noqa: BLE001
            with contextlib.suppress(Exception):
                container.remove(force=True)
            close_socket(attached)
            if streams:
                streams.close()
            raise _cannot_start(image, err) from None
        return DockerRun(container, attached)

    # ---- commit and push --------------------------------------------------------------------------
    def commit(self, spec: JobSpec, reference: str, log: Callable[[str], None]) -> dict[str, Any]:
        from container_entry.commit import commit_and_push

        return commit_and_push(docker_client(), spec, reference, log, scratch=self.staging_root)


def _cannot_start(image: str, err: Exception) -> GpstageError:
    return GpstageError(f"docker could not start {image}: {str(err).splitlines()[0][:300]}",
                        "check the image and the docker host")


def _numeric(user: str) -> tuple[int, int] | None:
    """``uid:gid`` as numbers (who owns an executor's output files); None for a user name."""
    uid, _, gid = user.partition(":")
    return (int(uid), int(gid or uid)) if uid.isdigit() and (not gid or gid.isdigit()) else None


def _within(path: str, parent: str) -> bool:
    return parent == "/" or path.startswith(parent.rstrip("/") + "/")


def _link(path: str, target: str) -> None:
    """Make ``path`` (inside the entry's container) a symlink to ``target`` (the host-visible copy)."""
    if os.path.islink(path):
        if os.readlink(path) == target:
            return
        os.unlink(path)
    elif os.path.isdir(path):
        try:
            os.rmdir(path)  # an empty dir (of the image, or a mount's parent) is replaced
        except OSError:
            raise BadInput(f"{path} already exists in the entry's container and is not empty",
                           "in wrapper mode the job's dirs must not be part of the entry's image or mounted into it") from None
    elif os.path.lexists(path):
        raise BadInput(f"{path} exists in the entry's container and is not a directory", "fix the job's paths")
    make_link(target, path, f"cannot place {path} in the staging dir",
              "the entry's container must be able to create the job's paths")


def _empty_dir(root: str, keep: str) -> int:
    """Remove everything in ``root`` but ``keep``; returns how many entries could not be removed."""
    failed = 0
    try:
        names = os.listdir(root)
    except OSError:
        return 0
    for name in names:
        if name == keep:
            continue
        path = os.path.join(root, name)
        try:
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.unlink(path)
        except OSError:
            failed += 1
    return failed


def _remove_containers(filters: dict[str, str]) -> int:
    try:
        client = docker_client()
        found = client.containers.list(all=True, filters=filters)
    except Exception:  # noqa: BLE001 - the sweep is best effort
        return 0
    for c in found:
        with contextlib.suppress(Exception):
            c.remove(force=True)
    return len(found)
