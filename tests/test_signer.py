"""gpstage's own SigV4 signer against a store that checks signatures: SeaweedFS with an identity.

moto accepts any signature, so the S3 tests elsewhere would not notice a broken signer. Here the right
keys work and a wrong secret is one clear exit-3 line; object keys with spaces, unicode and
``+ = & ~ ( ) * ! '`` round-trip (their URI encoding is signed); listed keys are decoded as the store
encodes them (SeaweedFS writes a space as ``+``); a skewed clock is corrected once from the store's
answer. A session token is signed exactly as botocore's reference signer signs it (SeaweedFS only
issues tokens behind an OIDC provider). The region comes from the AWS profile when no variable sets it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from benchmarks.servers import SeaweedFS
from gpstage.storage.s3client import S3Client, Signer, canonical_query
from gpstage.storage.s3creds import Credentials, Refreshing, default_region
from gpstage.sync import sync
from gpstage.testing.storage import snapshot
from tests.conftest import run_cli

pytestmark = pytest.mark.timeout(120)
KEY_ID, SECRET = "GPSTAGE-SIGNER-TEST", "s3cr3t/with+all=sorts of chars"
TRICKY_NAMES = ["a b.txt", "plus+equals=amp&.txt", "tilde~(paren)*star!'quote.txt", "ünïcödé ✓.txt", "dir with space/x y+z"]


class SeaweedFSWithIdentity(SeaweedFS):
    """``weed mini`` with one identity: every request must carry a valid SigV4 signature for it."""

    def command(self) -> list[str]:
        config = self.workdir / "s3-identities.json"
        config.write_text(json.dumps({"identities": [{"name": "gpstage", "credentials": [
            {"accessKey": KEY_ID, "secretKey": SECRET}], "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}))
        return [*super().command(), f"-s3.config={config}"]


@pytest.fixture(scope="module")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = SeaweedFSWithIdentity(tmp_path_factory.mktemp("seaweedfs"))
    server.start()
    try:
        yield server.endpoint
    finally:
        server.stop()  # by its process group


@pytest.fixture
def signed_env(seaweedfs: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.setenv("AWS_ENDPOINT_URL", seaweedfs)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    return dict(os.environ)


def new_bucket(endpoint: str) -> str:
    import boto3

    name = f"signed-{os.urandom(4).hex()}"
    boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET,
                 region_name="us-east-1").create_bucket(Bucket=name)
    return name


def test_right_keys_work_and_tricky_object_keys_round_trip(tmp_path: Path, seaweedfs: str, signed_env: dict) -> None:
    src = tmp_path / "src"
    for name in TRICKY_NAMES:
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_text(name)
    url = f"s3://{new_bucket(seaweedfs)}/job dir+1"
    up = sync(str(src), url)
    assert up.files_copied == len(TRICKY_NAMES)
    sync(url, str(tmp_path / "back"))
    assert snapshot(tmp_path / "back") == snapshot(src)  # listed keys decoded as the store encoded them
    assert sync(str(src), url).files_copied == 0
    listed = run_cli("ls", url, "--json", env=signed_env)
    assert sorted(f["path"] for f in json.loads(listed.stdout)["files"]) == sorted(TRICKY_NAMES)


def test_a_wrong_secret_is_one_clear_line_and_exit_3(tmp_path: Path, seaweedfs: str, signed_env: dict) -> None:
    (tmp_path / "a.txt").write_text("a")
    result = run_cli("sync", str(tmp_path / "a.txt").rsplit("/", 1)[0], f"s3://{new_bucket(seaweedfs)}/x",
                     env={**signed_env, "AWS_SECRET_ACCESS_KEY": "not the secret"})
    assert result.returncode == 3
    assert result.stderr.count("\n") == 1 and "S3 refused the credentials (SignatureDoesNotMatch)" in result.stderr


def client(endpoint: str) -> S3Client:
    return S3Client(endpoint, "us-east-1", Credentials(KEY_ID, SECRET), connect_timeout=5, read_timeout=30, pool=4)


def test_a_skewed_clock_is_corrected_once_from_the_stores_answer(seaweedfs: str) -> None:
    bucket = new_bucket(seaweedfs)

    async def go() -> tuple[bytes, timedelta]:
        s3 = client(seaweedfs)
        try:
            s3.signer.offset = timedelta(hours=2)  # as if this machine's clock were two hours ahead
            await s3.put_bytes(bucket, "k", b"value")
            return await s3.get_bytes(bucket, "k"), s3.signer.offset
        finally:
            await s3.close()

    data, offset = asyncio.run(go())
    assert data == b"value" and abs(offset) < timedelta(minutes=1)  # the store's time adopted


def test_a_session_token_is_signed_as_botocore_signs_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import botocore.auth
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials as BotoCredentials

    now = datetime(2026, 12, 1, 12, 0, 0, tzinfo=timezone.utc)
    creds = Credentials("ASIAEXAMPLE", SECRET, "session/token+with=chars")
    signer = Signer("eu-west-1")
    signer.offset = now - datetime.now(timezone.utc)
    query = canonical_query({"list-type": "2", "prefix": "a b/"})
    empty_body = hashlib.sha256(b"").hexdigest()  # what botocore signs for a GET's payload
    ours = {"x-amz-content-sha256": empty_body}
    signer.sign("GET", "s3.example.org", "/bucket", query, ours, creds)
    reference = AWSRequest("GET", f"https://s3.example.org/bucket?{query}")
    auth = S3SigV4Auth(BotoCredentials("ASIAEXAMPLE", SECRET, "session/token+with=chars"), "s3", "eu-west-1")
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda *a, **k: now.replace(tzinfo=None))  # the same second
    auth.add_auth(reference)
    assert ours["x-amz-security-token"] == reference.headers["X-Amz-Security-Token"]
    assert ours["authorization"] == reference.headers["Authorization"]


def test_the_region_comes_from_the_aws_profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "config"
    config.write_text("[profile gp]\nregion = eu-north-1\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    assert default_region("gp") == "eu-north-1"
    monkeypatch.setenv("AWS_REGION", "ap-south-1")
    assert default_region("gp") == "ap-south-1"  # a variable wins, as for every AWS tool


def test_credentials_are_refreshed_off_the_event_loop(seaweedfs: str) -> None:
    bucket = new_bucket(seaweedfs)
    threads: list[int] = []

    class Expiring:  # botocore's refreshable credentials, as far as the client looks at them
        def refresh_needed(self) -> bool:
            return True

        def get_frozen_credentials(self) -> Credentials:
            threads.append(threading.get_ident())
            return Credentials(KEY_ID, SECRET)

    async def go() -> int:
        s3 = S3Client(seaweedfs, "us-east-1", Refreshing(Expiring()), connect_timeout=5, read_timeout=30, pool=4)
        try:
            await s3.put_bytes(bucket, "k", b"v")
            return threading.get_ident()
        finally:
            await s3.close()

    loop_thread = asyncio.run(go())
    assert threads and loop_thread not in threads
