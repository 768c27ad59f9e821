"""Sync the contents of one URL into another with ``aws s3 sync`` semantics (docs/design.md §4).

One listing per side decides everything: a file is copied when it is missing or its size differs,
or — with both source mtimes known (local stat, or the manifest on object stores) — when its mtime
differs; without them, when the source is newer (aws's rule), and by MD5 when the two times are too
close to tell apart. ``checksum=True`` compares MD5s instead. Transfers run concurrently, each under \
the retry policy; a failed transfer is an error, never
skipped. Object-store destinations get a fresh manifest (modes, mtimes, dirs) after the transfers.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from gpstage import aio
from gpstage.errors import BadInput, GpstageError, StorageError
from gpstage.report import TransferReport
from gpstage.retry import RetryPolicy
from gpstage.storage import LocalTree, RemoteTree, open_tree, runs_on_threads
from gpstage.storage.listing import KnownKeys
from gpstage.storage.source import FileSource, ObjectSource
from gpstage.storage.tree import Entry, Excluder, Tree
from gpstage.urls import join_url

if TYPE_CHECKING:
    from gpstage.inputcache.place import InputCache

DEFAULT_JOBS = 32
LARGE_FILE = 2**20  # files above this share a smaller pool, so memory stays bounded
LARGE_JOBS = 4
THREADED_COPIES = 32  # at most this many small copies stay on gpstage.aio's threads (_fits_threads)
BATCH = 512  # small downloads handed to the store's client at once (progress moves batch by batch)
AMBIGUOUS_NS = 2 * 10**9  # object stores' LastModified has 1 s precision

AnyTree = LocalTree | RemoteTree


class Progress(Protocol):
    def start(self, files: int, nbytes: int) -> None: ...
    def advance(self, nbytes: int) -> None: ...
    def finish(self) -> None: ...


class SyncError(StorageError):
    """Some transfers failed; ``report`` says what was done and lists every error."""

    def __init__(self, problem: str, fix: str | None, report: TransferReport) -> None:
        super().__init__(problem, fix)
        self.report = report


class Plan:
    """What a sync will do, by relative path."""

    def __init__(self) -> None:
        self.copy: list[str] = []
        self.fix_meta: list[str] = []  # same content; only mode or mtime to fix
        self.delete: list[str] = []
        self.make_dirs: list[str] = []
        self.remove_dirs: list[str] = []
        self.skipped = 0

    def nbytes(self, src: Tree) -> int:
        return sum(src.files[r].size for r in self.copy)


def sync(src: str, dst: str, *, delete: bool = False, checksum: bool = False, jobs: int | None = None,
         exclude: Sequence[str] = (), dry_run: bool = False, progress: Progress | None = None,
         retry: RetryPolicy | None = None) -> TransferReport:
    """Make ``dst`` hold the contents of ``src``; see :func:`async_sync`. Between a local dir and a store
    whose trees support it, without asyncio (gpstage.aio): a small sync is mostly start-up."""
    threads = runs_on_threads(src, dst)  # first: an unknown scheme is refused before any coroutine exists
    return aio.run_sync(async_sync(src, dst, delete=delete, checksum=checksum, jobs=jobs, exclude=exclude,
                                   dry_run=dry_run, progress=progress, retry=retry), threads=threads)


async def async_sync(src: str, dst: str, *, delete: bool = False, checksum: bool = False, jobs: int | None = None,
                     exclude: Sequence[str] = (), dry_run: bool = False, progress: Progress | None = None,
                     retry: RetryPolicy | None = None, include: Sequence[str] | None = None,
                     cache: InputCache | None = None) -> TransferReport:
    """Copy what differs from ``src`` to ``dst``; with ``delete``, remove what ``src`` lacks.

    ``exclude`` globs match paths relative to ``src`` (and protect matching files at ``dst`` from
    deletion); ``include`` (None: all) limits the sync to the files matching its globs. With ``cache``
    (a local ``src`` only), files go through the input cache on ``dst``'s store (gpstage.inputcache).
    Raises :class:`SyncError` (with the report) if any transfer failed for good.
    """
    if jobs is not None and jobs < 1:
        raise BadInput(f"jobs must be at least 1, got {jobs}", "pass --jobs 1 or more")
    report = TransferReport(src, dst, dry_run)
    started = time.monotonic()
    excl = Excluder(exclude, include)
    async with open_tree(src, report, retry) as s, open_tree(dst, report, retry) as d:
        _refuse_overlap(s, d)
        if isinstance(s, LocalTree) and not s.exists():
            raise BadInput(f"source {s.root} does not exist", "check the path")
        if cache is not None and isinstance(s, LocalTree):
            cache.bind(d)
        known = KnownKeys()
        src_tree, dst_full = await aio.gather(_scan(s, known), _scan(d, known))
        src_tree, dst_tree = excl.apply(src_tree), excl.apply(dst_full)
        plan = await _plan(src_tree, dst_tree, d, checksum, delete)
        report.files_skipped = plan.skipped
        if dry_run:
            report.files_copied, report.bytes_copied = len(plan.copy), plan.nbytes(src_tree)
            report.files_deleted = len(plan.delete)
        else:
            execute = _execute(plan, s, d, src_tree, report, jobs or DEFAULT_JOBS, progress, cache)
            failed = await (execute if _fits_threads(plan, src_tree) else aio.on_loop(execute))
            if isinstance(d, RemoteTree):
                await _finish_remote(plan, failed, d, src_tree, dst_full, excl, delete, report)
    report.seconds = time.monotonic() - started
    if report.errors:
        raise SyncError(f"{len(report.errors)} of {len(plan.copy)} transfers failed; first: {report.errors[0]}",
                        "re-run the same command: it transfers only what is missing", report)
    return report


def _fits_threads(plan: Plan, src: Tree) -> bool:
    """Whether a threaded run copies this plan on its threads: a job dir's few small files. More go on a
    loop, where the store's fast lane takes them in batches, and large files in parts and ranges."""
    return len(plan.copy) <= THREADED_COPIES and all(src.files[r].size <= LARGE_FILE for r in plan.copy)


