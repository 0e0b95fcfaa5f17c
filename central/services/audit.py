"""AdminService on the audit log (list, verify its hash chain) and on nodes' routing totals."""

from __future__ import annotations

from central import audit
from central.errors import FailedPrecondition, InvalidArgument, NotFound
from central.routing import MAX_SEQUENCE
from central.services.base import Caller, Central, manifest_signing_key, record_audit, require_admin, require_viewer
from central.services.trust import audit_public_keys
from central.store import NodeRoutingRecord, StoreError


def list_entries(central: Central, caller: Caller, after_sequence: int, limit: int) -> list[audit.AuditEntry]:
    require_viewer(central, caller, "audit.list")
    # No entry comes after a sequence past the store's signed 64-bit integers (the wire's is unsigned).
    entries = central.store.list_audit(min(after_sequence, MAX_SEQUENCE), min(limit or 100, 10_000))
    return within_bytes(entries, MAX_PAGE_BYTES)


# A page of entries stays well under the 8 MiB a client receives; a page shorter than asked is continued after
# its last sequence, as any page is.
MAX_PAGE_BYTES = 4 << 20


def within_bytes(entries: list[audit.AuditEntry], max_bytes: int) -> list[audit.AuditEntry]:
    """The longest first part of `entries` whose text adds up to at most max_bytes (never less than one entry)."""
    total = 0
    for i, e in enumerate(entries):
        texts = (e.actor, e.action, e.target, e.detail, e.peer, e.previous_hash, e.hash)
        total += 64 + sum(len(s.encode()) for s in texts)
        if total > max_bytes and i:
            return entries[:i]
    return entries


def verify(central: Central, caller: Caller) -> tuple[audit.ChainCheck, audit.AuditAnchor | None]:
    """The chain checked from its anchor (signature included) or from entry 1; and that anchor."""
    require_viewer(central, caller, "audit.verify")
    anchor = central.store.audit_anchor()
    keys = audit_public_keys(central)  # every signing key central had: the anchor may predate a rotation
    return audit.verify_chain(central.store.iter_audit(), anchor, keys), anchor


def routing_totals(
    central: Central, caller: Caller, node_id: str, after_node_id: str = "", limit: int | None = None
) -> list[NodeRoutingRecord]:
    """Per node, requests per (data class, route) summed from its reports; one node when node_id is given."""
    require_viewer(central, caller, "audit.routing", node_id)
    if node_id and central.store.get_node(node_id) is None:
        raise NotFound(f"no node {node_id!r}")
    central.beats.flush()
    return central.store.routing_totals(node_id, after_node_id, limit)


# A node's totals hold at most central.routing.MAX_PAIRS_PER_NODE pairs of up to central.routing.MAX_TEXT
# characters each: a page of the most nodes stays under 4 MiB, half of gRPC's message limit.
DEFAULT_ROUTING_PAGE = 100
MAX_ROUTING_PAGE = 200


def routing_totals_page(
    central: Central, caller: Caller, node_id: str, page_size: int = 0, page_token: str = ""
) -> tuple[list[NodeRoutingRecord], str]:
    """One page of routing totals, by node id, and the token of the next page ("" on the last)."""
    if page_size > MAX_ROUTING_PAGE:
        raise InvalidArgument(f"page_size must be at most {MAX_ROUTING_PAGE}, got {page_size}")
    page_size = page_size or DEFAULT_ROUTING_PAGE
    records = routing_totals(central, caller, node_id, page_token, page_size + 1)
    more = len(records) > page_size
    records = records[:page_size]
    return records, records[-1].node_id if more else ""


# -- retention (issue 16) ----------------------------------------------------------------------------------


def archive(central: Central, caller: Caller, before_sequence: int, last_hash: str) -> tuple[audit.AuditAnchor, int]:
    """Prune the entries before `before_sequence` behind a signed anchor; (the anchor, entries pruned).

    The caller has saved those entries first (`edgefleet audit archive` writes them to a file) and names the
    hash of the last one it saved, so central never prunes what was not archived. Admins only; audited."""
    action = "audit.archive"
    require_admin(central, caller, action, str(before_sequence))
    key = manifest_signing_key(central)
    if before_sequence < 2:
        raise InvalidArgument(f"before_sequence must be at least 2 (entry 1 is the oldest), got {before_sequence}")
    if not last_hash:
        raise InvalidArgument("last_hash is required: the hash of the last entry archived (entry before_sequence - 1)")
    current = central.store.audit_anchor()
    if current is not None and before_sequence - 1 <= current.sequence:
        raise FailedPrecondition(f"entries up to {current.sequence} are archived and pruned already")
    last = central.store.list_audit(min(before_sequence - 2, MAX_SEQUENCE), 1)
    if not last or last[0].sequence != before_sequence - 1:
        raise NotFound(f"the audit log has no entry {before_sequence - 1} yet")
    if last[0].hash != last_hash:
        raise FailedPrecondition(
            f"entry {before_sequence - 1} has hash {last[0].hash}, not {last_hash}: archive it again before pruning"
        )
    signed = audit.sign_anchor(last[0].sequence, last[0].hash, central.clock(), key)
    try:
        pruned = central.store.prune_audit(signed)
    except StoreError as exc:  # the newest entry, or a prune that raced this one
        raise FailedPrecondition(str(exc)) from None
    record_audit(
        central,
        caller,
        action,
        str(signed.sequence),
        audit.ALLOWED,
        f"pruned {pruned} entries up to {signed.sequence} behind a signed anchor (hash {signed.hash[:16]}...)",
    )
    return signed, pruned
