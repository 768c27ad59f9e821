"""Killed in the middle of a transfer (SIGKILL: no cleanup runs): nothing half-written is visible under
a real name, and the next run completes, transfers only what is missing and leaves no orphaned
multipart upload or temp file behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gpstage.storage.tree import TEMP_PREFIX
from gpstage.sync import sync
from tests.faultproxy import FaultProxy

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]
GPSTAGE = str(Path(sys.executable).parent / "gpstage")
BIG = 40 * 2**20


def make_tree(root: Path) -> None:
    root.mkdir()
    for i in range(20):
        (root / f"small{i}.txt").write_text(f"small {i}\n")
    (root / "big.bin").write_bytes(os.urandom(BIG))


def slow_env(bucket: str, proxy: FaultProxy) -> dict[str, str]:
    Path(os.environ["GPSTAGE_CONFIG"]).write_text(f'[storage."s3://{bucket}/"]\nendpoint = "{proxy.url}"\n')
    return dict(os.environ)


def kill_when(proc: subprocess.Popen, ready, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not ready():
        assert proc.poll() is None, "the transfer finished before it could be interrupted"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


def test_killed_upload_leaves_nothing_visible_and_rerun_cleans_up(tmp_path: Path, bucket: str, s3_client,
                                                                  s3_endpoint: str) -> None:
    src = tmp_path / "src"
    make_tree(src)
    with FaultProxy(s3_endpoint, rate=0, trickle_s=0.05) as proxy:
        proc = subprocess.Popen([GPSTAGE, "sync", str(src), f"s3://{bucket}/job"], env=slow_env(bucket, proxy),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def parts_uploaded() -> bool:
            uploads = s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
            return bool(uploads) and bool(s3_client.list_parts(Bucket=bucket, Key=uploads[0]["Key"],
                                                               UploadId=uploads[0]["UploadId"]).get("Parts"))

        kill_when(proc, parts_uploaded)
    Path(os.environ["GPSTAGE_CONFIG"]).write_text("")  # straight to the server again
    keys = [o["Key"] for o in s3_client.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert "job/big.bin" not in keys  # an unfinished multipart upload is not an object
    assert len(s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])) == 1
    report = sync(str(src), f"s3://{bucket}/job")
    assert report.files_copied == 1 + sum(f"job/small{i}.txt" not in keys for i in range(20))  # only what was missing
    head = s3_client.head_object(Bucket=bucket, Key="job/big.bin")
    assert head["ContentLength"] == BIG
    assert s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []  # the orphan was aborted


def test_killed_download_leaves_no_partial_file_and_rerun_completes(tmp_path: Path, bucket: str, s3_endpoint: str) -> None:
    src = tmp_path / "src"
    make_tree(src)
    sync(str(src), f"s3://{bucket}/job")
    dst = tmp_path / "dst"
    with FaultProxy(s3_endpoint, rate=0, trickle_s=0.05) as proxy:
        proc = subprocess.Popen([GPSTAGE, "sync", f"s3://{bucket}/job", str(dst)], env=slow_env(bucket, proxy),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        kill_when(proc, lambda: dst.exists()
                  and any(p.name.startswith(TEMP_PREFIX) and p.stat().st_size > 0 for p in dst.iterdir()))
    assert not (dst / "big.bin").exists()  # never under its real name while incomplete
    Path(os.environ["GPSTAGE_CONFIG"]).write_text("")
    report = sync(f"s3://{bucket}/job", str(dst))
    assert report.files_copied >= 1
    assert (dst / "big.bin").read_bytes() == (src / "big.bin").read_bytes()
    assert not [p for p in dst.iterdir() if p.name.startswith(TEMP_PREFIX)]  # the dead writer's temp file is gone
