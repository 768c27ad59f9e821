"""The input cache: each input file's bytes stored once per store, content-addressed, and placed at every
job's input key by a server-side copy (docs/input-cache.md).

Layout under the cache root (default ``<storage_root>/.gpstage-cache``)::

    sha256/<hash>           the bytes, with their hash as metadata (gpstagesha256)
    refs/<hash>/<job id>    a reference marker: that job placed this object (written BEFORE the copy)
    jobs/<job id>.json      the hashes a job referenced, so ``gpstage clean`` finds its markers

What it owns: hashing with a local index (:mod:`.hashes`), placing files through the cache at stage-in
(:mod:`.place`), and listing, sizing and collecting the cache (:mod:`.manage`). It is storage-only: the
container entry never sees it — a job's inputs dir looks exactly as a plain upload makes it.
"""

from __future__ import annotations

CACHE_DIR_NAME = ".gpstage-cache"
OBJECTS = "sha256"
REFS = "refs"
JOBS = "jobs"
DEFAULT_MIN_SIZE = 2**20  # smaller files are uploaded as they are: a PUT costs what a server-side copy does


def object_rel(digest: str) -> str:
    return f"{OBJECTS}/{digest}"


def marker_rel(digest: str, job_id: str) -> str:
    return f"{REFS}/{digest}/{job_id}"


def job_rel(job_id: str) -> str:
    return f"{JOBS}/{job_id}.json"
