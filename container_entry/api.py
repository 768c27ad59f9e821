"""The container entry's public surface for the layers above it (launchers, front ends).

A launcher starts ``gpstage-entry`` somewhere; from this package it needs only which runners exist,
how the entry's containers are labelled and reached, how a commit tag becomes an image reference, and
the entry bundle's manifest, command and mount path (:mod:`container_entry.bundle`) —
nothing of the entry's lifecycle. pyproject.toml's import-linter contract lets launchers import this
module and no other part of ``container_entry``, so the lifecycle can change without touching them.
(The files a job leaves behind are read through :mod:`gpstage.jobfiles`, one layer down.)
"""

from container_entry import bundle
from container_entry.commit import commit_reference
from container_entry.dockerutil import LABEL_JOB, LABEL_ROLE, LABEL_STAGING, docker_client, ensure_image
from container_entry.runners import DEFAULT_RUNNER, RUNNERS

__all__ = ["DEFAULT_RUNNER", "bundle", "LABEL_JOB", "LABEL_ROLE", "LABEL_STAGING", "RUNNERS", "commit_reference", "docker_client",
           "ensure_image"]
