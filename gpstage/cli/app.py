"""The typer app behind every ``gpstage`` command but ``sync`` (see :mod:`gpstage.cli`).

Heavy modules (fsspec, the SDKs, the sync engine) are imported inside the commands so that
``gpstage --help`` stays fast.
"""

from __future__ import annotations

import typer

from gpstage.cli import cache_cmds, config_cmds, job_cmds, spec_cmds, storage_cmds, tes_cmds

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
app.add_typer(cache_cmds.app, name="cache")
app.add_typer(tes_cmds.app, name="tes")
