"""The storage conformance class, run against every built-in scheme on real storage — and against a
third-party plugin, installed as a package and found through its entry point, as a plugin author runs it."""

from __future__ import annotations

import base64
import hashlib
import http.client
import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import ClassVar

import pytest

from gpstage.aio import run_sync
from gpstage.errors import StorageError
from gpstage.listing import list_url
from gpstage.report import TransferReport
from gpstage.retry import RetryPolicy
from gpstage.storage import open_tree
from gpstage.sync import sync
from gpstage.testing.storage import StorageConformance

BACKENDS = ["file", "nfs", "s3", "gs", "az"]


# ---- objects written by other tools, whatever their keys (the fixtures: tests/fixtures_clouds.py) ----
def gcs_put(gcs_fs, endpoint: str, bucket: str, key: str, data: bytes) -> None:
    """An object written by another tool, whatever its key (the name travels as a query parameter)."""
    gcs_fs.call("POST", f"{endpoint}/upload/storage/v1/b/{bucket}/o", uploadType="media", name=key, data=data,
                headers={"Content-Type": "application/octet-stream"})


def azure_put_raw(connection_string: str, container: str, name: str, data: bytes) -> None:
    """A blob written by another tool under a literal name: the SDK's HTTP stack would resolve '..' in
    the URL path, so this is one PUT with a SAS through http.client, which sends the path as given."""
    from azure.storage.blob import BlobSasPermissions, generate_blob_sas

    kv = dict(p.split("=", 1) for p in connection_string.split(";") if "=" in p)
    sas = generate_blob_sas(kv["AccountName"], container, name, account_key=kv["AccountKey"],
                            permission=BlobSasPermissions(create=True, write=True),
                            expiry=datetime.now(timezone.utc) + timedelta(minutes=10))
    endpoint = urllib.parse.urlsplit(kv["BlobEndpoint"])
    conn = http.client.HTTPConnection(endpoint.hostname, endpoint.port, timeout=30)
    try:
        conn.request("PUT", f"{endpoint.path.rstrip('/')}/{container}/{urllib.parse.quote(name, safe='/')}?{sas}", body=data,
                     headers={"x-ms-blob-type": "BlockBlob", "x-ms-version": "2021-08-06"})
        resp = conn.getresponse()
        assert resp.status == 201, resp.read()
    finally:
        conn.close()


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
        code = ("import sys; from importlib.metadata import entry_points; from gpstage.storage import known_schemes, provider_for;"
                "from gpstage.sync import sync; from gpstage.listing import list_url;"
                "assert [e.value for e in entry_points(group='gpstage.storage') if e.name == 'memtest'] == ['gpstage_memtest:MemtestProvider'];"
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
        expected = sum(1 for name in dir(StorageConformance) if name.startswith("test_"))
        assert proc.returncode == 0 and f"{expected} passed" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-2000:]


# ---- what the conformance class cannot see: configuration, one-line errors, retries, listing pages ----
class _Stub(http.server.BaseHTTPRequestHandler):
    """A store stand-in on 127.0.0.1 that records every request; ``answer(path)`` gives (status, JSON body)."""

    seen: ClassVar[list[str]] = []
    answer: Callable[[str], tuple[int, dict]] = staticmethod(lambda path: (503, {"error": {"code": 503, "message": "busy"}}))

    def _reply(self) -> None:
        self.seen.append(self.path)
        status, doc = self.answer(self.path)
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _reply

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def stub_server() -> Iterator[Callable[..., tuple[str, list[str]]]]:
    """``start(answer=None)`` → (base URL, the request paths it saw); by default every answer is 503 (busy),
    so an SDK that retries on its own shows up as extra requests."""
    servers = []

    def start(answer: Callable[[str], tuple[int, dict]] | None = None) -> tuple[str, list[str]]:
        seen: list[str] = []
        attrs = {"seen": seen, **({"answer": staticmethod(answer)} if answer else {})}
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), type("Stub", (_Stub,), attrs))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}", seen

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listing_report(url: str, retry: RetryPolicy | None = None) -> tuple[TransferReport, BaseException | None]:
    """List ``url`` as a sync does; return the report and the error it ended with, if any."""

    async def go() -> None:
        async with open_tree(url, report, retry) as tree:
            await tree.raw_listing()

    report = TransferReport(url, "")
    try:
        run_sync(go())
    except Exception as err:  # noqa: BLE001 - returned for the test to inspect
        return report, err
    return report, None


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(Path(sys.executable).parent / "gpstage"), *args], env=env, capture_output=True,
                          text=True, timeout=120, check=False)


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 3, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


