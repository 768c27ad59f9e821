"""The on-storage manifest: stale entries are never believed (docs/design.md §5)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gpstage.listing import list_url
from gpstage.storage.manifest import Manifest
from gpstage.storage.tree import MANIFEST_NAME, Entry, Tree
from gpstage.sync import sync


def script_dir(tmp_path: Path, name: str, text: str, mode: int) -> Path:
    """``tmp_path/src`` holding one script with ``mode``."""
    src = tmp_path / "src"
    src.mkdir()
    (src / name).write_text(text)
    os.chmod(src / name, mode)
    return src


def test_entry_applies_only_while_the_object_is_unchanged() -> None:
    m = Manifest.build(Tree({"a": Entry(size=3, etag='"e1"', mtime_ns=5, mode=0o755)}, {"d": 0o700}))
    fresh = Tree({"a": Entry(size=3, etag='"e1"')})
    Manifest.parse(m.dumps()).apply(fresh, "s3://b")
    assert (fresh.files["a"].mode, fresh.files["a"].mtime_ns, fresh.dirs["d"]) == (0o755, 5, 0o700)
    rewritten = Tree({"a": Entry(size=3, etag='"e2"')})  # someone else rewrote the object
    Manifest.parse(m.dumps()).apply(rewritten, "s3://b")
    assert rewritten.files["a"].mode is None and rewritten.files["a"].mtime_ns is None


def test_a_stored_manifest_describes_exactly_the_tree_it_was_built_from() -> None:
    """write_manifest skips the write when the stored manifest already says the same, decided entry by
    entry (no second manifest in memory): any difference in a file, a mode or a dir means a write."""
    def tree(**changes: object) -> Tree:
        files = {"a": Entry(size=3, etag='"e1"', mtime_ns=5, mode=0o755), "b/c": Entry(size=1, etag='"e2"', md5="ab"),
                 "no-etag": Entry(size=2)}
        dirs: dict[str, int | None] = {"b": None, "d": 0o700}
        for name, value in changes.items():
            (dirs if name.startswith("dir_") else files)[name.removeprefix("dir_")] = value  # type: ignore[assignment]
        return Tree(files, dirs)

    stored = Manifest.parse(Manifest.build(tree()).dumps())
    assert stored.describes(tree())
    assert not stored.describes(tree(a=Entry(size=3, etag='"e1"', mtime_ns=5, mode=0o700)))  # a mode changed
    assert not stored.describes(tree(x=Entry(size=1, etag='"e3"')))  # a file more
    assert not stored.describes(Tree({"a": tree().files["a"]}, tree().dirs))  # a file fewer
    assert not stored.describes(tree(dir_d=0o755)) and not stored.describes(tree(dir_e=None))  # dirs differ
    assert stored.describes(tree(other=Entry(size=9)))  # a file without an etag is never described


@pytest.mark.parametrize("data", [
    b"not json", b"\xff\xfe", b"[]", b'{"size": 1}', b'{"format": "other", "version": 1, "files": {"a": {"size": 1}}}',
    b'{"format": "gpstage-manifest", "version": 1, "files": [], "dirs": {"size": 3}}',
    b'{"format": "gpstage-manifest", "version": 1, "files": {"a": 1, "b": {"mode": "0644"}}, "dirs": []}',
])
def test_foreign_or_broken_manifest_is_ignored(data: bytes) -> None:
    parsed = Manifest.parse(data)
    assert (parsed.files, parsed.dirs) == ({}, {})


def test_a_manifest_in_a_subdir_keys_its_entries_below_that_dir() -> None:
    stored = Manifest.build(Tree({"a": Entry(size=3, etag='"e1"', md5="e1", mode=0o644), "b": Entry(size=1)}, {"d": None}))
    found = Manifest.parse(stored.dumps(), "sub")
    assert found.files == {"sub/a": (3, '"e1"', None, "0644", True)} and found.dirs == {"sub/d": {}}


def test_object_rewritten_by_another_tool_is_transferred_again_not_trusted(bucket: str, s3_client, tmp_path: Path) -> None:
    src = script_dir(tmp_path, "tool.sh", "#!/bin/sh\necho one\n", 0o755)
    url = f"s3://{bucket}/tasklib"
    sync(str(src), url)
    back = tmp_path / "back"
    sync(url, str(back))
    # a plain `aws s3 sync` user (or another job sharing the prefix) replaces the object, same size
    s3_client.put_object(Bucket=bucket, Key="tasklib/tool.sh", Body=b"#!/bin/sh\necho two\n")
    report = sync(url, str(back))
    assert report.files_copied == 1
    assert (back / "tool.sh").read_text().endswith("two\n")
    assert (back / "tool.sh").stat().st_mode & 0o777 == 0o755  # unknown mode: the local file's is kept
    assert MANIFEST_NAME not in list_url(url).files


def test_plain_aws_style_objects_without_manifest_sync_incrementally(bucket: str, s3_client, tmp_path: Path) -> None:
    for i in range(3):
        s3_client.put_object(Bucket=bucket, Key=f"plain/f{i}.txt", Body=b"x" * i)
    first = sync(f"s3://{bucket}/plain", str(tmp_path / "d"))
    second = sync(f"s3://{bucket}/plain", str(tmp_path / "d"))
    assert (first.files_copied, second.files_copied, second.files_skipped) == (3, 0, 3)


def test_folder_marker_objects_are_dirs_not_errors(bucket: str, s3_client, tmp_path: Path) -> None:
    """Consoles and some tools write zero-byte "prefix/" markers, for the root and for subfolders."""
    for key in ("m/", "m/sub/", "m/empty/", "m/sub/f.txt"):
        s3_client.put_object(Bucket=bucket, Key=key, Body=b"" if key.endswith("/") else b"f")
    sync(f"s3://{bucket}/m", str(tmp_path / "d"))
    assert (tmp_path / "d/sub/f.txt").read_text() == "f" and (tmp_path / "d/empty").is_dir()


def test_a_resync_reads_the_manifest_this_machine_wrote_from_its_cache(bucket: str, s3_client, tmp_path: Path,
                                                                        monkeypatch) -> None:
    """The listing's ETag of the manifest equals the one our write got back (or our last read saw): no
    GET. Anyone else's write changes it, and the manifest is read from the store again
    (gpstage/storage/manifestcache.py)."""
    src = script_dir(tmp_path, "run.sh", "echo\n", 0o750)
    url = f"s3://{bucket}/cached"
    sync(str(src), url)
    assert sync(str(src), url).requests == 1  # the listing alone
    monkeypatch.setenv("GPSTAGE_MANIFEST_CACHE", "0")
    assert sync(str(src), url).requests == 2  # the listing and the manifest
    monkeypatch.delenv("GPSTAGE_MANIFEST_CACHE")
    stored = s3_client.get_object(Bucket=bucket, Key=f"cached/{MANIFEST_NAME}")["Body"].read()
    s3_client.put_object(Bucket=bucket, Key=f"cached/{MANIFEST_NAME}", Body=stored.replace(b'"0750"', b'"0700"'))
    report = sync(url, str(tmp_path / "back"))  # another writer's manifest: read from the store, and believed
    assert report.requests == 3 and (tmp_path / "back/run.sh").stat().st_mode & 0o777 == 0o700
    assert sync(url, str(tmp_path / "back")).requests == 1  # what was read is kept too

