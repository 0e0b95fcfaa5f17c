"""Central's history end to end: a real agent (SmolLM2) enrolled with labels to a real central process over mTLS
serves requests locally and bursts one to a real upstream process; its heartbeats land in the minute and hour
rollups of its node, its label group and the fleet (AdminService GetMetricsHistory), and `edgefleet usage
--json` and `edgefleet nodes history --json` show them.

Central runs with a 0.5 s heartbeat interval, so the figures arrive within a second or two of the requests.
"""

import json

import httpx
import pytest

from agent_process import start_agent
from central_process import create_token, edgefleet_cli, start_central, wait_for
from edge_agent.control.client import enroll
from edge_agent.control.identity import FleetFiles
from edgefleet.v1 import admin_pb2
from logging_upstream import start_logging_upstream


@pytest.fixture
def fleet(tmp_path):
    central = start_central(tmp_path / "central", "--heartbeat-interval", "0.5s", "--rollup-labels", "region")
    upstream = agent = None
    try:
        upstream = start_logging_upstream(tmp_path / "upstream")
        token = create_token(central, region="eu", site="lab")
        identity = enroll(central.enroll_address, token.ca_fingerprint, token.token, FleetFiles(tmp_path / "box"))
        agent = start_agent(
            tmp_path / "box",
            sections={
                "fleet": {"max_backoff_s": 1.0, "rpc_timeout_s": 3.0},
                "upstreams": [
                    {
                        "name": "cloud",
                        "url": upstream.base_url + "/v1",
                        "models": ["logged-model"],
                        "jurisdiction": "eu",
                        "retries": 0,
                        "price_per_1k_prompt_tokens": 2.0,
                        "price_per_1k_completion_tokens": 4.0,
                        "currency": "EUR",
                    }
                ],
            },
        )
        yield central, agent, identity.node_id
    finally:
        if agent is not None:
            agent.stop()
        if upstream is not None:
            upstream.stop()
        central.stop()


def _complete(agent, model, prompt):
    body = {"model": model, "prompt": prompt, "max_tokens": 8, "temperature": 0.7}
    r = httpx.post(agent.base_url + "/v1/completions", json=body, headers={"Cache-Control": "no-store"}, timeout=60)
    assert r.status_code == 200, r.text
    return r


def _history(central, scopes, resolution):
    with central.admin() as admin:
        r = admin.call("GetMetricsHistory", admin_pb2.GetMetricsHistoryRequest(scopes=scopes, resolution=resolution))
    return {s.scope: list(s.points) for s in r.series}


def test_heartbeats_land_in_minute_and_hour_rollups_and_usage_shows_the_burst(fleet):
    central, agent, node_id = fleet
    for i in range(3):
        _complete(agent, "smollm2-135m-instruct", f"Count to {i}.")
    burst = _complete(agent, "logged-model", "Say hello.")
    assert burst.headers["x-edgefleet-route"] == "upstream:cloud"

    scopes = ["fleet", f"node:{node_id}", "label:region=eu"]

    def all_counted():
        series = _history(central, scopes, admin_pb2.ROLLUP_RESOLUTION_MINUTE)
        totals = {s: sum(p.requests for p in points) for s, points in series.items()}
        return series if all(t >= 4 for t in totals.values()) else None

    minutes = wait_for(all_counted, timeout_s=60, what="the requests in every scope's minute rollups")
    hours = _history(central, scopes, admin_pb2.ROLLUP_RESOLUTION_HOUR)
    for scope in scopes:
        minute_points, hour_points = minutes[scope], hours[scope]
        assert all(p.period_seconds == 60 for p in minute_points) and minute_points[0].heartbeats >= 1
        assert [p.period_seconds for p in hour_points] in ([3600], [3600, 3600])  # the test may straddle an hour
        assert sum(p.requests for p in hour_points) >= sum(p.requests for p in minute_points) >= 4
        assert sum(p.generated_tokens for p in minute_points) > 0
        assert max(p.latency_p50_ms for p in minute_points) > 0
        assert sum(p.upstream_requests for p in hour_points) >= 1
    # The node's site is not one of this central's --rollup-labels: no group for it.
    with central.admin() as admin, pytest.raises(Exception, match="site"):
        admin.call("GetMetricsHistory", admin_pb2.GetMetricsHistoryRequest(scopes=["label:site=lab"]))

    rows = wait_for(
        lambda: json.loads(edgefleet_cli(central, "usage", "--by", "tenant,label:region", "--json")) or None,
        timeout_s=30,
        what="the burst in edgefleet usage",
    )
    [row] = rows
    assert row["upstream"] == "cloud" and row["group"] == {"label:region": "eu", "tenant": "default"}
    assert row["requests"] == 1 and row["prompt_tokens"] >= 1 and row["completion_tokens"] >= 1
    assert row["currency"] == "EUR" and row["cost"] > 0
    table = edgefleet_cli(central, "usage", "--by", "label:region", "--since", "1h")
    assert "UPSTREAM" in table and any(line.split()[:3] == ["cloud", "eu", "1"] for line in table.splitlines())

    history = json.loads(edgefleet_cli(central, "nodes", "history", node_id, "--json"))
    assert history["node_id"] == node_id and sum(p["requests"] for p in history["points"]) >= 4
    assert "REQ" in edgefleet_cli(central, "nodes", "history", node_id)
