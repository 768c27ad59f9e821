"""The ``gpstage`` command line: storage commands, spec commands, and job commands (through the launchers).

Heavy modules (fsspec, the SDKs, the sync engine) are imported inside the commands so that
``gpstage --help`` stays fast. Every failure is one line on stderr and an exit code from docs/design.md §9;
with ``--json`` the only thing on stdout is one JSON document, on failure too.
"""

from __future__ import annotations

import sys

import typer

from gpstage.cli import config_cmds, job_cmds, spec_cmds, storage_cmds
from gpstage.errors import GpstageError

app = typer.Typer(
    name="gpstage",
    help="Stage GenePattern job dirs between a server and any storage URL (file, nfs, s3, ...) "
    "and run jobs on local, container, Slurm or AWS Batch backends.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    rich_markup_mode=None,  # click's plain help: rich's renderer (and its markdown) would double `gpstage --help`'s start-up
)
storage_cmds.register(app)
job_cmds.register(app)
app.add_typer(spec_cmds.app, name="spec")
app.add_typer(config_cmds.app, name="config")


def main(argv: list[str] | None = None) -> None:
    """Console entry point. Usage errors exit 2 (typer's own handling); a :class:`GpstageError` prints
    one line and exits with its code; anything else is a bug and keeps its traceback."""
    try:
        app(args=argv)
    except GpstageError as e:
        print(f"gpstage: error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        print("gpstage: interrupted", file=sys.stderr)
        sys.exit(130)
