"""The storage conformance class every provider must pass (built-ins and plugins alike).

Use it from a plugin's test suite by subclassing and giving two fixtures (a remote scheme adds
:class:`RemoteTreeConformance`, the object operations beyond sync)::

    from gpstage.testing.storage import RemoteTreeConformance, StorageConformance

    class TestMyStore(StorageConformance, RemoteTreeConformance):
        @pytest.fixture
        def storage_url(self):            # a fresh, empty location, e.g. "mystore://bucket/run-1"
            ...
        @pytest.fixture
        def plant_unsafe(self):           # writes something that must be refused under a URL
            return lambda url: ...         # e.g. an object whose key has a '..' component

The sync tests need nothing but the public ``gpstage.sync`` API; the remote ones open the tree.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from gpstage.aio import run_sync
from gpstage.errors import UnsafePath
from gpstage.listing import list_url
from gpstage.report import TransferReport
from gpstage.storage import RemoteTree, open_tree
from gpstage.storage.local import LocalTree
from gpstage.storage.source import FileSource
from gpstage.storage.tree import SHA256_META, TEMP_PREFIX
from gpstage.sync import sync
from gpstage.urls import join_url

BIG = 50 * 2**20


def make_tricky_tree(root: Path, big: int = BIG) -> None:
    """Nested dirs, spaces and non-ASCII names, empty files and dirs, an executable, a large file."""
    (root / "nested/deeper/deepest").mkdir(parents=True)
    (root / "with space/ünïcødé dir").mkdir(parents=True)
    (root / "empty dir/empty child").mkdir(parents=True)
    (root / "nested/deeper/deepest/leaf.txt").write_text("leaf\n")
    (root / "with space/ünïcødé dir/naïve file.txt").write_text("ÅÄÖ\n" * 100, encoding="utf-8")
    (root / "with space/empty.txt").write_bytes(b"")
    (root / "module.sh").write_text("#!/bin/bash\necho run\n")
    (root / "module.sh").chmod(0o755)
    (root / "private.txt").write_text("secret-ish\n")
    (root / "private.txt").chmod(0o600)
    with open(root / "nested/big.bin", "wb") as f:
        block = os.urandom(2**20)
        f.writelines(block[:-1] + bytes([i % 256]) for i in range(big // len(block)))
    for i, p in enumerate(sorted(root.rglob("*"))):
        if p.is_file():
            os.utime(p, ns=(1_700_000_000_123_456_789 + i * 10**9,) * 2)


def snapshot(root: Path) -> dict[str, tuple]:
    """Everything a round trip must keep: bytes, modes, mtimes (µs) of files; modes of dirs."""
    out: dict[str, tuple] = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if rel.split("/")[-1].startswith(TEMP_PREFIX):
            continue
        st = p.stat()
        if p.is_dir():
            out[rel] = ("dir", stat.S_IMODE(st.st_mode))
        else:
            out[rel] = ("file", p.read_bytes(), stat.S_IMODE(st.st_mode), st.st_mtime_ns // 1000)
    return out


class StorageConformance:
    """Round trips, incrementality, deletion, safety and atomicity for one storage URL scheme."""

    @pytest.fixture
    def tricky(self, tmp_path: Path) -> Path:
        src = tmp_path / "src"
        src.mkdir()
        make_tricky_tree(src)
        return src

    def test_round_trip_keeps_bytes_modes_mtimes_and_empty_dirs(self, storage_url: str, tricky: Path, tmp_path: Path) -> None:
        files = [p for p in tricky.rglob("*") if p.is_file()]
        up = sync(str(tricky), storage_url)
        assert (up.files_copied, up.bytes_copied) == (len(files), sum(p.stat().st_size for p in files))
        back = tmp_path / "back"
        down = sync(storage_url, str(back))
        assert down.files_copied == len(files)
        assert snapshot(back) == snapshot(tricky)

    def test_second_sync_copies_nothing_either_way(self, storage_url: str, tricky: Path, tmp_path: Path) -> None:
        sync(str(tricky), storage_url)
        back = tmp_path / "back"
        sync(storage_url, str(back))
        again_up, again_down = sync(str(tricky), storage_url), sync(storage_url, str(back))
        n = sum(1 for p in tricky.rglob("*") if p.is_file())
        assert (again_up.files_copied, again_up.files_skipped) == (0, n)
        assert (again_down.files_copied, again_down.files_skipped) == (0, n)

    def test_changed_file_is_copied_again(self, storage_url: str, tmp_path: Path) -> None:
        src = tmp_path / "src"
        src.mkdir()
        (src / "a.txt").write_text("one")
        sync(str(src), storage_url)
        (src / "a.txt").write_text("two")  # same size, new mtime
        os.utime(src / "a.txt", ns=(1_800_000_000_000_000_000,) * 2)
        assert sync(str(src), storage_url).files_copied == 1
        back = tmp_path / "back"
        sync(storage_url, str(back))
        assert (back / "a.txt").read_text() == "two"

    def test_delete_removes_extras_only(self, storage_url: str, tmp_path: Path) -> None:
        src = tmp_path / "src"
        (src / "keep").mkdir(parents=True)
        for name in ("keep/a", "b", "c.log"):
            (src / name).write_text(name)
        sync(str(src), storage_url)
        (src / "b").unlink()
        (src / "c.log").unlink()
        report = sync(str(src), storage_url, delete=True, exclude=["*.log"])
        assert report.files_deleted == 1
        assert sorted(list_url(storage_url).files) == ["c.log", "keep/a"]  # excluded files are protected

    def test_unsafe_entry_is_refused_and_nothing_written(self, storage_url: str, plant_unsafe, tmp_path: Path) -> None:
        src = tmp_path / "src"
        src.mkdir()
        (src / "ok.txt").write_text("ok")
        sync(str(src), storage_url)
        plant_unsafe(storage_url)
        target = tmp_path / "deep" / "target"
        with pytest.raises(UnsafePath):
            sync(storage_url, str(target))
        assert not (tmp_path / "deep").exists() or not any((tmp_path / "deep").rglob("*"))
        assert not (tmp_path / "escape.txt").exists()

    def test_interrupted_download_leaves_no_partial_file(self, storage_url: str, tricky: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
        sync(str(tricky), storage_url)
        target = tmp_path / "target"
        real_commit = LocalTree.commit

        def interrupted(tmp: str, final: str, *args: object, **kwargs: object) -> None:
            if final.endswith("big.bin"):
                raise KeyboardInterrupt  # as if the process were stopped right before the rename
            real_commit(tmp, final, *args, **kwargs)

        monkeypatch.setattr(LocalTree, "commit", staticmethod(interrupted))
        with pytest.raises(KeyboardInterrupt):
            sync(storage_url, str(target), jobs=1)
        monkeypatch.undo()
        assert not (target / "nested/big.bin").exists()
        assert not [p for p in target.rglob("*") if p.name.startswith(TEMP_PREFIX)]
        report = sync(storage_url, str(target))
        assert report.files_copied >= 1 and (target / "nested/big.bin").stat().st_size == BIG

    def test_temp_files_never_listed_or_synced(self, storage_url: str, tmp_path: Path) -> None:
        src = tmp_path / "src"
        src.mkdir()
        (src / "real.txt").write_text("real")
        (src / f"{TEMP_PREFIX}999999999.abcd.real.txt").write_text("half")  # a dead writer's leftover
        sync(str(src), storage_url)
        assert list(list_url(storage_url).files) == ["real.txt"]
        assert not (src / f"{TEMP_PREFIX}999999999.abcd.real.txt").exists()  # the stale temp was cleaned


class RemoteTreeConformance:
    """The object operations of a :class:`~gpstage.storage.base.RemoteTree` beyond sync — what the input cache
    and inputs by URL use: ``stat``, ``read_range``, ``upload`` with metadata, server-side ``copy_from``.
    Needs the same ``storage_url`` fixture (a remote scheme's URL)."""

    def _run(self, storage_url: str, check: Callable[[RemoteTree], Awaitable[None]]) -> None:
        async def go() -> None:
            async with open_tree(storage_url, TransferReport("", storage_url)) as tree:
                assert isinstance(tree, RemoteTree), f"{storage_url} is not a remote tree"
                await check(tree)

        run_sync(go())

    def test_stat_and_ranged_read(self, storage_url: str, tmp_path: Path) -> None:
        data = os.urandom(300_000)
        (tmp_path / "f").write_bytes(data)

        async def check(tree: RemoteTree) -> None:
            assert await tree.stat("dir/f") is None
            await tree.upload(FileSource(str(tmp_path / "f"), len(data)), "dir/f", {SHA256_META: "ab" * 32})
            found = await tree.stat("dir/f")
            assert found is not None and found.size == len(data)
            if tree.provider.keeps_metadata:
                assert found.sha256 == "ab" * 32
            assert await tree.read_range("dir/f", 1000, 5000) == data[1000:6000]

        self._run(storage_url, check)

    def test_server_side_copy_between_two_prefixes(self, storage_url: str) -> None:
        data = os.urandom(70_000)

        async def check(tree: RemoteTree) -> None:
            await tree.write_bytes("a/src.bin", data)
            other = tree.subtree(join_url(storage_url, "b"))
            await other.copy_from(tree, "a/src.bin", "copied.bin", len(data), metadata={})
            assert await tree.read_bytes("b/copied.bin") == data
            with pytest.raises(Exception):  # noqa: B017 - each store names its 404 its own way
                await other.copy_from(tree, "a/missing.bin", "never.bin", 1)
            assert await tree.stat("b/never.bin") is None

        self._run(storage_url, check)
