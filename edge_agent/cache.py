"""The response cache: one SQLite file (WAL) in the data dir.

Entries are complete, non-streamed OpenAI responses (JSON bytes) under the key
from :func:`edge_agent.cache_policy.cache_key`. Expired entries are misses;
past ``max_bytes`` the least recently used entries go. A corrupt or
unreadable file is set aside (renamed ``*.corrupt-<time>``) and rebuilt with a
warning: losing cached answers is fine, not serving is not.

Access times of hits are kept in memory and written in batches, so a hit
costs one indexed read and no write.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edgefleet.sqlitedb import open_checked, open_or_set_aside, set_aside

log = logging.getLogger(__name__)

_SCHEMA_VERSION = 1
_TOUCH_FLUSH_EVERY = 512


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
        self.corrupt_rebuilds = 0
        self._conn = self._open_or_rebuild()

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
                if self._bytes > self._max_bytes:
                    self._evict_locked()
            except sqlite3.DatabaseError as exc:
                self._rebuild_locked(exc)

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(self._entries, self._bytes, self.corrupt_rebuilds)

    def set_limits(self, max_bytes: int, ttl_s: float) -> None:
        with self._lock:
            self._max_bytes, self._ttl_s = max_bytes, ttl_s
            if self._bytes > self._max_bytes:
                self._evict_locked()

    def close(self) -> None:
        with self._lock:
            with contextlib.suppress(sqlite3.DatabaseError):
                self._flush_touched_locked()
            self._conn.close()

    # -- internals ---------------------------------------------------------

    def _open_or_rebuild(self) -> sqlite3.Connection:
        conn, rebuilt = open_or_set_aside(self.path, "response cache", self._open)
        self.corrupt_rebuilds += rebuilt
        return conn

    def _open(self) -> sqlite3.Connection:
        conn = open_checked(self.path, _MIGRATIONS)
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

    def _evict_locked(self) -> None:
        self._flush_touched_locked()
        with self._conn:
            rows = self._conn.execute("SELECT key, size FROM entries ORDER BY accessed_at ASC").fetchall()
            for key, size in rows:
                if self._bytes <= self._max_bytes:
                    break
                self._conn.execute("DELETE FROM entries WHERE key = ?", (key,))
                self._bytes -= size
                self._entries -= 1


_MIGRATIONS = [
    (
        1,
        [
            "CREATE TABLE entries (key TEXT PRIMARY KEY, model_sha256 TEXT NOT NULL, value BLOB NOT NULL,"
            " size INTEGER NOT NULL, created_at REAL NOT NULL, accessed_at REAL NOT NULL)",
            "CREATE INDEX entries_accessed_at ON entries (accessed_at)",
        ],
    ),
]
assert _MIGRATIONS[-1][0] == _SCHEMA_VERSION
