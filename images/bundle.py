"""The entry bundle (docs/entry-bundle.md): ``gpstage-entry`` with its own python, libraries, dynamic loader
and a static bash in one read-only, relocatable directory, for images/build.py.

Made from the runtime base image (Debian bookworm's python3, built from the Debian mirror: no Docker Hub):

1. the base's python binary, its standard library less what the entry never imports (:data:`STDLIB_DROP`),
   its CA certificates, and every shared library those binaries and the wheels' extension modules name
   (read from the ELF files, :mod:`elf`), with the loader itself;
2. gpstage and the dependencies the entry needs, for the base's python/glibc/machine (host pip,
   ``--target``): gpstage's own dependencies less the CLI's (:data:`CLI_ONLY`) plus those of the chosen
   extras; botocore's service models less the ones credential resolution loads (:data:`BOTOCORE_KEEP`);
3. everything compiled to unchecked-hash ``.pyc`` by the bundle's own python (the bundle is read-only:
   no ``__pycache__`` is ever written, nor needed);
4. the host's static bash (Debian's ``bash-static``), the launch script, ``bundle.json``.

It lands in ``DEST/<version>-<hash>/``, made read-only, and ``DEST/current`` is flipped to it in one
rename; running jobs keep the directory they mounted. The previous bundle is kept, older ones removed.
A build whose hash (recipe, base image, dependency tables, extras, sources, static bash) is already
there does nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

import elf
import wheels
from docker_cli import LABEL, Docker, Log, file_sha, sha256
from hostutil import elf_linking

from container_entry import bundle as layout

RECIPE = 1
CLI_ONLY = frozenset({"typer", "rich"})  # gpstage's command line; the entry (argparse) never imports them
STDLIB_DROP = ("test", "idlelib", "tkinter", "turtledemo", "lib2to3", "ensurepip", "pydoc_data", "distutils",
               "venv", "sqlite3", "curses", "dbm", "turtle.py", "config-3", "__phello__", "site-packages",
               "dist-packages", "unittest", "doctest.py", "pydoc.py", "xmlrpc", "mailbox.py", "imaplib.py",
               "nntplib.py", "ftplib.py", "smtplib.py", "poplib.py", "telnetlib.py", "tabnanny.py", "msilib")
DYNLOAD_DROP = ("_test", "_xxtest", "xxlimited", "_ctypes_test", "_tkinter", "_curses", "_dbm", "_gdbm",
                "_sqlite3", "readline", "nis", "ossaudiodev", "audioop", "_xxsubinterpreters")
BOTOCORE_KEEP = ("sts", "sso", "sso-oidc")  # clients the credential providers create (assume-role, SSO)
SITE_DROP_SUFFIXES = (".c", ".h", ".pyx", ".pxd", ".pyi", ".cpp")
# Kept as source (with a cached .pyc), for tracebacks worth reading: gpstage's own packages, and os.py, the
# landmark by which python finds its home. Everything else is sourceless (a .pyc where the .py was).
KEEP_SOURCE = ("gpstage", "container_entry", "launchers", "frontends")
# What must import in a new bundle, per extra (the smoke test): each storage client and the SDK parts it loads.
SMOKE_IMPORTS = {
    "": "import container_entry.cli, container_entry.lifecycle, container_entry.runners.process, gpstage.storage.localfs",
    "s3": "import gpstage.storage.s3, gpstage.storage.s3lane, obstore.store, aiohttp, yarl, botocore.session; "
          "botocore.session.get_session().create_client('sts', region_name='us-east-1')",
    "gcs": "import gpstage.storage.gcs, gcsfs, google.auth",
    "azure": "import gpstage.storage.azure, adlfs, azure.storage.blob.aio, azure.identity.aio",
}
TRIPLETS = {"x86_64": "x86_64-linux-gnu", "aarch64": "aarch64-linux-gnu"}
STATIC_BASH = Path("/bin/bash-static")
KEEP = 2  # bundles kept in DEST: the current one and the previous (jobs still running may use it)


def default_dest() -> Path:
    """Where the build puts bundles and where the launchers look by default (…/current)."""
    return layout.default_location()


def bundle_key(base_labels: dict[str, str], root: Path, files: list[str], extras: tuple[str, ...]) -> str:
    return sha256(json.dumps({
        "recipe": RECIPE, "format": layout.FORMAT, "base": base_labels[LABEL], "deps": wheels.dependency_spec(root),
        "extras": sorted(extras), "bash": file_sha(STATIC_BASH), "launch": layout.LAUNCH_SCRIPT,
        "drop": [sorted(CLI_ONLY), STDLIB_DROP, DYNLOAD_DROP, BOTOCORE_KEEP, SITE_DROP_SUFFIXES, KEEP_SOURCE],
        "smoke": SMOKE_IMPORTS,
        "files": [[n, file_sha(root / n)] for n in files]}))


def ensure_bundle(docker: Docker, log: Log, base: str, base_labels: dict[str, str], root: Path, files: list[str],
                  version: str, extras: tuple[str, ...], dest: Path) -> Path:
    """``dest/current`` → an up-to-date bundle (built when missing); returns the bundle's own directory."""
    if elf_linking(STATIC_BASH) != "static":
        raise SystemExit(f"need a static bash at {STATIC_BASH}: apt-get install -y bash-static")
    key = bundle_key(base_labels, root, files, extras)
    target = dest / f"{version}-{key[:12]}"
    if _manifest_hash(target) == key:
        _make_current(dest, target)
        log(f"entry bundle {target}: up to date")
        return target
    t0 = time.monotonic()
    dest.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".build-", dir=dest))
    try:
        rootfs, out = work / "rootfs", work / "bundle"
        machine, python = base_labels["org.gpstage.machine"], base_labels["org.gpstage.python"]
        triplet = TRIPLETS.get(machine)
        if not triplet:
            raise SystemExit(f"no entry bundle recipe for {machine} (known: {', '.join(TRIPLETS)})")
        pyver = f"{python[0]}.{python[1:]}"
        _export(docker, base, rootfs, [f"usr/bin/python{pyver}", f"usr/lib/python{pyver}/", f"usr/lib/{triplet}/",
                                       "etc/ssl/certs/ca-certificates.crt"])
        log(f"entry bundle: python {pyver} and libraries from {base}; wheels for [{','.join(extras)}]")
        _python(rootfs, out, pyver)
        site = out / "lib" / "python3" / "dist-packages"  # what Debian's site.py adds for the prefix
        _site_packages(root, files, work, base_labels, extras, site)
        loader = _libraries(rootfs / "usr" / "lib" / triplet, out)
        (out / "etc").mkdir()
        shutil.copyfile(rootfs / "etc/ssl/certs/ca-certificates.crt", out / layout.CA_FILE)
        shutil.copyfile(STATIC_BASH, out / layout.STATIC_BASH)
        (out / layout.STATIC_BASH).chmod(0o755)
        (out / layout.LAUNCHER).write_text(layout.LAUNCH_SCRIPT.format(loader=loader))
        manifest = layout.Manifest(version=version, hash=key, machine=machine, python=pyver, extras=sorted(extras),
                                   loader=loader)
        (out / layout.MANIFEST).write_text(json.dumps(manifest.__dict__, indent=2) + "\n")
        _strip(site)
        _compile(out)
        _smoke_test(out, version, extras)
        _read_only(out)
        if target.exists():  # a half-made or stale directory of the same name
            _remove(target)
        out.rename(target)
        _make_current(dest, target)
        _prune(dest, target)
    finally:
        _remove(work)
    log(f"entry bundle {target}: built in {time.monotonic() - t0:.0f}s, {size_mib(target):.1f} MiB")
    return target


