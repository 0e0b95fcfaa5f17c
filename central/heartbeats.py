"""Heartbeats in memory, written to the store once a second.

A heartbeat costs central one indexed read (is the node still enrolled and
unrevoked, and what should it run) and a dict assignment; the flush writes the
latest status of every node that beat since the last flush in one
transaction. Committing each beat on its own cost more than the rest of the
heartbeat path, and SQLite's WAL checkpoints stalled the event loop for
10-20 ms now and then. Admin reads flush first, so they never see stale data;
a crash loses at most the last second of last-seen times, which the next beat
restores.

Routing counts ride the same buffer: each beat's counts are added to what the
node's earlier beats since the flush carried, and written with them. Unlike
last-seen times, counts lost in a crash are not restored by the next beat; a
crash loses at most one flush interval of them.

So do the rollups of the beats' inference figures (central.rollups), held per
node and minute until the minute has ended: the first flush after it writes its
rows (the node's, its share of the fleet's and its label groups'; the store
derives the hours from them) as additive upserts, with the burst usage per node and
hour. A node beating every 15 s so costs one write of its rows a minute, not
four. Reads of the history flush every minute held (flush(history=True)); a
crash loses at most the minute in progress. A failed write keeps them for the
next flush, as it keeps routing counts.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import replace

from central import rollups, routing
from central.routing import RoutingReport
from central.store import BurstUsageRecord, DesiredState, FleetStore, NodeHealth, RollupRow

log = logging.getLogger(__name__)

FLUSH_INTERVAL_S = 1.0
# While the store refuses writes, the rollup deltas kept for the next flush stay under this many rows: past it
# each scope's minute rows of an hour are lumped into one (and counted in the log), 60 times fewer.
MAX_KEPT_ROLLUP_ROWS = 200_000


class HeartbeatBuffer:
    """Thread-safe: with a remote store (PostgreSQL) heartbeats and admin reads run on central's worker
    threads, and any of them may flush. The lock covers the dicts only, never a store call."""

    def __init__(
        self,
        store: FleetStore,
        rollup_label_keys: Sequence[str] = rollups.DEFAULT_LABEL_KEYS,
        clock: Callable[[], float] = time.time,
    ):
        self._store = store
        self._clock = clock
        self._lock = threading.Lock()
        self._pending: dict[str, tuple[float, bytes, NodeHealth | None]] = {}
        self._routing: dict[str, tuple[float, RoutingReport]] = {}
        self._history = rollups.Accumulator(rollup_label_keys)
        # Deltas a failed write left, added to the next flush's.
        self._kept_rollups: list[RollupRow] = []
        self._kept_usage: list[BurstUsageRecord] = []

    @property
    def rollup_label_keys(self) -> tuple[str, ...]:
        return self._history.label_keys

    def record_history(self, node_id: str, labels: Mapping[str, str], beat: rollups.BeatFigures, at: float) -> None:
        """Add an accepted beat's figures to the rollups of its minute and hour (written at the next flush)."""
        with self._lock:
            self._history.add(node_id, labels, beat, at)

    def record(
        self,
        node_id: str,
        at: float,
        status: bytes,
        routing_report: RoutingReport | None = None,
        health: NodeHealth | None = None,
    ) -> None:
        with self._lock:
            self._pending[node_id] = (at, status, health)
            if routing_report is not None:
                self._add_routing(node_id, at, routing_report)

    def _add_routing(self, node_id: str, at: float, report: RoutingReport) -> None:
        held = self._routing.get(node_id)
        self._routing[node_id] = (at, routing.merge(held[1], report)) if held else (at, report)

    def flush(self, history: bool = False) -> None:
        """Write the beats and routing counts held, and the rollups of the minutes that have ended (with
        `history`, of every minute held: for a read of the history)."""
        with self._lock:
            batch, self._pending = self._pending, {}
            counts, self._routing = self._routing, {}
            taken = self._take_history_locked(None if history else self._clock())
        try:
            self._write(batch, counts)
            self._write_history(*taken)
        except Exception:
            self._keep(batch, counts)
            self._keep_history(*taken)
            raise

    def _take_history_locked(self, closed_before: float | None) -> tuple[list[RollupRow], list[BurstUsageRecord]]:
        rows, usage = self._history.take(closed_before)
        if self._kept_rollups:
            rows, self._kept_rollups = rollups.merged_rows(self._kept_rollups, rows), []
        if self._kept_usage:
            usage, self._kept_usage = rollups.merged_usage(self._kept_usage, usage), []
        return rows, usage

    def _write_history(self, rows: list[RollupRow], usage: list[BurstUsageRecord]) -> None:
        """Each part is cleared once written, so what is left after a failure is what to keep."""
        if rows:
            self._store.add_rollups(rows)
            rows.clear()
        if usage:
            self._store.add_burst_usage(usage)
            usage.clear()

    def _keep_history(self, rows: list[RollupRow], usage: list[BurstUsageRecord]) -> None:
        with self._lock:
            kept = rollups.merged_rows(rows, self._kept_rollups)
            if len(kept) > MAX_KEPT_ROLLUP_ROWS:
                # Each scope's minutes of an hour as one row at the hour's first minute: the minute view of those
                # hours lumps them together, the hour view (derived from the minutes) keeps every count.
                lumped = rollups.merged_rows(
                    (), (replace(r, start=r.start // rollups.HOUR_S * rollups.HOUR_S) for r in kept)
                )
                log.warning(
                    "the store refuses writes: the %d minute rollup rows kept for it are lumped into %d, one per"
                    " scope and hour",
                    len(kept),
                    len(lumped),
                )
                kept = lumped
            self._kept_rollups = kept
            self._kept_usage = rollups.merged_usage(usage, self._kept_usage)

    def _write(self, batch: dict, counts: dict) -> None:
        """Each part is cleared once written, so what is left after a failure is what to keep."""
        if batch:
            self._store.record_heartbeats(
                {n: (at, status) for n, (at, status, _) in batch.items()},
                {n: health for n, (_, _, health) in batch.items() if health},
            )
            batch.clear()
        if counts:
            self._store.add_routing(counts)
            counts.clear()

    def _keep(self, batch: dict, counts: dict) -> None:
        """After a failed write: what was not written goes back for the next flush."""
        with self._lock:
            # Beats: unless newer ones arrived meanwhile.
            for node_id, beat in batch.items():
                self._pending.setdefault(node_id, beat)
            # Counts are never replaced: what arrived meanwhile is added to what is kept.
            for node_id, (at, report) in counts.items():
                newer = self._routing.pop(node_id, None)
                self._routing[node_id] = (newer[0], routing.merge(report, newer[1])) if newer else (at, report)

    def __len__(self) -> int:
        return len(self._pending)


class TargetReads:
    """The desired state each heartbeat is answered with, read from the store after the beat arrived.

    A remote store (PostgreSQL) is read in batches on central's worker pool: the beats that arrive while a read
    is in flight wait for the next, which reads them all in one round trip. So every beat is answered from a
    read begun after it arrived (a revocation committed on any replica before a beat arrives refuses it), and
    a busy replica makes one read per batch instead of one per beat: a read costs its client about 135 us of
    CPU, 25 times SQLite's (bench/store_calls.py). Used from central's event loop only.
    """

    def __init__(self, store: FleetStore, workers: Executor):
        self._store = store
        self._workers = workers
        self._waiting: dict[str, list[asyncio.Future]] = {}
        self._reader: asyncio.Task | None = None  # the task reading batches, while there are beats waiting

    async def get(self, node_id: str) -> DesiredState | None:
        future = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(node_id, []).append(future)
        if self._reader is None:
            self._reader = asyncio.create_task(self._read_all())
        return await future

    async def _read_all(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, {}
                try:
                    targets = await loop.run_in_executor(self._workers, self._store.heartbeat_targets, list(batch))
                except Exception as exc:  # noqa: BLE001 - each waiting beat fails with the store's error
                    for futures in batch.values():
                        for f in futures:
                            if not f.done():
                                f.set_exception(exc)
                    continue
                for node_id, futures in batch.items():
                    for f in futures:
                        if not f.done():
                            f.set_result(targets.get(node_id))
        finally:
            self._reader = None
