#!/usr/bin/env python3
"""A one-node Slurm cluster for the tests: a private munged, slurmctld and slurmd on this host.

    python scripts/slurm_service.py start [STATE_DIR]   # install if needed, start, wait idle; print KEY=VALUE
    python scripts/slurm_service.py stop  [STATE_DIR]   # cancel our jobs, stop the three daemons by pid

Everything lives in ``<state_dir>/slurm`` (or, when that path is too long for the unix sockets inside
it, a short dir in /tmp keyed by its hash): slurm.conf, state, spool, logs, pid files, the jobcomp
file — and munge's key, socket, pid, log and seed, so the system's munge (``/etc/munge``,
``/run/munge``) is neither used nor touched. Clients find it all through ``SLURM_CONF`` (published as
``GPSTAGE_TEST_SLURM_CONF``; slurm.conf's ``AuthInfo`` names the private munge socket).

* Packages: ``slurmctld slurmd slurm-client munge`` from apt when missing (Debian 12: Slurm 22.05).
* slurm.conf (regenerated on every start): ClusterName, ``SlurmctldHost=<hostname -s>(127.0.0.1)``, the
  node line from ``slurmd -C`` with ``NodeAddr=127.0.0.1``, one default partition, SlurmUser=root,
  proctrack/linuxproc and task/none (no cgroups), select/cons_tres with CR_Core, MinJobAge=3600 (a
  finished job stays visible to ``scontrol show job`` for an hour: there is no slurmdbd, so no
  ``sacct``), KillWait=5 (a job Slurm ends gets SIGKILL 5 s after its SIGTERM, not 30),
  batch_sched_delay=0, accounting_storage/none, jobcomp/filetxt. Ports are free ones picked at start;
  ``CommunicationParameters=NoCtldInAddrAny,NoInAddrAny`` makes the daemons bind the address the host
  name resolves to instead of every interface.
* The daemons run in the foreground (``-D``/``-F``) as children started in their own sessions, so
  their pids are ours (pid files ``munged.pid``, ``slurmctld.pid``, ``slurmd.pid``); start waits until
  ``sinfo`` shows the node idle. stop cancels the jobs still queued or running, then stops slurmd,
  slurmctld and munged by pid (TERM, then KILL after 10 s; a pid whose command is not the daemon's is
  never signalled). Both are idempotent and serialised by a lock file. Standard library only.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# scripts/ is on sys.path: these modules run from services.py, or as scripts
from hostutil import SYSTEM_PATH, apt_install, log_tail, missing_packages, which
from service_common import file_lock, free_port

ENV_KEY = "GPSTAGE_TEST_SLURM_CONF"
PACKAGES = ["slurmctld", "slurmd", "slurm-client", "munge"]
DAEMONS = ("slurmd", "slurmctld", "munged")  # the order stop uses: slurmd talks to slurmctld; both use munge
READY_TIMEOUT_S = 60
SOCKET_PATH_MAX = 100  # sockaddr_un.sun_path is 108 bytes; slurmd puts step sockets in its spool dir


def log(msg: str) -> None:
    print(f"[slurm-service] {msg}", file=sys.stderr, flush=True)


def slurm_dir(state_dir: Path) -> Path:
    own = Path(state_dir).resolve() / "slurm"
    if len(str(own / "spool" / "slurmd" / "vm_4294967294.4294967294")) <= SOCKET_PATH_MAX:
        return own
    return Path("/tmp") / f"gpstage-slurm-{hashlib.sha256(str(own).encode()).hexdigest()[:12]}"


def conf_path(state_dir: Path) -> Path:
    return slurm_dir(state_dir) / "slurm.conf"


def _tool(name: str) -> str:
    return which(name) or name


def _env(conf: Path) -> dict[str, str]:
    path = os.environ.get("PATH", "")
    return {**os.environ, "SLURM_CONF": str(conf), "PATH": f"{path}:{SYSTEM_PATH}" if path else SYSTEM_PATH}


# ---- packages ----------------------------------------------------------------------------------
def ensure(state_dir: Path) -> None:
    """Install the Slurm and munge packages when missing (apt; their postinst starts nothing without systemd)."""
    missing = missing_packages(PACKAGES)
    if missing:
        log(f"apt-get install {' '.join(missing)}")
        apt_install(missing, slurm_dir(state_dir) / "apt.log")


# ---- processes ---------------------------------------------------------------------------------
def _pid_of(d: Path, name: str) -> int | None:
    """The pid in ``<d>/<name>.pid`` if that process is alive, not a zombie, and is ``name``."""
    pidfile = d / f"{name}.pid"
    try:
        pid = int(pidfile.read_text().strip() or 0)
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    comm, state = stat[stat.index("(") + 1 : stat.rindex(")")], stat.rsplit(")", 1)[1].split()[0]
    return pid if pid and comm == name and state != "Z" else None


def _spawn(d: Path, name: str, argv: list[str], env: dict[str, str], user: str | None = None) -> int:
    with open(d / "log" / f"{name}.out", "ab") as out:
        kw = {"user": user, "group": pwd.getpwnam(user).pw_gid, "extra_groups": []} if user else {}
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                start_new_session=True, **kw)
    (d / f"{name}.pid").write_text(f"{proc.pid}\n")
    return proc.pid


def _stop_pid(d: Path, name: str, grace: float = 10) -> None:
    pid = _pid_of(d, name)
    if pid:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while _pid_of(d, name) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _pid_of(d, name):
            log(f"{name} (pid {pid}) ignored TERM: KILL")
            os.kill(pid, signal.SIGKILL)
            while _pid_of(d, name):
                time.sleep(0.05)
        try:  # ours: reap it if this process started it (no zombie left behind)
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
    (d / f"{name}.pid").unlink(missing_ok=True)


# ---- munge -------------------------------------------------------------------------------------
def _start_munged(d: Path) -> Path:
    """A private munged (own key, socket, pid, log, seed) running as the munge user; returns its socket."""
    m = d / "munge"
    sock = m / "munge.socket"
    if _pid_of(d, "munged") and sock.exists():
        return sock
    _stop_pid(d, "munged")  # a half-dead one
    user = pwd.getpwnam("munge")
    m.mkdir(parents=True, exist_ok=True)
    os.chown(m, user.pw_uid, user.pw_gid)
    os.chmod(m, 0o755)  # clients of any user reach the socket; munged refuses dirs writable by others
    key = m / "munge.key"
    if not key.exists():
        key.write_bytes(os.urandom(1024))
    os.chown(key, user.pw_uid, user.pw_gid)
    os.chmod(key, 0o400)
    sock.unlink(missing_ok=True)
    argv = [_tool("munged"), "--foreground", f"--socket={sock}", f"--key-file={key}", f"--pid-file={m / 'munged.pid'}",
            f"--log-file={m / 'munged.log'}", f"--seed-file={m / 'munged.seed'}"]
    pid = _spawn(d, "munged", argv, {"PATH": SYSTEM_PATH}, user="munge")
    deadline = time.monotonic() + 20
    while not sock.exists():
        if not _pid_of(d, "munged") or time.monotonic() > deadline:
            _stop_pid(d, "munged")
            raise SystemExit(f"munged (pid {pid}) did not come up:\n{log_tail(d / 'log' / 'munged.out')}\n"
                             f"{log_tail(m / 'munged.log')}")
        time.sleep(0.05)
    cred = subprocess.run([_tool("munge"), "-n", f"--socket={sock}"], capture_output=True, check=False)
    check = subprocess.run([_tool("unmunge"), f"--socket={sock}"], input=cred.stdout, capture_output=True, check=False)
    if cred.returncode or check.returncode:
        raise SystemExit(f"munge self-test failed: {cred.stderr.decode().strip()} {check.stderr.decode().strip()}")
    return sock


# ---- slurm ---------------------------------------------------------------------------------------
def _node_line(host: str) -> str:
    """``slurmd -C``'s first line (CPUs, sockets, cores, threads, RealMemory), renamed to this host on 127.0.0.1."""
    out = subprocess.run([_tool("slurmd"), "-C"], capture_output=True, text=True, check=True, timeout=30).stdout
    fields = [f for f in out.splitlines()[0].split() if not f.startswith(("NodeName=", "UpTime="))]
    return " ".join([f"NodeName={host}", "NodeAddr=127.0.0.1", f"NodeHostname={host}", *fields, "State=UNKNOWN"])