async def _scan(tree: AnyTree, known: KnownKeys) -> Tree:
    """Scan one side of the sync. A local side tells its keys, when its walk ends, to the other side's
    listing, which a store may then read in key ranges side by side (gpstage.storage.listing)."""
    if isinstance(tree, RemoteTree):
        return await tree.scan(known)
    found = await tree.scan()
    known.tell(found.files)
    return found


def _refuse_overlap(s: AnyTree, d: AnyTree) -> None:
    if isinstance(s, LocalTree) and isinstance(d, LocalTree):
        a, b = os.path.realpath(s.root), os.path.realpath(d.root)
    elif isinstance(s, RemoteTree) and isinstance(d, RemoteTree) and s.provider.scheme == d.provider.scheme:
        a, b = s.root, d.root
    else:
        return
    if a == b or b.startswith(a.rstrip("/") + "/") or a.startswith(b.rstrip("/") + "/"):
        raise BadInput(f"source and destination overlap ({a} and {b})", "sync between two separate trees")


def _verdict(s: Entry, d: Entry | None) -> bool | None:
    """True: copy; False: identical; None: metadata cannot tell, compare content."""
    if d is None or s.size != d.size:
        return True
    if s.mtime_ns is not None and d.mtime_ns is not None:
        return s.mtime_ns // 1000 != d.mtime_ns // 1000  # microseconds: what every file system keeps
    if s.time_ns is None or d.time_ns is None:
        return None
    if s.time_ns == d.time_ns:
        return False  # e.g. a download stamped with the object's upload time
    if abs(s.time_ns - d.time_ns) < AMBIGUOUS_NS:
        return None  # upload times have 1 s precision: too close to call from times alone
    return s.time_ns > d.time_ns  # aws's rule when one side only knows its upload time


