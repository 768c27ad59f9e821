"""Reliability on a faulty network: a job staged in and out, and run by the entry, through a proxy
that fails ~20 % of requests (500, 503, connection reset mid-body, stalls past the read timeout)
still ends with byte-identical outputs, every retry counted; at 100 % failure it fails in bounded
time with one clear line."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from examples.sample_job import expected_counts, lay_out_job
from gpstage.errors import StorageError
from gpstage.jobfiles import spec_url
from gpstage.spec import Role
from gpstage.stage import stage_in, stage_out
from gpstage.sync import sync
from gpstage.testing.storage import snapshot
from tests.faultproxy import FaultProxy
from tests.jobs import fresh_node, run_entry

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]


def profile(bucket: str, endpoint: str, attempts: int) -> str:
    return (f'[storage."s3://{bucket}/"]\nendpoint = "{endpoint}"\nconnect_timeout = 1\nread_timeout = 1\n'
            f"retry = {{attempts = {attempts}, base_delay = 0.05, max_delay = 0.3}}\n")


def test_a_job_survives_a_network_that_fails_a_fifth_of_its_requests(tmp_path: Path, bucket: str, s3_endpoint: str) -> None:
    with FaultProxy(s3_endpoint, rate=0.2, seed=20261125, stall_s=2.5) as proxy:
        Path(os.environ["GPSTAGE_CONFIG"]).write_text(profile(bucket, proxy.url, attempts=12))
        spec = lay_out_job(tmp_path / "srv", f"s3://{bucket}/gp")
        inbound = stage_in(spec)
        fresh_node(spec)
        result = run_entry("--spec", spec_url(spec), "--log-push-interval", "0", timeout=240)
        assert result.returncode == 0, result.stderr
        outbound = stage_out(spec)
    assert Path(spec.workdir, "counts.txt").read_text() == expected_counts()
    assert Path(spec.dir(Role.TASKLIB).path, ".cache/last_run.txt").read_text() == "last input: words.txt\n"
    status = json.loads(Path(spec.metadata_dir, "status.json").read_text())
    faults = sum(n for fate, n in proxy.counts.items() if fate != "pass")
    retries = sum(t.report.retries for t in inbound + outbound if t.report)
    retries += sum(t["report"]["retries"] for t in status["transfers"] if t["report"])
    assert status["state"] == "SUCCEEDED"
    assert faults >= 5 and retries >= faults // 2, (proxy.counts, retries)
    print(f"requests {sum(proxy.counts.values())}, faults {dict(proxy.counts)}, retries counted {retries}")


def test_a_download_of_many_small_and_a_few_large_objects_survives_a_faulty_network(
        tmp_path: Path, bucket: str, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Many small objects come down in batches through the fast lane's threads, a GET that failed there
    going on alone under the policy from its second attempt; large ones in ranges over http.client, each
    written into place as it arrives, a body cut short retried (docs/design.md, "The S3 fast lane")."""
    monkeypatch.setattr("gpstage.storage.s3client.PLAIN_FIRST", 2)  # the batch takes all but a job dir's few
    monkeypatch.setattr("gpstage.storage.s3.RANGE_PART", 2**20)  # 3 MiB: three ranges
    src = tmp_path / "src"
    for i in range(60):
        (src / f"d{i % 3}").mkdir(parents=True, exist_ok=True)
        (src / f"d{i % 3}" / f"f{i}.txt").write_text(f"file {i}\n" * (i + 1))
    for name in ("big1.bin", "big2.bin"):
        (src / name).write_bytes(os.urandom(3 * 2**20))
    sync(str(src), f"s3://{bucket}/many")
    with FaultProxy(s3_endpoint, rate=0.2, seed=20261203, stall_s=2.5) as proxy:
        Path(os.environ["GPSTAGE_CONFIG"]).write_text(profile(bucket, proxy.url, attempts=12))
        report = sync(f"s3://{bucket}/many", str(tmp_path / "back"))
    assert snapshot(tmp_path / "back") == snapshot(src)
    faults = sum(n for fate, n in proxy.counts.items() if fate != "pass")
    assert faults >= 5 and report.retries >= faults // 2, (proxy.counts, report.retries)
    # every range is counted (two uncounted per large file would be 4 short); a request cut off as it was
    # sent may reach the client's count and not the proxy's
    assert abs(report.requests - sum(proxy.counts.values())) <= 1, (proxy.counts, report.requests)


