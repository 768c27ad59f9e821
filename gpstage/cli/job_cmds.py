"""The job commands: ``run``, ``status``, ``wait``, ``cancel``, ``logs``, ``collect``, ``jobs``, ``clean``.

Launchers are found by name through :mod:`gpstage.launching` (entry points), never imported here at
module level. Any of these commands works from another process than the one that submitted: the
job's record lives in ``$GPSTAGE_STATE_DIR``. With ``--json`` stdout holds one JSON document: a job
object (docs/job-json.md) with ``"ok": true``, or ``{"ok": false, "error": …}``.
"""

from __future__ import annotations

import sys
from typing import Any

import typer

from gpstage.cli.options import JSON_OPTION
from gpstage.cli.output import emit_json, json_errors
from gpstage.exitcodes import EXIT_GPSTAGE_ERROR

JOB_ARG = typer.Argument(..., help="The job's id (the spec's job_id).")


def register(app: typer.Typer) -> None:
    for name, fn in (("run", run_cmd), ("status", status_cmd), ("wait", wait_cmd), ("cancel", cancel_cmd),
                     ("logs", logs_cmd), ("collect", collect_cmd), ("jobs", jobs_cmd), ("clean", clean_cmd)):
        app.command(name)(fn)


def _launcher(job_id: str) -> Any:
    from gpstage.launching import launcher_for

    return launcher_for(job_id)


def _show(result: Any, as_json: bool) -> None:
    if as_json:
        emit_json({"ok": True, **result.to_dict()})
        return
    code = "" if result.exit_code is None else f", exit code {result.exit_code}"
    typer.echo(f"job {result.job_id}: {result.state.value}{code} ({result.launcher}+{result.runner}"
               f"{', ' + result.backend_id if result.backend_id else ''})")
    if result.message:
        typer.echo(f"  {result.message}")
    typer.echo(f"  stdout:    {result.stdout}\n  stderr:    {result.stderr}\n  exit code: {result.exit_code_file}")
    if result.collected:
        typer.echo(f"  outputs:   {len(result.outputs)} files in {result.workdir}")
        for path in result.outputs:
            typer.echo(f"    {path}")


def _exit_with(result: Any) -> None:
    """Waiting commands exit like the job (docs/design.md §9)."""
    raise typer.Exit(result.exit_code if result.exit_code is not None else EXIT_GPSTAGE_ERROR)


def _is_tes_task(path: str) -> bool:
    """A local JSON file with ``executors`` and no ``dirs``: a TES task, not a job spec."""
    import json
    import os

    if "://" in path or not path.endswith(".json") or not os.path.isfile(path):
        return False
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and "executors" in data and "dirs" not in data