def _write_conf(d: Path, munge_socket: Path) -> Path:
    host = socket.gethostname().split(".")[0]
    conf = d / "slurm.conf"
    ports = {}
    if conf.exists():  # keep the ports of a cluster that may still be running
        for line in conf.read_text().splitlines():
            if line.startswith(("SlurmctldPort=", "SlurmdPort=")):
                k, _, v = line.partition("=")
                ports[k] = v
    ctld_port = ports.get("SlurmctldPort") or str(free_port())
    slurmd_port = ports.get("SlurmdPort") or str(free_port())
    text = f"""# Generated by gpstage's scripts/slurm_service.py: a one-node cluster on {host}, for tests
ClusterName=gpstage
SlurmctldHost={host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket}
StateSaveLocation={d / 'state'}
SlurmdSpoolDir={d / 'spool' / 'slurmd'}
SlurmctldPidFile={d / 'run' / 'slurmctld.pid'}
SlurmdPidFile={d / 'run' / 'slurmd.pid'}
SlurmctldLogFile={d / 'log' / 'slurmctld.log'}
SlurmdLogFile={d / 'log' / 'slurmd.log'}
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
MinJobAge=3600
KillWait=5
SchedulerParameters=batch_sched_delay=0
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc={d / 'jobcomp.txt'}
{_node_line(host)}
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""
    if not conf.exists() or conf.read_text() != text:
        tmp = conf.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, conf)
    return conf


def _node_state(conf: Path) -> str:
    done = subprocess.run([_tool("sinfo"), "-h", "-N", "-o", "%T"], capture_output=True, text=True, env=_env(conf),
                          timeout=10, check=False)
    return done.stdout.strip() if done.returncode == 0 else ""


def running(state_dir: Path) -> bool:
    """Whether this state dir's slurmctld runs (started by :func:`start`, not yet stopped)."""
    return _pid_of(slurm_dir(state_dir), "slurmctld") is not None


