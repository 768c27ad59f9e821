"""Root filesystems made on the host and imported as images (``tar | docker import``), for images/build.py.

Owns the images that start from nothing:

* ``gpstage/bash-module:1`` (:func:`ensure_bash_module`): a static busybox, the host's ``/bin/bash`` and the
  libraries it links, ``/etc/passwd``, ``/tmp`` — written straight into the tar, no rootfs on disk. Three
  variants for the entry bundle's tests (:func:`module_image` makes all four): ``gpstage/static-module:1``,
  a static busybox and a static bash and nothing else (no libc, no /lib), ``gpstage/busybox-module:1``, a
  static busybox alone (no bash), and ``gpstage/user-module:1``, bash-module with ``USER 1000:1000``.
* ``gpstage/runtime-base:<recipe hash>`` (:func:`ensure_base`): ``debootstrap --variant=minbase`` from the
  Debian mirror in the host's apt sources, :data:`BASE_SCRIPT` run inside it (chroot, clean environment),
  everything of the host and of the build removed again, then imported. Needs root.

Also the host tools they need (:func:`need_tools`: apt-installs busybox-static / debootstrap when missing)
and the mount hygiene around the chroot (nothing is ever deleted inside a mount), both on top of
scripts/hostutil.py (shared with the test services; images/build.py puts scripts/ on ``sys.path``).
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

from docker_cli import LABEL, Docker, Log, file_sha, sha256
from hostutil import SYSTEM_PATH, apt_install, elf_linking, missing_tools, unmount_under, which

BASH_MODULE = "gpstage/bash-module:1"
STATIC_MODULE = "gpstage/static-module:1"  # static busybox + static bash, nothing else (the entry bundle's tests)
USER_MODULE = "gpstage/user-module:1"  # bash-module with USER 1000:1000
BUSYBOX_MODULE = "gpstage/busybox-module:1"  # a static busybox alone: no bash at all
BASE_REPO = "gpstage/runtime-base"
PATH_ENV = f"PATH={SYSTEM_PATH}"  # the runtime images' PATH (base, deps and final stage)
SUITE = "bookworm"

# What runs inside the debootstrapped rootfs (chroot, clean environment). Part of the base's hash.
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
BASE_SCRIPT = f"""set -eu
apt-get update -q
apt-get upgrade -y -q
apt-get install -y -q --no-install-recommends {' '.join(BASE_PACKAGES)}
python3 -m venv /opt/gpstage
apt-get clean
"""
PROBE = ("import platform, sys; print(f'{sys.version_info[0]}{sys.version_info[1]} '"
         "f'{platform.libc_ver()[1]} {platform.machine()}')")


# ---- host tools -------------------------------------------------------------------------------
def need_tools(tools: dict[str, str], log: Log) -> None:
    """Install missing tools with apt, quietly (scripts/services.py does the same for `start docker`)."""
    missing = missing_tools(tools)
    if missing:
        log(f"installing {' '.join(missing)} (apt)")
        apt_install(missing)


# ---- tar members ------------------------------------------------------------------------------
def add_dir(tar: tarfile.TarFile, name: str, mode: int = 0o755) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, mode
    tar.addfile(info)


def add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), mode
    tar.addfile(info, io.BytesIO(data))


def add_symlink(tar: tarfile.TarFile, name: str, target: str) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = tarfile.SYMTYPE, target, 0o777
    tar.addfile(info)


# ---- module images: gpstage/bash-module:1 and its test variants --------------------------------
def bash_module_files() -> dict[str, Path]:
    """Path in the image → host file: busybox, bash, and every library `ldd /bin/bash` lists."""
    files = {"bin/busybox": static_busybox(), "bin/bash": Path("/bin/bash")}
    ldd = subprocess.run(["ldd", "/bin/bash"], capture_output=True, text=True, check=True).stdout
    for line in ldd.splitlines():
        m = re.search(r"(?:=>\s*)?(/\S+)\s+\(0x", line)
        if m:
            files[m.group(1).lstrip("/")] = Path(m.group(1))
    return files


def static_module_files() -> dict[str, Path]:
    """A static busybox and a static bash: no libc, no loader, no /lib."""
    bash = which("bash-static")
    if not bash or elf_linking(bash) != "static":
        raise SystemExit("need a static bash: apt-get install -y bash-static")
    return {"bin/busybox": static_busybox(), "bin/bash": Path(bash)}


def static_busybox() -> Path:
    busybox = which("busybox")
    if not busybox or elf_linking(busybox) != "static":
        raise SystemExit("need a static busybox: apt-get install -y busybox-static")
    return Path(busybox)


def ensure_bash_module(docker: Docker, log: Log) -> str:
    """busybox + the host's bash and its libraries, as root: a third-party module image with no python."""
    need_tools({"busybox": "busybox-static"}, log)
    return module_image(docker, log, BASH_MODULE, bash_module_files())


