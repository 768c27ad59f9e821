"""What every local test service shares: where their state lives (``.services/``, or
``GPSTAGE_SERVICES_DIR``), the env file of their settings, and the helpers that start, watch and
stop a service process (pid files, free ports, readiness probes, process-group signals, locks).

Imported by scripts/services.py and its service modules (docker_service, cloud_services, apptainer_service,
slurm_service, registry_service); it imports none of them. What the image builds need too (commands, apt,
mounts) is in hostutil. Standard library only.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Collection, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STATE = Path(os.environ.get("GPSTAGE_SERVICES_DIR", ROOT / ".services"))
ENV_FILE = STATE / "env"
BIN = Path(sys.executable).parent


def free_port(avoid: Collection[int] = ()) -> int:
    """A free TCP port on 127.0.0.1, none of ``avoid``."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in avoid:
            return port


def read_env(path: Path = ENV_FILE) -> dict[str, str]:
    """The KEY=VALUE lines of an env file (the services' ``.services/env`` unless told); {} when missing."""
    try:
        return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    except OSError:
        return {}


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
    try:  # a zombie (exited, not yet reaped by whoever adopted it) is not alive
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
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
            urllib.request.urlopen(url, timeout=1)
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


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive flock on ``path`` for the block (two test sessions may start a service at once)."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def service_lock(name: str) -> contextlib.AbstractContextManager[None]:
    """The lock held while one process starts ``name``."""
    return file_lock(STATE / f"{name}.lock")


def stop_group(pid: int, name: str) -> None:
    """SIGTERM to the service's process group, SIGKILL after 5 s; forget its pid file."""
    try:
        os.killpg(pid, signal.SIGTERM)
        for _ in range(50):
            if not pid_alive(pid):
                break
            time.sleep(0.1)
        else:
            os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    (STATE / f"{name}.pid").unlink(missing_ok=True)


def stop_service(name: str, env_prefix: str, stopper: Callable[[], None] | None = None) -> None:
    """Stop ``name`` (its own ``stopper`` if it needs more than a signal to its process group) and drop
    its settings (``env_prefix``) from the env file."""
    pid = running(name)
    if stopper:
        stopper()
    elif pid:
        stop_group(pid, name)
    drop_env(env_prefix)


def service_main(doc: str | None, start: Callable[[Path], dict[str, str]], stop: Callable[[Path], None]) -> None:
    """The command line of a service module run on its own: ``start|stop [STATE_DIR]`` (services.py is
    the usual way in; this is for trying one service by hand)."""
    if len(sys.argv) < 2 or sys.argv[1] not in ("start", "stop"):
        raise SystemExit(doc)
    state_dir = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(__file__).resolve().parent.parent / ".services"
    if sys.argv[1] == "start":
        for k, v in start(state_dir).items():
            print(f"{k}={v}")
    else:
        stop(state_dir)
