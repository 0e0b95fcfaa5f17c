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
"""

from __future__ import annotations

import logging

from central import routing
from central.routing import RoutingReport
from central.store import FleetStore, NodeHealth

log = logging.getLogger(__name__)

FLUSH_INTERVAL_S = 1.0


class HeartbeatBuffer:
    """Not thread-safe: used from central's one event loop thread."""

    def __init__(self, store: FleetStore):
        self._store = store
        self._pending: dict[str, tuple[float, bytes, NodeHealth | None]] = {}
        self._routing: dict[str, tuple[float, RoutingReport]] = {}

    def record(
        self,
        node_id: str,
        at: float,
        status: bytes,
        routing_report: RoutingReport | None = None,
        health: NodeHealth | None = None,
    ) -> None:
        self._pending[node_id] = (at, status, health)
        if routing_report is not None:
            self._add_routing(node_id, at, routing_report)

    def _add_routing(self, node_id: str, at: float, report: RoutingReport) -> None:
        held = self._routing.get(node_id)
        self._routing[node_id] = (at, routing.merge(held[1], report)) if held else (at, report)

    def flush(self) -> None:
        if self._pending:
            batch, self._pending = self._pending, {}
            try:
                self._store.record_heartbeats(
                    {n: (at, status) for n, (at, status, _) in batch.items()},
                    {n: health for n, (_, _, health) in batch.items() if health},
                )
            except Exception:
                # Keep the beats for the next flush, unless newer ones arrived meanwhile.
                for node_id, beat in batch.items():
                    self._pending.setdefault(node_id, beat)
                raise
        if self._routing:
            counts, self._routing = self._routing, {}
            try:
                self._store.add_routing(counts)
            except Exception:
                # Counts are never replaced: what arrived meanwhile is added to what is kept.
                for node_id, (at, report) in counts.items():
                    newer = self._routing.pop(node_id, None)
                    self._routing[node_id] = (newer[0], routing.merge(report, newer[1])) if newer else (at, report)
                raise

    def __len__(self) -> int:
        return len(self._pending)