class TestGcsProvider:
    def test_listing_gives_md5_and_generation_without_per_object_requests(self, gcs_bucket: str, tmp_path: Path) -> None:
        src = tmp_path / "src"
        src.mkdir()
        for i in range(5):
            (src / f"f{i}.txt").write_text(f"file {i}")
        url = f"gs://{gcs_bucket}/pages"
        sync(str(src), url)
        report, err = listing_report(url)
        assert err is None and (report.requests, report.retries) == (1, 0)
        tree = list_url(url)
        assert sorted(tree.files) == [f"f{i}.txt" for i in range(5)]
        e = tree.files["f3.txt"]
        assert e.md5 == hashlib.md5(b"file 3").hexdigest() and e.etag and e.etag.startswith("g") and e.mode is not None

    def test_listing_follows_pages(self, stub_server, monkeypatch: pytest.MonkeyPatch) -> None:
        """One request per page (the emulator does not paginate: a stub does)."""
        def answer(path: str) -> tuple[int, dict]:
            item = {"size": "1", "generation": "7", "md5Hash": base64.b64encode(hashlib.md5(b"x").digest()).decode()}
            if "pageToken=next" in path:
                return 200, {"items": [{**item, "name": "p/x/c"}]}
            return 200, {"items": [{**item, "name": "p/x/a"}, {**item, "name": "p/x/b"}], "nextPageToken": "next"}

        endpoint, seen = stub_server(answer)
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", endpoint)
        report, err = listing_report("gs://bkt/p/x")
        assert err is None and report.requests == 2 and len(seen) == 2
        queries = [urllib.parse.parse_qs(urllib.parse.urlsplit(p).query) for p in seen]
        assert all(p.startswith("/storage/v1/b/bkt/o?") for p in seen)
        assert [(q["prefix"], q["maxResults"], q.get("pageToken")) for q in queries] == [(["p/x/"], ["1000"], None),
                                                                                       (["p/x/"], ["1000"], ["next"])]
        assert sorted(list_url("gs://bkt/p/x").files) == ["a", "b", "c"]

    def test_sdk_retries_are_off_and_every_retry_is_counted(self, stub_server, monkeypatch: pytest.MonkeyPatch) -> None:
        endpoint, seen = stub_server()
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", endpoint)
        report, err = listing_report("gs://bucket/x", RetryPolicy(attempts=3, base_delay=0.01))
        assert isinstance(err, StorageError)
        assert (len(seen), report.requests, report.retries) == (3, 3, 2)

    def test_errors_are_one_line(self, gcs_endpoint: str, tmp_path: Path) -> None:
        env = {**os.environ, "STORAGE_EMULATOR_HOST": gcs_endpoint}
        line = one_line_error(cli("ls", "gs://no-such-bucket-for-gpstage/x", env=env))
        assert "bucket 'no-such-bucket-for-gpstage' does not exist" in line
        line = one_line_error(cli("ls", "gs://bucket/x", env={**env, "STORAGE_EMULATOR_HOST": f"127.0.0.1:{free_port()}"}))
        assert "cannot reach the GCS endpoint http://127.0.0.1:" in line
        # no emulator, no key file, no gcloud configuration, no metadata server probe: nothing to log in with
        bare = {k: v for k, v in env.items() if not k.startswith(("GOOGLE_", "CLOUDSDK_", "STORAGE_EMULATOR"))}
        bare.update(HOME=str(tmp_path), CLOUDSDK_CONFIG=str(tmp_path / "gcloud"), NO_GCE_CHECK="true")
        assert "no Google credentials found" in one_line_error(cli("ls", "gs://bucket/x", env=bare))

    def test_denied_is_named(self) -> None:
        from gcsfs.retry import validate_response

        from gpstage.storage.gcs import GcsProvider

        try:  # what gcsfs raises for a 403 (the emulator has no permissions to refuse with)
            validate_response(403, b'{"error": {"code": 403, "message": "caller lacks storage.objects.list"}}', "b/bucket/o")
        except OSError as err:
            described = GcsProvider().describe_error(err, "gs://bucket/x")
        assert str(described).startswith("gs://bucket/x: access denied by GCS") and "\n" not in str(described)


