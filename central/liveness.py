"""A node's liveness, computed from its record and the clock (never stored, so it cannot go stale)."""

from __future__ import annotations

from central.store import NodeRecord

ENROLLED, ONLINE, OFFLINE, REVOKED = "enrolled", "online", "offline", "revoked"
MISSED_INTERVALS_OFFLINE = 3


def node_state(node: NodeRecord, heartbeat_interval_s: float, now: float) -> str:
    if node.revoked_at is not None:
        return REVOKED
    if node.last_seen_at is None:
        return ENROLLED
    if now - node.last_seen_at > MISSED_INTERVALS_OFFLINE * heartbeat_interval_s:
        return OFFLINE
    return ONLINE
