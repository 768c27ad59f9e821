"""The runner interface: where the module's executable runs, once, for the container entry.

The entry owns the job's lifecycle (pull, hooks, run, record, push); a runner owns only "start this
command with these dirs, this environment and these output files, then let me wait for it or
signal it". ``process`` runs it as a child process (the entry is already inside the module's image,
or there is none); ``docker`` and ``apptainer`` start the module's image with the job's dirs mounted
at identical paths. A runner never stages, never records, never talks to storage.
"""

from __future__ import annotations

import signal
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from gpstage.errors import BadInput
from gpstage.spec import JobSpec

if TYPE_CHECKING:
    from container_entry.settings import EntrySettings


@dataclass(frozen=True)
class RunRequest:
    """Everything needed to run the module once; paths are identical inside and outside a container."""

    argv: list[str]  # e.g. ["bash", "/opt/gp/jobResults/5/.gp_metadata/exec.sh"]
    cwd: str  # the working dir
    env: dict[str, str]  # the module's whole environment (credentials already stripped): for a child process
    job_env: dict[str, str]  # only the job's own variables (spec env, GenePattern's, pre-run exports): for a
    #                          container, whose image brings its own PATH, HOME, ...
    stdout_path: str  # the module's stdout goes here, streamed, never buffered in memory
    stderr_path: str
    spec: JobSpec  # image, resources and dirs, for runners that start a container


class ModuleRun(ABC):
    """A started module. The entry polls :meth:`wait` and forwards signals with :meth:`send_signal`."""

    @abstractmethod
    def wait(self, timeout: float | None) -> int | None:
        """Block up to ``timeout`` seconds (None: until it ends). Return None while it still runs, else
        its status: the exit code (>= 0), or ``-N`` when signal N killed it."""

    @abstractmethod
    def send_signal(self, sig: int) -> None:
        """Deliver ``sig`` to the whole module (its process group or container); a no-op once it ended."""

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def cleanup(self) -> None:  # noqa: B027 - optional: a child process holds nothing once reaped
        """Release what the run holds (containers, files) after it ended; called exactly once."""


class Runner(ABC):
    """Starts the module's executable. One instance per entry run; settings come from the environment."""

    name: ClassVar[str]
    can_commit: ClassVar[bool] = False  # can make a finished module image (``--commit-tag``)

    def check(self, spec: JobSpec) -> None:  # noqa: B027 - optional: the process runner runs any spec
        """Raise :class:`gpstage.errors.BadInput` early when ``spec`` cannot run here (e.g. no image).
        Called before the module starts; makes no change anywhere."""

    def prepare(self, spec: JobSpec, settings: EntrySettings, log: Callable[[str], None]) -> None:  # noqa: B027 - optional hook
        """Before the job's dirs are created: arrange where they live on this node (the docker runner's
        wrapper mode places them in a staging dir the docker host can mount). Default: where they are."""

    def release(self, log: Callable[[str], None]) -> None:  # noqa: B027 - optional: undoes prepare
        """After the last push: undo :meth:`prepare` (remove the staging dir). Called once, always."""

    def commit(self, spec: JobSpec, reference: str, log: Callable[[str], None]) -> dict[str, Any]:
        """Make an image of the finished module (TASKLIB and libraries inside) and push it to
        ``reference``; return a record for ``status.json``. Only runners with ``can_commit``."""
        raise BadInput(f"the {self.name} runner cannot commit a module image", "use the docker runner")

    @abstractmethod
    def start(self, request: RunRequest) -> ModuleRun:
        """Start ``request.argv`` in ``request.cwd`` and return at once (the entry waits, with its time
        limit, through :meth:`ModuleRun.wait`). The module's stdout and stderr stream into
        ``request.stdout_path``/``stderr_path`` as it writes them; it sees ``request.env`` (a child
        process) or only ``request.job_env`` over its image's own (a container), never a credential.
        Raise :class:`gpstage.errors.GpstageError` when it cannot start at all (a missing image is
        ERROR at once, never a hang); anything started must be stoppable by :meth:`ModuleRun.send_signal`."""


class ContainerRunner(Runner):
    """A runner that starts the module's ``image`` with the job's dirs mounted: it needs the image, and
    the module's stdout/stderr files must be inside those dirs (the container writes them there)."""

    def check(self, spec: JobSpec) -> None:
        if not spec.image:
            raise BadInput(f"the {self.name} runner needs the module's image", "set `image` in the job spec")

    @staticmethod
    def require_outputs_in_dirs(request: RunRequest) -> None:
        outside = [p for p in (request.stdout_path, request.stderr_path)
                   if not any(p.startswith(d.path.rstrip("/") + "/") for d in request.spec.dirs)]
        if outside:
            raise BadInput(f"{outside[0]} is outside the job's dirs, so the module's container cannot write it",
                           "keep STDOUT_FILENAME / STDERR_FILENAME inside the metadata dir")