def size_mib(path: Path) -> float:
    return sum(p.lstat().st_size for p in path.rglob("*") if not p.is_dir()) / (1 << 20)


# ---- steps ------------------------------------------------------------------------------------
def _export(docker: Docker, image: str, into: Path, wanted: list[str]) -> None:
    """The members of ``image``'s file system under ``wanted`` (prefixes), via ``docker export``."""
    cid = docker("create", image, "/bin/true").stdout.strip()
    try:
        proc = subprocess.Popen([docker.exe, "export", cid], env=docker.env, stdout=subprocess.PIPE)
        assert proc.stdout is not None
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
            for member in tar:
                name = member.name.lstrip("./")
                if any(name == w.rstrip("/") or name.startswith(w) for w in wanted):
                    tar.extract(member, into, filter="tar" if hasattr(tarfile, "tar_filter") else None)
        if proc.wait():
            raise SystemExit(f"docker export of {image} failed")
    finally:
        docker("rm", "-f", cid, check=False)


def _python(rootfs: Path, out: Path, pyver: str) -> None:
    """The interpreter and its standard library, less what the entry never imports."""
    (out / "bin").mkdir(parents=True)
    shutil.copyfile(rootfs / f"usr/bin/python{pyver}", out / "bin/python3")
    (out / "bin/python3").chmod(0o755)
    src = rootfs / f"usr/lib/python{pyver}"

    def ignore(directory: str, names: list[str]) -> set[str]:
        dropped = {n for n in names if n == "__pycache__"}
        if Path(directory) == src:
            dropped |= {n for n in names if n.startswith(STDLIB_DROP)}
        elif Path(directory).name == "lib-dynload":
            dropped |= {n for n in names if n.startswith(DYNLOAD_DROP)}
        return dropped

    shutil.copytree(src, out / f"lib/python{pyver}", ignore=ignore, symlinks=False)