class TestAzureProvider:
    def test_listing_is_one_request_per_page_with_md5(self, azure_container: str, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
        from gpstage.storage import azure

        src = tmp_path / "src"
        src.mkdir()
        for i in range(5):
            (src / f"f{i}.txt").write_text(f"file {i}")
        big = os.urandom(9 * 2**20)  # above the single-put size: blocks, committed with the file's MD5
        (src / "big.bin").write_bytes(big)
        url = f"az://{azure_container}/pages"
        sync(str(src), url)
        monkeypatch.setattr(azure, "LIST_PAGE", 2)
        report, err = listing_report(url)
        assert err is None and (report.requests, report.retries) == (4, 0)  # 6 blobs + the manifest, 2 per page
        tree = list_url(url)
        assert tree.files["f3.txt"].md5 == hashlib.md5(b"file 3").hexdigest()
        assert tree.files["big.bin"].md5 == hashlib.md5(big).hexdigest()

    def test_account_and_key_or_sas_from_the_environment(self, azure_connection_string: str, azure_container: str,
                                                         tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """AZURE_STORAGE_ACCOUNT(_NAME) + a key or a SAS; the endpoint from a storage profile (Azurite's is not
        https://ACCOUNT.blob.core.windows.net)."""
        from azure.storage.blob import AccountSasPermissions, ResourceTypes, generate_account_sas

        kv = dict(p.split("=", 1) for p in azure_connection_string.split(";") if "=" in p)
        config = tmp_path / "config.toml"
        config.write_text("".join(f'[storage."{scheme}://{azure_container}/"]\nendpoint = "{kv["BlobEndpoint"]}"\n'
                                  for scheme in ("az", "abfs")))
        monkeypatch.setenv("GPSTAGE_CONFIG", str(config))
        monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING")
        (tmp_path / "src").mkdir()
        (tmp_path / "src/a.txt").write_text("a")
        monkeypatch.setenv("AZURE_STORAGE_ACCOUNT", kv["AccountName"])
        monkeypatch.setenv("AZURE_STORAGE_KEY", kv["AccountKey"])
        assert sync(str(tmp_path / "src"), f"az://{azure_container}/key").files_copied == 1
        monkeypatch.delenv("AZURE_STORAGE_KEY")
        monkeypatch.setenv("AZURE_STORAGE_SAS_TOKEN", generate_account_sas(
            kv["AccountName"], kv["AccountKey"], ResourceTypes(container=True, object=True),
            AccountSasPermissions(read=True, write=True, list=True, create=True, delete=True),
            datetime.now(timezone.utc) + timedelta(minutes=10)))
        assert sync(f"az://{azure_container}/key", f"az://{azure_container}/sas").files_copied == 1
        assert sorted(list_url(f"abfs://{azure_container}/sas").files) == ["a.txt"]

    def test_sdk_retries_are_off_and_every_retry_is_counted(self, stub_server, azure_connection_string: str,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
        endpoint, seen = stub_server()
        kv = dict(p.split("=", 1) for p in azure_connection_string.split(";") if "=" in p)
        monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", f"DefaultEndpointsProtocol=http;AccountName={kv['AccountName']};"
                                                               f"AccountKey={kv['AccountKey']};BlobEndpoint={endpoint}/{kv['AccountName']};")
        report, err = listing_report("az://container/x", RetryPolicy(attempts=3, base_delay=0.01))
        assert isinstance(err, StorageError)
        assert (len(seen), report.requests, report.retries) == (3, 3, 2)

    def test_errors_are_one_line(self, azure_connection_string: str, azure_container: str, tmp_path: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AZURE_")}
        env["AZURE_STORAGE_CONNECTION_STRING"] = azure_connection_string
        line = one_line_error(cli("ls", "az://no-such-container/x", env=env))
        assert "container 'no-such-container' does not exist" in line
        kv = dict(p.split("=", 1) for p in azure_connection_string.split(";") if "=" in p)
        wrong_key = azure_connection_string.replace(kv["AccountKey"], base64.b64encode(b"not the key" * 6).decode())
        line = one_line_error(cli("ls", f"az://{azure_container}/x", env={**env, "AZURE_STORAGE_CONNECTION_STRING": wrong_key}))
        assert "Azure refused the credentials" in line
        closed = azure_connection_string.replace(kv["BlobEndpoint"], f"http://127.0.0.1:{free_port()}/{kv['AccountName']}")
        line = one_line_error(cli("ls", f"az://{azure_container}/x", env={**env, "AZURE_STORAGE_CONNECTION_STRING": closed}))
        assert "cannot reach the Azure blob endpoint" in line
        bare = {k: v for k, v in env.items() if k != "AZURE_STORAGE_CONNECTION_STRING"}
        assert "no Azure storage account configured" in one_line_error(cli("ls", "az://c/x", env=bare))
        # an account but no key: an Azure identity is tried (only the environment one: nothing leaves this machine)
        ident = {**bare, "AZURE_STORAGE_ACCOUNT_NAME": kv["AccountName"], "AZURE_TOKEN_CREDENTIALS": "EnvironmentCredential",
                 "HOME": str(tmp_path)}
        assert "no usable Azure credentials" in one_line_error(cli("ls", "az://c/x", env=ident))


def test_urls_and_environment_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    """Which account, credential and endpoint each URL gets, from the standard variables alone (no requests)."""
    from gpstage.errors import BadInput
    from gpstage.storage import provider_for
    from gpstage.storage.gcs import emulator_host

    for k in list(os.environ):
        if k.startswith(("AZURE_", "STORAGE_EMULATOR")):
            monkeypatch.delenv(k)
    az, abfs = provider_for("az://c/x"), provider_for("abfs://c/x")
    assert type(az).__name__ == type(abfs).__name__ == "AzureProvider" and provider_for("gcs://b").scheme == "gcs"
    assert az.fs_path("az://c/x/y z/") == "c/x/y z" and abfs.fs_path("abfs://c@acct.dfs.core.windows.net/p/q") == "c/p/q"
    conn = "DefaultEndpointsProtocol=https;AccountName=devacct;AccountKey=a2V5;EndpointSuffix=core.windows.net"
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", conn)
    assert az.connection("az://c/x") == {"connection_string": conn}
    monkeypatch.setenv("AZURE_STORAGE_KEY", "a2V5")  # the URL names another account than the connection string
    assert abfs.connection("abfs://c@other.dfs.core.windows.net/p") == {
        "account_name": "other", "account_url": "https://other.blob.core.windows.net", "account_key": "a2V5"}
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING")
    monkeypatch.delenv("AZURE_STORAGE_KEY")
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT", "acct")  # no key, no SAS: an Azure identity
    assert az.connection("az://c/x") == {"account_name": "acct", "account_url": "https://acct.blob.core.windows.net"}
    with pytest.raises(BadInput):
        az.fs_path("az:///x")
    gs = provider_for("gs://b/p")
    assert gs.fs_path("gs://b/p/") == "b/p"
    with pytest.raises(BadInput):
        gs.fs_path("gs://")
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "localhost:9023")
    assert emulator_host() == "http://localhost:9023"
    assert gs.filesystem_options("gs://b/p")["token"] == "anon"
