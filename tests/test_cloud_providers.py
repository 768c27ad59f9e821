"""What the conformance class cannot see for Google Cloud Storage and Azure Blob: configuration from each
ecosystem's environment, one-line errors, retries counted, listing pages."""

from __future__ import annotations

import base64
import hashlib
import http.client
import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import urllib.parse
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
            await tree.list_objects()

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
