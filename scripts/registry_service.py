#!/usr/bin/env python3
"""A local Docker registry for the tests (commit-and-push of module images): ``docker-registry serve``
(distribution 2.8, Debian's ``docker-registry`` package) with its own config, on 127.0.0.1 only.

    python scripts/registry_service.py start [STATE_DIR]   # install if needed, start, wait ready; print KEY=VALUE
    python scripts/registry_service.py stop  [STATE_DIR]   # stop it by pid

Everything lives in ``<state_dir>/registry``: ``config.yml`` (written on every start), ``data/``
(filesystem storage, emptied when a fresh registry starts), ``registry.pid``, ``registry.log``,
``env``. The registry listens on ``127.0.0.1:<a free port>`` (never 5000, moto's default), with no
authentication: ``127.0.0.1:PORT`` needs no insecure-registry setting in dockerd. Image names need a
namespace: ``127.0.0.1:PORT/ns/name:tag``. Published as ``GPSTAGE_TEST_REGISTRY=127.0.0.1:PORT``.

* Package: ``apt-get install -y docker-registry`` when the binary is missing. When this script installs
  it, the system service the package may have started (port 5000, every interface) is stopped and
  disabled again: the tests never use it.
* start is idempotent (a running registry is left as it is) and serialised by a lock file; stop sends
  SIGTERM to the pid it recorded (only if that pid still runs ``docker-registry``), SIGKILL after 10 s.
Standard library only.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

# scripts/ is on sys.path: these modules run from services.py, or as scripts
from hostutil import apt_install, log_tail, which
from service_common import file_lock, free_port, read_env

ENV_KEY = "GPSTAGE_TEST_REGISTRY"
PACKAGE = "docker-registry"
BINARY = "docker-registry"
AVOID_PORTS = {5000}
READY_TIMEOUT_S = 30

CONFIG = """\
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {data}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:{port}
health:
  storagedriver:
    enabled: false
"""


def log(msg: str) -> None:
    print(f"[registry-service] {msg}", file=sys.stderr, flush=True)


def registry_dir(state_dir: Path) -> Path:
    return Path(state_dir).resolve() / "registry"


def _apt_install(d: Path) -> None:
    log(f"installing {PACKAGE} with apt-get (once)")
    apt_install([PACKAGE], d / "apt.log")
    # The package's own service (port 5000 on every interface, htpasswd auth) is not ours: turn it off.
    with open(d / "apt.log", "ab") as out:
        quiet = {"stdout": out, "stderr": subprocess.STDOUT, "stdin": subprocess.DEVNULL}
        if Path("/run/systemd/system").is_dir() and which("systemctl"):
            subprocess.run([which("systemctl") or "systemctl", "disable", "--now", "docker-registry.service"], check=False,
                           **quiet)
        elif Path("/var/run/docker-registry.pid").exists() and Path("/etc/init.d/docker-registry").exists():
            subprocess.run(["/etc/init.d/docker-registry", "stop"], check=False, **quiet)
            if which("update-rc.d"):
                subprocess.run([which("update-rc.d") or "update-rc.d", "docker-registry", "disable"], check=False, **quiet)


def ensure(state_dir: Path) -> str:
    """The ``docker-registry`` binary, installed with apt when missing."""
    found = which(BINARY)
    if not found:
        _apt_install(registry_dir(state_dir))
        found = which(BINARY)
        if not found:
            raise SystemExit(f"{PACKAGE} is installed but {BINARY} is not on PATH")
    return found


def _pid(d: Path) -> int | None:
    """The recorded pid, if that process still runs docker-registry (a reused pid is never ours)."""
    try:
        pid = int((d / "registry.pid").read_text().strip() or 0)
    except (OSError, ValueError):
        return None
    if pid <= 0:
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None
    if state == "Z" or not cmdline or os.path.basename(cmdline[0].decode(errors="replace")) != BINARY:
        return None
    return pid


def _ready(addr: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{addr}/v2/", timeout=1) as r:  # loopback only
            return r.status == 200
    except urllib.error.HTTPError as e:
        return e.code == 401  # answering (with auth): up, though ours never asks
    except OSError:
        return False


def running(state_dir: Path) -> bool:
    d = registry_dir(state_dir)
    return _pid(d) is not None and ENV_KEY in read_env(d / "env")


def start(state_dir: Path) -> dict[str, str]:
    """The registry on 127.0.0.1:<free port>, ready; ``{GPSTAGE_TEST_REGISTRY: "127.0.0.1:PORT"}``."""
    d = registry_dir(state_dir)
    with file_lock(d / "registry.lock"):
        env = read_env(d / "env")
        if _pid(d) and ENV_KEY in env and _ready(env[ENV_KEY]):
            return {ENV_KEY: env[ENV_KEY]}
        _stop_locked(d)
        binary = ensure(state_dir)
        data = d / "data"
        shutil.rmtree(data, ignore_errors=True)  # a fresh registry: nothing from an earlier session
        data.mkdir(parents=True)
        port = free_port(avoid=AVOID_PORTS)
        config = d / "config.yml"
        config.write_text(CONFIG.format(data=data, port=port))
        started = time.monotonic()
        with open(d / "registry.log", "ab") as out:
            proc = subprocess.Popen([binary, "serve", str(config)], stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        (d / "registry.pid").write_text(str(proc.pid))
        addr = f"127.0.0.1:{port}"
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not _ready(addr):
            if proc.poll() is not None:
                (d / "registry.pid").unlink(missing_ok=True)
                raise SystemExit(f"docker-registry exited during start-up (exit {proc.returncode}):\n"
                                 f"{log_tail(d / 'registry.log')}")
            if time.monotonic() > deadline:
                _stop_locked(d)
                raise SystemExit(f"docker-registry not ready on {addr} after {READY_TIMEOUT_S} s:\n"
                                 f"{log_tail(d / 'registry.log')}")
            time.sleep(0.05)
        (d / "env").write_text(f"{ENV_KEY}={addr}\n")
        log(f"ready on {addr} in {time.monotonic() - started:.2f}s (storage {data})")
        return {ENV_KEY: addr}


def _stop_locked(d: Path) -> None:
    pid = _pid(d)
    if pid:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while _pid(d) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _pid(d):
            os.kill(pid, signal.SIGKILL)
            while _pid(d):
                time.sleep(0.05)
    (d / "registry.pid").unlink(missing_ok=True)
    (d / "env").unlink(missing_ok=True)


def stop(state_dir: Path) -> None:
    """Stop the registry this state dir started (by its pid). Idempotent; its data stays until the next start."""
    d = registry_dir(state_dir)
    if not d.exists():
        return
    with file_lock(d / "registry.lock"):
        _stop_locked(d)


if __name__ == "__main__":
    from service_common import service_main  # scripts/ is on sys.path when run as a script

    service_main(__doc__, start, stop)
