"""The ``gpstage`` command line: storage commands, spec commands, and job commands (through the launchers).

``gpstage sync`` is the hot path (GenePattern sites call it per job dir, and a small dir's sync is all
start-up), so it is parsed with argparse in :mod:`gpstage.cli.sync_cmd` and never imports typer or
pydantic: 0.08 s for a 20-file local sync against 0.3 s through typer (docs/design.md §19). Every other
command is the typer app in :mod:`gpstage.cli.app`. Every failure is one line on stderr and an exit code
from docs/design.md §9; with ``--json`` the only thing on stdout is one JSON document, on failure too.
"""

from __future__ import annotations

import atexit
import gc
import sys

from gpstage.errors import GpstageError


def main(argv: list[str] | None = None) -> None:
    """Console entry point. Usage errors exit 2; a :class:`GpstageError` prints one line and exits with
    its code; anything else is a bug and keeps its traceback."""
    args = sys.argv[1:] if argv is None else argv
    try:
        if args[:1] == ["sync"]:
            from gpstage.cli.sync_cmd import sync_main

            # The interpreter's final collections would walk every object of every module only to free
            # memory the exit frees anyway: ~12 ms of a 20-file sync's ~145 ms here (docs/design.md §19).
            # Registered first, so it runs after every other exit handler; the engine has closed its files.
            atexit.register(gc.freeze)
            sync_main(args[1:])
        else:
            if args[:1] == ["run"]:
                _prestart(args[1:])
            from gpstage.cli.app import app

            app(args=args)
    except GpstageError as e:
        print(f"gpstage: error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        print("gpstage: interrupted", file=sys.stderr)
        sys.exit(130)


def _prestart(run_args: list[str]) -> None:
    """``gpstage run``: start the launcher's background part (the local dispatcher) before typer and pydantic
    load here, so that its own start-up overlaps this process's (docs/design.md §16). The launcher is the
    one ``--launcher``/``-l`` names, else the default; with ``--help`` nothing starts. A run that then fails
    on its arguments or its spec leaves a dispatcher that exits when idle, as after any job."""
    if "--help" in run_args:
        return
    name = None
    for i, arg in enumerate(run_args):
        if arg in ("--launcher", "-l") and i + 1 < len(run_args):
            name = run_args[i + 1]
        elif arg.startswith("--launcher="):
            name = arg.split("=", 1)[1]
        elif arg.startswith("-l") and len(arg) > 2:
            name = arg[2:]
    from gpstage.launching import prestart

    prestart(name)
