"""The local S3 servers the benchmark starts itself, on 127.0.0.1 only, and stops by pid.

Why two servers: SeaweedFS (``weed mini``) is a production Go store that does not cap the client, so
it shows what each client costs; moto is the server the test suite uses, but it is single-threaded
Python (~150 objects/s) and caps every client, so its numbers mostly measure moto.

Request counts come from the servers themselves, read between runs, so counting adds nothing to a
timed run: SeaweedFS exports the Prometheus counter ``SeaweedFS_s3_request_total{type=...}`` on its
``-metricsPort``; moto's HTTP server (werkzeug) writes one access-log line per request, which we
parse. Both are read before and after a run (after they stop changing), and the difference is the
run's count.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

BIN = Path(sys.executable).parent  # the venv this runs in: weed and moto_server come with it
HOST = "127.0.0.1"


def free_port(also_free_at: int = 0) -> int:
    """A free TCP port on 127.0.0.1; with ``also_free_at``, port + that offset must be free too."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind((HOST, 0))
            port = s.getsockname()[1]
        if not also_free_at:
            return port
        if port + also_free_at < 65536 and _can_bind(port + also_free_at):
            return port
    raise RuntimeError("no free port pair on 127.0.0.1")


def _can_bind(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def _clean_env() -> dict[str, str]:
    """No AWS_* variables: with AWS_ACCESS_KEY_ID set, ``weed mini`` would switch authentication on."""
    return {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except urllib.error.HTTPError:
        return True  # it answered (403 for an anonymous request is fine)
    except OSError:
        return False


class Server:
    """A server process in its own session, so that stopping it stops everything it started."""

    name = "server"
    counting = ""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / f"{self.name}.log"

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def command(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return _clean_env()

    def start(self, timeout: float = 60.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        cmd = self.command()  # picks the ports
        if not Path(cmd[0]).exists():
            raise RuntimeError(f"{cmd[0]} not found: install the benchmark's extras (pip install -e '.[s3,test,bench]')")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=self.env(), cwd=self.workdir, start_new_session=True)
        deadline = time.monotonic() + timeout
        while not self.ready():
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode} while starting; see {self.log_path}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name} did not answer within {timeout:.0f} s; see {self.log_path}")
            time.sleep(0.2)

    def ready(self) -> bool:
        return _http_ok(self.endpoint + "/")

    def stop(self) -> None:
        """SIGTERM the server's process group (its pid), SIGKILL it if it has not gone within 5 s."""
        if self.proc is None or self.proc.returncode is not None:
            return
        for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 10)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue

    def cpu_seconds(self) -> float:
        """user+sys CPU of the server process so far (from /proc), to report the server's share."""
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def request_counts(self) -> Counter[str]:
        raise NotImplementedError

    def settled_counts(self, timeout: float = 3.0) -> Counter[str]:
        """Counts once they stop changing: a server may log a request just after the client has exited."""
        last = self.request_counts()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            time.sleep(0.05)
            now = self.request_counts()
            if now == last:
                return now
            last = now
        return last

    def version(self) -> str:
        return ""

    def reclaim(self) -> None:
        """Give back the disk space of deleted objects, where the server keeps it until told (untimed)."""


