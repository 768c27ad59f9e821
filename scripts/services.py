#!/usr/bin/env python3
"""Start and stop the local services the tests and benchmarks use — on 127.0.0.1 only, stopped by pid.

    python scripts/services.py start s3        # moto server (S3 now; AWS Batch later) on a free port
    python scripts/services.py stop s3
    python scripts/services.py start docker    # a private dockerd: own socket, data root, exec root
    python scripts/services.py start gcs       # gcp-storage-emulator (Google Cloud Storage), in memory
    python scripts/services.py start az        # Azurite (Azure Blob storage); npm-installs it when missing
    python scripts/services.py start registry  # docker-registry on 127.0.0.1:<free port>; apt-installs it when missing
    python scripts/services.py env             # print the env file: KEY=VALUE lines

Each service writes its pid to ``.services/<name>.pid`` and its settings (endpoints) to
``.services/env``, which the pytest fixtures read. Starting an already running service is a no-op.
Standard library only, so it runs before anything is installed.

This file is the command line, the moto servers (S3, AWS Batch) and the SERVICES/STOPPERS tables; the
other services live beside it: docker_service (the private dockerd), cloud_services (GCS emulator,
Azurite), apptainer_service, slurm_service, registry_service; service_common holds what they share, and
hostutil what they share with images/build.py (commands, apt installs, the static-ELF check, mounts).
"""

from __future__ import annotations

import argparse
import sys

import apptainer_service  # scripts/ is on sys.path when this runs as a script
import cloud_services
import docker_service
import registry_service
import slurm_service
from service_common import BIN, ENV_FILE, STATE, free_port, read_env, running, spawn, stop_service, wait_http, write_env


# ---- services ---------------------------------------------------------------------------------
def start_moto(name: str, env_key: str, extra_env: dict[str, str] | None = None) -> None:
    if running(name):
        return
    moto = BIN / "moto_server"
    if not moto.exists():
        raise SystemExit(f"{moto} not found: pip install 'moto[server]' (scripts/test.sh does)")
    port = free_port()
    pid = spawn(name, [str(moto), "-H", "127.0.0.1", "-p", str(port)], {"MOTO_PORT": str(port), **(extra_env or {})})
    endpoint = f"http://127.0.0.1:{port}"
    wait_http(f"{endpoint}/moto-api/", 30, pid)
    write_env({env_key: endpoint})


def start_s3() -> None:
    """moto in server mode: the S3 server of the tests."""
    start_moto("s3", "GPSTAGE_TEST_S3_ENDPOINT")


def start_batch() -> None:
    """A second moto for AWS Batch: it runs each job's container on the private dockerd, with host
    networking so the job reaches the S3 server on 127.0.0.1."""
    docker_service.start_docker()
    docker_host = read_env()["GPSTAGE_TEST_DOCKER_HOST"]
    start_moto("batch", "GPSTAGE_TEST_BATCH_ENDPOINT", {"DOCKER_HOST": docker_host, "MOTO_DOCKER_NETWORK_MODE": "host"})


SERVICES = {"s3": (start_s3, "GPSTAGE_TEST_S3_"), "docker": (docker_service.start_docker, "GPSTAGE_TEST_DOCKER_"),
            "gcs": (cloud_services.start_gcs, cloud_services.GCS_ENV_PREFIX),
            "az": (cloud_services.start_az, cloud_services.AZURE_ENV_PREFIX),
            "batch": (start_batch, "GPSTAGE_TEST_BATCH_"),
            "apptainer": (lambda: write_env(apptainer_service.start(STATE)), "GPSTAGE_TEST_APPTAINER"),
            "slurm": (lambda: write_env(slurm_service.start(STATE)), "GPSTAGE_TEST_SLURM_"),
            "registry": (lambda: write_env(registry_service.start(STATE)), "GPSTAGE_TEST_REGISTRY")}
STOPPERS = {"docker": docker_service.stop_docker, "az": cloud_services.stop_az,
            "apptainer": lambda: apptainer_service.stop(STATE), "slurm": lambda: slurm_service.stop(STATE),
            "registry": lambda: registry_service.stop(STATE)}  # services that need more than a signal to the process group


def stop(name: str) -> None:
    stop_service(name, SERVICES[name][1], STOPPERS.get(name))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("action", choices=["start", "stop", "env"])
    ap.add_argument("names", nargs="*", help=f"services (default: all): {', '.join(SERVICES)}")
    args = ap.parse_args()
    names = args.names or list(SERVICES)
    for n in names:
        if n not in SERVICES:
            raise SystemExit(f"unknown service {n!r}; known: {', '.join(SERVICES)}")
    if args.action == "env":
        sys.stdout.write(ENV_FILE.read_text() if ENV_FILE.exists() else "")
    for n in names:
        if args.action == "start":
            SERVICES[n][0]()
        elif args.action == "stop":
            stop(n)


if __name__ == "__main__":
    main()
