"""AdminService on nodes: list (in pages), show, label, revoke; and a node's view with its liveness."""

from __future__ import annotations

from dataclasses import dataclass

from central import audit, liveness
from central.errors import InvalidArgument, NotFound
from central.labels import LabelError, validate_labels
from central.services.base import Caller, Central, record_audit, require_admin, require_viewer
from central.store import NodeRecord, ReportRecord

DEFAULT_PAGE_SIZE = 500
MAX_PAGE_SIZE = 1000


@dataclass(frozen=True)
class NodeView:
    record: NodeRecord
    state: str


def view(central: Central, node: NodeRecord) -> NodeView:
    return NodeView(node, liveness.node_state(node, central.settings.heartbeat_interval_s, central.clock()))


def list_nodes(
    central: Central, caller: Caller, selector: dict[str, str], page_size: int = 0, page_token: str = ""
) -> tuple[list[NodeView], str]:
    """One page of nodes and the token of the next page ("" on the last): a page of 1000 nodes with their
    status is about 350 KB, far inside gRPC's message limit, and builds in milliseconds on the loop."""
    require_viewer(central, caller, "node.list")
    if page_size > MAX_PAGE_SIZE:
        raise InvalidArgument(f"page_size must be at most {MAX_PAGE_SIZE}, got {page_size}")
    page_size = page_size or DEFAULT_PAGE_SIZE
    central.beats.flush()
    nodes = central.store.list_nodes(selector, page_token, page_size + 1)
    more = len(nodes) > page_size
    nodes = nodes[:page_size]
    return [view(central, n) for n in nodes], nodes[-1].node_id if more else ""


def get_node(central: Central, caller: Caller, node_id: str, report_limit: int) -> tuple[NodeView, list[ReportRecord]]:
    require_viewer(central, caller, "node.get", node_id)
    central.beats.flush()
    node = central.store.get_node(node_id)
    if node is None:
        raise NotFound(f"no node {node_id!r}")
    return view(central, node), central.store.recent_reports(node_id, min(report_limit or 20, 1000))


def label_node(
    central: Central, caller: Caller, node_id: str, set_labels: dict[str, str], remove: list[str]
) -> NodeView:
    require_admin(central, caller, "node.label", node_id)
    node = central.store.get_node(node_id)
    if node is None:
        raise NotFound(f"no node {node_id!r}")
    labels = {k: v for k, v in node.labels.items() if k not in remove}
    labels.update(set_labels)
    try:
        labels = validate_labels(labels)
    except LabelError as exc:
        raise InvalidArgument(str(exc)) from None
    updated = central.store.set_labels(node_id, labels)
    if updated is None:  # removed since it was read above
        raise NotFound(f"no node {node_id!r}")
    record_audit(central, caller, "node.label", node_id, audit.ALLOWED, f"labels now {labels}")
    return view(central, updated)


def revoke_node(central: Central, caller: Caller, node_id: str, reason: str) -> NodeView:
    require_admin(central, caller, "node.revoke", node_id)
    node = central.store.revoke_node(node_id, central.clock())
    if node is None:
        raise NotFound(f"no node {node_id!r}")
    record_audit(central, caller, "node.revoke", node_id, audit.ALLOWED, reason or "revoked")
    return view(central, node)
