"""Local trees: symlinks inside are followed, ones escaping or looping are refused (bad input rules)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gpstage.errors import UnsafePath
from gpstage.sync import sync


def test_symlinks_inside_the_tree_are_followed(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "real").mkdir(parents=True)
    (src / "real/data.txt").write_text("data")
    os.symlink("real/data.txt", src / "alias.txt")
    os.symlink("real", src / "alias_dir")
    sync(str(src), str(tmp_path / "dst"))
    assert (tmp_path / "dst/alias.txt").read_text() == "data" and not (tmp_path / "dst/alias.txt").is_symlink()
    assert (tmp_path / "dst/alias_dir/data.txt").read_text() == "data"


@pytest.mark.parametrize("target", ["/etc", "../outside.txt"])
def test_symlinks_escaping_the_tree_are_refused_and_nothing_is_written(tmp_path: Path, target: str) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (tmp_path / "outside.txt").write_text("x")
    (src / "ok.txt").write_text("ok")
    os.symlink(target, src / "link")
    with pytest.raises(UnsafePath, match="points outside the tree"):
        sync(str(src), str(tmp_path / "dst"))
    assert not (tmp_path / "dst").exists()


def test_symlink_loop_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    os.symlink("..", src / "a/up")
    with pytest.raises(UnsafePath, match="loop"):
        sync(str(src), str(tmp_path / "dst"))


def test_delete_removes_extra_files_and_dirs_locally(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "keep").mkdir(parents=True)
    (src / "keep/a").write_text("a")
    (dst / "gone/deeper").mkdir(parents=True)
    (dst / "gone/deeper/b").write_text("b")
    report = sync(str(src), str(dst), delete=True)
    assert (report.files_deleted, report.dirs_deleted) == (1, 2)
    assert sorted(p.relative_to(dst).as_posix() for p in dst.rglob("*")) == ["keep", "keep/a"]


def test_checksum_mode_detects_same_size_same_mtime_changes(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    (src / "f").write_text("aaaa")
    sync(str(src), str(dst))
    st = (dst / "f").stat()
    (dst / "f").write_text("bbbb")
    os.utime(dst / "f", ns=(st.st_atime_ns, st.st_mtime_ns))
    assert sync(str(src), str(dst)).files_copied == 0  # metadata says equal
    assert sync(str(src), str(dst), checksum=True).files_copied == 1
    assert (dst / "f").read_text() == "aaaa"
