"""Heartbeats in memory, written to the store once a second.

A heartbeat costs central one indexed read (is the node still enrolled and
unrevoked, and what should it run) and a dict assignment; the flush writes the
latest status of every node that beat since the last flush in one
transaction. Committing each beat on its own cost more than the rest of the
heartbeat path, and SQLite's WAL checkpoints stalled the event loop for
10-20 ms now and then. Admin reads flush first, so they never see stale data;
a crash loses at most the last second of last-seen times, which the next beat
restores.
"""

from __future__ import annotations

import logging

from central.store import FleetStore

log = logging.getLogger(__name__)

FLUSH_INTERVAL_S = 1.0


class HeartbeatBuffer:
    """Not thread-safe: used from central's one event loop thread."""

    def __init__(self, store: FleetStore):
        self._store = store
        self._pending: dict[str, tuple[float, bytes]] = {}

    def record(self, node_id: str, at: float, status: bytes) -> None:
        self._pending[node_id] = (at, status)

    def flush(self) -> None:
        if not self._pending:
            return
        batch, self._pending = self._pending, {}
        try:
            self._store.record_heartbeats(batch)
        except Exception:
            # Keep the beats for the next flush, unless newer ones arrived meanwhile.
            for node_id, beat in batch.items():
                self._pending.setdefault(node_id, beat)
            raise

    def __len__(self) -> int:
        return len(self._pending)
