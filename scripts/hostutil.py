"""What the test services (scripts/) and the image builds (images/) both need from the host: finding
commands, telling a static ELF from a dynamic one, installing Debian packages, and the mounts below a
directory (unmounted before anything inside it is deleted).

Both run before gpstage is installed (scripts/test.sh starts the services, the test fixtures build the
images), so this is standard library only and imports nothing of the project. scripts/*.py import it by
its plain name (scripts/ is on ``sys.path`` when they run); images/build.py puts scripts/ on ``sys.path``
for the import of its sibling modules.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
from collections.abc import Iterable
from pathlib import Path

SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
APT_LOCK = ["-o", "DPkg::Lock::Timeout=600"]  # wait for another apt (a second test session) instead of failing
STATIC_TOOLS = {"busybox"}  # copied into an image without its libraries: must not need a dynamic loader
PT_INTERP = 3


# ---- commands ---------------------------------------------------------------------------------
def which(name: str) -> str | None:
    """``name`` on PATH, else in the system dirs (a caller's PATH may lack the sbin dirs)."""
    return shutil.which(name) or shutil.which(name, path=SYSTEM_PATH)


def elf_linking(path: str | Path) -> str | None:
    """``"dynamic"`` for an ELF64 file with a PT_INTERP program header (it needs the dynamic loader),
    ``"static"`` for an ELF64 file without one, None for anything else (not ELF64, truncated, unreadable).

    Three answers, not a bool: "not static" and "not dynamic" both hold for a file that is no ELF at all
    (a shell-script wrapper), and neither a busybox to copy into an image nor a file to patchelf may be one.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(64)
            if len(head) < 64 or head[:4] != b"\x7fELF" or head[4] != 2:  # ELFCLASS64 only
                return None
            end = "<" if head[5] == 1 else ">"
            (phoff,) = struct.unpack(end + "Q", head[32:40])
            phentsize, phnum = struct.unpack(end + "HH", head[54:58])
            for i in range(phnum):
                f.seek(phoff + i * phentsize)
                p_type = f.read(4)
                if len(p_type) < 4:
                    return None
                if struct.unpack(end + "I", p_type)[0] == PT_INTERP:
                    return "dynamic"
    except OSError:
        return None
    return "static"


def missing_tools(tools: dict[str, str]) -> list[str]:
    """The Debian packages to install for ``tools`` (command → package): those of the commands not found,
    and of those in :data:`STATIC_TOOLS` that are there but not static (``busybox`` → ``busybox-static``)."""
    missing = []
    for tool, package in tools.items():
        found = which(tool)
        if not found or (tool in STATIC_TOOLS and elf_linking(found) != "static"):
            missing.append(package)
    return list(dict.fromkeys(missing))


# ---- Debian packages --------------------------------------------------------------------------
def missing_packages(packages: Iterable[str]) -> list[str]:
    """The packages that dpkg does not have installed (one dpkg-query call)."""
    packages = list(packages)
    q = subprocess.run(["dpkg-query", "-W", "-f=${Package} ${Status}\n", *packages], capture_output=True, text=True,
                       check=False)
    installed = {line.split()[0] for line in q.stdout.splitlines() if line.endswith("install ok installed")}
    return [p for p in packages if p not in installed]


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def apt_install(packages: list[str], logfile: Path | None = None) -> None:
    """``apt-get install`` (no recommends, non-interactive); on failure ``apt-get update`` once and retry.
    apt's output goes to ``logfile`` (appended), or, without one, into the error message only."""
    if os.geteuid() != 0:
        raise SystemExit(f"missing {' '.join(packages)}: run as root, or apt-get install -y {' '.join(packages)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", *APT_LOCK, "install", "-y", "-q", "--no-install-recommends", *packages]
    update = ["apt-get", *APT_LOCK, "update", "-q"]
    if logfile is None:
        def run(argv: list[str]) -> tuple[int, str]:
            done = subprocess.run(argv, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False)
            return done.returncode, (done.stdout + done.stderr)[-3000:]
    else:
        logfile.parent.mkdir(parents=True, exist_ok=True)

        def run(argv: list[str]) -> tuple[int, str]:
            with open(logfile, "ab") as out:
                out.write(f"$ {' '.join(argv)}\n".encode())
                out.flush()
                done = subprocess.run(argv, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      check=False)
            return done.returncode, f"see {logfile}:\n{log_tail(logfile)}"

    if run(install)[0]:  # a stale package index: update once and retry
        run(update)
        rc, detail = run(install)
        if rc:
            raise SystemExit(f"apt-get install {' '.join(packages)} failed (exit {rc}); {detail}")


# ---- mounts -----------------------------------------------------------------------------------
def mounts_under(top: Path) -> list[str]:
    """Mount points at or below ``top``, deepest first (from /proc/self/mountinfo; "\\040" is a space)."""
    prefix, found = str(top), []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), line.split()[4])
            if point == prefix or point.startswith(prefix + "/"):
                found.append(point)
    return sorted(found, key=len, reverse=True)


def unmount_under(top: Path) -> list[str]:
    """Unmount everything at or below ``top`` (lazily when a plain umount fails); what is still mounted."""
    for point in mounts_under(top):
        if subprocess.run(["umount", point], check=False, capture_output=True).returncode:
            subprocess.run(["umount", "-l", point], check=False, capture_output=True)
    return mounts_under(top)