def run_cmd(
    spec: str = typer.Argument(..., help="Job spec: a local JSON/YAML file or a storage URL."),
    launcher: str = typer.Option(None, "--launcher", "-l", help="Where the entry runs: local (default), "
                                                                "or an installed launcher."),
    settings: list[str] | None = typer.Option(None, "--set", help="Launcher setting key=value, over [launchers.NAME] "
                                                                  "of GPSTAGE_CONFIG; repeatable."),
    detach: bool = typer.Option(False, "--detach", "-d", help="Return once submitted; follow with status/wait/logs."),
    timeout: float = typer.Option(None, "--timeout", help="With waiting: give up after this many seconds "
                                                          "(exit 124; the job goes on)."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Stage a job's dirs in, start it on a launcher and (unless --detach) wait, collect and exit with its code.
    A GA4GH TES task file (a JSON document with `executors` and no `dirs`) runs as a TES task: its inputs and
    outputs are URLs, the job id is made, storage and work root come from [tes] (docs/tes.md).

    Exit codes when waiting: the module's own; 125 gpstage/backend error; 127 executable missing;
    142 time limit; 128+N killed by signal N; 124 --timeout reached. Examples:
    gpstage run job.json ; gpstage run job.json --launcher local --set max_parallel=2 --detach --json
    """
    from gpstage.config import parse_overrides
    from gpstage.launching import get_launcher
    from gpstage.stage import read_spec

    if _is_tes_task(spec):
        from gpstage.cli.tes_cmds import run_task_file

        run_task_file(spec, launcher, timeout, as_json)
    with json_errors(as_json):
        job = read_spec(spec)
        runner = get_launcher(launcher, parse_overrides(settings or []))
        handle = runner.submit(job)
        if detach:
            from gpstage.jobresult import result_of

            return _show(result_of(handle.status()), as_json)
        result = runner.wait(job.job_id, timeout)
    _show(result, as_json)
    _exit_with(result)


def _show_record(job_id: str, as_json: bool, op: str) -> None:
    """Run launcher method ``op`` (status, cancel) on the job and show the record it returns."""
    from gpstage.jobresult import result_of

    with json_errors(as_json):
        launcher = _launcher(job_id)
        result = result_of(getattr(launcher, op)(job_id))
    _show(result, as_json)


def status_cmd(job_id: str = JOB_ARG, as_json: bool = JSON_OPTION) -> None:
    """Show a job's state, exit code and files (asks the backend; does not collect)."""
    _show_record(job_id, as_json, "status")


def wait_cmd(job_id: str = JOB_ARG,
             timeout: float = typer.Option(None, "--timeout", help="Give up after this many seconds (exit 124)."),
             as_json: bool = JSON_OPTION) -> None:
    """Wait for a job to end, collect its outputs, exit with its code (as `run` does)."""
    with json_errors(as_json):
        result = _launcher(job_id).wait(job_id, timeout)
    _show(result, as_json)
    _exit_with(result)


def cancel_cmd(job_id: str = JOB_ARG, as_json: bool = JSON_OPTION) -> None:
    """Cancel a job: the entry gets SIGTERM, records CANCELLED and pushes its logs."""
    _show_record(job_id, as_json, "cancel")


def logs_cmd(job_id: str = JOB_ARG,
             stderr: bool = typer.Option(False, "--stderr", help="The module's stderr instead of its stdout."),
             entry: bool = typer.Option(False, "--entry", help="The entry's own log (staging, hooks, timings)."),
             follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new output until the job ends."),
             as_json: bool = JSON_OPTION) -> None:
    """Print the module's stdout (or --stderr, or the entry's log); remote backends show it as last pushed."""
    stream = "entry" if entry else "stderr" if stderr else "stdout"
    with json_errors(as_json):
        chunks = _launcher(job_id).logs(job_id, stream, follow and not as_json)
        if as_json:
            return emit_json({"ok": True, "job_id": job_id, "stream": stream,
                              "text": b"".join(chunks).decode(errors="replace")})
        for chunk in chunks:
            sys.stdout.buffer.write(chunk)
            sys.stdout.flush()


def collect_cmd(job_id: str = JOB_ARG, as_json: bool = JSON_OPTION) -> None:
    """Stage a finished job's out dirs back to the server's paths and list its outputs."""
    with json_errors(as_json):
        result = _launcher(job_id).collect(job_id)
    _show(result, as_json)


def jobs_cmd(as_json: bool = JSON_OPTION) -> None:
    """List the recorded jobs (states as last seen; `status JOB` refreshes one)."""
    from gpstage.jobresult import result_of
    from gpstage.records import RecordStore

    with json_errors(as_json):
        records = RecordStore().all()
    if as_json:
        return emit_json({"ok": True, "jobs": [result_of(r).to_dict() for r in records]})
    for r in records:  # the table needs no outputs: no walk of each job's working dir
        code = "" if r.exit_code is None else str(r.exit_code)
        typer.echo(f"{r.job_id:24} {r.state.value:10} {code:>4}  {r.launcher}+{r.runner}  {r.submitted_at:%Y-%m-%d %H:%M:%S}")


def clean_cmd(job_id: str = JOB_ARG, as_json: bool = JSON_OPTION) -> None:
    """Remove a finished job's record and scratch, and its own dirs on storage (workdir, metadata,
    inputs) — never tasklib or libraries, which other jobs share, nor the server's local copies."""
    with json_errors(as_json):
        removed = _launcher(job_id).clean(job_id)
    if as_json:
        return emit_json({"ok": True, "job_id": job_id, "removed": removed})
    typer.echo(f"job {job_id}: record removed" + "".join(f"\n  removed {u}" for u in removed))
