"""The runner interface: where the module's executable runs, for the container entry.

The entry owns the job's lifecycle (pull, hooks, run, record, push); a runner owns only "start this
command with these dirs, this environment and these output files, then let me wait for it or
signal it". ``process`` runs it as a child process (the entry is already inside the module's image,
or there is none); ``docker`` and ``apptainer`` start the module's image with every job dir mounted
at its ``mount_at`` (default: its own path). A runner never stages, never records, never talks to storage.

Two kinds of :class:`RunRequest`: the module's ``bash exec.sh`` (once per job), or one of the spec's
``executors`` (a GA4GH TES task, docs/tes.md; ``RunRequest.executor`` is its index): started once each,
in order, by the entry, each in its own ``image``, its argv run exactly as given (no shell in the
image), its stdin fed from ``stdin_path``, its stdout/stderr written to their files by the runner or
the entry's side (never by a shell in the container), ``cwd`` a container path (None: the image's
default working dir).
"""

from __future__ import annotations

import os
import signal
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, ClassVar

from gpstage.errors import BadInput, GpstageError
from gpstage.spec import JobSpec

if TYPE_CHECKING:
    from container_entry.settings import EntrySettings


@dataclass(frozen=True)
class RunRequest:
    """Everything needed to run the module, or one executor, once. ``cwd`` is a path as the container
    sees it (a dir's ``mount_at``); ``stdout_path``, ``stderr_path`` and ``stdin_path`` are paths on the
    entry's side (identical to the container's for exec.sh)."""

    argv: list[str]  # e.g. ["bash", "/opt/gp/jobResults/5/.gp_metadata/exec.sh"], or an executor's command
    cwd: str | None  # the working dir; None (executors only): the image's own
    env: dict[str, str]  # the module's whole environment (credentials already stripped): for a child process
    job_env: dict[str, str]  # only the job's own variables (spec env, GenePattern's, pre-run exports): for a
    #                          container, whose image brings its own PATH, HOME, ...
    stdout_path: str  # the module's stdout goes here, streamed, never buffered in memory
    stderr_path: str
    spec: JobSpec  # image, resources and dirs, for runners that start a container
    image: str | None = None  # this run's image, overriding spec.image (an executor's)
    stdin_path: str | None = None  # a file fed to its stdin (default: none, /dev/null)
    executor: int | None = None  # the index of the spec's executor this runs: argv as it is, no bash

    @property
    def run_image(self) -> str | None:
        return self.image or self.spec.image


@dataclass
class Streams:
    """A run's stdin (or None), stdout and stderr, opened on the entry's side (:func:`open_streams`)."""

    stdin: IO[bytes] | None
    stdout: IO[bytes]
    stderr: IO[bytes]

    def close(self) -> None:
        for f in {id(f): f for f in (self.stdin, self.stdout, self.stderr) if f is not None}.values():
            f.close()


def open_streams(request: RunRequest, owner: tuple[int, int] | None = None) -> Streams:
    """Open ``request``'s files: exec.sh appends to its logs; an executor's outputs are created afresh
    (their parent dirs too), one file when stdout and stderr are the same path, owned by ``owner`` (the
    user a container runs as) when given."""
    mode = "ab" if request.executor is None else "wb"
    opened: dict[str, IO[bytes]] = {}
    try:
        for path in (request.stdout_path, request.stderr_path):
            if path not in opened:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                opened[path] = open(path, mode)  # noqa: SIM115 - closed by Streams.close
                if owner and os.getuid() == 0:
                    os.fchown(opened[path].fileno(), *owner)
        stdin = open(request.stdin_path, "rb") if request.stdin_path else None  # noqa: SIM115 - likewise
    except OSError:
        for f in opened.values():
            f.close()
        raise
    return Streams(stdin, opened[request.stdout_path], opened[request.stderr_path])


def tail(path: str, size: int) -> str:
    """The last ``size`` bytes of the file at ``path``, as text (undecodable bytes replaced)."""
    with open(path, "rb") as f:
        f.seek(max(0, os.fstat(f.fileno()).st_size - size))
        return f.read().decode(errors="replace")


def mounts(spec: JobSpec) -> list[tuple[str, str]]:
    """``(dir path, where a container sees it)`` for every job dir: its ``mount_at``, else its own path."""
    return [(d.path, d.mount_at or d.path) for d in spec.dirs]


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
    """Starts the module's executable, or a spec's executors one after the other. One instance per entry
    run; settings come from the environment."""

    name: ClassVar[str]
    can_commit: ClassVar[bool] = False  # can make a finished module image (``--commit-tag``)

    def check(self, spec: JobSpec) -> None:  # noqa: B027 - optional: the process runner runs any spec
        """Raise :class:`gpstage.errors.BadInput` early when ``spec`` cannot run here (e.g. no image, or
        executors in several images on the process runner). Called before the module (or the first
        executor) starts; makes no change anywhere."""

    def prepare_image(self, image: str, log: Callable[[str], None]) -> None:  # noqa: B027 - optional: no image
        """Make ``image`` ready for :meth:`start` (pulled, converted): called for each distinct image of a
        spec's executors before the first starts, so a missing image is an ERROR before any ran."""

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
        For an executor (``request.executor`` set): ``request.run_image``, argv exactly as given,
        stdin from ``request.stdin_path``, ``cwd`` None for the image's default.
        Raise :class:`gpstage.errors.GpstageError` when it cannot start at all (a missing image is
        ERROR at once, never a hang); anything started must be stoppable by :meth:`ModuleRun.send_signal`."""


class ContainerRunner(Runner):
    """A runner that starts the module's ``image`` (or each executor's) with the job's dirs mounted at
    :func:`mounts`: it needs the image, and exec.sh's stdout/stderr files must be inside those dirs
    (the container writes them there)."""

    def check(self, spec: JobSpec) -> None:
        if not spec.image and not spec.executors:
            raise BadInput(f"the {self.name} runner needs the module's image", "set `image` in the job spec")

    @staticmethod
    def require_outputs_in_dirs(request: RunRequest) -> None:
        outside = [p for p in (request.stdout_path, request.stderr_path)
                   if not any(p.startswith(d.path.rstrip("/") + "/") for d in request.spec.dirs)]
        if outside:
            raise BadInput(f"{outside[0]} is outside the job's dirs, so the module's container cannot write it",
                           "keep STDOUT_FILENAME / STDERR_FILENAME inside the metadata dir")


def make_link(target: str, at: str, what: str, fix: str) -> None:
    """A symlink ``at`` → ``target`` (its parent dirs made); a failure is one line: ``what`` and the OS's reason."""
    try:
        os.makedirs(os.path.dirname(at), exist_ok=True)
        os.symlink(target, at)
    except OSError as e:
        raise GpstageError(f"{what}: {e.strerror}", fix) from None