def start(state_dir: Path) -> dict[str, str]:
    """munged + slurmctld + slurmd, ready (node idle); ``{GPSTAGE_TEST_SLURM_CONF: <slurm.conf>}``.
    A running cluster is left as it is (its slurm.conf is only rewritten when it would differ)."""
    ensure(state_dir)
    d = slurm_dir(state_dir)
    with file_lock(Path(state_dir).resolve() / "slurm.lock"):
        for sub in ("state", "spool/slurmd", "log", "run"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        sock = _start_munged(d)
        fresh = not _pid_of(d, "slurmctld")
        conf = _write_conf(d, sock)
        env = _env(conf)
        if fresh:
            _stop_pid(d, "slurmd")  # never a slurmd without its controller
            shutil.rmtree(d / "state", ignore_errors=True)  # a fresh cluster: no jobs from an earlier session
            (d / "state").mkdir()
            _spawn(d, "slurmctld", [_tool("slurmctld"), "-D", "-f", str(conf)], env)
        if not _pid_of(d, "slurmd"):
            _spawn(d, "slurmd", [_tool("slurmd"), "-D", "-f", str(conf)], env)
        deadline = time.monotonic() + READY_TIMEOUT_S
        state = ""
        while time.monotonic() < deadline:
            for name in ("slurmctld", "slurmd"):
                if not _pid_of(d, name):
                    stop(state_dir, _locked=True)
                    raise SystemExit(f"{name} exited during start-up:\n{log_tail(d / 'log' / f'{name}.out')}\n"
                                     f"{log_tail(d / 'log' / f'{name}.log')}")
            state = _node_state(conf)
            if state.startswith(("idle", "mixed", "allocated")):
                break
            if state.startswith(("down", "drain")):
                host = socket.gethostname().split(".")[0]
                subprocess.run([_tool("scontrol"), "update", f"NodeName={host}", "State=RESUME"], env=env,
                               capture_output=True, check=False, timeout=10)
            time.sleep(0.1)
        else:
            stop(state_dir, _locked=True)
            raise SystemExit(f"the Slurm node is not ready after {READY_TIMEOUT_S} s (state {state!r}); see {d / 'log'}")
        if fresh:
            log(f"slurmctld + slurmd ready in {time.monotonic() - started:.1f}s (SLURM_CONF={conf})")
        return {ENV_KEY: str(conf)}


def stop(state_dir: Path, _locked: bool = False) -> None:
    """Cancel the jobs still queued or running, stop slurmd, slurmctld and munged by pid. Idempotent;
    state, logs and slurm.conf stay (start clears the job state)."""
    d = slurm_dir(state_dir)
    if not d.exists():
        return
    with file_lock(Path(state_dir).resolve() / "slurm.lock") if not _locked else _nolock():
        conf = d / "slurm.conf"
        if _pid_of(d, "slurmctld") and conf.exists():
            env = _env(conf)
            jobs = subprocess.run([_tool("squeue"), "-h", "-o", "%i"], capture_output=True, text=True, env=env,
                                  timeout=10, check=False).stdout.split()
            if jobs:
                subprocess.run([_tool("scancel"), *jobs], env=env, capture_output=True, timeout=10, check=False)
                deadline = time.monotonic() + 15
                while time.monotonic() < deadline and subprocess.run(
                        [_tool("squeue"), "-h", "-o", "%i"], capture_output=True, text=True, env=env, timeout=10,
                        check=False).stdout.split():
                    time.sleep(0.1)
        for name in DAEMONS:
            _stop_pid(d, name)
        (d / "munge" / "munge.socket").unlink(missing_ok=True)


@contextmanager
def _nolock() -> Iterator[None]:
    yield


if __name__ == "__main__":
    from service_common import service_main  # scripts/ is on sys.path when run as a script

    service_main(__doc__, start, stop)
