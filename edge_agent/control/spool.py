"""The report spool: status reports and events kept, in order, while central is away.

One SQLite file (WAL). Sequences come from an AUTOINCREMENT key: never reused, even after a full
acknowledgement and a restart. Past ``max_reports`` the oldest go and a persisted ``dropped`` counter
grows, lowered only by what central was told, so a failed flush loses no count. A corrupt file is set
aside (``*.corrupt-<time>``) with a warning, as the response cache does; the fresh spool starts at 1.

Each spool file has an epoch, a random id made with it: a rebuilt spool has a new one, and the agent sends it
with its reports, so central numbers the new spool's reports after the ones it holds instead of taking them for
duplicates of old ones (central.reports). Reports are clipped to the bounds central enforces
(edgefleet.report_limits) before they are kept, so one oversized report can never block the spool's flush.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

from google.protobuf.message import DecodeError

from edgefleet import report_limits
from edgefleet.sqlitedb import open_checked, open_or_set_aside
from edgefleet.v1 import common_pb2, fleet_pb2

log = logging.getLogger(__name__)

KINDS = ("status", "event")


@dataclass(frozen=True)
class SpooledReport:
    sequence: int
    kind: str
    observed_at: float
    payload: bytes


class ReportSpool:
    def __init__(self, path: Path, max_reports: int = 10_000):
        if max_reports < 1:
            raise ValueError(f"max_reports must be at least 1, got {max_reports}")
        self.path = Path(path)
        self._max_reports = max_reports
        self._lock = threading.Lock()
        self._count = 0
        self._epoch = ""
        self.corrupt_rebuilds = 0
        self._conn = self._open_or_rebuild()

    def append(self, kind: str, observed_at: float, payload: bytes) -> int:
        """Store one report and return its sequence; drops the oldest when full. A report past central's bounds
        is clipped to them; one still too big clipped is counted as dropped, and 0 is returned."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        fitted = fit_report(kind, payload)
        with self._lock:
            if fitted is None:
                log.warning(
                    "a %s report of %d bytes is too big for central even clipped; counted as dropped",
                    kind,
                    len(payload),
                )
                with self._conn:
                    self._conn.execute("UPDATE counters SET value = value + 1 WHERE name = 'dropped'")
                return 0
            payload = fitted
            with self._conn:
                excess = max(0, self._count - self._max_reports + 1)
                dropped = self._conn.execute(_DROP_OLDEST, (excess,)).rowcount if excess else 0
                if dropped:
                    self._conn.execute("UPDATE counters SET value = value + ? WHERE name = 'dropped'", (dropped,))
                sequence = self._conn.execute(_INSERT, (kind, float(observed_at), bytes(payload))).lastrowid
                # A successful INSERT into a rowid table always sets lastrowid; None would mean no row.
                assert sequence is not None
            self._count += 1 - dropped
            return sequence

    def peek(self, limit: int) -> list[SpooledReport]:
        """Up to ``limit`` reports, oldest first; nothing is removed."""
        if limit < 0:
            raise ValueError(f"limit must be at least 0, got {limit}")
        with self._lock:
            rows = self._conn.execute(_OLDEST, (limit,)).fetchall()
        return [SpooledReport(*row) for row in rows]

    def acknowledge(self, through_sequence: int) -> None:
        """Central has every report up to and including ``through_sequence``."""
        with self._lock:
            with self._conn:
                deleted = self._conn.execute("DELETE FROM reports WHERE sequence <= ?", (through_sequence,)).rowcount
            self._count -= deleted

    def dropped_unreported(self) -> int:
        with self._lock:
            return self._conn.execute(_DROPPED).fetchone()[0]

    def mark_dropped_reported(self, count: int) -> None:
        """Central has been told of ``count`` dropped reports."""
        with self._lock, self._conn:
            unreported = self._conn.execute(_DROPPED).fetchone()[0]
            if not 0 <= count <= unreported:
                raise ValueError(f"count must be between 0 and {unreported} (drops not yet reported), got {count}")
            self._conn.execute("UPDATE counters SET value = value - ? WHERE name = 'dropped'", (count,))

    @property
    def epoch(self) -> str:
        """This spool file's epoch: made with the file, new when the spool is rebuilt."""
        return self._epoch

    def __len__(self) -> int:
        with self._lock:
            return self._count

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _open_or_rebuild(self) -> sqlite3.Connection:
        conn, rebuilt = open_or_set_aside(self.path, "report spool", self._open)
        self.corrupt_rebuilds += rebuilt
        return conn

    def _open(self) -> sqlite3.Connection:
        # FULL: a spool that loses its tail on power loss would hand out sequences again.
        conn = open_checked(self.path, _MIGRATIONS, synchronous="FULL")
        self._count = conn.execute("SELECT count(*) FROM reports").fetchone()[0]
        self._epoch = conn.execute("SELECT value FROM meta WHERE name = 'epoch'").fetchone()[0]
        return conn


def fit_report(kind: str, payload: bytes) -> bytes | None:
    """The payload within central's bounds (edgefleet.report_limits): as it is when it fits, clipped when it does
    not, None when even clipped it is too big. A payload that is not a NodeStatus or an Event is not judged."""
    message = common_pb2.NodeStatus() if kind == "status" else fleet_pb2.Event()
    try:
        message.ParseFromString(payload)
    except DecodeError:
        return payload
    if not report_limits.problem(message, kind):
        return payload
    if not report_limits.clip(message):
        return None
    return message.SerializeToString()


_INSERT = "INSERT INTO reports (kind, observed_at, payload) VALUES (?, ?, ?)"
_OLDEST = "SELECT sequence, kind, observed_at, payload FROM reports ORDER BY sequence LIMIT ?"
_DROP_OLDEST = "DELETE FROM reports WHERE sequence IN (SELECT sequence FROM reports ORDER BY sequence LIMIT ?)"
_DROPPED = "SELECT value FROM counters WHERE name = 'dropped'"
_MIGRATIONS = [
    (
        1,
        [
            "CREATE TABLE reports (sequence INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL,"
            " observed_at REAL NOT NULL, payload BLOB NOT NULL)",
            "CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
            "INSERT INTO counters VALUES ('dropped', 0)",
        ],
    ),
    (
        2,
        [
            # The spool's epoch, made with the file (a spool from before epochs gets one now, and central
            # takes it as the same spool when its numbering continues: central.reports.next_base).
            "CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
            "INSERT INTO meta VALUES ('epoch', lower(hex(randomblob(16))))",
        ],
    ),
]
