"""``gpstage-genepattern`` (also ``python -m frontends.genepattern``): the GenePattern server's drop-in
job-runner scripts and their installer (docs/genepattern-server.md).

    gpstage-genepattern install-scripts DIR [--config FILE] [--launcher NAME] [--state-dir D] [--storage-root URL]
    gpstage-genepattern uninstall-scripts DIR

The installed scripts call the other subcommands exactly as the server calls them; what goes to stdout
is the contract (../shared/CONTRACTS.md): ``submit`` prints the job id and nothing else (on failure:
nothing, exit 1, one line on stderr); ``status`` prints describe-jobs JSON and nothing on stderr (the
server reads both as one buffer). argparse, not typer: ``status`` runs for every live job every poll.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

CALLS = ("submit", "status", "sync", "cancel", "delete", "run-with-docker")


def _common(suppress: bool) -> argparse.ArgumentParser:
    """The options every command takes: before the command (as the scripts give them) or, for
    install-scripts, after it too."""
    default = argparse.SUPPRESS if suppress else None
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--config", type=Path, default=default, help="gpstage's settings file (storage profiles, "
                   "[launchers.*]); default: GPSTAGE_CONFIG, else ~/.config/gpstage/config.toml")
    p.add_argument("--state-dir", type=Path, default=default,
                   help="where job records live (default: GPSTAGE_STATE_DIR, else gpstage's)")
    p.add_argument("--launcher", default=argparse.SUPPRESS if suppress else "local",
                   help="where jobs run: local, docker, slurm, batch (default: local)")
    p.add_argument("--storage-root", default=default, help="the jobs' storage root (gs://…, az://…, nfs:///, s3://…); "
                   "default: the server's aws-s3-root (S3_ROOT), where it uploaded the inputs")
    return p


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gpstage-genepattern", description=__doc__, parents=[_common(False)],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    inst = sub.add_parser("install-scripts", help="write the drop-in scripts into DIR (0755, atomically)",
                          parents=[_common(True)])
    inst.add_argument("dir", type=Path)
    inst.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                      help="a non-secret variable every call gets (the server passes none of its own): an endpoint, a "
                           "region, DOCKER_HOST, SLURM_CONF; repeatable. Credentials: by reference in the settings file")
    sub.add_parser("uninstall-scripts", help="remove the scripts gpstage wrote from DIR").add_argument("dir", type=Path)
    for call in CALLS:  # what the installed scripts run; the server's arguments follow, never parsed as options
        sub.add_parser(call, help=f"the server's {call} call (run by the installed scripts)", add_help=False)
    return p


def split_call(argv: list[str]) -> tuple[list[str], list[str]]:
    """``[options…, CALL, server args…]`` → (``[options…, CALL]``, the server's arguments): what follows a
    call is the server's, even when it looks like an option (run-with-docker's ``-c``, a module's ``-f``)."""
    i = 0
    while i < len(argv):
        if argv[i] in CALLS:
            return argv[: i + 1], argv[i + 1:]
        i += 1 if "=" in argv[i] or not argv[i].startswith("--") or argv[i] in ("-h", "--help") else 2
    return argv, []


@contextlib.contextmanager
def stdout_to(fd_target: int) -> Iterator[None]:
    """Point file descriptor 1 at ``fd_target`` for the duration: stray output of any library goes
    there, not into what the server parses."""
    sys.stdout.flush()
    real = os.dup(1)
    os.dup2(fd_target, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(real, 1)
        os.close(real)


def main(argv: list[str] | None = None) -> int:
    ours, server_args = split_call(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(ours)
    args.args = server_args
    if args.config:
        os.environ["GPSTAGE_CONFIG"] = str(args.config)
    if args.state_dir:
        os.environ["GPSTAGE_STATE_DIR"] = str(args.state_dir)
    if args.command == "status":
        return _status(args.args)
    if args.command == "run-with-docker":
        from frontends.genepattern.docker_run import run_with_docker

        return run_with_docker(args.args)
    from gpstage.errors import GpstageError

    try:
        return _run(args)
    except GpstageError as e:
        print(f"gpstage-genepattern {args.command}: error: {e}", file=sys.stderr)
    except Exception as e:  # noqa: BLE001 - the server logs one line; a traceback helps nobody there
        print(f"gpstage-genepattern {args.command}: error: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
              file=sys.stderr)
    return 1


def _run(args: argparse.Namespace) -> int:
    from frontends.genepattern import calls, install

    if args.command == "install-scripts":
        config = args.config or Path(os.environ.get("GPSTAGE_CONFIG", Path.home() / ".config/gpstage/config.toml"))
        state = args.state_dir or Path(os.environ.get("GPSTAGE_STATE_DIR", Path.home() / ".local/state/gpstage"))
        env = install.parse_env(args.env)
        for path in install.install(args.dir, config, state, args.launcher, args.storage_root, env):
            print(path)
        return 0
    if args.command == "uninstall-scripts":
        for path in install.uninstall(args.dir):
            print(path)
        return 0
    if args.command == "submit":
        with stdout_to(2):  # only the job id reaches stdout: the server takes all of it as the id
            job_id = calls.submit(args.launcher, args.storage_root, args.args, os.environ)
        sys.stdout.write(job_id)
        return 0
    if not args.args:
        raise _usage(args.command)
    if args.command == "sync":
        print(calls.sync(args.args[0]))
    elif args.command == "cancel":
        print(calls.cancel(args.args[0]))
    elif args.command == "delete":  # the server calls `<script> bash <n> <jobdir>`
        rest = args.args[1:] if args.args[0] == "bash" else args.args
        if len(rest) < 2:
            raise _usage(args.command)
        for url in calls.delete(rest[0], rest[1]):
            print(f"removed {url}")
    return 0


def _usage(command: str) -> Exception:
    from gpstage.errors import BadInput

    forms = {"sync": "DIR", "cancel": "JOB_ID", "delete": "bash GP_JOB_ID JOBDIR", "status": "JOB_ID"}
    return BadInput(f"{command} needs {forms.get(command, 'arguments')}", "call it as the GenePattern server does")


def _status(args: list[str]) -> int:
    """describe-jobs JSON on stdout, nothing on stderr (the server parses both as one buffer)."""
    with open(os.devnull, "w") as null, contextlib.redirect_stderr(null):
        os.dup2(null.fileno(), 2)
        try:
            from frontends.genepattern.calls import status, unquote

            doc = status(unquote(args[0])) if args else {"jobs": []}
        except Exception:  # noqa: BLE001 - the server reads any failure as "unknown" and asks again later
            doc = {"jobs": []}
    print(json.dumps(doc))
    return 0 if doc["jobs"] else 1
