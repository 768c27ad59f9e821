"""``gpstage spec validate`` and ``gpstage spec schema``."""

from __future__ import annotations

import json

import typer

from gpstage.cli.options import JSON_OPTION
from gpstage.cli.output import emit_json, json_errors

app = typer.Typer(help="Check job specs and print their JSON Schema.", no_args_is_help=True, rich_markup_mode=None)


@app.command("validate")
def validate(spec: str = typer.Argument(..., help="Job spec file (JSON or YAML)."), as_json: bool = JSON_OPTION) -> None:
    """Check a job spec as `gpstage run` does — its fields, that every dir's storage scheme is known and its
    extra installed, the input cache's settings, and that each input source exists (one HEAD each, the only
    requests made) — and show each dir's URL and direction (exit 2 and one line
    per problem if invalid)."""
    from gpstage.spec import load_spec
    from gpstage.stage import check_storage

    with json_errors(as_json):
        parsed = load_spec(spec)
        check_storage(parsed)
    if as_json:
        emit_json({"ok": True, "spec": json.loads(parsed.to_json()),
                   "dirs": [{"role": d.role.value, "path": d.path, "url": parsed.url_of(d),
                             "direction": d.effective_direction.value} for d in parsed.dirs]})
        return
    typer.echo(f"{spec}: valid job spec for job {parsed.job_id}")
    for d in parsed.dirs:
        typer.echo(f"  {d.role.value:9} {d.effective_direction.value:5} {d.path} -> {parsed.url_of(d)}")


@app.command("schema")
def schema() -> None:
    """Print the job spec's JSON Schema."""
    from gpstage.spec import spec_schema

    typer.echo(json.dumps(spec_schema(), indent=2))
