"""The ``process`` runner: the module runs as a child process of the entry, in its own process group.

Used when the entry is already inside the module's image — mounted as the entry bundle
(``docker+process``, ``batch+process``) or installed in it — or when there is no container at all (the
local default). exec.sh runs with the image's own bash, the bundle's static one only when it has none.
"""

from __future__ import annotations

import os
import subprocess

from container_entry.bundle import module_bash
from container_entry.runners.base import ModuleRun, Runner, RunRequest
from gpstage.errors import GpstageError


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

    def start(self, request: RunRequest) -> ModuleRun:
        argv = request.argv
        if argv[0] == "bash":  # the image's bash; in an entry bundle, its static one when the image has none
            argv = [module_bash(request.env), *argv[1:]]
        with open(request.stdout_path, "ab") as out, open(request.stderr_path, "ab") as err:
            try:
                proc = subprocess.Popen(argv, cwd=request.cwd, env=request.env, stdin=subprocess.DEVNULL,
                                        stdout=out, stderr=err, start_new_session=True)
            except OSError as e:
                raise GpstageError(f"cannot start {argv[0]}: {e.strerror}",
                                   "install bash in the image or on this machine") from None
        return ProcessRun(proc)