def _site_packages(root: Path, files: list[str], work: Path, labels: dict[str, str], extras: tuple[str, ...],
                   site: Path) -> None:
    own = wheels.build_gpstage_wheel(root, files, work)
    wheels.install_target([str(next(own.glob("gpstage-*.whl")))], labels, site, no_deps=True)
    wheels.install_target(wheels.requirements(root, extras, CLI_ONLY), labels, site)
    for info in site.glob("*.dist-info"):
        shutil.rmtree(info / "licenses", ignore_errors=True)
    shutil.rmtree(site / "bin", ignore_errors=True)  # console scripts with the build host's python in #!
    data = site / "botocore" / "data"
    if data.is_dir():
        for d in data.iterdir():
            if d.is_dir() and d.name not in BOTOCORE_KEEP:
                shutil.rmtree(d)
    for p in list(site.rglob("*")):
        if p.is_file() and p.suffix in SITE_DROP_SUFFIXES:
            p.unlink()
        elif p.is_dir() and p.name == "__pycache__":
            shutil.rmtree(p, ignore_errors=True)


def _libraries(libdir: Path, out: Path) -> str:
    """Copy into out/lib every library the bundle's ELF files need (transitively) and the loader; return
    the loader's path relative to the bundle."""
    lib = out / "lib"
    queue = [p for p in out.rglob("*") if p.is_file() and (p.suffix == ".so" or ".so." in p.name or p.name == "python3")]
    seen: set[str] = set()
    loader = None
    while queue:
        path = queue.pop()
        info = elf.read_elf(path)
        if info is None:
            continue
        if info.interpreter and loader is None:
            loader = Path(info.interpreter).name
            shutil.copyfile(libdir / loader, lib / loader)
            (lib / loader).chmod(0o755)
        for name in info.needed:
            if name in seen or _bundled_with_wheel(path, name, info.runpath):
                continue
            seen.add(name)
            found = libdir / name
            if not found.exists():
                raise SystemExit(f"{path.name} needs {name}, which is not in the base image's {libdir}")
            shutil.copyfile(found, lib / name)  # follows the symlink: the real file under its soname
            queue.append(lib / name)
    if loader is None:
        raise SystemExit("the bundle's python names no dynamic loader")
    return f"lib/{loader}"


def _bundled_with_wheel(path: Path, name: str, runpath: list[str]) -> bool:
    """A manylinux wheel's own copy of a library (``$ORIGIN/…`` in its RUNPATH)."""
    for entry in runpath:
        where = Path(entry.replace("$ORIGIN", str(path.parent)).replace("${ORIGIN}", str(path.parent)))
        if (where / name).exists():
            return True
    return False


