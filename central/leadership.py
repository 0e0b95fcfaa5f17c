"""Which central replica leads.

Several `central serve` processes may share one PostgreSQL store; each answers
enrollment, heartbeats, the admin API and artifact fetches, but what must be
done once (the rollout controller's tick, the SuperLink and its reconcile
pass) runs on one leader. The leader is whoever holds the store's leader lock
(a PostgreSQL session advisory lock; with SQLite, a file lock beside the
database): held by a database session, it is released by the database the
moment the leader's process dies, and a follower polling every
CHECK_INTERVAL_S takes it over. On taking it the new leader records itself
with the next term, for `edgefleet central status` and the logs.

Leadership alone does not keep a decision from being taken twice (a leader
can lose its session and learn of it a poll later); the store's
compare-and-set writes do (`FleetStore.advance_rollout`). A replica that loses
the lock stops (exit status EXIT_DEPOSED) rather than tearing down what it led
piece by piece; systemd starts it again as a follower.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from central.store import FleetStore, ReplicaRecord

CHECK_INTERVAL_S = 1.0
EXIT_DEPOSED = 75  # EX_TEMPFAIL: systemd's Restart=on-failure starts the replica again

ELECTED, DEPOSED = "elected", "deposed"

# How often a replica writes itself into the store; one unseen for REPLICA_STALE_AFTER announcements is gone.
ANNOUNCE_INTERVAL_S = 5.0
REPLICA_STALE_AFTER = 3


def live_replicas(replicas: list[ReplicaRecord], now: float) -> list[ReplicaRecord]:
    """Replicas seen within REPLICA_STALE_AFTER announcements."""
    return [r for r in replicas if now - r.last_seen_at <= ANNOUNCE_INTERVAL_S * REPLICA_STALE_AFTER]


class Leadership:
    """This replica's side of the election. `check` is called every CHECK_INTERVAL_S; not thread-safe (one
    caller at a time, which central's single leadership task is)."""

    def __init__(self, store: FleetStore, replica_id: str, clock: Callable[[], float] = time.time):
        self._store = store
        self._lock = store.leader_lock()
        self.replica_id = replica_id
        self._clock = clock
        self.is_leader = False
        self.term = 0

    def check(self) -> str | None:
        """Try for the lock as a follower, or confirm it as the leader. ELECTED or DEPOSED when the role
        changes, else None. A store error as a follower propagates (try again next time); as the leader it
        counts as losing the lock, since the lock may be gone with the session."""
        if self.is_leader:
            try:
                held = self._lock.held()
            except Exception:  # noqa: BLE001 - any failure to confirm the lock is losing it
                held = False
            if held:
                return None
            self.is_leader = False
            return DEPOSED
        if not self._lock.try_acquire():
            return None
        try:
            self.term = self._store.claim_leadership(self.replica_id, self._clock())
        except Exception:
            self._lock.release()
            raise
        self.is_leader = True
        return ELECTED

    def release(self) -> None:
        """At a clean stop: let a follower take over at its next check instead of waiting for the session
        to end."""
        self.is_leader = False
        self._lock.release()