def test_a_dead_network_fails_in_bounded_time_with_one_line(tmp_path: Path, bucket: str, s3_endpoint: str) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("a")
    with FaultProxy(s3_endpoint, rate=1.0, seed=1, stall_s=2.5) as proxy:
        Path(os.environ["GPSTAGE_CONFIG"]).write_text(profile(bucket, proxy.url, attempts=3))
        started = time.monotonic()
        with pytest.raises(StorageError) as err:
            sync(str(src), f"s3://{bucket}/dead")
    assert time.monotonic() - started < 60
    assert "\n" not in str(err.value) and str(err.value).startswith(f"s3://{bucket}/dead")


def proxied_profile(store: str, request: pytest.FixtureRequest, proxy: FaultProxy,
                    monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    """(the URL of a fresh location on ``store``, the settings-file profile that sends it through ``proxy``)."""
    limits = "connect_timeout = 1\nread_timeout = 1\nretry = {attempts = 12, base_delay = 0.05, max_delay = 0.3}\n"
    if store == "gs":
        bucket = request.getfixturevalue("gcs_bucket")
        return f"gs://{bucket}/t", f'[storage."gs://{bucket}/"]\nendpoint = "{proxy.url}"\n{limits}'
    container = request.getfixturevalue("azure_container")
    parts = dict(p.split("=", 1) for p in request.getfixturevalue("azure_connection_string").split(";") if "=" in p)
    account_path = parts["BlobEndpoint"].rstrip("/").partition("://")[2].partition("/")[2]
    monkeypatch.setenv("GP_TEST_AZURE_THROUGH_PROXY", ";".join(
        f"{k}={proxy.url}/{account_path}" if k == "BlobEndpoint" else f"{k}={v}" for k, v in parts.items()))
    return (f"az://{container}/t",
            f'[storage."az://{container}/"]\nconnection_string_env = "GP_TEST_AZURE_THROUGH_PROXY"\n{limits}')


def upstream_of(store: str, request: pytest.FixtureRequest) -> str:
    if store == "gs":
        return request.getfixturevalue("gcs_endpoint")
    blob = dict(p.split("=", 1) for p in request.getfixturevalue("azure_connection_string").split(";") if "=" in p)
    return "http://" + blob["BlobEndpoint"].partition("://")[2].partition("/")[0]


@pytest.mark.parametrize("store", ["gs", "az"])
def test_other_object_stores_through_a_faulty_network(tmp_path: Path, request: pytest.FixtureRequest,
                                                      monkeypatch: pytest.MonkeyPatch, store: str) -> None:
    """GCS and Azure behind the same proxy (their SDKs' own retries are off): a tree up and down,
    byte-identical, retries counted by gpstage's policy."""
    src = tmp_path / "src"
    for i in range(40):
        (src / f"d{i % 4}").mkdir(parents=True, exist_ok=True)
        (src / f"d{i % 4}" / f"f{i}.txt").write_text(f"file {i}\n" * (i + 1))
    with FaultProxy(upstream_of(store, request), rate=0.2, seed=12, stall_s=2.5) as proxy:
        url, profile_text = proxied_profile(store, request, proxy, monkeypatch)
        Path(os.environ["GPSTAGE_CONFIG"]).write_text(profile_text)
        up = sync(str(src), url)
        down = sync(url, str(tmp_path / "back"))
    assert snapshot(tmp_path / "back") == snapshot(src)
    assert sum(n for fate, n in proxy.counts.items() if fate != "pass") >= 3
    assert up.retries + down.retries >= 1