def _run(out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The bundle's own python, through its own loader (also proves the bundle runs)."""
    manifest = json.loads((out / layout.MANIFEST).read_text())
    argv = [str(out / manifest["loader"]), "--library-path", str(out / "lib"), str(out / "bin/python3"), "-I", *args]
    return subprocess.run(argv, capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8"},
                          check=False)


def _strip(site: Path) -> None:
    """Debug symbols out of the wheels' extension modules (a Cython module shrinks ~5x). The libraries a
    wheel carries in its own ``*.libs`` dir are left alone (patchelf'ed files do not always survive strip)."""
    modules = [str(p) for p in site.rglob("*.so") if ".cpython-" in p.name and not p.parent.name.endswith(".libs")]
    if modules:
        done = subprocess.run(["strip", "--strip-unneeded", *modules], capture_output=True, text=True, check=False)
        if done.returncode:
            raise SystemExit(f"strip failed: {done.stderr.strip()[-2000:]}")


def _compile(out: Path) -> None:
    """Unchecked-hash .pyc for everything (read-only bundle: never compiled at run time); then the .py of
    what is not in :data:`KEEP_SOURCE` is replaced by its .pyc (sourceless import)."""
    done = _run(out, "-m", "compileall", "-q", "-j0", "--invalidation-mode", "unchecked-hash", str(out / "lib"))
    if done.returncode:
        raise SystemExit(f"compiling the bundle failed:\n{(done.stdout + done.stderr)[-3000:]}")
    site = out / "lib" / "python3" / "dist-packages"
    keep = [site / name for name in KEEP_SOURCE]
    for source in list(out.joinpath("lib").rglob("*.py")):
        if source.name == "os.py" and source.parent.name.startswith("python3.") or any(k in source.parents for k in keep):
            continue
        cached = next(source.parent.joinpath("__pycache__").glob(f"{source.stem}.*.pyc"), None)
        if cached is not None:
            cached.rename(source.with_suffix(".pyc"))
            source.unlink()
    for cache in list(out.joinpath("lib").rglob("__pycache__")):
        if not any(cache.iterdir()):
            cache.rmdir()


def _smoke_test(out: Path, version: str, extras: tuple[str, ...]) -> None:
    """The launch script runs, and every storage client of the bundle's extras imports."""
    done = subprocess.run([str(out / layout.STATIC_BASH), str(out / layout.LAUNCHER), "--version"], capture_output=True,
                          text=True, env={"PATH": "/usr/bin:/bin"}, check=False)
    if done.returncode or version not in done.stdout:
        raise SystemExit(f"the new bundle does not run:\n{(done.stdout + done.stderr)[-3000:]}")
    for extra in ("", *extras):
        done = _run(out, "-c", SMOKE_IMPORTS.get(extra, ""))
        if done.returncode:
            raise SystemExit(f"the new bundle cannot import what extra {extra or 'core'} needs:\n{done.stderr[-3000:]}")


def _read_only(top: Path) -> None:
    for p in [*top.rglob("*"), top]:
        if p.is_symlink():
            continue
        mode = p.stat().st_mode
        p.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH) | stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH
                | (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH if p.is_dir() or mode & stat.S_IXUSR else 0))


def _remove(top: Path) -> None:
    if not top.exists():
        return
    for p in [top, *top.rglob("*")]:
        if p.is_dir() and not p.is_symlink():
            p.chmod(0o755)
    shutil.rmtree(top)


def _manifest_hash(target: Path) -> str | None:
    try:
        return json.loads((target / layout.MANIFEST).read_text()).get("hash")
    except (OSError, ValueError):
        return None


def _make_current(dest: Path, target: Path) -> None:
    """Flip ``dest/current`` to ``target`` atomically (a new symlink renamed over the old one)."""
    link = dest / "current"
    if link.is_symlink() and os.readlink(link) == target.name:
        return
    tmp = dest / f".current-{os.getpid()}"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target.name)
    tmp.rename(link)


def _prune(dest: Path, current: Path) -> None:
    """Keep the current bundle and the one before it (jobs may still run with it); remove older ones."""
    bundles = sorted((p for p in dest.iterdir() if p.is_dir() and not p.name.startswith(".") and not p.is_symlink()
                      and p != current and (p / layout.MANIFEST).exists()), key=lambda p: p.stat().st_mtime)
    for old in bundles[: max(0, len(bundles) - (KEEP - 1))]:
        _remove(old)
