"""The report spool: status reports and events kept, in order, while central is away.

One SQLite file (WAL). Sequences come from an AUTOINCREMENT key: never reused, even after a full
acknowledgement and a restart. Past ``max_reports`` the oldest go and a persisted ``dropped`` counter
grows, lowered only by what central was told, so a failed flush loses no count. A corrupt file is set
aside (``*.corrupt-<time>``) with a warning, as the response cache does; the fresh spool starts at 1.

Each spool file has an epoch, a random id made with it: a rebuilt spool has a new one, and the agent sends it
with its reports, so central numbers the new spool's reports after the ones it holds instead of taking them for
duplicates of old ones (central.reports). Reports are clipped to the bounds central enforces
(edgefleet.report_limits) before they are kept, so one oversized report can never block the spool's flush.

Reports central acknowledged are kept a while longer (``retain_acknowledged_s``, within ``max_reports``: they are
the first to go when the spool is full, uncounted, as central has them). A central restored from a backup holds
less than it acknowledged before: when its figure goes backwards (:meth:`ReportSpool.rewind`), every report still
kept after it is sent again, and the ones no longer kept are counted as dropped, so central knows how many it lost.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable
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


@dataclass(frozen=True)
class Rewind:
    """What a spool does when central's acknowledged sequence went back from `acknowledged_through` to
    `central_holds`: send `resent` reports again (those still kept after `central_holds`) and count `lost`
    (acknowledged, no longer kept) as dropped."""

    acknowledged_through: int
    central_holds: int
    resent: int
    lost: int


def plan_rewind(acknowledged_through: int, central_holds: int, kept_after: int) -> Rewind | None:
    """The rewind when central holds reports only through `central_holds` while it had acknowledged them through
    `acknowledged_through`; None when its figure did not go backwards. `kept_after`: acknowledged reports the
    spool still keeps after `central_holds` (sequences are contiguous, so the rest of the gap is lost)."""
    if central_holds >= acknowledged_through:
        return None
    gap = acknowledged_through - central_holds
    if not 0 <= kept_after <= gap:
        raise ValueError(f"kept_after must be between 0 and {gap}, got {kept_after}")
    return Rewind(acknowledged_through, central_holds, kept_after, gap - kept_after)


def make_room(pending: int, kept_acknowledged: int, max_reports: int) -> tuple[int, int]:
    """Before one more report goes in: how many acknowledged reports to forget (oldest first, not counted: central
    has them) and how many unacknowledged ones to drop (oldest first, counted), so at most `max_reports` stay."""
    excess = max(0, pending + kept_acknowledged + 1 - max_reports)
    forget = min(excess, kept_acknowledged)
    return forget, min(excess - forget, pending)


class ReportSpool:
    def __init__(
        self,
        path: Path,
        max_reports: int = 10_000,
        retain_acknowledged_s: float = 0.0,
        clock: Callable[[], float] = time.time,
    ):
        """`retain_acknowledged_s`: how long a report central acknowledged is kept (0: forgotten at once)."""
        if max_reports < 1:
            raise ValueError(f"max_reports must be at least 1, got {max_reports}")
        if retain_acknowledged_s < 0:
            raise ValueError(f"retain_acknowledged_s must be 0 or more, got {retain_acknowledged_s}")
        self.path = Path(path)
        self._max_reports = max_reports
        self._retain_s = retain_acknowledged_s
        self._clock = clock
        self._lock = threading.Lock()
        self._count = 0  # reports not yet acknowledged
        self._kept = 0  # acknowledged reports still kept
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
                through = self._acknowledged_through_locked()
                forget, drop = make_room(self._count, self._kept, self._max_reports)
                forgotten = self._conn.execute(_FORGET_OLDEST, (through, forget)).rowcount if forget else 0
                dropped = self._conn.execute(_DROP_OLDEST, (through, drop)).rowcount if drop else 0
                if dropped:
                    self._conn.execute("UPDATE counters SET value = value + ? WHERE name = 'dropped'", (dropped,))
                sequence = self._conn.execute(_INSERT, (kind, float(observed_at), bytes(payload))).lastrowid
                # A successful INSERT into a rowid table always sets lastrowid; None would mean no row.
                assert sequence is not None
            self._count += 1 - dropped
            self._kept -= forgotten
            return sequence

    def peek(self, limit: int) -> list[SpooledReport]:
        """Up to ``limit`` reports central has not acknowledged, oldest first; nothing is removed."""
        if limit < 0:
            raise ValueError(f"limit must be at least 0, got {limit}")
        with self._lock:
            rows = self._conn.execute(_OLDEST, (self._acknowledged_through_locked(), limit)).fetchall()
        return [SpooledReport(*row) for row in rows]

    def acknowledge(self, through_sequence: int) -> None:
        """Central has every report up to and including ``through_sequence``: they are kept for
        ``retain_acknowledged_s`` from now, and those acknowledged longer ago are forgotten."""
        now = self._clock()
        with self._lock:
            acked = 0
            with self._conn:
                through = self._acknowledged_through_locked()
                if through_sequence > through:
                    acked = self._conn.execute(_ACKNOWLEDGE, (now, through, through_sequence)).rowcount
                    self._conn.execute(_SET_THROUGH, (through_sequence,))
                    through = through_sequence
                forgotten = self._conn.execute(_FORGET_BEFORE, (through, now - self._retain_s)).rowcount
            self._count -= acked
            self._kept += acked - forgotten

    def rewind(self, central_holds: int) -> Rewind | None:
        """Central holds this spool's reports only through ``central_holds`` (a central restored from a backup):
        when that is below what it acknowledged, every report kept after it is unacknowledged again (peek and
        the next flush send it) and the ones no longer kept are counted as dropped. None when nothing went back."""
        with self._lock:
            with self._conn:
                through = self._acknowledged_through_locked()
                if central_holds >= through:
                    return None
                kept_after = self._conn.execute(_COUNT_BETWEEN, (central_holds, through)).fetchone()[0]
                plan = plan_rewind(through, central_holds, kept_after)
                assert plan is not None
                self._conn.execute(_UNACKNOWLEDGE, (central_holds, through))
                self._conn.execute(_SET_THROUGH, (central_holds,))
                if plan.lost:
                    self._conn.execute("UPDATE counters SET value = value + ? WHERE name = 'dropped'", (plan.lost,))
            self._count += plan.resent
            self._kept -= plan.resent
            return plan

    @property
    def acknowledged_through(self) -> int:
        """The highest sequence central acknowledged (and has not taken back since)."""
        with self._lock:
            return self._acknowledged_through_locked()

    @property
    def kept_acknowledged(self) -> int:
        """Acknowledged reports still kept, to send again should central go back."""
        with self._lock:
            return self._kept

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
        """Reports central has not acknowledged."""
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
        through = conn.execute(_THROUGH).fetchone()[0]
        self._count = conn.execute("SELECT count(*) FROM reports WHERE sequence > ?", (through,)).fetchone()[0]
        self._kept = conn.execute("SELECT count(*) FROM reports WHERE sequence <= ?", (through,)).fetchone()[0]
        self._epoch = conn.execute("SELECT value FROM meta WHERE name = 'epoch'").fetchone()[0]
        return conn

    def _acknowledged_through_locked(self) -> int:
        return self._conn.execute(_THROUGH).fetchone()[0]


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


# A report is acknowledged when its sequence is at most the 'acknowledged_through' counter; acknowledged_at says
# since when (for how long it is kept).
_INSERT = "INSERT INTO reports (kind, observed_at, payload) VALUES (?, ?, ?)"
_OLDEST = "SELECT sequence, kind, observed_at, payload FROM reports WHERE sequence > ? ORDER BY sequence LIMIT ?"
_DROP_OLDEST = (
    "DELETE FROM reports WHERE sequence IN (SELECT sequence FROM reports WHERE sequence > ? ORDER BY sequence LIMIT ?)"
)
_FORGET_OLDEST = (
    "DELETE FROM reports WHERE sequence IN (SELECT sequence FROM reports WHERE sequence <= ? ORDER BY sequence LIMIT ?)"
)
_FORGET_BEFORE = "DELETE FROM reports WHERE sequence <= ? AND acknowledged_at <= ?"
_ACKNOWLEDGE = "UPDATE reports SET acknowledged_at = ? WHERE sequence > ? AND sequence <= ?"
_UNACKNOWLEDGE = "UPDATE reports SET acknowledged_at = NULL WHERE sequence > ? AND sequence <= ?"
_COUNT_BETWEEN = "SELECT count(*) FROM reports WHERE sequence > ? AND sequence <= ?"
_THROUGH = "SELECT value FROM counters WHERE name = 'acknowledged_through'"
_SET_THROUGH = "UPDATE counters SET value = ? WHERE name = 'acknowledged_through'"
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
    (
        3,
        [
            # Acknowledged reports are kept a while (ReportSpool.rewind). Before this every report in the file was
            # unacknowledged (acknowledging deleted them): central has every sequence below the oldest one held,
            # or every sequence ever given out when none is.
            "ALTER TABLE reports ADD COLUMN acknowledged_at REAL",
            "INSERT INTO counters VALUES ('acknowledged_through', coalesce((SELECT min(sequence) - 1 FROM reports),"
            " (SELECT seq FROM sqlite_sequence WHERE name = 'reports'), 0))",
        ],
    ),
]
