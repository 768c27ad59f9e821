"""The storage conformance class, run against every built-in scheme on real storage — and against a
third-party plugin, installed as a package and found through its entry point, as a plugin author runs it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from gpstage.testing.storage import RemoteTreeConformance, StorageConformance
from tests.fixtures_clouds import azure_put_raw, gcs_put

BACKENDS = ["file", "nfs", "s3", "gs", "az"]


# ---- the conformance class on every built-in scheme ------------------------------------------------
@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def storage_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if backend == "s3":
        bucket = request.getfixturevalue("bucket")
        return f"s3://{bucket}/gp/{uuid.uuid4().hex[:8]}/job dir"
    if backend == "gs":
        return f"gs://{request.getfixturevalue('gcs_bucket')}/gp/{uuid.uuid4().hex[:8]}/job dir"
    if backend == "az":
        return f"az://{request.getfixturevalue('azure_container')}/gp/{uuid.uuid4().hex[:8]}/job dir"
    store = tmp_path / "store"
    store.mkdir()
    return f"{backend}://{store}/job dir"


@pytest.fixture
def plant_unsafe(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[str], None]:
    """Object stores: an object whose key climbs out with '..'; file/nfs: a symlink pointing out of the tree."""
    outside = tmp_path / "escape.txt"

    def plant(url: str) -> None:
        _, _, rest = url.partition("://")
        bucket, _, prefix = rest.partition("/")
        key = f"{prefix}/sub/../../escape.txt"
        if backend == "s3":
            request.getfixturevalue("s3_client").put_object(Bucket=bucket, Key=key, Body=b"x")
        elif backend == "gs":
            gcs_put(request.getfixturevalue("gcs_fs"), request.getfixturevalue("gcs_endpoint"), bucket, key, b"x")
        elif backend == "az":
            azure_put_raw(request.getfixturevalue("azure_connection_string"), bucket, key, b"x")
        else:
            os.symlink("/etc/hostname", f"{rest}/escape.txt")

    assert not outside.exists()
    return plant


class TestStorage(StorageConformance):
    """file, nfs, s3 (moto server), gs (gcp-storage-emulator) and az (Azurite) must all pass the conformance class."""


class TestStorageOnALoop(StorageConformance):
    """The same on S3 with the sync engine on asyncio's loop, as staging and larger syncs run it (a job dir's
    sync between a local dir and S3 runs on gpstage.aio's threads)."""

    @pytest.fixture
    def backend(self, monkeypatch: pytest.MonkeyPatch) -> str:
        monkeypatch.setattr("gpstage.sync.runs_on_threads", lambda *urls: False)
        return "s3"


class TestRemoteTrees(RemoteTreeConformance):
    """s3, gs and az: the object operations beyond sync."""

    @pytest.fixture(params=["s3", "gs", "az"])
    def backend(self, request: pytest.FixtureRequest) -> str:
        return request.param


# ---- a third-party provider plugin, found through its entry point ----------------------------------
PLUGIN_SRC = Path(__file__).resolve().parent / "plugin_provider"


@pytest.fixture(scope="session")
def memtest_plugin(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """tests/plugin_provider built and installed by pip (no dependencies) into a temporary directory: real
    package metadata with a real ``gpstage.storage`` entry point, seen by every interpreter that has the
    directory on its path. The venv is not touched, so nothing else (and no concurrent test run) sees it,
    and every run starts from the current source. The build needs pip's build backend (setuptools), as
    installing gpstage itself does."""
    work = tmp_path_factory.mktemp("memtest")
    src, site = work / "src", work / "site"
    shutil.copytree(PLUGIN_SRC, src, ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))  # builds write in-tree
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--disable-pip-version-check",
                           "--target", str(site), str(src)], capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, f"pip install of the test plugin failed:\n{proc.stdout}\n{proc.stderr}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    return {"src": src, "site": site, "env": env}


class TestPluginProvider:
    """The plugin runs in fresh interpreters: the registry caches entry points and providers per process
    (PluginRegistry._entry_points, get_provider), so installing a plugin into this one mid-run would be
    seen only if nothing had looked yet. A subprocess also proves what users get: a pip-installed package."""

    def test_entry_point_is_found_by_a_fresh_interpreter(self, memtest_plugin: dict, tmp_path: Path) -> None:
        code = ("import sys; from importlib.metadata import entry_points; "
                "from gpstage.storage import known_schemes, provider_for;"
                "from gpstage.sync import sync; from gpstage.listing import list_url;"
                "assert [e.value for e in entry_points(group='gpstage.storage') if e.name == 'memtest'] "
                "== ['gpstage_memtest:MemtestProvider'];"
                "assert 'memtest' in known_schemes(); assert type(provider_for('memtest://x')).__name__ == 'MemtestProvider';"
                "r = sync(sys.argv[1], 'memtest://b/job'); back = sync('memtest://b/job', sys.argv[2]);"
                "print(r.files_copied, back.files_copied, sorted(list_url('memtest://b/job').files))")
        src = tmp_path / "src"
        (src / "bin").mkdir(parents=True)
        (src / "bin/run.sh").write_text("#!/bin/sh\n")
        (src / "bin/run.sh").chmod(0o755)
        (src / "data.txt").write_text("data")
        proc = subprocess.run([sys.executable, "-c", code, str(src), str(tmp_path / "back")], env=memtest_plugin["env"],
                              capture_output=True, text=True, timeout=120, check=False)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.split("\n")[0] == "2 2 ['bin/run.sh', 'data.txt']"
        assert (tmp_path / "back/bin/run.sh").stat().st_mode & 0o777 == 0o755

    def test_cli_resolves_the_scheme_only_with_the_plugin_installed(self, memtest_plugin: dict) -> None:
        gpstage = str(Path(sys.executable).parent / "gpstage")
        with_plugin = subprocess.run([gpstage, "ls", "memtest://b/none", "--json"], env=memtest_plugin["env"],
                                     capture_output=True, text=True, timeout=120, check=False)
        assert with_plugin.returncode == 0, with_plugin.stderr
        env = {k: v for k, v in memtest_plugin["env"].items() if k != "PYTHONPATH"}
        without = subprocess.run([gpstage, "ls", "memtest://b/none"], env=env, capture_output=True, text=True, timeout=120,
                                 check=False)
        assert without.returncode == 2 and "unknown storage scheme memtest://" in without.stderr

    def test_plugin_passes_the_conformance_class_in_its_own_test_run(self, memtest_plugin: dict) -> None:
        """The plugin package's own tests (a StorageConformance subclass), run as its author would: pytest in
        the package directory, with its own configuration (gpstage's tests/conftest.py is not involved)."""
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c", "pyproject.toml",
                               "--rootdir", "."], cwd=memtest_plugin["src"], env=memtest_plugin["env"],
                              capture_output=True, text=True, timeout=600, check=False)
        expected = sum(1 for cls in (StorageConformance, RemoteTreeConformance) for name in dir(cls) if name.startswith("test_"))
        assert proc.returncode == 0 and f"{expected} passed" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-2000:]