def _md5_file(path: str) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(2**20):
            h.update(chunk)
    return h.hexdigest()


async def _md5(e: Entry) -> str | None:
    if e.md5 is None and e.path is not None:
        e.md5 = await aio.to_thread(_md5_file, e.path)
    return e.md5


async def _plan(src: Tree, dst: Tree, d: AnyTree, checksum: bool, delete: bool) -> Plan:
    plan = Plan()
    for rel, se in src.files.items():
        de = dst.files.get(rel)
        verdict = None if checksum and de is not None and se.size == de.size else _verdict(se, de)
        if verdict is None:
            a, b = await aio.gather(_md5(se), _md5(de))
            if a is not None and b is not None:
                same = a == b
            else:
                # the store lists no MD5 for this object (S3 multipart, Azure blobs uploaded in blocks by
                # other tools, GCS composites): content cannot be compared, so --checksum falls back to the
                # metadata rule; undecided (times too close to call) still means copy
                same = checksum and _verdict(se, de) is False
        else:
            same = not verdict
        if not same:
            plan.copy.append(rel)
            continue
        plan.skipped += 1
        assert de is not None
        # with checksums, equal content may carry another mtime: give it the source's
        times_differ = checksum and se.time_ns is not None and (de.time_ns is None or se.time_ns // 1000 != de.time_ns // 1000)
        if isinstance(d, LocalTree) and ((se.mode is not None and se.mode != de.mode) or times_differ):
            plan.fix_meta.append(rel)
    if isinstance(d, LocalTree):
        plan.make_dirs = sorted(r for r in src.dirs
                                if r not in dst.dirs or (src.dirs[r] is not None and src.dirs[r] != dst.dirs[r]))
    if delete:
        plan.delete = sorted(r for r in dst.files if r not in src.files)
        plan.remove_dirs = [r for r in dst.dirs if r not in src.dirs]
    return plan


async def _execute(plan: Plan, s: AnyTree, d: AnyTree, src: Tree, report: TransferReport, jobs: int,
                   progress: Progress | None, cache: InputCache | None = None) -> set[str]:
    """Delete, copy, fix metadata; return the paths whose copy failed (their errors are in the report)."""
    if isinstance(d, LocalTree):
        await aio.to_thread(_local_prepare, plan, d, report)
    else:
        if plan.delete:
            await d.delete(plan.delete)
            report.files_deleted += len(plan.delete)
        resumable = [r for r in plan.copy if d.multipart(src.files[r].size)]
        if resumable:  # a killed earlier upload of these keys left parts behind: they go now
            await d.abort_incomplete(resumable)
    if cache is not None and cache.store is not None:
        await cache.prepare([src.files[r] for r in plan.copy])
    if progress:
        progress.start(len(plan.copy), plan.nbytes(src))
    small, large = aio.Semaphore(jobs), aio.Semaphore(min(jobs, LARGE_JOBS))
    failed: set[str] = set()

    def done(rel: str, e: Entry, err: Exception | None) -> None:
        if err is not None:
            failed.add(rel)
            report.errors.append(str(err) if isinstance(err, GpstageError) else f"{rel}: {err}")
            return
        report.files_copied += 1
        report.bytes_copied += e.size
        if progress:
            progress.advance(e.size)

    async def one(rel: str) -> None:
        e = src.files[rel]
        async with large if e.size > LARGE_FILE else small:
            try:
                if cache is not None and cache.wants(e):
                    await cache.place(e, rel, d, report)
                else:
                    await _copy(rel, e, s, d)
            except (GpstageError, OSError) as err:
                return done(rel, e, err)
        done(rel, e, None)

    # many small downloads: in batches the store's client runs in its own threads (RemoteTree.batch)
    batched = s.batch([(r, src.files[r]) for r in plan.copy]) if isinstance(s, RemoteTree) and isinstance(d, LocalTree) else []
    taken = {rel for rel, _ in batched}

    async def batches(s: RemoteTree, d: LocalTree) -> None:
        for start in range(0, len(batched), BATCH):
            chunk = batched[start:start + BATCH]
            errors = await s.download_batch(chunk, d, jobs)
            for rel, e in chunk:
                done(rel, e, errors.get(rel))

    work = [one(r) for r in plan.copy if r not in taken]
    if batched:
        assert isinstance(s, RemoteTree) and isinstance(d, LocalTree)
        work.append(batches(s, d))
    try:
        await aio.gather(*work)
    finally:
        if progress:
            progress.finish()
    if isinstance(d, LocalTree):
        await aio.to_thread(_local_finish, plan, d, src, report)
    return failed


async def _copy(rel: str, e: Entry, s: AnyTree, d: AnyTree) -> None:
    if isinstance(s, LocalTree):
        assert e.path is not None
        if isinstance(d, LocalTree):
            await aio.to_thread(d.copy_in, e.path, rel, e)
        else:
            await d.upload(FileSource(e.path, e.size), rel)
    elif isinstance(d, LocalTree):
        await s.download(rel, e, d)
    else:  # remote -> remote: streamed through this process part by part, never via the local disk
        await d.upload(ObjectSource(s, rel, e.size), rel)


def _local_prepare(plan: Plan, d: LocalTree, report: TransferReport) -> None:
    for rel in plan.delete:
        d.remove(rel)
    report.files_deleted += len(plan.delete)
    report.dirs_deleted += d.remove_empty_dirs(plan.remove_dirs)
    d.make_dirs("")
    for rel in plan.make_dirs:
        d.make_dirs(rel)
        report.dirs_created += 1


def _local_finish(plan: Plan, d: LocalTree, src: Tree, report: TransferReport) -> None:
    for rel in plan.fix_meta:
        e = src.files[rel]
        d.set_meta(rel, e.mode, e.time_ns)
    report.metadata_updated += len(plan.fix_meta)
    for rel in sorted(plan.make_dirs, key=lambda r: r.count("/"), reverse=True):
        mode = src.dirs[rel]
        if mode is not None:
            os.chmod(d.path_of(rel), mode)


async def _finish_remote(plan: Plan, failed: set[str], d: RemoteTree, src: Tree, dst_before: Tree, excl: Excluder,
                         delete: bool, report: TransferReport) -> None:
    """Verify uploaded sizes against a fresh listing and store the manifest for the new state.

    A path whose copy failed keeps its old entry (still validated by ETag), so the manifest never
    lends the new source's mode or mtime to old bytes.
    """
    after = await d.scan() if (plan.copy or plan.delete) else dst_before
    copied = set(plan.copy) - failed
    for rel in sorted(copied):
        got, want = after.files.get(rel), src.files[rel]
        if got is None or got.size != want.size or (want.md5 and got.md5 and want.md5 != got.md5):
            failed.add(rel)
            report.files_copied -= 1
            report.bytes_copied -= want.size
            report.errors.append(f"{join_url(d.url, rel)}: not stored as sent (size or checksum differs)")
    files = {}
    for rel, e in after.files.items():
        se = src.files.get(rel)
        if se is not None and rel not in failed:
            e.mtime_ns, e.mode = se.time_ns, se.mode
            e.md5 = se.md5 or e.md5
        files[rel] = e
    dirs = dict(src.dirs)
    for rel, mode in dst_before.dirs.items():
        if rel not in dirs and (not delete or excl.excluded_dir(rel)):
            dirs[rel] = mode
    before = d.root_manifest.files
    if await d.write_manifest(Tree(files, dirs)):
        report.metadata_updated += sum(1 for r, rec in d.root_manifest.files.items() if r not in copied and before.get(r) != rec)
