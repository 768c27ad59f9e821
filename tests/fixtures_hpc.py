"""The shared-server deployment's services (started by scripts/services.py through ``service_env``):
Apptainer, installed under .services on first use, and a one-node Slurm cluster on this machine."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def apptainer(service_env) -> str:
    """The apptainer command (a wrapper that sets what this machine needs)."""
    return service_env("apptainer")["GPSTAGE_TEST_APPTAINER"]


@pytest.fixture(scope="session")
def slurm_conf(service_env) -> str:
    """SLURM_CONF of the one-node cluster."""
    return service_env("slurm")["GPSTAGE_TEST_SLURM_CONF"]


@pytest.fixture(scope="session")
def sif_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One SIF cache for the session's jobs (as on a node: the first job converts, the others reuse)."""
    return tmp_path_factory.mktemp("sif-cache")
