"""The benchmark's data sets: generated from a fixed seed, cached under the work dir, described exactly.

Why generated, not downloaded: the numbers must be reproducible on any machine without network
access, and a data set's layout (file count, sizes, nesting) is what a sync tool's cost depends on.
Content is pseudo-random (incompressible), so no tool or server gains from compression.

Each data set knows its exact ``{relative path: size}`` map, and the runner compares the MD5 of every file
a tool left at the destination with the source's, so a tool that silently skipped or mangled a file
cannot produce a number.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path

KiB, MiB = 1024, 1024 * 1024
SEED = 20240601
CHUNK = 4 * MiB


@dataclass(frozen=True)
class Dataset:
    key: str            # (a)…(g)
    name: str           # short id used in paths and on the command line
    title: str          # for the report
    ops: tuple[str, ...]  # which operations it is timed with
    sizes: dict[str, int] = field(repr=False, hash=False, compare=False)
    seaweedfs_only: bool = False

    @property
    def files(self) -> int:
        return len(self.sizes)

    @property
    def nbytes(self) -> int:
        return sum(self.sizes.values())

    def describe(self) -> str:
        return f"({self.key}) {self.title}: {self.files:,} files, {_human(self.nbytes)}"


def _human(n: int) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", MiB), ("KiB", KiB)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def _nested_small(count: int, size: int) -> dict[str, int]:
    """``count`` files of ``size`` bytes, 10 per dir, dirs nested two levels deep (d03/e07/f_00734.dat)."""
    return {f"d{i // 100:02d}/e{i // 10 % 10:02d}/f_{i:05d}.dat": size for i in range(count)}


def _gsea(small: int, mid: int, big: int, target: int, rnd: random.Random) -> dict[str, int]:
    """A GenePattern GSEA job result: logs at the top, one analysis dir of per-gene-set reports
    (html/tsv/png, 1–40 KiB), heat maps and ranked lists (1–5 MiB), and ``edb/`` with the two big files."""
    top = "my_analysis.Gsea.1717243000000"
    sizes: dict[str, int] = {"gp_execution_log.txt": rnd.randint(1 * KiB, 4 * KiB), "stdout.txt": rnd.randint(1 * KiB, 40 * KiB),
                             "stderr.txt": 1 * KiB}
    kinds = ((".html", ""), (".tsv", ""), (".png", "enplot_"))
    n = 0
    while len(sizes) < small:
        ext, pre = kinds[n % 3]
        gene_set = f"GENESET_{n // 3:04d}"
        sub = "" if n // 3 % 4 else "snapshots/"
        sizes[f"{top}/{sub}{pre}{gene_set}{ext}"] = rnd.randint(1 * KiB, 40 * KiB)
        n += 1
    mids = [rnd.randint(1 * MiB, 5 * MiB) for _ in range(mid)]
    bigs = [rnd.randint(20 * MiB, 40 * MiB) for _ in range(big)]
    rest = target - sum(sizes.values()) - sum(bigs)
    if mids and rest > 0:  # scale the middle bucket towards the target total, within 1–5 MiB
        f = rest / sum(mids)
        mids = [min(5 * MiB, max(1 * MiB, int(s * f))) for s in mids]
    for i, s in enumerate(mids):
        kind = ("heatmaps/heat_map_{:03d}.png", "ranked_gene_list_{:03d}.tsv", "edb/gene_sets_{:03d}.gmt")[i % 3]
        sizes[f"{top}/{kind.format(i)}"] = s
    for i, s in enumerate(bigs):
        sizes[f"{top}/edb/{('results.edb', 'expression.rnk')[i % 2]}" + (f".{i}" if i > 1 else "")] = s
    return sizes


def _gp_job(rnd: random.Random) -> dict[str, int]:
    """A typical GenePattern job's working dir: 20 files, 80 KiB — the metadata files, a few results."""
    names = [".gp_metadata/exec.sh", ".gp_metadata/stdout.txt", ".gp_metadata/stderr.txt", ".gp_metadata/exit_code.txt",
             "gp_execution_log.txt", *[f"results/out_{i:02d}.{('tsv', 'gct', 'odf', 'png')[i % 4]}" for i in range(15)]]
    weights = [rnd.randint(1, 8) for _ in names]
    return {n: 80 * KiB * w // sum(weights) for n, w in zip(names, weights, strict=True)}


def build(quick: bool) -> dict[str, Dataset]:
    """The data sets; ``quick`` keeps their shapes but makes them tiny, and leaves (f) out."""
    rnd = random.Random(SEED)
    job = ("g", "gpjob", "a typical GenePattern job dir: 20 files, 80 KiB", ("up", "down"), _gp_job(rnd), False)
    if quick:
        specs = [
            ("a", "small", "20 × 4 KiB, nested dirs", ("up", "noop", "down"), _nested_small(20, 4 * KiB), False),
            ("b", "big", "one 12 MiB file", ("up", "down"), {"big.bin": 12 * MiB}, False),
            ("c", "noop", "200 unchanged small files (no-op only)", ("noop",), _nested_small(200, 1 * KiB), False),
            ("d", "gsea", "GSEA-like output, scaled down", ("up", "down"), _gsea(40, 3, 0, 4 * MiB, rnd), False),
            ("e", "huge", "one 24 MiB file (peak RSS)", ("up", "down"), {"huge.bin": 24 * MiB}, True),
            job,
        ]
    else:
        specs = [
            ("a", "small", "1,000 × 4 KiB, nested dirs", ("up", "noop", "down"), _nested_small(1000, 4 * KiB), False),
            ("b", "big", "one 256 MiB file", ("up", "down"), {"big.bin": 256 * MiB}, False),
            ("c", "noop", "10,000 unchanged small files (no-op only)", ("noop",), _nested_small(10_000, 1 * KiB), False),
            ("d", "gsea", "GenePattern GSEA output", ("up", "down"), _gsea(4_900, 121, 2, 410_000_000, rnd), False),
            ("e", "huge", "one 1 GiB file (peak RSS)", ("up", "down"), {"huge.bin": 1024 * MiB}, True),
            ("f", "noop100k", "100,000 unchanged small files (no-op only)", ("noop",), _nested_small(100_000, 256), True),
            job,
        ]
    return {s[1]: Dataset(key=s[0], name=s[1], title=s[2], ops=s[3], sizes=s[4], seaweedfs_only=s[5])
            for s in specs}


def _paths(ds: Dataset, data_root: Path, quick: bool) -> tuple[Path, Path]:
    root = data_root / (f"quick-{ds.name}" if quick else ds.name)
    return root, root.with_name(root.name + ".json")


def drop(data_root: Path, sets: list[Dataset], quick: bool) -> None:
    for ds in sets:
        root, stamp = _paths(ds, data_root, quick)
        stamp.unlink(missing_ok=True)
        shutil.rmtree(root, ignore_errors=True)


def materialise(ds: Dataset, data_root: Path, quick: bool) -> Path:
    """The data set's directory, generated on first use; a stamp holding the exact sizes marks it complete."""
    root, stamp = _paths(ds, data_root, quick)
    want = json.dumps({"seed": SEED, "sizes": ds.sizes}, sort_keys=True)
    if stamp.exists() and stamp.read_text() == want and root.is_dir():
        return root
    tmp = root.with_name(root.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(root, ignore_errors=True)
    rnd = random.Random(f"{SEED}-{ds.name}")
    for rel, size in sorted(ds.sizes.items()):
        path = tmp / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            left = size
            while left:
                n = min(left, CHUNK)
                f.write(rnd.randbytes(n))
                left -= n
    os.replace(tmp, root)
    stamp.write_text(want)
    return root


def md5_of(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


@functools.cache
def source_digests(root: Path) -> dict[str, str]:
    """``{relative path: MD5}`` of a data set's files, read once per run: what every tool's copy must equal."""
    return local_digests(root)


def local_digests(root: Path) -> dict[str, str]:
    """``{relative path: MD5}`` of every file under ``root`` (what a download left behind)."""
    return {rel: md5_of(root / rel) for rel in local_sizes(root)}


def local_sizes(root: Path) -> dict[str, int]:
    """``{relative path: size}`` of every file under ``root`` (what a download left behind)."""
    out: dict[str, int] = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            p = Path(dirpath) / name
            out[p.relative_to(root).as_posix()] = p.stat().st_size
    return out
