"""AdminService on the audit log (list, verify its hash chain) and on nodes' routing totals."""

from __future__ import annotations

from central import audit
from central.errors import InvalidArgument, NotFound
from central.services.base import Caller, Central, require_viewer
from central.store import NodeRoutingRecord


def list_entries(central: Central, caller: Caller, after_sequence: int, limit: int) -> list[audit.AuditEntry]:
    require_viewer(central, caller, "audit.list")
    return central.store.list_audit(after_sequence, min(limit or 100, 10_000))


def verify(central: Central, caller: Caller) -> audit.ChainCheck:
    require_viewer(central, caller, "audit.verify")
    return audit.verify_chain(central.store.iter_audit())


def routing_totals(central: Central, caller: Caller, node_id: str) -> list[NodeRoutingRecord]:
    """Per node, requests per (data class, route) summed from its reports; one node when node_id is given."""
    require_viewer(central, caller, "audit.routing", node_id)
    if node_id and central.store.get_node(node_id) is None:
        raise NotFound(f"no node {node_id!r}")
    central.beats.flush()
    return central.store.routing_totals(node_id)
