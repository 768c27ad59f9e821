"""One tree through every object store and back: s3 → gs → az → file, remote to remote streamed part by
part (ranged GETs feeding the upload), and the tree that comes out is the tree that went in (bytes, modes, mtimes, empty dirs)."""

from __future__ import annotations

import os
from itertools import pairwise
from pathlib import Path

from gpstage.sync import sync
from gpstage.testing.storage import snapshot

BIG = 10 * 2**20


def make_tree(root: Path) -> None:
    """Nested dirs, an executable, a private file, an empty dir (with an empty child), a 10 MiB file."""
    (root / "bin").mkdir(parents=True)
    (root / "results/run 1/deep").mkdir(parents=True)
    (root / "empty/inner").mkdir(parents=True)
    (root / "empty").chmod(0o750)
    (root / "bin/module.sh").write_text("#!/bin/bash\necho run\n")
    (root / "bin/module.sh").chmod(0o755)
    (root / "results/run 1/deep/table.tsv").write_text("gene\tscore\n" * 1000)
    (root / "results/run 1/notes.txt").write_text("ünïcødé\n")
    (root / "results/private.txt").write_text("secret-ish\n")
    (root / "results/private.txt").chmod(0o600)
    (root / "results/empty.txt").write_bytes(b"")
    (root / "results/big.bin").write_bytes(os.urandom(BIG))
    for i, p in enumerate(sorted(q for q in root.rglob("*") if q.is_file())):
        os.utime(p, ns=(1_700_000_000_123_456_789 + i * 10**9,) * 2)


def test_s3_to_gs_to_az_to_file_is_byte_identical_and_then_a_no_op(
        bucket: str, gcs_bucket: str, azure_container: str, tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src)
    back = tmp_path / "back"
    hops = [str(src), f"s3://{bucket}/gp/tree", f"gs://{gcs_bucket}/gp/tree", f"az://{azure_container}/gp/tree", str(back)]
    files = [p for p in src.rglob("*") if p.is_file()]
    n, nbytes = len(files), sum(p.stat().st_size for p in files)

    for a, b in pairwise(hops):
        report = sync(a, b)
        assert (report.files_copied, report.bytes_copied, report.errors) == (n, nbytes, []), f"{a} -> {b}"
    assert snapshot(back) == snapshot(src)
    assert (back / "empty/inner").is_dir() and not any((back / "empty/inner").iterdir())

    for a, b in pairwise(hops):
        again = sync(a, b)
        assert (again.files_copied, again.files_skipped, again.metadata_updated) == (0, n, 0), f"second pass {a} -> {b}"
    assert snapshot(back) == snapshot(src)


def test_checksum_pass_after_the_chain_copies_nothing_on_gs_and_az(
        gcs_bucket: str, azure_container: str, tmp_path: Path) -> None:
    """Both stores list an MD5 for everything gpstage wrote (GCS always; Azure for blobs committed in blocks
    too, because gpstage sets it), so --checksum finds the trees equal — the 10 MiB file included."""
    src = tmp_path / "src"
    make_tree(src)
    gs, az = f"gs://{gcs_bucket}/c/tree", f"az://{azure_container}/c/tree"
    n = sum(1 for p in src.rglob("*") if p.is_file())
    for a, b in ((str(src), gs), (gs, az), (az, str(tmp_path / "back"))):
        assert sync(a, b).files_copied == n
    for a, b in ((str(src), gs), (gs, az), (str(src), az), (az, str(tmp_path / "back"))):
        report = sync(a, b, checksum=True)
        assert (report.files_copied, report.files_skipped) == (0, n), f"--checksum {a} -> {b}"
