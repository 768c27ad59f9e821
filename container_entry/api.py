"""The container entry's public surface for the layers above it (launchers, front ends).

A launcher starts ``gpstage-entry`` somewhere; from this package it needs only which runners exist,
how the entry's containers are labelled and reached, how a commit tag becomes an image reference, and
the entry bundle's manifest, command and mount path (:mod:`container_entry.bundle`) — and, for the
local launcher's dispatcher, which forks its entries from a warm interpreter, the entry's command line
as a call (:func:`run_entry`, :func:`warm_entry`); nothing of the entry's lifecycle. pyproject.toml's
import-linter contract lets launchers import this module and no other part of ``container_entry``, so
the lifecycle can change without touching them.
(The files a job leaves behind are read through :mod:`gpstage.jobfiles`, one layer down.)
"""

from container_entry import bundle
from container_entry.commit import commit_reference
from container_entry.dockerutil import LABEL_JOB, LABEL_ROLE, LABEL_STAGING, docker_client, ensure_image
from container_entry.runners import DEFAULT_RUNNER, RUNNERS

__all__ = ["DEFAULT_RUNNER", "bundle", "LABEL_JOB", "LABEL_ROLE", "LABEL_STAGING", "RUNNERS", "commit_reference", "docker_client",
           "ensure_image", "run_entry", "warm_entry"]


def run_entry(argv: list[str]) -> int:
    """``gpstage-entry argv`` in this process (its environment is ``os.environ``); returns the exit code."""
    from container_entry.cli import run

    return run(argv)


def warm_entry() -> None:
    """Import what every entry imports (the spec's models, the lifecycle, the process runner, the sync),
    so that a process forked after this starts a job without importing them again."""
    from importlib import import_module

    for name in ("container_entry.cli", "container_entry.lifecycle", "container_entry.runners.process",
                 "container_entry.settings", "gpstage.stage", "gpstage.sync"):
        import_module(name)
