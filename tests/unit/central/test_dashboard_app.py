"""The dashboard's web app over a canned source (CannedSource, a fake of FleetSource that answers fixed protobuf
replies; the real one against a real central is tests/integration/test_dashboard_browser.py): attacker text from
nodes is escaped, every response carries the security headers, a foreign Host is refused, htmx gets partials,
and a part central cannot give reads "not available" while the rest of the page renders."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from central.dashboard.app import create_app
from central.dashboard.pages import Pages
from central.dashboard.source import READ_METHODS, FleetSource, Missing
from edgefleet.v1 import admin_pb2, common_pb2, fleet_pb2

EVIL = '<script>alert("x")</script>\u202eevil\x1b[2J'
NOW = 1_800_000_000.0


class CannedSource:
    """A fake FleetSource: fixed replies, and Missing(unimplemented) for the RPCs listed in `unimplemented`."""

    def __init__(self, unimplemented=()):
        self.unimplemented = set(unimplemented)
        self.calls = []
        node = admin_pb2.Node(node_id="n-1", hostname=EVIL, labels={"region": EVIL}, state=admin_pb2.NODE_STATE_ONLINE)
        node.last_seen_at.FromSeconds(int(NOW) - 3)
        node.certificate_expires_at.FromSeconds(int(NOW) + 86400 * 20)
        node.status.active_model.name, node.status.active_model.version = "smollm2", EVIL
        node.status.inference.interval_seconds, node.status.inference.requests = 1.0, 4
        self.node = node

    def fetch(self, method, request):
        assert method in READ_METHODS
        self.calls.append(method)
        if method in self.unimplemented:
            return Missing(f"not available: central does not implement {method} yet", True)
        if method == "ListNodes":
            return admin_pb2.ListNodesResponse(nodes=[self.node])
        if method == "GetNode":
            if request.node_id != "n-1":
                return Missing(f"no node {request.node_id!r}")
            reply = admin_pb2.GetNodeResponse(node=self.node)
            reply.reports.add(sequence=7).event.CopyFrom(
                fleet_pb2.Event(kind=EVIL, message=EVIL, attributes={EVIL: EVIL})
            )
            return reply
        if method == "GetMetricsHistory":
            reply = admin_pb2.GetMetricsHistoryResponse()
            for scope in request.scopes:
                series = reply.series.add(scope=scope)
                for i in range(3):
                    series.points.add(requests=i + 1).start.FromSeconds(int(NOW) - 180 + 60 * i)
            return reply
        if method == "ListRoutingTotals":
            return admin_pb2.ListRoutingTotalsResponse(
                nodes=[
                    admin_pb2.NodeRouting(
                        node_id="n-1",
                        hostname=EVIL,
                        counts=[common_pb2.RouteCount(data_class="restricted", route="local", count=3)],
                    )
                ]
            )
        if method == "ListAuditEntries":
            last = 3
            entries = [
                admin_pb2.AuditEntry(sequence=s, actor="admin:root", action="token.create", detail=EVIL)
                for s in range(request.after_sequence + 1, last + 1)
            ][: request.limit or 100]
            return admin_pb2.ListAuditEntriesResponse(entries=entries)
        return getattr(admin_pb2, f"{method}Response")()

    def all_nodes(self, selector=None):
        return list(self.fetch("ListNodes", admin_pb2.ListNodesRequest()).nodes)

    def nodes_page(self, page_size, page_token):
        return self.fetch("ListNodes", admin_pb2.ListNodesRequest(page_size=page_size, page_token=page_token))

    def all_routing(self):
        reply = self.fetch("ListRoutingTotals", admin_pb2.ListRoutingTotalsRequest())
        return reply if isinstance(reply, Missing) else list(reply.nodes)


PAGES = ["/", "/nodes", "/nodes/n-1", "/rollouts", "/federated", "/residency", "/objectives", "/burst", "/audit"]


def _client(source, hosts=frozenset({"testserver"})):
    return TestClient(create_app(Pages(source, clock=lambda: NOW), hosts))


@pytest.mark.parametrize("path", PAGES)
def test_every_page_escapes_node_text_and_carries_the_security_headers(path):
    response = _client(CannedSource()).get(path)
    assert response.status_code == 200, response.text
    html = response.text
    assert "<script>alert" not in html and "\u202e" not in html and "\x1b" not in html
    if path in ("/", "/nodes", "/nodes/n-1", "/residency", "/audit"):
        assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;\\u202eevil\\x1b[2J" in html
    assert response.headers["content-security-policy"].startswith("default-src 'none'; script-src 'self'")
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["cache-control"] == "no-store"
    assert "<script>" not in html.replace('<script src="', ""), "no inline script"
    assert " style=" not in html, "no inline style"


def test_a_foreign_host_header_is_refused():
    client = _client(CannedSource(), frozenset({"127.0.0.1:8700"}))
    refused = client.get("/", headers={"host": "rebound.example:8700"})
    assert refused.status_code == 421 and refused.headers["x-frame-options"] == "DENY"
    assert client.get("/nodes", headers={"host": "127.0.0.1:8700"}).status_code == 200


def test_htmx_gets_only_the_live_part():
    client = _client(CannedSource())
    whole = client.get("/nodes").text
    part = client.get("/nodes", headers={"HX-Request": "true"}).text
    assert "<html" in whole and 'hx-trigger="every 5s"' in whole
    assert "<html" not in part and 'id="node-table"' in part and "hx-get" not in part


def test_what_central_lacks_reads_not_available_and_the_rest_renders():
    source = CannedSource(unimplemented={"GetMetricsHistory", "ListObjectives", "ListBurstUsage"})
    client = _client(source)
    nodes = client.get("/nodes").text
    assert "not available" in nodes and 'id="node-n-1"' in nodes
    assert "not available" in client.get("/objectives").text
    assert "not available" in client.get("/burst").text
    overview = client.get("/").text
    assert 'id="nodes-online">1<' in overview and "not available" in overview
    assert client.get("/nodes/n-1/history.json").json()["available"] is False


def test_the_node_table_and_figures():
    client = _client(CannedSource())
    html = client.get("/nodes").text
    assert 'class="num requests-1h">6<' in html, "1 + 2 + 3 requests over the last hour"
    assert 'class="num requests-per-s">4.00<' in html
    assert "<polyline points=" in html
    chart = client.get("/nodes/n-1/history.json?range=day").json()
    assert chart["available"] and len(chart["x"]) == 3
    assert "burst requests" in [s["label"] for s in chart["series"]]


def test_the_burst_page_charts_the_fleets_bursting_over_time():
    """To see when bursting started and when it stopped after the boxes caught up."""
    client = _client(CannedSource())
    assert 'data-chart-src="/burst/history.json?range=hour"' in client.get("/burst").text
    chart = client.get("/burst/history.json").json()
    assert chart["available"] and len(chart["x"]) == 3
    assert chart["series"][0]["key"] == "upstream_requests"
    missing = _client(CannedSource(unimplemented={"GetMetricsHistory"})).get("/burst/history.json").json()
    assert missing["available"] is False
    assert client.get("/nodes/nope").status_code == 200 and "no node" in client.get("/nodes/nope").text


def test_the_overview_reads_zero_restricted_requests_that_left():
    html = _client(CannedSource()).get("/residency").text
    assert 'id="restricted-left">0<' in html


def test_the_audit_tail_is_newest_first():
    html = _client(CannedSource()).get("/audit").text
    assert html.index(">3</td>") < html.index(">1</td>")


def test_the_source_only_reads():
    assert all(m.startswith(("List", "Get")) for m in READ_METHODS)
    source = FleetSource.__new__(FleetSource)
    with pytest.raises(ValueError, match="only reads"):
        source.fetch("RevokeNode", admin_pb2.RevokeNodeRequest(node_id="n-1"))


def test_static_files_and_vendored_licences_ship():
    client = _client(CannedSource())
    for path in (
        "/static/dashboard.js",
        "/static/dashboard.css",
        "/static/vendor/htmx.min.js",
        "/static/vendor/uPlot.iife.min.js",
        "/static/vendor/htmx.LICENSE",
        "/static/vendor/uPlot.LICENSE",
    ):
        response = client.get(path)
        assert response.status_code == 200, path
        assert response.headers["content-security-policy"]
