"""Options several typer commands share (kept out of :mod:`gpstage.cli.output`, which ``sync`` uses
without importing typer)."""

from __future__ import annotations

import typer

JSON_OPTION = typer.Option(False, "--json", help="Print one JSON document on stdout and nothing else.")