def ensure_static_module(docker: Docker, log: Log) -> str:
    """static busybox + static bash only: what an image without a libc or /lib looks like (issue 18's (a))."""
    need_tools({"busybox": "busybox-static", "bash-static": "bash-static"}, log)
    return module_image(docker, log, STATIC_MODULE, static_module_files())


def ensure_busybox_module(docker: Docker, log: Log) -> str:
    """A static busybox alone, no bash: exec.sh then runs with the entry bundle's static bash."""
    need_tools({"busybox": "busybox-static"}, log)
    return module_image(docker, log, BUSYBOX_MODULE, {"bin/busybox": static_busybox()})


def ensure_user_module(docker: Docker, log: Log) -> str:
    """gpstage/bash-module's files, with a USER that is not root (uid 1000, ``gpuser``)."""
    need_tools({"busybox": "busybox-static"}, log)
    return module_image(docker, log, USER_MODULE, bash_module_files(), user="1000:1000")


def module_image(docker: Docker, log: Log, ref: str, files: dict[str, Path], user: str | None = None) -> str:
    """An image of `files` (path in the image → host file) + busybox's applets, /etc/passwd, /tmp; built
    from a tar in about a second, a no-op when its content hash is unchanged."""
    applets = sorted(set(subprocess.run([str(files["bin/busybox"]), "--list"], capture_output=True, text=True,
                                        check=True).stdout.split()) - {"busybox", "bash"})
    passwd = (b"root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
              b"gpuser:x:1000:1000:gpuser:/home/gpuser:/bin/bash\n")
    group = b"root:x:0:\nnogroup:x:65534:\ngpuser:x:1000:\n"
    changes = ["ENV PATH=/usr/local/bin:/usr/bin:/bin", 'CMD ["/bin/bash"]'] + ([f"USER {user}"] if user else [])
    key = sha256(json.dumps({"recipe": 3, "files": {k: file_sha(v) for k, v in sorted(files.items())},
                             "applets": applets, "passwd": passwd.decode(), "group": group.decode(), "changes": changes}))
    old = docker.inspect(ref)
    if old and (old["Config"].get("Labels") or {}).get(LABEL) == key:
        log(f"{ref}: up to date")
        return ref
    t0 = time.monotonic()

    def feed(out) -> None:
        with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            made = {"bin", "etc", "dev", "proc", "sys", "usr", "usr/bin", "usr/local", "usr/local/bin"}
            for d in sorted(made):
                add_dir(tar, d)
            add_dir(tar, "tmp", 0o1777)
            add_dir(tar, "root", 0o700)
            add_dir(tar, "home")
            home = tarfile.TarInfo("home/gpuser")
            home.type, home.mode, home.uid, home.gid = tarfile.DIRTYPE, 0o755, 1000, 1000
            tar.addfile(home)
            add_bytes(tar, "etc/passwd", passwd)
            add_bytes(tar, "etc/group", group)
            for dest, src in sorted(files.items()):
                parts = os.path.dirname(dest).split("/")
                for i in range(len(parts)):
                    sub = "/".join(parts[: i + 1])
                    if sub not in made:
                        add_dir(tar, sub)
                        made.add(sub)
                add_bytes(tar, dest, src.read_bytes(), 0o755)
            for name in applets:
                add_symlink(tar, f"bin/{name}", "busybox")
            add_symlink(tar, "usr/bin/env", "/bin/busybox")  # for `#!/usr/bin/env bash` scripts

    docker.import_tar(ref, [*changes, f"LABEL {LABEL}={key}"], feed)
    docker.drop_replaced(old, ref)
    log(f"{ref}: built in {time.monotonic() - t0:.1f}s")
    return ref


# ---- gpstage/runtime-base:<hash> --------------------------------------------------------------
def debian_sources() -> list[tuple[str, str]]:
    """(URI, suite) of the host's Debian `bookworm*` entries with component main (apt one-line and
    deb822 formats); deb.debian.org when the host has none."""
    found: list[tuple[str, str]] = []
    apt = Path("/etc/apt")
    one_line = [apt / "sources.list", *sorted((apt / "sources.list.d").glob("*.list"))]
    for path in one_line:
        if not path.is_file():
            continue
        for line in path.read_text().splitlines():
            words = re.sub(r"\[[^\]]*\]", " ", line.split("#", 1)[0]).split()
            if len(words) >= 4 and words[0] == "deb":
                found += [(words[1], words[2])] if "main" in words[3:] else []
    for path in sorted((apt / "sources.list.d").glob("*.sources")):
        for stanza in re.split(r"\n\s*\n", path.read_text()):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                if line.startswith("#") or ":" not in line or line[:1].isspace():
                    continue
                k, v = line.split(":", 1)
                fields[k.strip().lower()] = v.strip()
            if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes").lower() == "no":
                continue
            if "main" in fields.get("components", "").split():
                found += [(u, s) for u in fields.get("uris", "").split() for s in fields.get("suites", "").split()]
    ours = [(u.rstrip("/"), s) for u, s in found if s == SUITE or s.startswith(SUITE + "-") or s == SUITE + "/updates"]
    if not any(s == SUITE for _, s in ours):
        ours = [("http://deb.debian.org/debian", SUITE), ("http://deb.debian.org/debian", f"{SUITE}-updates"),
                ("http://deb.debian.org/debian-security", f"{SUITE}-security")]
    return list(dict.fromkeys(ours))


