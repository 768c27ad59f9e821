"""The input cache (docs/input-cache.md) on real stores: file, s3 (moto), gs and az emulators.

"The client sent none of its bytes" is measured where every upload reads its bytes: FileSource.read and
ObjectSource.read (a local file, or another store's object streamed through).
"""

from __future__ import annotations

import hashlib
import os
import threading
import uuid
from pathlib import Path

import pytest

from gpstage.aio import run_sync
from gpstage.inputcache import object_rel
from gpstage.inputcache.manage import collect, inventory, open_cache
from gpstage.inputcache.place import InputCache
from gpstage.spec import JobSpec
from gpstage.stage import remove_job_dirs, stage_in
from gpstage.storage import read_url, write_url
from gpstage.storage.source import FileSource, ObjectSource
from gpstage.sync import sync
from gpstage.testing.storage import snapshot
from gpstage.urls import join_url
from tests.conftest import run_cli

BIG = 3 * 2**20  # above the default 1 MiB minimum
BACKENDS = ["file", "s3", "gs", "az"]


@pytest.fixture(params=BACKENDS)
def root(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh storage root on the backend."""
    run = uuid.uuid4().hex[:8]
    if request.param == "s3":
        return f"s3://{request.getfixturevalue('bucket')}/gp-{run}"
    if request.param == "gs":
        return f"gs://{request.getfixturevalue('gcs_bucket')}/gp-{run}"
    if request.param == "az":
        return f"az://{request.getfixturevalue('azure_container')}/gp-{run}"
    (tmp_path / "store").mkdir()
    return f"file://{tmp_path}/store"


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Bytes every upload read from its source, as a running list."""
    counted: list[int] = []
    for cls in (FileSource, ObjectSource):
        real = cls.read

        async def read(self, offset: int, length: int, _real=real) -> bytes:  # type: ignore[no-untyped-def]
            data = await _real(self, offset, length)
            counted.append(len(data))
            return data

        monkeypatch.setattr(cls, "read", read)
    return counted


def job(tmp_path: Path, root: str, name: str, files: dict[str, bytes], **inputs: object) -> JobSpec:
    """A job whose inputs dir holds ``files``; each file gets its own mode and mtime."""
    base = tmp_path / name
    inp = base / "inputs"
    inp.mkdir(parents=True)
    for i, (rel, data) in enumerate(files.items()):
        (inp / rel).write_bytes(data)
        os.chmod(inp / rel, 0o640 + i)
        os.utime(inp / rel, ns=(1_700_000_000_000_000_000 + hash(name) % 10**9 * 1000,) * 2)
    return JobSpec.model_validate({"job_id": name, "storage_root": root, "input_cache": True, "dirs": [
        {"role": "workdir", "path": str(base / "work")}, {"role": "inputs", "path": str(inp), **inputs}]})


def inputs_of(transfers: list) -> object:  # type: ignore[type-arg]
    """The inputs dir's transfer report among a stage-in's."""
    return next(t.report for t in transfers if t.role == "inputs")


def cache_url(root: str) -> str:
    return join_url(root, ".gpstage-cache")


def pulled(spec: JobSpec, tmp_path: Path) -> dict[str, tuple]:
    """The job's inputs dir as the container entry would pull it."""
    d = spec.dirs[1]
    back = tmp_path / f"{spec.job_id}-back"
    sync(spec.url_of(d), str(back))
    return snapshot(back)


def test_second_job_input_arrives_by_server_side_copy(root: str, tmp_path: Path, sent: list[int]) -> None:
    data = os.urandom(BIG)
    first = job(tmp_path, root, "first", {"matrix.gct": data, "small.txt": b"params"})
    up = inputs_of(stage_in(first))
    assert up is not None and up.files_copied == 2 and up.files_from_cache == 0
    second = job(tmp_path, root, "second", {"matrix.gct": data, "small.txt": b"other"})  # a copy: a new inode
    sent.clear()
    report = inputs_of(stage_in(second))
    assert report is not None and (report.files_from_cache, report.bytes_from_cache) == (1, BIG)
    if not root.startswith("file://"):  # (file:// copies by reflink or in the kernel, never through FileSource)
        assert sum(sent) == len(b"other")  # the small file went as a plain upload, none of the matrix's bytes
    assert pulled(second, tmp_path) == snapshot(Path(second.dirs[1].path))  # bytes, modes and mtimes
    found = run_sync(_inventory(cache_url(root)))
    digest = hashlib.sha256(data).hexdigest()
    assert list(found.objects) == [digest] and found.objects[digest].refs == ["first", "second"]


def test_corrupt_cache_object_is_replaced_not_used(root: str, tmp_path: Path) -> None:
    data = os.urandom(BIG)
    stage_in(job(tmp_path, root, "first", {"in.bin": data}))
    key = join_url(cache_url(root), object_rel(hashlib.sha256(data).hexdigest()))
    damaged = bytes([data[0] ^ 1]) + data[1:]
    if root.startswith("file://"):
        path = key.removeprefix("file://")
        os.chmod(path, 0o644)
        Path(path).write_bytes(damaged)  # same size: only the hash can tell
    else:
        run_sync(write_url(key, damaged))  # a plain write, as another tool would: no gpstage-sha256
    second = job(tmp_path, root, "second", {"in.bin": data})
    report = inputs_of(stage_in(second))
    assert report is not None and report.files_from_cache == 0 and report.files_copied == 1
    assert pulled(second, tmp_path)["in.bin"][1] == data
    assert run_sync(read_url(key)) == data  # replaced


def test_two_jobs_staging_the_same_new_input_at_once(root: str, tmp_path: Path) -> None:
    data = os.urandom(BIG)
    specs = [job(tmp_path, root, f"job{i}", {"in.bin": data}) for i in range(2)]
    errors: list[BaseException] = []

    def stage(spec: JobSpec) -> None:
        try:
            stage_in(spec)
        except BaseException as err:  # noqa: BLE001 - reported by the assertion below
            errors.append(err)

    threads = [threading.Thread(target=stage, args=(s,)) for s in specs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    for spec in specs:
        assert pulled(spec, tmp_path)["in.bin"][1] == data
    key = join_url(cache_url(root), object_rel(hashlib.sha256(data).hexdigest()))
    assert run_sync(read_url(key)) == data


def test_gc_keeps_referenced_objects_and_clean_drops_references(root: str, tmp_path: Path) -> None:
    data, other = os.urandom(BIG), os.urandom(BIG)
    a = job(tmp_path, root, "a", {"in.bin": data})
    b = job(tmp_path, root, "b", {"in.bin": data, "more.bin": other})
    stage_in(a)
    stage_in(b)
    assert run_sync(_collect(cache_url(root), 0)) == []  # every object is referenced
    remove_job_dirs(b)  # what `gpstage clean` does: b's references go, a's stay
    gone = run_sync(_collect(cache_url(root), 0))
    assert [o.digest for o in gone] == [hashlib.sha256(other).hexdigest()]
    remove_job_dirs(a)
    young = run_cli("cache", "gc", root, "--older-than", "1h", "--json")
    assert young.returncode == 0, young.stderr
    assert '"deleted": []' in young.stdout  # unreferenced, but written less than an hour ago
    everything = run_cli("cache", "gc", root, "--json")
    assert everything.returncode == 0 and hashlib.sha256(data).hexdigest() in everything.stdout
    assert run_sync(_inventory(cache_url(root))).usage()["objects"] == 0
    assert run_sync(_inventory(cache_url(root))).usage()["markers"] == 0


def test_stage_in_racing_gc_uploads_the_collected_object_again(root: str, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A gc that listed before this job's marker existed deletes the object between the stage-in's check and
    its copy: the copy fails, the stage-in sees the object gone, uploads it again and copies."""
    data = os.urandom(BIG)
    stage_in(job(tmp_path, root, "first", {"in.bin": data}))
    real_place = InputCache.place
    raced = []

    async def place(self: InputCache, entry, rel, dst, report):  # type: ignore[no-untyped-def]
        store = self.store
        real = store.place

        async def collected_then_place(*args, **kwargs):  # type: ignore[no-untyped-def]
            if not raced:
                raced.append(await store.stat(object_rel(hashlib.sha256(data).hexdigest())))
                await store.delete([object_rel(hashlib.sha256(data).hexdigest())])  # gc's delete lands now
            return await real(*args, **kwargs)

        monkeypatch.setattr(store, "place", collected_then_place)
        return await real_place(self, entry, rel, dst, report)

    monkeypatch.setattr(InputCache, "place", place)
    second = job(tmp_path, root, "second", {"in.bin": data})
    report = inputs_of(stage_in(second))
    assert raced and raced[0] is not None  # the object was there when the stage-in checked it
    assert report is not None and report.files_from_cache == 0  # uploaded again
    assert pulled(second, tmp_path)["in.bin"][1] == data
    assert run_sync(_inventory(cache_url(root))).objects[hashlib.sha256(data).hexdigest()].refs == ["first", "second"]


def test_private_inputs_are_never_cached(root: str, tmp_path: Path) -> None:
    spec = job(tmp_path, root, "private", {"patient.vcf": os.urandom(BIG)}, private=True)
    report = inputs_of(stage_in(spec))
    assert report is not None and report.files_copied == 1
    assert run_sync(_inventory(cache_url(root))).usage() == {"objects": 0, "bytes": 0, "referenced_objects": 0,
                                                              "referenced_bytes": 0, "markers": 0, "jobs": 0}


async def _inventory(url: str):  # type: ignore[no-untyped-def]
    async with open_cache(url) as store:
        return await inventory(store)


async def _collect(url: str, older_than: float):  # type: ignore[no-untyped-def]
    async with open_cache(url) as store:
        return await collect(store, older_than)


def test_nfs_shared_path_is_not_cached(tmp_path: Path) -> None:
    """On nfs:/// the URL is the dir itself: nothing is copied, so there is nothing to cache."""
    spec = job(tmp_path, "nfs:///", "shared", {"in.bin": os.urandom(BIG)})
    t = next(t for t in stage_in(spec) if t.role == "inputs")
    assert t.skipped is not None and "nor to cache" in t.skipped
    assert not any(tmp_path.glob("**/.gpstage-cache"))


def test_s3_copies_above_the_copyobject_limit_part_by_part(bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Above CopyObject's 5 GiB limit, a multipart upload of UploadPartCopy ranges (limits scaled down here)."""
    from gpstage.report import TransferReport
    from gpstage.storage import open_tree
    from gpstage.storage import s3 as s3mod
    from gpstage.storage.tree import SHA256_META

    monkeypatch.setattr(s3mod, "COPY_MAX", 6 * 2**20)
    monkeypatch.setattr(s3mod, "COPY_PART", 5 * 2**20)
    data = os.urandom(13 * 2**20 + 7)
    url = f"s3://{bucket}/big"

    async def go() -> tuple[bytes, object, int]:
        async with open_tree(url, TransferReport("", url)) as tree:
            await tree.write_bytes("src.bin", data)
            before = tree.report.requests
            await tree.copy_from(tree, "src.bin", "copy.bin", len(data), metadata={SHA256_META: "cd" * 32})
            requests = tree.report.requests - before
            return await tree.read_bytes("copy.bin"), await tree.stat("copy.bin"), requests

    copied, entry, requests = run_sync(go())
    assert copied == data and entry.sha256 == "cd" * 32  # type: ignore[attr-defined]
    assert requests == 1 + 3 + 1  # create, three part copies, complete


def test_copies_carry_the_profiles_encryption_and_acl_as_uploads_do(bucket: str, s3_client, tmp_path: Path) -> None:
    config = Path(os.environ["GPSTAGE_CONFIG"])
    config.write_text(f'[storage."s3://{bucket}/"]\ninput_cache = true\ns3_sse = "AES256"\ns3_acl = "public-read"\n')
    data = os.urandom(BIG)
    root = f"s3://{bucket}/gp"
    first = job(tmp_path, root, "first", {"in.bin": data})
    second = job(tmp_path, root, "second", {"in.bin": data, "small.txt": b"x"})
    stage_in(first)
    assert inputs_of(stage_in(second)).files_from_cache == 1
    prefix = second.url_of(second.dirs[1]).removeprefix(f"s3://{bucket}/")
    for key in (f"{prefix}/in.bin", f"{prefix}/small.txt"):  # a server-side copy and a plain upload
        assert s3_client.head_object(Bucket=bucket, Key=key)["ServerSideEncryption"] == "AES256"
        grants = s3_client.get_object_acl(Bucket=bucket, Key=key)["Grants"]
        assert any(g["Grantee"].get("URI", "").endswith("/AllUsers") and g["Permission"] == "READ" for g in grants)


def test_min_size_zero_caches_every_file(tmp_path: Path) -> None:
    """input_cache_min_size = 0 is a size, not "unset": every file goes through the cache."""
    store = tmp_path / "store"
    store.mkdir()
    root = f"file://{store}"
    Path(os.environ["GPSTAGE_CONFIG"]).write_text(f'[storage."{root}"]\ninput_cache_min_size = 0\n')
    files = {"a.txt": b"tiny", "b.txt": b"also tiny"}
    stage_in(job(tmp_path, root, "first", files))
    assert inputs_of(stage_in(job(tmp_path, root, "second", files))).files_from_cache == 2


def test_the_hash_index_is_shared_by_concurrent_users(tmp_path: Path) -> None:
    """Eight connections at once (as eight submitting processes): each setup, read and write either waits or
    is skipped — a stage-in never fails for the index, which only saves reading files again."""
    from gpstage.inputcache.hashes import HashIndex

    data = os.urandom(10_000)
    want = hashlib.sha256(data).hexdigest()
    files = [tmp_path / f"f{i}" for i in range(8 * 30)]  # a file per lookup: every lookup misses, then records
    for f in files:
        f.write_bytes(data)
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def use(n: int) -> None:
        try:
            index = HashIndex(tmp_path / "index.sqlite")
            start.wait(10)  # eight first connections at once: their setup races too
            for f in files[n * 30:(n + 1) * 30]:
                assert index.digest(str(f), len(data))[0] == want
            index.close()
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=use, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
