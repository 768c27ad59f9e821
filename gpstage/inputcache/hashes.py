"""SHA-256 of input files, with a local index so that an unchanged file is never read twice.

The index (``$GPSTAGE_STATE_DIR/input-hashes.sqlite``) is keyed by device, inode, size, mtime and ctime:
any write to a file, or a new file under the same name, changes one of them, and a stale row is simply
never found again. sqlite because several submitting processes share it (its locking is what makes that
safe) and it is in the standard library.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path
from typing import Any

from gpstage.statedir import state_dir

BLOCK = 2**20
SQLITE_TIMEOUT_S = 10  # how long a statement waits for another process's write
SETUP_ATTEMPTS = 50
Key = tuple[int, int, int, int, int]


def file_key(st: os.stat_result) -> Key:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def sha256_of(path: str, size: int) -> str:
    """The SHA-256 of the first ``size`` bytes of ``path`` (the listed size, as an upload sends)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        left = size
        while left > 0 and (block := f.read(min(BLOCK, left))):
            h.update(block)
            left -= len(block)
    if left:
        raise OSError(f"{path} shrank while it was hashed")
    return h.hexdigest()


class HashIndex:
    """(device, inode, size, mtime, ctime) → SHA-256, shared by every gpstage process of this user."""

    def __init__(self, path: Path | None = None) -> None:
        if path is None:
            path = state_dir() / "input-hashes.sqlite"
        self.path = path
        self._lock = threading.Lock()
        self._db: Any = None  # a sqlite3 connection, made on first use

    def _conn(self) -> Any:
        if self._db is None:
            import sqlite3  # here, not at the top: the entry (whose bundle has no sqlite3) imports this module via stage

            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=SQLITE_TIMEOUT_S, check_same_thread=False, isolation_level=None)
            # switching to WAL takes the database for a moment, and sqlite answers "locked" to a second process doing
            # the same at once without waiting: the setup is retried, then the index is simply not used
            for attempt in range(SETUP_ATTEMPTS):
                try:
                    db.execute("PRAGMA journal_mode=WAL")
                    db.execute("CREATE TABLE IF NOT EXISTS hashes (dev INTEGER, ino INTEGER, size INTEGER, mtime INTEGER,"
                               " ctime INTEGER, sha256 TEXT NOT NULL, PRIMARY KEY (dev, ino, size, mtime, ctime))")
                    break
                except sqlite3.OperationalError:
                    if attempt == SETUP_ATTEMPTS - 1:
                        db.close()
                        raise
                    time.sleep(0.02 * (attempt + 1))
            self._db = db
        return self._db

    def get(self, key: Key) -> str | None:
        """The recorded hash of a file with this key; None when unknown — or when the index cannot be read:
        it only saves reading files again, so a stage-in never fails for it."""
        try:
            with self._lock:
                row = self._conn().execute("SELECT sha256 FROM hashes WHERE dev=? AND ino=? AND size=? AND mtime=? AND "
                                           "ctime=?", key).fetchone()
        except (OSError, _sqlite_error()):
            return None
        return row[0] if row else None

    def put(self, key: Key, digest: str) -> None:
        """Record a hash, replacing the file's older states, in one transaction; skipped if the index cannot be written."""
        try:
            with self._lock:
                db = self._conn()
                db.execute("BEGIN IMMEDIATE")
                try:
                    db.execute("DELETE FROM hashes WHERE dev=? AND ino=?", key[:2])
                    db.execute("INSERT OR REPLACE INTO hashes VALUES (?, ?, ?, ?, ?, ?)", (*key, digest))
                    db.execute("COMMIT")
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
        except (OSError, _sqlite_error()):
            pass

    def digest(self, path: str, size: int) -> tuple[str, Key]:
        """The hash of ``path`` (from the index when its key is known, else read and recorded) and the key it
        had; a file that changed while it was read raises OSError."""
        before = file_key(os.stat(path))
        if before[2] == size and (found := self.get(before)) is not None:
            return found, before
        digest = sha256_of(path, size)
        after = file_key(os.stat(path))
        if after != before:
            raise OSError(f"{path} changed while it was hashed")
        if after[2] == size:
            self.put(after, digest)
        return digest, after

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


def _sqlite_error() -> type[Exception]:
    import sqlite3

    return sqlite3.Error
