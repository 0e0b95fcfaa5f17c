"""The response cache: one SQLite file (WAL) in the data dir.

Entries are complete, non-streamed OpenAI responses (JSON bytes) under the key
from :func:`edge_agent.cache_policy.cache_key`. Expired entries are misses;
past ``max_bytes`` the least recently used entries go. A corrupt or
unreadable file is set aside (renamed ``*.corrupt-<time>``) and rebuilt with a
warning: losing cached answers is fine, not serving is not.

Access times of hits are kept in memory and written in batches, so a hit
costs one indexed read and no write.

The agent calls ``get`` and ``put`` on its event loop, so no call does work that
grows with the number of entries. The byte total is kept in memory (one aggregate
query at open), so "over the bound?" costs nothing. Past ``max_bytes`` a put
drops the oldest rows by ``accessed_at``, read through its index at most
:data:`EVICT_BATCH_ROWS` at a time, down to a low-water mark
(:func:`low_water_bytes`): the next few hundred puts then evict nothing. Expired
entries go the same way, through the ``created_at`` index, one bounded batch per
put at most every :data:`EXPIRE_EVERY_S` (or at the next put while a batch came
back full).

SQLite's automatic WAL checkpoint would run inside whichever commit crosses its
threshold, with an fsync, on the event loop (25-64 ms seen at random puts). The
serving connection turns it off; a background thread with its own connection
checkpoints (PASSIVE: it never blocks the loop's reads and writes) every
:data:`CHECKPOINT_EVERY_WRITES` commits or :data:`CHECKPOINT_EVERY_S`.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from edgefleet.sqlitedb import open_checked, open_or_set_aside, set_aside

log = logging.getLogger(__name__)

_SCHEMA_VERSION = 2
_TOUCH_FLUSH_EVERY = 512
# The most rows one eviction or expiry step reads and deletes: what bounds the time a put holds the loop.
EVICT_BATCH_ROWS = 256
EXPIRE_BATCH_ROWS = 256
# How often (by the cache's clock) a put looks for expired entries when the last look found few.
EXPIRE_EVERY_S = 60.0

# The background checkpoint's triggers (SQLite's own default is 1,000 WAL pages).
CHECKPOINT_EVERY_WRITES = 500
CHECKPOINT_EVERY_S = 5.0

# Both read through an index, never the whole table (tests/unit/agent/test_cache.py checks the plans).
OLDEST_SQL = "SELECT key, size FROM entries ORDER BY accessed_at LIMIT ?"
EXPIRED_SQL = "SELECT key, size FROM entries WHERE created_at < ? ORDER BY created_at LIMIT ?"


def low_water_bytes(max_bytes: int) -> int:
    """Where eviction stops: 1/32 under the bound, so eviction runs once per batch of puts, not on each."""
    return max_bytes - max_bytes // 32


def rows_to_evict(sizes: Sequence[int], total_bytes: int, low_water: int) -> int:
    """Of the oldest rows' sizes (oldest first), how many to drop for ``total_bytes`` to reach
    ``low_water``; all of them when that is not enough (the next step takes more)."""
    for n, size in enumerate(sizes):
        if total_bytes <= low_water:
            return n
        total_bytes -= size
    return len(sizes)


@dataclass(frozen=True)
class CacheStats:
    entries: int
    bytes: int
    corrupt_rebuilds: int


class ResponseCache:
    def __init__(self, path: Path, max_bytes: int, ttl_s: float, clock: Callable[[], float] = time.time):
        self.path = Path(path)
        self._max_bytes = max_bytes
        self._ttl_s = ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._touched: dict[str, float] = {}
        self._bytes = 0
        self._entries = 0
        self._next_expiry_at = 0.0
        self.corrupt_rebuilds = 0
        self._conn = self._open_or_rebuild()
        self.checkpoints = 0  # completed background checkpoints (for tests and curiosity)
        self._writes_since_checkpoint = 0
        self._generation = 0  # bumped when the file is rebuilt, so the checkpointer reopens it
        self._wake = threading.Event()
        self._closed = False
        self._checkpointer = threading.Thread(target=self._checkpoint_loop, name="cache-checkpoint", daemon=True)
        self._checkpointer.start()

    # -- public ------------------------------------------------------------

    def get(self, key: str) -> bytes | None:
        with self._lock:
            try:
                row = self._conn.execute("SELECT value, created_at FROM entries WHERE key = ?", (key,)).fetchone()
                if row is None:
                    return None
                value, created_at = row
                now = self._clock()
                if now - created_at > self._ttl_s:
                    self._delete_locked(key)
                    return None
                self._touched[key] = now
                if len(self._touched) >= _TOUCH_FLUSH_EVERY:
                    self._flush_touched_locked()
                return value
            except sqlite3.DatabaseError as exc:
                self._rebuild_locked(exc)
                return None

    def put(self, key: str, model_sha256: str, value: bytes) -> None:
        if len(value) > self._max_bytes:
            return
        with self._lock:
            try:
                now = self._clock()
                old = self._conn.execute("SELECT size FROM entries WHERE key = ?", (key,)).fetchone()
                with self._conn:
                    self._conn.execute(
                        "INSERT OR REPLACE INTO entries (key, model_sha256, value, size, created_at, accessed_at)"
                        " VALUES (?, ?, ?, ?, ?, ?)",
                        (key, model_sha256, value, len(value), now, now),
                    )
                self._bytes += len(value) - (old[0] if old else 0)
                self._entries += 0 if old else 1
                self._touched.pop(key, None)
                self._wrote_locked()
                if now >= self._next_expiry_at:
                    self._expire_batch_locked(now)
                # More than one step only when this value outweighs a whole step of older ones.
                while self._bytes > self._max_bytes and self._evict_batch_locked():
                    pass
            except sqlite3.DatabaseError as exc:
                self._rebuild_locked(exc)

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(self._entries, self._bytes, self.corrupt_rebuilds)

    def set_limits(self, max_bytes: int, ttl_s: float) -> None:
        """Called off the event loop (a reload); takes the lock one eviction step at a time, so the loop's
        gets and puts wait for one step at most."""
        with self._lock:
            self._max_bytes, self._ttl_s = max_bytes, ttl_s
            self._next_expiry_at = 0.0
        while True:
            with self._lock:
                try:
                    if self._bytes <= self._max_bytes or not self._evict_batch_locked():
                        return
                except sqlite3.DatabaseError as exc:
                    self._rebuild_locked(exc)
                    return

    def close(self) -> None:
        with self._lock:
            self._closed = True
            with contextlib.suppress(sqlite3.DatabaseError):
                self._flush_touched_locked()
            self._conn.close()
        self._wake.set()
        self._checkpointer.join()

    def checkpoint_soon(self) -> None:
        """Ask the background thread to checkpoint now rather than at its next trigger."""
        self._wake.set()

    # -- internals ---------------------------------------------------------

    def _open_or_rebuild(self) -> sqlite3.Connection:
        conn, rebuilt = open_or_set_aside(self.path, "response cache", self._open)
        self.corrupt_rebuilds += rebuilt
        return conn

    def _open(self) -> sqlite3.Connection:
        conn = open_checked(self.path, _MIGRATIONS)
        conn.execute("PRAGMA wal_autocheckpoint = 0")  # the checkpointer thread does it, off the loop
        self._entries, self._bytes = conn.execute("SELECT count(*), coalesce(sum(size), 0) FROM entries").fetchone()
        return conn

    def _set_aside(self, exc: Exception) -> None:
        set_aside(self.path, "response cache", exc)
        self.corrupt_rebuilds += 1

    def _rebuild_locked(self, exc: Exception) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._conn.close()
        self._touched.clear()
        self._set_aside(exc)
        self._conn = self._open()
        self._generation += 1

    def _wrote_locked(self) -> None:
        self._writes_since_checkpoint += 1
        if self._writes_since_checkpoint >= CHECKPOINT_EVERY_WRITES:
            self._writes_since_checkpoint = 0
            self._wake.set()

    def _checkpoint_loop(self) -> None:
        conn: sqlite3.Connection | None = None
        generation = -1
        try:
            while True:
                self._wake.wait(CHECKPOINT_EVERY_S)
                self._wake.clear()
                with self._lock:
                    if self._closed:
                        return
                    current = self._generation
                try:
                    if conn is None or generation != current:
                        if conn is not None:
                            conn.close()
                        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
                        generation = current
                    busy, _, _ = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    self.checkpoints += 0 if busy else 1
                except sqlite3.Error as exc:  # the file being rebuilt, say: the next round reopens it
                    log.debug("response cache checkpoint failed: %s", exc)
                    if conn is not None:
                        conn.close()
                    conn = None
        finally:
            if conn is not None:
                conn.close()

    def _delete_locked(self, key: str) -> None:
        with self._conn:
            row = self._conn.execute("DELETE FROM entries WHERE key = ? RETURNING size", (key,)).fetchone()
        if row:
            self._bytes -= row[0]
            self._entries -= 1
        self._touched.pop(key, None)

    def _flush_touched_locked(self) -> None:
        if self._touched:
            with self._conn:
                self._conn.executemany(
                    "UPDATE entries SET accessed_at = ? WHERE key = ?", [(t, k) for k, t in self._touched.items()]
                )
            self._touched.clear()
            self._wrote_locked()

    def _evict_batch_locked(self) -> bool:
        """Drop up to EVICT_BATCH_ROWS least recently used rows, down to the low-water mark. False when
        nothing could go (an empty table)."""
        rows = self._conn.execute(OLDEST_SQL, (EVICT_BATCH_ROWS,)).fetchall()
        if any(key in self._touched for key, _ in rows):
            # A recent hit not yet written: write the hits, then their rows are no longer the oldest.
            self._flush_touched_locked()
            rows = self._conn.execute(OLDEST_SQL, (EVICT_BATCH_ROWS,)).fetchall()
        n = rows_to_evict([size for _, size in rows], self._bytes, low_water_bytes(self._max_bytes))
        return self._delete_many_locked([key for key, _ in rows[:n]]) > 0

    def _expire_batch_locked(self, now: float) -> None:
        rows = self._conn.execute(EXPIRED_SQL, (now - self._ttl_s, EXPIRE_BATCH_ROWS)).fetchall()
        self._delete_many_locked([key for key, _ in rows])
        # A full batch may have left more behind: look again at the next put.
        self._next_expiry_at = now if len(rows) == EXPIRE_BATCH_ROWS else now + EXPIRE_EVERY_S

    def _delete_many_locked(self, keys: list[str]) -> int:
        if not keys:
            return 0
        marks = ",".join("?" * len(keys))
        with self._conn:
            sizes = self._conn.execute(f"DELETE FROM entries WHERE key IN ({marks}) RETURNING size", keys).fetchall()
        self._wrote_locked()
        self._bytes -= sum(size for (size,) in sizes)
        self._entries -= len(sizes)
        for key in keys:
            self._touched.pop(key, None)
        return len(sizes)


_MIGRATIONS = [
    (
        1,
        [
            "CREATE TABLE entries (key TEXT PRIMARY KEY, model_sha256 TEXT NOT NULL, value BLOB NOT NULL,"
            " size INTEGER NOT NULL, created_at REAL NOT NULL, accessed_at REAL NOT NULL)",
            "CREATE INDEX entries_accessed_at ON entries (accessed_at)",
        ],
    ),
    # TTL expiry in bounded batches, oldest first, without reading the table.
    (2, ["CREATE INDEX entries_created_at ON entries (created_at)"]),
]
assert _MIGRATIONS[-1][0] == _SCHEMA_VERSION
