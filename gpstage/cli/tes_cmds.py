"""``gpstage tes serve`` and ``gpstage tes export``: the GA4GH TES front end (docs/tes.md), in the ``tes`` extra.

The front end is found by import path (``frontends.tes.cli``), as launchers are: gpstage itself never
imports a front end (docs/design.md §15).
"""

from __future__ import annotations

import importlib
from typing import Any

import typer

from gpstage.cli.output import emit_json, json_errors

app = typer.Typer(help="A GA4GH TES 1.1 server over gpstage's launchers and storage (docs/tes.md).",
                  no_args_is_help=True, rich_markup_mode=None)


def front_end() -> Any:
    from gpstage.errors import MissingDependency

    try:
        return importlib.import_module("frontends.tes.cli")
    except ImportError as err:
        raise MissingDependency(f"the TES server needs {err.name}, which is not installed",
                                "pip install 'gpstage[tes]'") from None


@app.command("serve")
def serve_cmd(host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on; anything but loopback "
                                       "needs --token-file."),
              port: int = typer.Option(8000, "--port", min=1, max=65535, help="Port to listen on."),
              launcher: str | None = typer.Option(None, "--launcher", help="Where tasks run (default: [tes] launcher, "
                                                  "else local)."),
              token_file: str | None = typer.Option(None, "--token-file", help="A file holding the bearer token every "
                                                    "request must carry (Authorization: Bearer …).")) -> None:
    """Serve TES under /ga4gh/tes/v1 until interrupted: tasks become gpstage jobs on the launcher, with their
    inputs and outputs as URLs on any storage gpstage reads (settings: [tes] in GPSTAGE_CONFIG)."""
    with json_errors(False):
        front_end().serve(host, port, launcher, token_file)


@app.command("export")
def export_cmd(spec: str = typer.Argument(..., help="Job spec: a local JSON/YAML file or a storage URL.")) -> None:
    """Print a gpstage job as a TES task (JSON): one executor per command, its in/out dirs as DIRECTORY
    inputs and outputs at their URLs."""
    from gpstage.stage import read_spec

    with json_errors(False):
        emit_json(front_end().export(read_spec(spec)))


def run_task_file(path: str, launcher: str | None, timeout: float | None, as_json: bool) -> None:
    """``gpstage run TASK.json``: a TES task run to its end through the [tes] settings; exits like the task."""
    with json_errors(as_json):
        view, code = front_end().run_task(path, launcher, timeout)
    if as_json:
        emit_json({"ok": True, "task": view})
    else:
        typer.echo(f"task {view['id']}: {view['state']}")
        for log in view.get("logs", ()):
            for n, e in enumerate(log.get("logs", ())):
                typer.echo(f"  executor {n}: exit code {e.get('exit_code')}")
            for o in log.get("outputs", ()):
                typer.echo(f"  output {o['path']} -> {o['url']} ({o['size_bytes']} bytes)")
            for line in log.get("system_logs") or ():
                typer.echo(f"  {line}")
    raise typer.Exit(code)
