"""The routing audit: every routing decision recorded on the box, hash-chained, bounded, and summarised.

Each request's decision (tenant, endpoint, data class, the detectors that fired, route, reason, HTTP
status, and an HMAC of the prompt, never the prompt) becomes one row of ``<data>/audit/routing.db``.
The hash chain (:mod:`edgefleet.hashchain`, as central's audit log) is extended synchronously in
:meth:`RoutingAudit.record`, in request order, for a few microseconds on the event loop; a writer
thread inserts the rows in batches (every 0.2 s or 500 rows), one transaction each, and deletes the
oldest rows beyond ``max_entries``, keeping the hash the first kept row links to (the anchor) so what
is left still verifies. Counts per (data class, route) since the last :meth:`~RoutingAudit.take_summary`
go to central in heartbeats with the chain's head, which pins the local chain from off the box.

The box keeps serving whatever the disk does: a batch that fails is logged once, counted and retried
with the next; rows beyond ``max_backlog`` waiting for the disk are dropped and counted in ``dropped``;
a file that cannot be opened at all leaves the audit summarising in memory, every row counted as
dropped. Rows are on disk after :meth:`~RoutingAudit.flush` (WAL, synchronous=NORMAL: they survive a
crash of the process). The file is read while the agent writes it (``edge-agent audit list|verify``)
through :func:`read_entries` and :func:`verify_file`, which only read.

    RoutingAuditError (AgentError)   the audit file cannot be read (missing, not SQLite)
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from edge_agent.errors import AgentError
from edgefleet.hashchain import GENESIS_HASH, ChainCheck, chain_hash, verify_links
from edgefleet.sqlitedb import open_checked, open_or_set_aside

log = logging.getLogger(__name__)

LOCAL = "local"
REFUSED = "refused"
UPSTREAM_PREFIX = "upstream:"
_KEY_BYTES = 32


class RoutingAuditError(AgentError):
    """The routing audit file cannot be read; the message names it and says why."""


def audit_path(data_dir: Path) -> Path:
    """Where the agent keeps its routing audit: ``<data_dir>/audit/routing.db``."""
    return Path(data_dir) / "audit" / "routing.db"


@dataclass(frozen=True)
class RoutingRecord:
    at: float  # time.time()
    tenant: str
    endpoint: str  # "chat" | "completions" | "embeddings"
    data_class: str
    detectors: tuple[str, ...]  # detector names that fired, sorted
    route: str  # "local" | "upstream:NAME" | "refused"
    reason: str  # short machine words: "local", "queue_full", "class_exceeds_key", ...
    status: int  # HTTP status answered
    prompt_hash: str  # from RoutingAudit.prompt_hash


@dataclass(frozen=True)
class AuditRow:
    """A recorded decision with its place in the chain."""

    sequence: int
    at: float
    tenant: str
    endpoint: str
    data_class: str
    detectors: tuple[str, ...]
    route: str
    reason: str
    status: int
    prompt_hash: str
    previous_hash: str
    hash: str


@dataclass(frozen=True)
class RouteCount:
    data_class: str
    route: str
    count: int


def row_hash(
    sequence: int,
    at: float,
    tenant: str,
    endpoint: str,
    data_class: str,
    detectors: Iterable[str],
    route: str,
    reason: str,
    status: int,
    prompt_hash: str,
    previous_hash: str,
) -> str:
    return chain_hash(
        sequence,
        repr(at),
        tenant,
        endpoint,
        data_class,
        list(detectors),
        route,
        reason,
        status,
        prompt_hash,
        previous_hash,
    )


def _recompute(row: AuditRow) -> str:
    try:
        return row_hash(
            row.sequence,
            row.at,
            row.tenant,
            row.endpoint,
            row.data_class,
            row.detectors,
            row.route,
            row.reason,
            row.status,
            row.prompt_hash,
            row.previous_hash,
        )
    except (TypeError, ValueError):  # a cell edited to another type (a blob): it cannot match
        return ""


_MIGRATIONS = [
    (
        1,
        [
            "CREATE TABLE routing (sequence INTEGER PRIMARY KEY, at REAL NOT NULL, tenant TEXT NOT NULL,"
            " endpoint TEXT NOT NULL, data_class TEXT NOT NULL, detectors TEXT NOT NULL, route TEXT NOT NULL,"
            " reason TEXT NOT NULL, status INTEGER NOT NULL, prompt_hash TEXT NOT NULL, previous_hash TEXT NOT NULL,"
            " hash TEXT NOT NULL)",
            # anchor_sequence / anchor_hash: the last row deleted by the bound, which the first kept row links to.
            "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        ],
    ),
]
_COLUMNS = (
    "sequence, at, tenant, endpoint, data_class, detectors, route, reason, status, prompt_hash, previous_hash, hash"
)


class RoutingAudit:
    """record() from the event loop; take_summary()/head from the control loop's thread; flush()/close()
    from anywhere. One instance per file: two agents on one data dir would interleave their chains."""

    def __init__(
        self,
        path: Path,
        max_entries: int = 100_000,
        *,
        batch_rows: int = 500,
        batch_interval_s: float = 0.2,
        max_backlog: int = 50_000,
    ):
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        self.path = Path(path)
        self.key_path = self.path.with_suffix(".key")
        self.max_entries = max_entries
        self._batch_rows = batch_rows
        self._interval = batch_interval_s
        self._max_backlog = max(max_backlog, batch_rows)
        self._cond = threading.Condition(threading.Lock())
        self._pending: list[tuple] = []
        self._counts: dict[tuple[str, str], int] = {}
        self._flush_wanted = False
        self._stopping = False
        self._closed = False
        self._tried_through = 0  # the highest sequence a write attempt has covered (written or not)
        self._written_through = 0  # the highest sequence on disk
        self._attempts = 0
        self.dropped = 0  # rows that will never reach the disk
        self.write_errors = 0  # failed write attempts
        self._failing = False
        self._hmac = None
        self._key_lock = threading.Lock()
        self._conn = self._open()
        self._sequence, self._head_hash, self._anchor_sequence = self._read_head()
        self._tried_through = self._written_through = self._sequence
        self._thread = threading.Thread(target=self._run, name="edgefleet-routing-audit", daemon=True)
        self._thread.start()

    # -- opening -------------------------------------------------------------------

    def _open(self) -> sqlite3.Connection | None:
        try:
            conn, _ = open_or_set_aside(self.path, "routing audit", lambda: open_checked(self.path, _MIGRATIONS))
            return conn
        except (sqlite3.Error, OSError) as exc:
            log.error(
                "cannot open the routing audit %s (%s): routing is summarised for central but not recorded "
                "on this box; every decision is counted as dropped",
                self.path,
                exc,
            )
            return None

    def _read_head(self) -> tuple[int, str, int]:
        """(last sequence, its hash, anchor sequence): a reopened file continues its chain."""
        if self._conn is None:
            return 0, GENESIS_HASH, 0
        last = self._conn.execute("SELECT sequence, hash FROM routing ORDER BY sequence DESC LIMIT 1").fetchone()
        anchor_sequence, anchor_hash = _anchor(self._conn)
        if last is not None:
            return last[0], last[1], anchor_sequence
        return anchor_sequence, anchor_hash, anchor_sequence

    # -- the request path ------------------------------------------------------------

    def prompt_hash(self, text: str) -> str:
        """HMAC-SHA256 of the prompt, hex, keyed with this box's secret: stable on the box, and a hash cannot
        be confirmed off the box by hashing guessed prompts."""
        mac = self._hmac or self._load_key()
        digest = mac.copy()
        digest.update(text.encode("utf-8", "surrogatepass"))
        return digest.hexdigest()

    def record(self, rec: RoutingRecord) -> None:
        """Chain the decision and queue it for the writer; never waits on the disk."""
        # Stored as hashed: a float time and an int status read back the same, text never None.
        at, status = float(rec.at), int(rec.status)
        tenant, endpoint, data_class = _text(rec.tenant), _text(rec.endpoint), _text(rec.data_class)
        route, reason, prompt = _text(rec.route), _text(rec.reason), _text(rec.prompt_hash)
        detectors = tuple(sorted(map(_text, rec.detectors))) if rec.detectors else ()
        detectors_json = _detectors_json(detectors)
        key = (data_class, route)
        with self._cond:
            self._counts[key] = self._counts.get(key, 0) + 1
            if self._closed:
                self.dropped += 1
                return
            sequence = self._sequence + 1
            previous = self._head_hash
            digest = row_hash(
                sequence, at, tenant, endpoint, data_class, detectors, route, reason, status, prompt, previous
            )
            self._sequence, self._head_hash = sequence, digest
            self._pending.append(
                (
                    sequence,
                    at,
                    tenant,
                    endpoint,
                    data_class,
                    detectors_json,
                    route,
                    reason,
                    status,
                    prompt,
                    previous,
                    digest,
                )
            )
            if len(self._pending) == self._batch_rows:
                self._cond.notify_all()

    @property
    def head(self) -> tuple[int, str]:
        """(last sequence, last hash), including rows not yet on disk."""
        with self._cond:
            return self._sequence, self._head_hash

    def take_summary(self) -> list[RouteCount]:
        """Requests per (data class, route) recorded since the previous call; the counts start again at 0."""
        with self._cond:
            counts, self._counts = self._counts, {}
        return [RouteCount(data_class, route, n) for (data_class, route), n in sorted(counts.items())]

    def restore_summary(self, counts: Iterable[RouteCount]) -> None:
        """Give back counts taken but not sent, so the next summary carries them."""
        with self._cond:
            for c in counts:
                key = (c.data_class, c.route)
                self._counts[key] = self._counts.get(key, 0) + c.count

    # -- durability ------------------------------------------------------------------

    def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until every row recorded so far is on disk; False when a write attempt failed meanwhile (the
        rows stay queued for the next one) or the wait timed out."""
        with self._cond:
            target, start = self._sequence, self._attempts
            if self._written_through >= target:
                return True
            self._flush_wanted = True
            self._cond.notify_all()
            self._cond.wait_for(
                lambda: (
                    self._written_through >= target
                    or not self._thread.is_alive()
                    or (self._attempts > start and self._tried_through >= target)
                ),
                timeout_s,
            )
            return self._written_through >= target

    def close(self) -> None:
        """Flush, stop the writer and close the file; rows still not written are counted as dropped."""
        with self._cond:
            if self._closed:
                return
            self._closed = self._stopping = True
            self._cond.notify_all()
        self._thread.join()
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # -- the writer thread -------------------------------------------------------------

    def _run(self) -> None:
        unwritten: list[tuple] = []
        while True:
            with self._cond:
                self._cond.wait_for(
                    lambda: self._stopping or self._flush_wanted or len(self._pending) >= self._batch_rows,
                    self._interval,
                )
                batch, self._pending = self._pending, []
                self._flush_wanted = False
                stopping = self._stopping
            rows = unwritten + batch if unwritten else batch
            if rows:
                unwritten = self._attempt(rows)
            if stopping:
                if unwritten:
                    with self._cond:
                        self.dropped += len(unwritten)
                    log.error("routing audit: %d decisions could not be written before closing", len(unwritten))
                return

    def _attempt(self, rows: list[tuple]) -> list[tuple]:
        """Write rows in one transaction; returns those still to write."""
        ok, dropped, attempted = False, 0, rows[-1][0]
        conn = self._conn
        if conn is None:
            dropped, rows = len(rows), []
        else:
            try:
                self._write(conn, rows)
                ok = True
            except (sqlite3.Error, OSError) as exc:
                self._failed(exc, len(rows))
                if len(rows) > self._max_backlog:
                    dropped = len(rows) - self._max_backlog
                    rows = rows[dropped:]
        with self._cond:
            self._attempts += 1
            self.dropped += dropped
            self._tried_through = max(self._tried_through, attempted)
            if ok:
                self._written_through = max(self._written_through, attempted)
                rows = []
            self._cond.notify_all()
        if ok and self._failing:
            self._failing = False
            log.warning("routing audit: writing to %s again (%d decisions dropped so far)", self.path, self.dropped)
        return rows

    def _failed(self, exc: Exception, n: int) -> None:
        with self._cond:
            self.write_errors += 1
        if not self._failing:
            self._failing = True
            log.error(
                "routing audit: cannot write %d decisions to %s (%s); serving continues, they are retried "
                "and past %d waiting the oldest are dropped and counted",
                n,
                self.path,
                exc,
                self._max_backlog,
            )

    def _write(self, conn: sqlite3.Connection, rows: list[tuple]) -> None:
        with conn:
            conn.executemany(f"INSERT INTO routing ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
            cutoff = rows[-1][0] - self.max_entries
            if cutoff > self._anchor_sequence:
                last_gone = conn.execute(
                    "SELECT sequence, hash FROM routing WHERE sequence <= ? ORDER BY sequence DESC LIMIT 1", (cutoff,)
                ).fetchone()
                if last_gone is not None:
                    conn.execute("DELETE FROM routing WHERE sequence <= ?", (last_gone[0],))
                    conn.executemany(
                        "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                        [("anchor_sequence", str(last_gone[0])), ("anchor_hash", last_gone[1])],
                    )
                    self._anchor_sequence = last_gone[0]

    # -- the per-box key -------------------------------------------------------------

    def _load_key(self):
        with self._key_lock:
            if self._hmac is None:
                self._hmac = hmac.new(self._read_or_create_key(), digestmod=hashlib.sha256)
            return self._hmac

    def _read_or_create_key(self) -> bytes:
        try:
            key = self._read_key()
            if key is None:
                key = self._create_key()
            return key
        except OSError as exc:
            log.error(
                "routing audit: cannot keep the prompt-hash key in %s (%s); using a key for this run only, "
                "so prompt hashes will not match across restarts",
                self.key_path,
                exc,
            )
            return secrets.token_bytes(_KEY_BYTES)

    def _read_key(self) -> bytes | None:
        try:
            key = self.key_path.read_bytes()
        except FileNotFoundError:
            return None
        if len(key) != _KEY_BYTES:
            log.warning(
                "routing audit: %s is not a %d-byte key; making a new one (older prompt hashes will not "
                "match new ones)",
                self.key_path,
                _KEY_BYTES,
            )
            self.key_path.unlink(missing_ok=True)
            return None
        if self.key_path.stat().st_mode & 0o077:
            os.chmod(self.key_path, 0o600)
        return key

    def _create_key(self) -> bytes:
        """Write a new key 0600 and link it into place, so two processes racing to create it agree on one."""
        self.key_path.parent.mkdir(parents=True, exist_ok=True)
        key = secrets.token_bytes(_KEY_BYTES)
        tmp = self.key_path.with_name(f".{self.key_path.name}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(key)
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, self.key_path)
            except FileExistsError:
                return self._read_key() or key
        finally:
            tmp.unlink(missing_ok=True)
        return key

    # -- reading -------------------------------------------------------------------

    def entries(self, after_sequence: int = 0, limit: int = 100) -> list[AuditRow]:
        """Rows on disk after after_sequence, oldest first (flush() first to include the latest)."""
        return read_entries(self.path, after_sequence, limit)

    def verify(self) -> ChainCheck:
        """Check the chain on disk from its anchor (flush() first to include the latest)."""
        return verify_file(self.path)


# -- reading the file, from the agent or from `edge-agent audit` while the agent runs ---------------------


def _connect_readonly(path: Path) -> sqlite3.Connection:
    if not path.exists():
        raise RoutingAuditError(f"no routing audit at {path}: the agent has recorded no request with this data dir")
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)
        conn.execute("SELECT 1 FROM routing LIMIT 1").fetchall()
    except sqlite3.Error as exc:
        raise RoutingAuditError(f"cannot read the routing audit {path}: {exc}") from exc
    return conn