def unmount_all(top: Path) -> None:
    """Unmount whatever is mounted inside `top` (a failed debootstrap leaves /proc, /sys, maybe /dev)."""
    left = unmount_under(top)
    if left:
        raise SystemExit(f"cannot unmount {left}; not touching {top}")


def remove_tree(top: Path) -> None:
    """rm -rf, never into a mount."""
    unmount_all(top)
    shutil.rmtree(top, ignore_errors=True)


def chroot(rootfs: Path, script: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C",
           "HOME": "/root"}  # nothing from the host's environment gets in
    return subprocess.run(["chroot", str(rootfs), "/bin/sh", "-c", script], env=env, text=True,
                          capture_output=True, check=check)


def ensure_base(docker: Docker, log: Log, cache: Path) -> tuple[str, dict[str, str]]:
    """The base image's ref and labels (its python, glibc and machine among them); the rootfs is made in a
    temporary directory under `cache`."""
    sources = debian_sources()
    mirror = next(u for u, s in sources if s == SUITE)
    sources_list = "".join(f"deb {u} {s} main\n" for u, s in sources)
    key = sha256(json.dumps({"recipe": 1, "suite": SUITE, "variant": "minbase", "mirror": mirror,
                             "sources": sources_list, "script": BASE_SCRIPT}))
    ref = f"{BASE_REPO}:{key[:16]}"
    labels = docker.labels(ref)
    if labels.get(LABEL) == key:
        return ref, labels
    need_tools({"debootstrap": "debootstrap"}, log)
    if os.geteuid() != 0:
        raise SystemExit("building the runtime base needs root (debootstrap, chroot)")
    t0 = time.monotonic()
    cache.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="rootfs-", dir=cache))
    rootfs = work / "rootfs"
    try:
        log(f"{ref}: debootstrap --variant=minbase {SUITE} {mirror}")
        done = subprocess.run(["debootstrap", "--variant=minbase", SUITE, str(rootfs), mirror],
                              check=False, capture_output=True, text=True, env={**os.environ, "LC_ALL": "C"})
        if done.returncode:
            raise SystemExit(f"debootstrap failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
        unmount_all(rootfs)
        log(f"{ref}: debootstrap done in {time.monotonic() - t0:.0f}s; apt-get install {' '.join(BASE_PACKAGES)}")
        (rootfs / "etc/apt/sources.list").write_text(sources_list)
        policy = rootfs / "usr/sbin/policy-rc.d"  # no service starts inside the chroot
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
        resolv = rootfs / "etc/resolv.conf"
        resolv.unlink(missing_ok=True)
        shutil.copyfile("/etc/resolv.conf", resolv)  # for apt during the build only; emptied below
        done = chroot(rootfs, BASE_SCRIPT)
        if done.returncode:
            raise SystemExit(f"apt inside the rootfs failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
        py, glibc, machine = chroot(rootfs, f"python3 -c \"{PROBE}\"", check=True).stdout.split()
        unmount_all(rootfs)  # before deleting anything inside it
        # leave nothing of the host or the build behind
        policy.unlink()
        resolv.write_text("")
        (rootfs / "etc/hostname").write_text("localhost\n")
        for pattern in ("var/lib/apt/lists/*", "var/cache/apt/*.bin", "var/cache/apt/archives/*.deb",
                        "var/log/*", "tmp/*", "var/tmp/*", "root/.*", "dev/*"):
            for p in rootfs.glob(pattern):
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)
                elif p.name not in (".bashrc", ".profile"):
                    p.unlink()
        labels = {LABEL: key, "org.gpstage.python": py, "org.gpstage.glibc": glibc, "org.gpstage.machine": machine}
        old = docker.inspect(ref)

        def feed(out) -> None:
            tar = subprocess.Popen(["tar", "-C", str(rootfs), "--numeric-owner", "-cf", "-", "."], stdout=out)
            if tar.wait():
                raise SystemExit("tar of the rootfs failed")

        docker.import_tar(ref, [f"ENV {PATH_ENV}", 'CMD ["/bin/bash"]'] + [f"LABEL {k}={v}" for k, v in labels.items()],
                          feed)
        docker.drop_replaced(old, ref)
    finally:
        remove_tree(work)
    log(f"{ref}: built in {time.monotonic() - t0:.0f}s")
    return ref, labels
