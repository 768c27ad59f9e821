#!/usr/bin/env python3
"""Start and stop the local services the tests and benchmarks use — on 127.0.0.1 only, stopped by pid.

    python scripts/services.py start s3        # moto server (S3 now; AWS Batch later) on a free port
    python scripts/services.py stop s3
    python scripts/services.py env             # print the env file: KEY=VALUE lines

Each service writes its pid to ``.services/<name>.pid`` and its settings (endpoints) to
``.services/env``, which the pytest fixtures read. Starting an already running service is a no-op.
Standard library only, so it runs before anything is installed.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STATE = Path(os.environ.get("GPSTAGE_SERVICES_DIR", ROOT / ".services"))
ENV_FILE = STATE / "env"
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_env() -> dict[str, str]:
    if not ENV_FILE.exists():
        return {}
    return dict(line.split("=", 1) for line in ENV_FILE.read_text().splitlines() if "=" in line)


def write_env(values: dict[str, str]) -> None:
    env = read_env() | values
    STATE.mkdir(parents=True, exist_ok=True)
    ENV_FILE.write_text("".join(f"{k}={v}\n" for k, v in sorted(env.items())))


def drop_env(prefix: str) -> None:
    env = {k: v for k, v in read_env().items() if not k.startswith(prefix)}
    STATE.mkdir(parents=True, exist_ok=True)
    ENV_FILE.write_text("".join(f"{k}={v}\n" for k, v in sorted(env.items())))


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def running(name: str) -> int | None:
    pidfile = STATE / f"{name}.pid"
    if pidfile.exists():
        pid = int(pidfile.read_text().strip() or 0)
        if pid and pid_alive(pid):
            return pid
        pidfile.unlink()
    return None


def wait_http(url: str, seconds: float, pid: int) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            raise SystemExit(f"service exited during start-up; see {STATE}")
        try:
            urllib.request.urlopen(url, timeout=1)  # noqa: S310 - loopback only
            return
        except urllib.error.HTTPError:
            return  # it answered
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"service at {url} not ready after {seconds}s")


def spawn(name: str, argv: list[str], env: dict[str, str] | None = None) -> int:
    STATE.mkdir(parents=True, exist_ok=True)
    log = open(STATE / f"{name}.log", "ab")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env={**os.environ, **(env or {})}, start_new_session=True)
    (STATE / f"{name}.pid").write_text(str(proc.pid))
    return proc.pid


# ---- services ---------------------------------------------------------------------------------
def start_s3() -> None:
    """moto in server mode: S3 (and, for the Batch launcher, AWS Batch)."""
    if running("s3"):
        return
    moto = BIN / "moto_server"
    if not moto.exists():
        raise SystemExit(f"{moto} not found: pip install 'moto[server]' (scripts/test.sh does)")
    port = free_port()
    pid = spawn("s3", [str(moto), "-H", "127.0.0.1", "-p", str(port)], {"MOTO_PORT": str(port)})
    endpoint = f"http://127.0.0.1:{port}"
    wait_http(f"{endpoint}/moto-api/", 30, pid)
    write_env({"GPSTAGE_TEST_S3_ENDPOINT": endpoint})


SERVICES = {"s3": (start_s3, "GPSTAGE_TEST_S3_")}


def stop(name: str) -> None:
    pid = running(name)
    if pid:
        os.killpg(pid, signal.SIGTERM)
        for _ in range(50):
            if not pid_alive(pid):
                break
            time.sleep(0.1)
        else:
            os.killpg(pid, signal.SIGKILL)
        (STATE / f"{name}.pid").unlink(missing_ok=True)
    drop_env(SERVICES[name][1])


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
