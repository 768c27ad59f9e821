#!/usr/bin/env python3
"""Start and stop the local services the tests and benchmarks use — on 127.0.0.1 only, stopped by pid.

    python scripts/services.py start s3        # moto server (S3 now; AWS Batch later) on a free port
    python scripts/services.py stop s3
    python scripts/services.py start docker    # a private dockerd: own socket, data root, exec root
    python scripts/services.py start gcs       # gcp-storage-emulator (Google Cloud Storage), in memory
    python scripts/services.py start az        # Azurite (Azure Blob storage); npm-installs it when missing
    python scripts/services.py env             # print the env file: KEY=VALUE lines

Each service writes its pid to ``.services/<name>.pid`` and its settings (endpoints) to
``.services/env``, which the pytest fixtures read. Starting an already running service is a no-op.
Standard library only, so it runs before anything is installed.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.client
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import apptainer_service  # scripts/ is on sys.path when this runs as a script
import slurm_service

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
    start_docker()
    docker_host = read_env()["GPSTAGE_TEST_DOCKER_HOST"]
    start_moto("batch", "GPSTAGE_TEST_BATCH_ENDPOINT", {"DOCKER_HOST": docker_host, "MOTO_DOCKER_NETWORK_MODE": "host"})


# ---- object stores of other clouds: Google Cloud Storage and Azure Blob ------------------------
@contextlib.contextmanager
def service_lock(name: str) -> Iterator[None]:
    """An exclusive lock while one process starts ``name`` (two test sessions may start it at once)."""
    import fcntl

    STATE.mkdir(parents=True, exist_ok=True)
    with open(STATE / f"{name}.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


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
            stop("gcs")
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
    if not tool_path("npm"):
        apt_install(["nodejs", "npm"])
    AZURITE_DIR.mkdir(parents=True, exist_ok=True)
    log = STATE / "npm.log"
    print(f"installing azurite@{AZURITE_VERSION} with npm into {AZURITE_DIR} (once)", file=sys.stderr)
    with open(log, "ab") as out:
        rc = subprocess.run([tool_path("npm") or "npm", "install", "--prefix", str(AZURITE_DIR), "--no-audit", "--no-fund",
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
            stop("az")
            raise SystemExit(f"{err}\n{log_tail(STATE / 'az.log')}") from None
        write_env({"GPSTAGE_TEST_AZURE_CONNECTION_STRING": f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};"
                                                           f"AccountKey={AZURITE_KEY};BlobEndpoint={endpoint};"})


def stop_az() -> None:
    pid = running("az")
    if pid:
        stop_group(pid, "az")
    shutil.rmtree(STATE / "azurite-data", ignore_errors=True)


# ---- docker: a private dockerd ----------------------------------------------------------------
# Its own socket, data root, exec root and pidfile, never the system's /var/run/docker.sock. The data
# root (image cache) is kept between runs; `stop` unmounts what dockerd leaves behind.
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


def tool_path(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")


def busybox_static() -> bool:
    """Whether the busybox on PATH is statically linked: an ELF without a PT_INTERP program header."""
    found = tool_path("busybox")
    if not found:
        return False
    with open(found, "rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF" or head[4] != 2:  # 64-bit ELF only
            return False
        end = "<" if head[5] == 1 else ">"
        phoff, = struct.unpack(end + "Q", head[32:40])
        phentsize, phnum = struct.unpack(end + "HH", head[54:58])
        for i in range(phnum):
            f.seek(phoff + i * phentsize)
            if struct.unpack(end + "I", f.read(4))[0] == 3:  # PT_INTERP
                return False
    return True


def apt_install(packages: list[str]) -> None:
    if os.geteuid() != 0:
        raise SystemExit(f"missing {' '.join(packages)}: run as root, or apt-get install -y {' '.join(packages)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    argv = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages]
    log = STATE / "apt.log"
    STATE.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        if subprocess.run(argv, check=False, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL).returncode:
            subprocess.run(["apt-get", "update", "-q"], env=env, stdout=out, stderr=subprocess.STDOUT, check=False)
            if subprocess.run(argv, check=False, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL).returncode:
                raise SystemExit(f"apt-get install {' '.join(packages)} failed; see {log}")


def ensure_docker_tools() -> None:
    missing = [pkg for tool, pkg in DOCKER_TOOLS.items() if not tool_path(tool)]
    if "busybox-static" not in missing and not busybox_static():
        missing.append("busybox-static")
    if missing:
        apt_install(missing)


def mounts_under(top: Path) -> list[str]:
    """Mount points at or below `top`, deepest first (from /proc/self/mountinfo; "\\040" is a space)."""
    prefix = str(top)
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), line.split()[4])
            if point == prefix or point.startswith(prefix + "/"):
                found.append(point)
    return sorted(found, key=len, reverse=True)


def unmount_docker_leftovers(d: Path) -> None:
    """dockerd leaves an nsfs mount at <exec-root>/netns/default (and, after a crash, overlays)."""
    for top in (d / "exec", d / "data"):
        for point in mounts_under(top):
            if subprocess.run(["umount", point], stderr=subprocess.DEVNULL, check=False).returncode:
                subprocess.run(["umount", "-l", point], stderr=subprocess.DEVNULL, check=False)


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
    argv = [tool_path("dockerd") or "dockerd", "--host", f"unix://{sock}", "--data-root", str(d / "data"),
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


SERVICES = {"s3": (start_s3, "GPSTAGE_TEST_S3_"), "docker": (start_docker, "GPSTAGE_TEST_DOCKER_"),
            "gcs": (start_gcs, "GPSTAGE_TEST_GCS_"), "az": (start_az, "GPSTAGE_TEST_AZURE_"),
            "batch": (start_batch, "GPSTAGE_TEST_BATCH_"),
            "apptainer": (lambda: write_env(apptainer_service.start(STATE)), "GPSTAGE_TEST_APPTAINER"),
            "slurm": (lambda: write_env(slurm_service.start(STATE)), "GPSTAGE_TEST_SLURM_")}
STOPPERS = {"docker": stop_docker, "az": stop_az,
            "apptainer": lambda: apptainer_service.stop(STATE), "slurm": lambda: slurm_service.stop(STATE)}  # services that need more than a signal to the process group


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


def stop(name: str) -> None:
    pid = running(name)
    if name in STOPPERS:
        STOPPERS[name]()
    elif pid:
        stop_group(pid, name)
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
