"""Each page's context: the AdminService calls it needs (through :class:`~central.dashboard.source.FleetSource`),
turned into what the templates show by :mod:`central.dashboard.views`. A call that fails leaves its part of the
page as a :class:`~central.dashboard.source.Missing`, shown in place; the rest of the page renders."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from central.dashboard import views
from central.dashboard.source import FleetSource, Missing
from edgefleet.v1 import admin_pb2

# Nodes a page of the node list: its sparklines are one GetMetricsHistory call of 60 minute points per node, and
# central answers about 13 µs a point (bench/dashboard.py), so 50 nodes keep the page well under 300 ms (100, the
# most, about 150 ms p99 with 1,000 nodes).
NODE_PAGE_DEFAULT = 50
NODE_PAGE_MAX = 100
# Scopes a GetMetricsHistory call asks for: central answers at most 20,000 points, 333 scopes of 60 minutes.
HISTORY_SCOPES_PER_CALL = 300
# Nodes a page of the residency page's per-node table (the fleet's totals count every node).
ROUTING_NODES_PAGE = 100
# The burst page's default span, and the longest central keeps (30 days). The page refreshes every 5 s, and
# central's ListBurstUsage sums every usage row of the span (about 30 ms for a day of 1,000 bursting nodes on
# SQLite, bench/dashboard.py; a month costs 30 times that): the last hour by default, a day or a month a click away.
BURST_HOURS_DEFAULT = 1
BURST_HOURS_MAX = 720
REPORTS_SHOWN = 20
AUDIT_TAIL = 100
# A chart's range: the resolution GetMetricsHistory is asked for, and the span it covers by default (seconds).
HISTORY_RANGES = {"hour": (admin_pb2.ROLLUP_RESOLUTION_MINUTE, 3600), "day": (admin_pb2.ROLLUP_RESOLUTION_HOUR, 86400)}
# ListBurstUsage's grouping on the burst page: per upstream, tenant and region.
BURST_GROUP_BY = ("tenant", "label:region")


class Pages:
    def __init__(self, source: FleetSource, clock: Callable[[], float] = time.time):
        self.source = source
        self.clock = clock
        self._audit_head = 0  # the newest audit sequence seen: the next search starts there
        self._lock = threading.Lock()

    # -- fleet ------------------------------------------------------------------------------------------------------

    def overview(self) -> dict[str, Any]:
        now = self.clock()
        nodes = self.source.all_nodes()
        objectives = self._objectives()
        routing = self.source.all_routing()
        fleet = self._history(["fleet"], admin_pb2.ROLLUP_RESOLUTION_MINUTE)
        context: dict[str, Any] = {
            "nodes_missing": nodes if isinstance(nodes, Missing) else None,
            "objectives_missing": objectives if isinstance(objectives, Missing) else None,
            "routing_missing": routing if isinstance(routing, Missing) else None,
            "history_missing": fleet if isinstance(fleet, Missing) else None,
        }
        if not isinstance(nodes, Missing):
            context["overview"] = views.overview(
                nodes,
                now,
                None if isinstance(objectives, Missing) else objectives,
                None if isinstance(routing, Missing) else routing,
            )
        points = [] if isinstance(fleet, Missing) else fleet.get("fleet", [])
        context["fleet_points"] = points[-1:]  # the latest minute
        context["fleet_requests_1h"] = sum(p.requests for p in points)
        context["fleet_spark"] = views.sparkline([float(p.requests) for p in points])
        return context

    def nodes(self, page_token: str = "", page_size: int = NODE_PAGE_DEFAULT) -> dict[str, Any]:
        now = self.clock()
        page_size = max(1, min(page_size, NODE_PAGE_MAX))
        page = self.source.nodes_page(page_size, page_token)
        if isinstance(page, Missing):
            return {"nodes_missing": page, "rows": [], "next_page": "", "history_missing": None}
        history = self._history([f"node:{n.node_id}" for n in page.nodes], admin_pb2.ROLLUP_RESOLUTION_MINUTE)
        rows = [
            views.node_row(n, now, None if isinstance(history, Missing) else history.get(f"node:{n.node_id}", []))
            for n in page.nodes
        ]
        return {
            "nodes_missing": None,
            "rows": rows,
            "next_page": page.next_page_token,
            "page_token": page_token,
            "page_size": page_size,
            "history_missing": history if isinstance(history, Missing) and page.nodes else None,
        }

    def node(self, node_id: str) -> dict[str, Any]:
        now = self.clock()
        reply = self.source.fetch("GetNode", admin_pb2.GetNodeRequest(node_id=node_id, report_limit=REPORTS_SHOWN))
        if isinstance(reply, Missing):
            return {"node_missing": reply, "node_id": node_id}
        node = reply.node
        history = self._history([f"node:{node_id}"], admin_pb2.ROLLUP_RESOLUTION_MINUTE)
        points = [] if isinstance(history, Missing) else history.get(f"node:{node_id}", [])
        expires = views.seconds(node.certificate_expires_at)
        return {
            "node_missing": None,
            "node_id": node_id,
            "node": node,
            "row": views.node_row(node, now, None if isinstance(history, Missing) else points),
            "reports": list(reversed(reply.reports)),  # newest first
            "cert_left": views.age_text(expires - now) if expires is not None and expires > now else "expired",
            "cert_warn": expires is not None and expires - now < views.CERT_WARN_S,
            "history_missing": history if isinstance(history, Missing) else None,
            "recent_points": list(reversed(points[-10:])),
            "now": now,
        }

    def node_history(self, node_id: str, span: str) -> dict[str, Any]:
        """A node's chart data (JSON): the last hour by minute or the last day by hour."""
        return self._chart(f"node:{node_id}", span, views.CHART_SERIES)

    def burst_history(self, span: str) -> dict[str, Any]:
        """The fleet's bursting over time (JSON), to see when it started and when it stopped."""
        return self._chart("fleet", span, views.BURST_CHART_SERIES)

    def _chart(self, scope: str, span: str, series: Sequence[tuple[str, str, str]]) -> dict[str, Any]:
        resolution, span_s = HISTORY_RANGES.get(span, HISTORY_RANGES["hour"])
        history = self._history([scope], resolution)
        if isinstance(history, Missing):
            return {"available": False, "reason": history.reason}
        now = self.clock()
        return {
            "available": True,
            "start": now - span_s,
            "end": now,
            **views.chart_data(history.get(scope, []), series),
        }

    # -- fleet-wide pages -------------------------------------------------------------------------------------------

    def rollouts(self) -> dict[str, Any]:
        reply = self.source.fetch("ListRollouts", admin_pb2.ListRolloutsRequest())
        if isinstance(reply, Missing):
            return {"missing": reply, "rollouts": []}
        return {"missing": None, "rollouts": [views.rollout_view(r) for r in reply.rollouts]}

    def federated(self) -> dict[str, Any]:
        reply = self.source.fetch("ListFederatedRuns", admin_pb2.ListFederatedRunsRequest())
        if isinstance(reply, Missing):
            return {"missing": reply, "runs": []}
        return {"missing": None, "runs": list(reply.runs)}

    def residency(self, page: int = 0) -> dict[str, Any]:
        """The fleet's totals over every node; the per-node table one page of ROUTING_NODES_PAGE nodes at a time."""
        routing = self.source.all_routing()
        if isinstance(routing, Missing):
            return {"missing": routing, "totals": [], "nodes": [], "left": None, "node_page": 0, "pages": 0}
        pages = max(1, -(-len(routing) // ROUTING_NODES_PAGE))
        page = min(max(0, page), pages - 1)
        by_id = sorted(routing, key=lambda n: n.node_id)
        return {
            "missing": None,
            "totals": views.route_totals(routing),
            "nodes": by_id[page * ROUTING_NODES_PAGE : (page + 1) * ROUTING_NODES_PAGE],
            "left": views.restricted_left(routing),
            "node_page": page,
            "pages": pages,
        }

    def objectives(self) -> dict[str, Any]:
        pairs = self._objectives()
        if isinstance(pairs, Missing):
            return {"missing": pairs, "objectives": []}
        return {"missing": None, "objectives": pairs}

    def burst(self, hours: int = BURST_HOURS_DEFAULT) -> dict[str, Any]:
        """What bursting sent and cost over the last `hours`."""
        hours = min(max(1, hours), BURST_HOURS_MAX)
        request = admin_pb2.ListBurstUsageRequest(group_by=list(BURST_GROUP_BY))
        request.since.FromNanoseconds(int((self.clock() - hours * 3600) * 1e9))
        reply = self.source.fetch("ListBurstUsage", request)
        if isinstance(reply, Missing):
            return {"missing": reply, "rows": [], "hours": hours}
        return {"missing": None, "rows": list(reply.rows), "hours": hours}

    def audit(self) -> dict[str, Any]:
        with self._lock:
            hint = self._audit_head
        failure: list[Missing] = []

        def entries_after(sequence: int) -> int:
            if failure:
                return 0
            reply = self.source.fetch(
                "ListAuditEntries", admin_pb2.ListAuditEntriesRequest(after_sequence=max(0, sequence), limit=1)
            )
            if isinstance(reply, Missing):
                failure.append(reply)
                return 0
            return reply.entries[0].sequence if reply.entries else 0

        head = views.find_audit_head(entries_after, hint)
        if failure:
            return {"missing": failure[0], "entries": []}
        with self._lock:
            self._audit_head = head
        reply = self.source.fetch(
            "ListAuditEntries",
            admin_pb2.ListAuditEntriesRequest(after_sequence=max(0, head - AUDIT_TAIL), limit=AUDIT_TAIL),
        )
        if isinstance(reply, Missing):
            return {"missing": reply, "entries": []}
        return {"missing": None, "entries": list(reversed(reply.entries)), "head": head}

    # -- helpers ----------------------------------------------------------------------------------------------------

    def _objectives(self) -> list[tuple[Any, Any]] | Missing:
        reply = self.source.fetch("ListObjectives", admin_pb2.ListObjectivesRequest())
        if isinstance(reply, Missing):
            return reply
        return list(zip(reply.objectives, reply.statuses, strict=False))

    def _history(self, scopes: list[str], resolution: admin_pb2.RollupResolution) -> dict[str, list[Any]] | Missing:
        """The scopes' series: one GetMetricsHistory call for up to HISTORY_SCOPES_PER_CALL scopes."""
        found: dict[str, list[Any]] = {}
        for at in range(0, len(scopes), HISTORY_SCOPES_PER_CALL):
            chunk = scopes[at : at + HISTORY_SCOPES_PER_CALL]
            reply = self.source.fetch(
                "GetMetricsHistory", admin_pb2.GetMetricsHistoryRequest(scopes=chunk, resolution=resolution)
            )
            if isinstance(reply, Missing):
                return reply
            found.update(views.history_by_scope(reply.series))
        return found