def _anchor(conn: sqlite3.Connection) -> tuple[int, str]:
    meta = dict(conn.execute("SELECT key, value FROM meta WHERE key IN ('anchor_sequence', 'anchor_hash')"))
    return int(meta.get("anchor_sequence", 0)), meta.get("anchor_hash", GENESIS_HASH)


_DETECTORS_JSON: dict[tuple[str, ...], str] = {}


def _detectors_json(detectors: tuple[str, ...]) -> str:
    """The stored form of a set of detector names; the few combinations that occur are remembered."""
    stored = _DETECTORS_JSON.get(detectors)
    if stored is None:
        if len(_DETECTORS_JSON) > 4096:
            _DETECTORS_JSON.clear()
        stored = _DETECTORS_JSON[detectors] = json.dumps(detectors)
    return stored


def _text(value) -> str:
    return value if isinstance(value, str) else ("" if value is None else str(value))


def _detectors(stored: str) -> tuple[str, ...]:
    try:
        names = json.loads(stored)
    except ValueError:
        names = None
    # An edited cell that is not a JSON list is shown as it is; its hash no longer matches.
    return tuple(names) if isinstance(names, list) else (stored,)


def _row(r) -> AuditRow:
    return AuditRow(r[0], r[1], r[2], r[3], r[4], _detectors(r[5]), r[6], r[7], r[8], r[9], r[10], r[11])


