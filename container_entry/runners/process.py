"""The ``process`` runner: the module runs as a child process of the entry, in its own process group.

Used when the entry is already inside the module's image — mounted as the entry bundle
(``docker+process``, ``batch+process``) or installed in it — or when there is no container at all (the
local default). exec.sh runs with the image's own bash, the bundle's static one only when it has none.

A spec's executors run here too, their argv exactly as given, stdin from their file, in their
``workdir``'s path on this side (default: the job's working dir) — but all in the image the entry runs
in: :meth:`ProcessRunner.check` refuses executors in more than one image. Nothing can be mounted, so a
dir with a ``mount_at`` is made visible there by a SYMLINK to the dir, created before the first run
starts when nothing is at ``mount_at`` yet (a symlink whose target is gone, a dead job's, is replaced;
one whose target exists, or anything else, is a one-line error: another job, or the image, owns that
path) and removed in :meth:`ProcessRunner.release`.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Callable

from container_entry.bundle import module_bash
from container_entry.runners.base import ModuleRun, Runner, RunRequest, make_link, mounts, open_streams
from gpstage.errors import BadInput, GpstageError
from gpstage.spec import JobSpec


class ProcessRun(ModuleRun):
    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc

    def wait(self, timeout: float | None) -> int | None:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def send_signal(self, sig: int) -> None:
        # The whole group: exec.sh's children (R, java, ...) must stop with it.
        try:
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


class ProcessRunner(Runner):
    name = "process"

    def __init__(self) -> None:
        self.links: list[str] | None = None  # the mount_at symlinks this run created, once made

    def check(self, spec: JobSpec) -> None:
        images = sorted({e.image for e in spec.executors or ()})
        if len(images) > 1:
            raise BadInput(f"the process runner runs every executor in the image it runs in; this job's executors "
                           f"use {len(images)} images ({', '.join(images)})", "use the docker or apptainer runner")

    def release(self, log: Callable[[str], None]) -> None:
        for at in self.links or ():
            with contextlib.suppress(OSError):
                os.unlink(at)
        self.links = None

    def _link_mounts(self, spec: JobSpec) -> None:
        self.links = []
        for path, at in sorted(mounts(spec), key=lambda m: m[1].count("/")):  # parents first
            if at != path and _link_mount(at, path):
                self.links.append(at)

    def start(self, request: RunRequest) -> ModuleRun:
        if self.links is None:
            self._link_mounts(request.spec)
        argv, cwd = request.argv, request.cwd
        if request.executor is not None:  # argv as given; its workdir (a container path) as seen here
            cwd = (request.spec.host_path(cwd) or cwd) if cwd else request.spec.workdir
        elif argv[0] == "bash":  # the image's bash; in an entry bundle, its static one when the image has none
            argv = [module_bash(request.env), *argv[1:]]
        streams = open_streams(request)
        try:
            proc = subprocess.Popen(argv, cwd=cwd, env=request.env, stdin=streams.stdin or subprocess.DEVNULL,
                                    stdout=streams.stdout, stderr=streams.stderr, start_new_session=True)
        except OSError as e:
            fix = ("install bash in the image or on this machine" if request.executor is None
                   else "check the executor's command, workdir and image")
            raise GpstageError(f"cannot start {argv[0]}: {e.strerror}", fix) from None
        finally:
            streams.close()
        return ProcessRun(proc)


def _link_mount(at: str, path: str) -> bool:
    """Make ``at`` show the dir ``path``; returns whether a symlink was created (False: it already does)."""
    if os.path.realpath(at) == os.path.realpath(path):
        return False  # e.g. a nested dir, already seen through its parent's link
    if os.path.islink(at) and not os.path.exists(at):
        os.unlink(at)  # a dead job's link
    if os.path.lexists(at):
        what = f"a symlink to {os.readlink(at)}" if os.path.islink(at) else "not a symlink of this job"
        raise BadInput(f"mount_at {at} already exists here ({what}), so the process runner cannot show {path} there",
                       "choose another mount_at, or run the job with the docker or apptainer runner")
    make_link(path, at, f"cannot link mount_at {at} to {path}",
              "the entry must be able to create the mount_at paths, or use a container runner")
    return True