class SeaweedFS(Server):
    """``weed mini``: master, volume, filer and S3 gateway in one process; WebDAV, admin UI, telemetry off."""

    name = "seaweedfs"
    counting = "SeaweedFS Prometheus counter SeaweedFS_s3_request_total (by type; HEAD counts as GET), read between runs"
    GRPC_OFFSET = 10000  # weed derives some gRPC ports as http port + 10000: keep every pair free and consistent

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.data = workdir / "seaweedfs-data"
        self.ports: dict[str, int] = {}
        self.sockets = ""  # a short dir for weed's unix sockets: paths over 107 bytes cannot be bound

    def command(self) -> list[str]:
        for role in ("s3", "master", "volume", "filer", "admin", "webdav"):
            self.ports[role] = free_port(self.GRPC_OFFSET)
        self.ports["metrics"] = free_port()
        self.port = self.ports["s3"]
        self.data.mkdir(parents=True, exist_ok=True)
        self.sockets = tempfile.mkdtemp(prefix="gpstage-bench-weed-")
        p, g = self.ports, self.GRPC_OFFSET
        return [str(BIN / "weed"), "mini", f"-dir={self.data}", f"-ip={HOST}", f"-ip.bind={HOST}",
                f"-s3.port={p['s3']}", f"-s3.port.grpc={p['s3'] + g}", f"-master.port={p['master']}",
                f"-master.port.grpc={p['master'] + g}", f"-volume.port={p['volume']}", f"-volume.port.grpc={p['volume'] + g}",
                f"-filer.port={p['filer']}", f"-filer.port.grpc={p['filer'] + g}", f"-webdav.port={p['webdav']}", "-webdav=false",
                "-admin.ui=false", f"-admin.port={p['admin']}", f"-admin.port.grpc={p['admin'] + g}",
                "-master.telemetry=false", f"-metricsPort={p['metrics']}", f"-metricsIp={HOST}",
                "-s3.port.iceberg=0", "-s3.port.lance=0",
                f"-s3.localSocket={self.sockets}/s3.sock", f"-filer.localSocket={self.sockets}/filer.sock"]

    def ready(self) -> bool:
        return _http_ok(self.endpoint + "/") and _http_ok(f"http://{HOST}:{self.ports['metrics']}/metrics")

    def request_counts(self) -> Counter[str]:
        with urllib.request.urlopen(f"http://{HOST}:{self.ports['metrics']}/metrics", timeout=10) as r:
            text = r.read().decode()
        counts: Counter[str] = Counter()
        for m in re.finditer(r'^SeaweedFS_s3_request_total\{([^}]*)\}\s+(\S+)$', text, re.MULTILINE):
            kind = re.search(r'type="([^"]*)"', m.group(1))
            counts[kind.group(1) if kind else "?"] += int(float(m.group(2)))
        return counts

    def reclaim(self) -> None:
        """A deleted object's bytes stay in SeaweedFS's volume files until a vacuum compacts them (the
        master runs one every 15 minutes, for volumes over 30 % garbage): ask the master for one now."""
        url = f"http://{HOST}:{self.ports['master']}/vol/vacuum?garbageThreshold=0.0001"
        with urllib.request.urlopen(url, timeout=300) as r:
            r.read()

    def stop(self) -> None:
        super().stop()
        shutil.rmtree(self.data, ignore_errors=True)
        if self.sockets:
            shutil.rmtree(self.sockets, ignore_errors=True)
        for port in self.ports.values():  # gRPC unix sockets weed leaves in /tmp, named by our ports
            for sock in Path("/tmp").glob(f"seaweedfs-*-{port + self.GRPC_OFFSET}.sock"):
                sock.unlink(missing_ok=True)

    def version(self) -> str:
        out = subprocess.run([str(BIN / "weed"), "version"], check=False, capture_output=True, text=True, timeout=30).stdout
        return out.splitlines()[0].strip() if out else "?"


_LOG_LINE = re.compile(r'"(?:\x1b\[[0-9;]*m)*([A-Z]+) (\S+) HTTP/[0-9.]+')  # werkzeug colours non-200 lines


class Moto(Server):
    """``moto_server``: the single-threaded Python S3 mock the test suite uses."""

    name = "moto"
    counting = "moto's access log (one line per request; by method, GET on a bucket = LIST), read between runs"

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self._offset = 0
        self._counts: Counter[str] = Counter()

    def command(self) -> list[str]:
        self.port = free_port()
        return [str(BIN / "moto_server"), "-H", HOST, "-p", str(self.port)]

    def env(self) -> dict[str, str]:
        return {**_clean_env(), "MOTO_PORT": str(self.port)}

    def request_counts(self) -> Counter[str]:
        with open(self.log_path, "rb") as f:
            f.seek(self._offset)
            chunk = f.read()
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self._offset += len(complete)
        for line in complete.decode(errors="replace").splitlines():
            m = _LOG_LINE.search(line)
            if m:
                self._counts[_operation(m.group(1), m.group(2))] += 1
        return Counter(self._counts)

    def version(self) -> str:
        from importlib.metadata import version

        return f"moto {version('moto')}"


def _operation(method: str, target: str) -> str:
    """Name a request as SeaweedFS's counter does (LIST, GET, PUT, POST = multipart start/finish,
    DELETE incl. batch deletes), except that HEAD stays HEAD."""
    path, _, query = target.partition("?")
    if method == "POST" and "delete" in query.split("&"):
        return "DELETE"
    if method == "GET" and path.strip("/").count("/") == 0:
        return "LIST"
    return method


SERVERS: dict[str, type[Server]] = {"seaweedfs": SeaweedFS, "moto": Moto}
