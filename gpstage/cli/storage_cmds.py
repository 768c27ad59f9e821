"""``gpstage sync``, ``stage-in``, ``stage-out`` and ``ls``: exit 0 ok, 2 bad input, 3 storage error."""

from __future__ import annotations

import typer

from gpstage.cli.options import JSON_OPTION
from gpstage.cli.output import emit_json, json_errors, progress_for


def register(app: typer.Typer) -> None:
    from gpstage.cli.sync_cmd import SUMMARY

    app.command("sync", help=SUMMARY, add_help_option=False,
                context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(sync_cmd)
    app.command("stage-in")(stage_in_cmd)
    app.command("stage-out")(stage_out_cmd)
    app.command("ls")(ls_cmd)


def sync_cmd(ctx: typer.Context) -> None:
    """Listed here for ``gpstage --help``; main() hands ``gpstage sync …`` to argparse before typer loads."""
    from gpstage.cli.sync_cmd import sync_main

    sync_main(ctx.args)


def _stage(spec_path: str, inbound: bool, jobs: int, dry_run: bool, as_json: bool) -> None:
    from gpstage.jobfiles import spec_url
    from gpstage.spec import load_spec
    from gpstage.stage import stage_in, stage_out

    with json_errors(as_json):
        spec = load_spec(spec_path)
        run = stage_in if inbound else stage_out
        label = "stage-in" if inbound else "stage-out"
        transfers = run(spec, jobs=jobs, dry_run=dry_run, progress=lambda d: progress_for(f"{label} {d.role.value}", as_json))
    if as_json:
        emit_json({"ok": True, "job_id": spec.job_id, "spec_url": spec_url(spec), "dirs": [t.to_dict() for t in transfers]})
        return
    for t in transfers:
        arrow = "→" if inbound else "←"
        what = t.skipped if t.skipped else t.report.summary() if t.report else ""
        typer.echo(f"{t.role:9} {t.path} {arrow} {t.url}: {what}")
    if inbound and not dry_run:
        typer.echo(f"spec stored at {spec_url(spec)}")


SPEC_FILE = typer.Argument(..., help="Job spec file (JSON or YAML).")
JOBS_OPTION = typer.Option(32, "--jobs", "-j", min=1, help="Transfers in flight at once.")
DRY_RUN_OPTION = typer.Option(False, "--dry-run", help="Only report what would be copied.")


def stage_in_cmd(spec: str = SPEC_FILE, jobs: int = JOBS_OPTION, dry_run: bool = DRY_RUN_OPTION,
                 as_json: bool = JSON_OPTION) -> None:
    """Push the job's in/inout dirs to storage and store the spec at <metadata URL>/job.json."""
    _stage(spec, True, jobs, dry_run, as_json)


def stage_out_cmd(spec: str = SPEC_FILE, jobs: int = JOBS_OPTION, dry_run: bool = DRY_RUN_OPTION,
                  as_json: bool = JSON_OPTION) -> None:
    """Pull the job's out/inout dirs back from storage to their paths on this server."""
    _stage(spec, False, jobs, dry_run, as_json)


def ls_cmd(
    url: str = typer.Argument(..., help="A path or URL of a directory."),
    as_json: bool = JSON_OPTION,
) -> None:
    """List the files under URL recursively: mode, size, mtime and relative path."""
    from gpstage.listing import list_url

    with json_errors(as_json):
        tree = list_url(url)
    rows = [{"path": rel, "size": e.size, "mode": f"{e.mode:04o}" if e.mode is not None else None, "mtime_ns": e.time_ns}
            for rel, e in sorted(tree.files.items())]
    if as_json:
        emit_json({"ok": True, "url": url, "files": rows, "dirs": sorted(tree.dirs)})
        return
    import datetime as dt

    for r in rows:
        when = dt.datetime.fromtimestamp(r["mtime_ns"] / 1e9).strftime("%Y-%m-%d %H:%M:%S") if r["mtime_ns"] else "-"
        typer.echo(f"{r['mode'] or '----':>4} {r['size']:>12} {when}  {r['path']}")