def read_entries(path: Path, after_sequence: int = 0, limit: int = 100) -> list[AuditRow]:
    """Rows after after_sequence, oldest first, at most limit."""
    with closing(_connect_readonly(Path(path))) as conn:
        try:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM routing WHERE sequence > ? ORDER BY sequence LIMIT ?", (after_sequence, limit)
            ).fetchall()
        except sqlite3.Error as exc:
            raise RoutingAuditError(f"cannot read the routing audit {path}: {exc}") from exc
    return [_row(r) for r in rows]


def verify_file(path: Path) -> ChainCheck:
    """Check the chain from its anchor (genesis until rows were dropped), in one read snapshot, so the writer
    deleting old rows meanwhile cannot look like a gap."""
    with closing(_connect_readonly(Path(path))) as conn:
        try:
            conn.execute("BEGIN")
            anchor_sequence, anchor_hash = _anchor(conn)
            rows: Iterator[AuditRow] = map(_row, conn.execute(f"SELECT {_COLUMNS} FROM routing ORDER BY sequence"))
            return verify_links(rows, _recompute, after_sequence=anchor_sequence, after_hash=anchor_hash)
        except (sqlite3.Error, ValueError, TypeError) as exc:
            raise RoutingAuditError(f"cannot read the routing audit {path}: {exc}") from exc
