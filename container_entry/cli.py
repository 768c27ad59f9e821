"""``gpstage-entry``: the command a job's container (or node) runs.

Spec mode:    gpstage-entry --spec s3://bucket/gp/jobs/42/job.json      (or GPSTAGE_SPEC=...)
Legacy mode:  gpstage-entry TASKLIB INPUT_FILES_DIR S3_ROOT WORKING_DIR EXECUTABLE
              (GenePattern's runS3OnBatch.sh contract; S3_ROOT may be any storage URL)

argparse, not typer: this runs once per job and its start-up time is part of every job's overhead.
Exit codes (docs/design.md §9): the module's own code, 125 gpstage/backend error (also bad arguments:
the job could not run), 127 executable missing, 142 time limit, 128+N killed by signal N.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence

from gpstage.errors import GpstageError
from gpstage.spec import JobSpec
from gpstage.states import EXIT_GPSTAGE_ERROR

EPILOG = """\
environment:
  GPSTAGE_SPEC                 job spec URL or path (instead of --spec)
  GPSTAGE_RUNNER               runner when neither --runner nor the spec names one (default: process)
  GP_METADATA_DIR              legacy mode: the metadata dir (default: WORKING_DIR/.gp_metadata)
  STDOUT_FILENAME, STDERR_FILENAME, EXITCODE_FILENAME
                               module stdout/stderr and exit-code files (default: stdout.txt, stderr.txt,
                               exit_code.txt in the metadata dir)
  GPSTAGE_PRERUN_SCRIPT, GPSTAGE_POSTRUN_SCRIPT
                               custom scripts sourced before the module / after the outputs are pushed
                               (default: /usr/local/bin/runS3Batch_{pre,post}run_custom.sh, if present)
  GPSTAGE_LOG_PUSH_INTERVAL    seconds between pushes of the metadata dir while the module runs (30; 0: off)
  GPSTAGE_KILL_GRACE           seconds between TERM and KILL at the time limit or on cancel (10)
  GPSTAGE_JOBS                 parallel transfers per dir
  GPSTAGE_CANCEL_POLL_INTERVAL seconds between looks for a launcher's cancel request on storage (0: never)
  GPSTAGE_CREDENTIALS_FILE     a launcher's credentials file (0600 JSON): read into this process, passed to
                               no child (docs/design.md §11)
docker runner:
  DOCKER_HOST                  the docker engine (default unix:///var/run/docker.sock)
  GPSTAGE_DOCKER_USER          uid:gid of the module's container (default: this user, or the working dir's owner)
  GPSTAGE_DOCKER_NETWORK       network mode of the module's container (default: docker's)
  GPSTAGE_STAGING_ROOT         wrapper mode (this entry runs in a container with the docker socket): a dir of
                               the docker HOST mounted at the same path here; each staged dir P lives at ROOT+P
  GPSTAGE_COMMIT_TAG           as --commit-tag
  DOCKER_CONFIG                dir of the docker config.json holding the registry credentials (by reference)
Storage credentials come from each provider's standard environment (AWS_*, ...); the module does not see them.

exit codes: the module's own; 125 gpstage error; 127 executable missing; 142 time limit; 128+N signal N.
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"gpstage-entry: error: {message}", file=sys.stderr)
        sys.exit(EXIT_GPSTAGE_ERROR)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="gpstage-entry", description="Run one GenePattern job: pull its dirs, run exec.sh, record the "
                "exit code, push the outputs and logs back.", epilog=EPILOG,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("legacy", nargs="*", metavar="ARG", help="legacy mode: TASKLIB INPUT_FILES_DIR S3_ROOT WORKING_DIR EXECUTABLE")
    p.add_argument("--spec", help="job spec: a storage URL (s3://..., file://...) or a local path")
    p.add_argument("--runner", help="where exec.sh runs: process (default), or a runner plugin such as docker")
    p.add_argument("--log-push-interval", type=float, metavar="S", help="seconds between live pushes of the logs (0: off)")
    p.add_argument("--kill-grace", type=float, metavar="S", help="seconds between TERM and KILL")
    p.add_argument("--jobs", type=int, metavar="N", help="parallel transfers per dir")
    p.add_argument("--prerun-script", metavar="PATH", help="custom script sourced before the module")
    p.add_argument("--postrun-script", metavar="PATH", help="custom script sourced after the outputs are pushed")
    p.add_argument("--staging-root", metavar="PATH", help="wrapper mode: the docker host's staging dir, mounted at the same path")
    p.add_argument("--commit-tag", metavar="REGISTRY/REPO:TAG",
                   help="after a successful run, commit the module image with TASKLIB and libraries and push it "
                        "(REGISTRY/REPO: tag from the module version; REGISTRY/NS/: name and tag from the module)")
    p.add_argument("-q", "--quiet", action="store_true", default=None, help="do not echo the entry log to stderr")
    p.add_argument("--version", action="version", version=f"gpstage-entry {_version()}")
    return p


