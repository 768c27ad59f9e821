"""The object stores of other clouds, as local emulators: Google Cloud Storage (gcp-storage-emulator,
in memory, through scripts/gcs_emulator.py) and Azure Blob storage (Azurite, npm-installed into
``.services/azurite`` when missing). Started and stopped through scripts/services.py. Standard library only.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from hostutil import apt_install, log_tail, which
from service_common import (
    BIN,
    ROOT,
    STATE,
    free_port,
    running,
    service_lock,
    spawn,
    stop_group,
    stop_service,
    wait_http,
    write_env,
)

GCS_ENV_PREFIX = "GPSTAGE_TEST_GCS_"
AZURE_ENV_PREFIX = "GPSTAGE_TEST_AZURE_"


def start_gcs() -> None:
    """gcp-storage-emulator, in memory, through scripts/gcs_emulator.py (a deeper listen backlog)."""
    with service_lock("gcs"):
        if running("gcs"):
            return
        py = BIN / "python"
        probe = subprocess.run([str(py), "-c", "import gcp_storage_emulator"], capture_output=True, check=False)
        if probe.returncode:
            raise SystemExit(f"gcp-storage-emulator is not installed in {py.parent.parent}: pip install -e '.[test]' "
                             "(scripts/test.sh does)")
        port = free_port()
        pid = spawn("gcs", [str(py), str(ROOT / "scripts" / "gcs_emulator.py"), "start", "--host", "127.0.0.1",
                            "--port", str(port), "--in-memory", "--quiet"])
        endpoint = f"http://127.0.0.1:{port}"
        try:
            wait_http(f"{endpoint}/storage/v1/b", 30, pid)
        except SystemExit as err:
            stop_service("gcs", GCS_ENV_PREFIX)
            raise SystemExit(f"{err}\n{log_tail(STATE / 'gcs.log')}") from None
        write_env({"GPSTAGE_TEST_GCS_ENDPOINT": endpoint})


# Azurite's development account: a public constant documented by Microsoft, valid only against Azurite.
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
AZURITE_VERSION = "3"  # npm version range
AZURITE_DIR = STATE / "azurite"


def ensure_azurite() -> Path:
    """``azurite-blob`` from npm into .services/azurite (tens of seconds, once); nodejs/npm from apt if missing."""
    exe = AZURITE_DIR / "node_modules" / ".bin" / "azurite-blob"
    if exe.exists():
        return exe
    if not which("npm"):
        apt_install(["nodejs", "npm"], STATE / "apt.log")
    AZURITE_DIR.mkdir(parents=True, exist_ok=True)
    log = STATE / "npm.log"
    print(f"installing azurite@{AZURITE_VERSION} with npm into {AZURITE_DIR} (once)", file=sys.stderr)
    with open(log, "ab") as out:
        rc = subprocess.run([which("npm") or "npm", "install", "--prefix", str(AZURITE_DIR), "--no-audit", "--no-fund",
                             "--loglevel=error", f"azurite@{AZURITE_VERSION}"], stdout=out, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, check=False, timeout=600).returncode
    if rc or not exe.exists():
        raise SystemExit(f"npm install azurite failed (exit {rc}); see {log}:\n{log_tail(log)}")
    return exe


def start_az() -> None:
    """Azurite's blob service on a free port, with a fresh data dir."""
    with service_lock("az"):
        if running("az"):
            return
        exe = ensure_azurite()
        data = STATE / "azurite-data"
        shutil.rmtree(data, ignore_errors=True)
        data.mkdir(parents=True)
        port = free_port()
        pid = spawn("az", [str(exe), "--blobHost", "127.0.0.1", "--blobPort", str(port), "--location", str(data),
                           "--skipApiVersionCheck", "--loose", "--silent", "--disableTelemetry"])
        endpoint = f"http://127.0.0.1:{port}/{AZURITE_ACCOUNT}"
        try:
            wait_http(f"{endpoint}?comp=list", 60, pid)
        except SystemExit as err:
            stop_service("az", AZURE_ENV_PREFIX, stop_az)
            raise SystemExit(f"{err}\n{log_tail(STATE / 'az.log')}") from None
        write_env({"GPSTAGE_TEST_AZURE_CONNECTION_STRING": f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};"
                                                           f"AccountKey={AZURITE_KEY};BlobEndpoint={endpoint};"})


def stop_az() -> None:
    pid = running("az")
    if pid:
        stop_group(pid, "az")
    shutil.rmtree(STATE / "azurite-data", ignore_errors=True)
