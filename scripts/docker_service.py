"""A private dockerd for the tests: its own socket, data root, exec root and pidfile, never the
system's /var/run/docker.sock; docker.io, debootstrap and a static busybox apt-installed when missing.
The data root (image cache) is kept between runs; stopping unmounts what dockerd leaves behind.
Started and stopped through scripts/services.py. Standard library only.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import signal
import socket
import time
from pathlib import Path

from hostutil import apt_install, missing_tools, unmount_under, which
from service_common import STATE, pid_alive, running, spawn, write_env

DOCKER_TOOLS = {  # what the daemon and the image builds (images/build.py) need → the Debian package
    "dockerd": "docker.io",
    "debootstrap": "debootstrap",
    "busybox": "busybox-static",
}
SOCKET_PATH_MAX = 100  # a unix socket path must fit sockaddr_un.sun_path (108 bytes with the NUL)


def docker_dir() -> Path:
    """The state dir of the private dockerd: `.services/docker`, or, when that path is too long for the
    unix sockets dockerd and its containerd create inside it, a short dir in /tmp keyed by a hash."""
    own = STATE.resolve() / "docker"
    if len(str(own / "exec" / "containerd" / "containerd.sock.ttrpc")) <= SOCKET_PATH_MAX:
        return own
    return Path("/tmp") / f"gpstage-docker-{hashlib.sha256(str(own).encode()).hexdigest()[:12]}"


def ensure_docker_tools() -> None:
    missing = missing_tools(DOCKER_TOOLS)
    if missing:
        apt_install(missing, STATE / "apt.log")


def unmount_docker_leftovers(d: Path) -> None:
    """dockerd leaves an nsfs mount at <exec-root>/netns/default (and, after a crash, overlays)."""
    for top in (d / "exec", d / "data"):
        unmount_under(top)


def docker_ping(sock: Path) -> bool:
    class Conn(http.client.HTTPConnection):
        def connect(self) -> None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(2)
            self.sock.connect(str(sock))

    conn = Conn("localhost", timeout=2)
    try:
        conn.request("GET", "/_ping")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def start_docker() -> None:
    d = docker_dir()
    sock = d / "docker.sock"
    if running("docker"):
        write_env({"GPSTAGE_TEST_DOCKER_HOST": f"unix://{sock}"})
        return
    ensure_docker_tools()
    unmount_docker_leftovers(d)  # from a daemon that did not stop cleanly
    for sub in ("data", "exec"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    sock.unlink(missing_ok=True)
    (d / "dockerd.pid").unlink(missing_ok=True)  # nothing runs it (checked above), or dockerd refuses
    config = d / "daemon.json"  # ours, so that a system /etc/docker/daemon.json cannot clash with the flags
    config.write_text("{}\n")
    argv = [which("dockerd") or "dockerd", "--host", f"unix://{sock}", "--data-root", str(d / "data"),
            "--exec-root", str(d / "exec"), "--pidfile", str(d / "dockerd.pid"), "--config-file", str(config)]
    pid = spawn("docker", argv)
    deadline = time.monotonic() + 60
    while not docker_ping(sock):
        if not pid_alive(pid):
            raise SystemExit(f"dockerd exited during start-up; see {STATE / 'docker.log'}")
        if time.monotonic() > deadline:
            stop_docker()
            raise SystemExit(f"dockerd not ready after 60s; see {STATE / 'docker.log'}")
        time.sleep(0.1)
    write_env({"GPSTAGE_TEST_DOCKER_HOST": f"unix://{sock}"})


def stop_docker() -> None:
    """SIGTERM to dockerd alone (it stops its containers and its containerd), SIGKILL to the group if it
    hangs; then unmount what it leaves. The data root (image cache) stays."""
    pid = running("docker")
    if pid:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 40  # dockerd gives containers 15 s to stop
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        try:
            os.killpg(pid, signal.SIGKILL)  # containerd, if it outlived dockerd; dockerd itself if hung
        except ProcessLookupError:
            pass
        (STATE / "docker.pid").unlink(missing_ok=True)
    unmount_docker_leftovers(docker_dir())
    (docker_dir() / "docker.sock").unlink(missing_ok=True)
