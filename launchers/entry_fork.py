"""How the local dispatcher starts an entry: forked from its own interpreter, where ``gpstage-entry``'s
code was imported once (docs/design.md §16).

Why: an exec'd entry spends most of its start-up importing pydantic, the job spec's models and the
storage code (~0.2 s of CPU, benchmarks/results/jobs.md), and a queue of short jobs is bound by that
on a small machine. A fork shares the imported modules copy-on-write and runs the job at once.

What the child gets is what an exec'd ``gpstage-entry`` got: its own session; stdin from /dev/null;
stdout and stderr into the job's ``entry.log``; the job's environment and nothing of the dispatcher's;
default signal handlers, with SIGTERM, SIGINT and SIGHUP still blocked until the entry has set its own
(the dispatcher blocks them around the fork); no descriptor of the dispatcher — its lock above all: an
entry holding it would keep every later dispatcher from starting — and none of its objects collected
(one that closed its file would close whatever the entry opened under that number); the standard
library's caches of the environment reset (the temp dir, the time zone); a fresh random seed (retry jitter);
``gpstage-entry`` as its process name (``ps -e``, ``pgrep -x``); and, at its end, the exit handlers an
interpreter exit would run (one removes the credentials' private dir), then ``os._exit`` — never a
return into the dispatcher's code. A job whose ``PYTHON*`` variables differ from the dispatcher's (a
``PYTHONPATH`` that shows other plugins, say) gets the same set-up, then an exec of ``gpstage-entry``.
"""

from __future__ import annotations

import atexit
import gc
import os
import random
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Iterable
from pathlib import Path
from typing import Any

PROCESS_NAME = b"gpstage-entry"  # at most 15 bytes: the kernel's limit for a process name
_PRCTL: list[Any] = []  # libc's prctl, found by warm(): a child does not import ctypes for it


def warm() -> None:
    """Import the entry's code into this process, once, before the first fork (and ctypes, for the name)."""
    import ctypes

    from container_entry.api import warm_entry

    warm_entry()
    try:
        _PRCTL.append(ctypes.CDLL(None, use_errno=True).prctl)
    except (OSError, AttributeError):
        pass  # not Linux: entries keep the dispatcher's name


def fork_entry(args: list[str], env: dict[str, str], log_fd: int, default_signals: Iterable[int]) -> int:
    """Start ``gpstage-entry args`` in a child of this process and return its pid. The caller blocks the
    entry's signals around this call, as around an exec, and reaps the child with ``os.waitpid``."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()  # or the child would write the dispatcher's buffered lines into entry.log
    pid = os.fork()
    if pid:
        return pid
    os._exit(_child(args, env, log_fd, default_signals))  # never back into the dispatcher's code


def _child(args: list[str], env: dict[str, str], log_fd: int, default_signals: Iterable[int]) -> int:
    """The entry's exit code, as an interpreter running it would end: its exit handlers run, streams flushed."""
    code = 1
    try:
        code = _run_child(args, env, log_fd, default_signals)
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
        if exit_.code is not None and not isinstance(exit_.code, int):
            print(exit_.code, file=sys.stderr)  # as the interpreter prints sys.exit("message")
    except BaseException:  # noqa: BLE001 - reported as the interpreter would report it: traceback, exit 1
        traceback.print_exc()
    try:
        atexit._run_exitfuncs()  # the entry's own (the dispatcher's were cleared at the start)
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:  # noqa: BLE001 - the exit code stands
        pass
    return code


def _run_child(args: list[str], env: dict[str, str], log_fd: int, default_signals: Iterable[int]) -> int:
    # The dispatcher's objects are never collected here: a file object of its, closing its descriptor's
    # number after the closerange below, would close one of the entry's own files.
    gc.freeze()
    os.setsid()
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.closerange(3, _fd_limit())
    for sig in default_signals:
        signal.signal(sig, signal.SIG_DFL)
    alike = same_interpreter(env)
    atexit._clear()
    os.environ.clear()
    os.environ.update(env)
    if not alike:  # an interpreter started with this environment would differ: start one
        command = entry_executable()
        os.execvp(command, [command, *args])
    tempfile.tempdir = None  # the standard library's caches of the environment: TMPDIR...
    time.tzset()  # ...and TZ
    random.seed()  # the retry policy's jitter: not the same sequence in every entry
    _name_process()
    from container_entry.api import run_entry

    return run_entry(args)


def same_interpreter(env: dict[str, str]) -> bool:
    """Whether ``gpstage-entry`` started with ``env`` would run in an interpreter like this one: the
    ``PYTHON*`` variables are read at start-up only (``PYTHONPATH``: where plugins are found;
    ``PYTHONHASHSEED``, ``PYTHONWARNINGS``, ...). A job whose variables differ is exec'd instead."""
    def python(variables: dict[str, str]) -> dict[str, str]:
        return {k: v for k, v in variables.items() if k.startswith("PYTHON")}

    return python(env) == python(dict(os.environ))


def entry_executable() -> str:
    """``gpstage-entry`` beside this Python, else the one on PATH."""
    beside = Path(sys.executable).parent / "gpstage-entry"
    return str(beside) if beside.exists() else "gpstage-entry"


def _fd_limit() -> int:
    try:
        return int(os.sysconf("SC_OPEN_MAX"))
    except (ValueError, OSError):
        return 65536


def _name_process() -> None:
    """``gpstage-entry`` as the process name (not its command line, which stays the dispatcher's)."""
    for prctl in _PRCTL:
        prctl(15, PROCESS_NAME, 0, 0, 0)  # PR_SET_NAME