def _version() -> str:
    from gpstage import __version__

    return __version__


def load_job(args: argparse.Namespace, env: Mapping[str, str]) -> JobSpec:
    """The job, from --spec, GPSTAGE_SPEC or the legacy arguments (in that order; mixing them is an error)."""
    from gpstage.errors import BadInput

    source = args.spec or env.get("GPSTAGE_SPEC")
    if source and args.legacy:
        raise BadInput("both a job spec and legacy arguments were given",
                       "use either --spec (or GPSTAGE_SPEC) or the 5 legacy arguments")
    if source:
        from gpstage.stage import read_spec

        return read_spec(source)
    if args.legacy:
        from container_entry.legacy import spec_from_legacy

        return spec_from_legacy(args.legacy, env)
    raise BadInput("no job given", "pass --spec URL, set GPSTAGE_SPEC, or give the 5 legacy arguments (see --help)")


def run(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """Parse, run the job, return the exit code. Errors before the job could start exit 125."""
    from container_entry.bundle import prepare_process
    from gpstage.spec import SpecTooNew

    env = os.environ if env is None else env
    args = build_parser().parse_args(argv)
    refused: SpecTooNew | None = None
    try:
        prepare_process()  # in an entry bundle: its CA certificates when the image has none
        env = _read_credentials(env)
        from container_entry.lifecycle import Entry
        from container_entry.runners import get_runner
        from container_entry.settings import EntrySettings
        from gpstage.stage import check_storage

        try:
            spec = load_job(args, env)
        except SpecTooNew as e:  # recorded as ERROR below, where the launcher looks, when it can be
            if e.readable is None:
                raise
            spec, refused = e.readable, e
        check_storage(spec)
        settings = EntrySettings.from_env(env, log_push_interval=args.log_push_interval, kill_grace=args.kill_grace,
                                          jobs=args.jobs, prerun_script=args.prerun_script,
                                          postrun_script=args.postrun_script, quiet=args.quiet,
                                          staging_root=args.staging_root, commit_tag=args.commit_tag)
        runner = get_runner(args.runner or spec.runner or env.get("GPSTAGE_RUNNER"))
        runner.check(spec)
        if settings.commit_tag:
            from container_entry.commit import commit_reference
            from gpstage.errors import BadInput

            if not runner.can_commit:
                raise BadInput(f"--commit-tag needs a runner that starts the module's image, not {runner.name}",
                               "use --runner docker, or drop the commit tag")
            commit_reference(settings.commit_tag, spec)  # a bad tag fails now, not after the run
    except GpstageError as e:
        print(f"gpstage-entry: error: {e}", file=sys.stderr)
        return EXIT_GPSTAGE_ERROR
    if refused is not None:
        return Entry(spec, runner, settings, env).refuse(refused, "spec")
    return Entry(spec, runner, settings, env).run()


def _read_credentials(env: Mapping[str, str]) -> Mapping[str, str]:
    """With ``GPSTAGE_CREDENTIALS_FILE``: its credentials into this process (the storage SDKs read them
    here) and an environment for every child without them (docs/design.md §11)."""
    from gpstage.credfile import ENV_NAME, load

    path = env.get(ENV_NAME)
    if not path:
        return env
    hidden = load(path, os.environ)
    return {k: v for k, v in env.items() if k not in hidden and k != ENV_NAME}


def main() -> None:
    sys.exit(run())
