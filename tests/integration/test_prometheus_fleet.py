"""A real Prometheus (Debian's `prometheus` package) scraping a real central and three real agents.

One central (0.5 s heartbeats, its SuperLink), three `edge-agent serve` processes on SmolLM2, enrolled with
region=eu, region=us and region=ap; chat traffic on each (and two requests the us box bursts to a real logging
upstream with prices); a rollout of the same model file under a new version to region=eu; a federated
usage-stats run over the three. Then Prometheus scrapes central's /metrics and the agents' every second, and
its HTTP API must answer: requests per region as sent, three nodes online, no restricted request upstream, the
rollout completed, the run completed, burst tokens and cost as the upstream's usage and the prices make them.
`promtool check rules` passes on packaging/prometheus/, and every PromQL expression in packaging/grafana/
parses and returns data (Grafana's variables substituted). Every process is stopped by its pid.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

import fleet_activity
from agent_process import AgentProcess, start_agent
from central_process import create_token, edgefleet_cli, start_central, wait_for
from logging_upstream import start_logging_upstream

pytestmark = pytest.mark.skipif(sys.version_info < (3, 11), reason="flwr 1.42 needs Python 3.11+")

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS, PROMTOOL = "/usr/bin/prometheus", "/usr/bin/promtool"
GRAFANA = sorted((ROOT / "packaging" / "grafana").glob("*.json"))
RULES = sorted((ROOT / "packaging" / "prometheus").glob("*.yml"))
# Chat requests each box gets from this test; us also bursts BURST requests to the upstream.
LOCAL_REQUESTS = {"eu": 3, "us": 4, "ap": 5}
BURST = 2
PRICES = {"price_per_1k_prompt_tokens": 0.5, "price_per_1k_completion_tokens": 1.5, "currency": "EUR"}
RUN_TIMEOUT_S = 420
# Grafana's variables, as the test substitutes them: every agent, region and model version; a 1 min rate window.
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__range": "10m",
    "$instance": ".*",
    "$model_version": ".*",
    "$region": ".*",
}


def _require(binary: str) -> None:
    if not os.access(binary, os.X_OK):
        reason = f"{binary} is absent: install Debian's prometheus package (make system-packages)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _chat(agent, model: str, text: str) -> int:
    reply = httpx.post(
        agent.base_url + "/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": 8},
        timeout=120,
    )
    return reply.status_code


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """Central, three agents with traffic, a completed rollout and a finished federated run."""
    from edge_agent.control.client import enroll
    from edge_agent.control.identity import FleetFiles
    from edge_agent.models import resolve_model

    _require(PROMETHEUS)
    root = tmp_path_factory.mktemp("prom-fleet")
    upstream = central = None
    agents: dict[str, AgentProcess] = {}
    node_ids: dict[str, str] = {}
    try:
        upstream = start_logging_upstream(root / "upstream")
        central = start_central(
            root / "central",
            "--heartbeat-interval",
            "0.5s",
            "--superlink-listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "https://127.0.0.1:0",  # mTLS, as off loopback: Prometheus scrapes with a viewer's certificate
        )
        for index, region in enumerate(LOCAL_REQUESTS):
            token = create_token(central, region=region)
            data_dir = root / f"agent-{region}"
            node_ids[region] = enroll(
                central.enroll_address, token.ca_fingerprint, token.token, FleetFiles(data_dir)
            ).node_id
            fleet_activity.write_usage(data_dir, index)
            sections: dict = {
                "fleet": {"max_backoff_s": 1.0},
                "federated": {"enabled": True},
                "model": {"n_ctx": 512, "n_parallel": 2},
            }
            if region == "us":
                sections["upstreams"] = [
                    {
                        "name": "cloud",
                        "url": upstream.base_url + "/v1",
                        "models": ["cloud-model"],
                        "retries": 0,
                        **PRICES,
                    }
                ]
            agents[region] = start_agent(data_dir, sections=sections)
        fleet_activity.wait_for_flower_keys(central, len(agents))

        # The rollout: the same bytes under a new version, to region=eu's node, which first runs the old one.
        smol = resolve_model("smollm2-135m-instruct", "", root / "models")
        for version in ("1.0.0", "2.0.0"):
            fleet_activity.push(central, smol.path, "chat", version)
        fleet_activity.assign(central, node_ids["eu"], "chat@1.0.0")
        fleet_activity.wait_active(central, node_ids["eu"], "chat@1.0.0")
        rollout = fleet_activity.start_rollout(central, "chat@2.0.0", "region=eu")
        run = fleet_activity.start_usage_stats_run(central, min_nodes=3)

        for region, agent in agents.items():
            model = httpx.get(agent.base_url + "/v1/models", timeout=30).json()["data"][0]["id"]
            for i in range(LOCAL_REQUESTS[region]):
                assert _chat(agent, model, f"Say hello number {i} from {region}.") == 200
        for i in range(BURST):
            assert _chat(agents["us"], "cloud-model", f"Public question {i}") == 200
        assert len(upstream.posts()) == BURST

        done = fleet_activity.rollout_ended(central, rollout["rollout"])
        assert done["phase"] == "COMPLETED", done
        # Central judges the rollout by the bytes; the box reports them under the version central assigned.
        fleet_activity.wait_active(central, node_ids["eu"], "chat@2.0.0", timeout_s=60)
        finished = fleet_activity.run_ended(central, run["run"], timeout_s=RUN_TIMEOUT_S)
        assert finished["status"] == "completed", finished
        yield central, agents, upstream
    finally:
        for agent in agents.values():
            agent.stop()
        if central is not None:
            central.stop()
        if upstream is not None:
            upstream.stop()


class Prometheus:
    def __init__(self, proc: subprocess.Popen, url: str, log_path: Path):
        self.proc, self.url, self.log_path = proc, url, log_path

    def query(self, expr: str) -> list[dict]:
        reply = httpx.get(self.url + "/api/v1/query", params={"query": expr}, timeout=30).json()
        assert reply["status"] == "success", f"{expr}: {reply}"
        return reply["data"]["result"]

    def value(self, expr: str) -> float:
        result = self.query(expr)
        assert len(result) == 1, f"{expr}: {result}"
        return float(result[0]["value"][1])

    def by(self, expr: str, label: str) -> dict[str, float]:
        return {r["metric"].get(label, ""): float(r["value"][1]) for r in self.query(expr)}

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


@pytest.fixture(scope="module")
def prometheus(fleet, tmp_path_factory):
    central, agents, _ = fleet
    root = tmp_path_factory.mktemp("prometheus")
    agent_targets = [a.base_url.removeprefix("http://") for a in agents.values()]
    # Prometheus's own credential, and its tls_config, as docs/fleet.md ("Central's metrics") says.
    credential = root / "prometheus.credential"
    edgefleet_cli(central, "admin", "create", "prometheus", "--role", "viewer", "--out", str(credential))
    parts = json.loads(credential.read_text())
    for part, name in (("ca", "ca.pem"), ("certificate", "prometheus.pem"), ("key", "prometheus.key")):
        (root / name).write_text(parts[part])
    tls_config = {
        "ca_file": str(root / "ca.pem"),
        "cert_file": str(root / "prometheus.pem"),
        "key_file": str(root / "prometheus.key"),
        "server_name": "central.edgefleet",
    }
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {
                "job_name": "edgefleet-central",
                "scheme": "https",
                "tls_config": tls_config,
                "static_configs": [{"targets": [central.metrics_address]}],
            },
            {"job_name": "edgefleet-agent", "static_configs": [{"targets": agent_targets}]},
        ],
    }
    (root / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
    port = _free_port()
    log_path = root / "prometheus.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={root / 'prometheus.yml'}",
                f"--storage.tsdb.path={root / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = Prometheus(proc, f"http://127.0.0.1:{port}", log_path)
    try:

        def targets_up():
            if proc.poll() is not None:
                raise AssertionError(f"prometheus exited with {proc.returncode}:\n{log_path.read_text()}")
            try:
                active = httpx.get(server.url + "/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
            except (httpx.TransportError, ValueError, KeyError):
                return False
            return len(active) == 1 + len(agents) and all(t["health"] == "up" for t in active)

        wait_for(targets_up, timeout_s=120, interval_s=0.2, what="Prometheus to scrape central and the agents")
        yield server
    finally:
        server.stop()


def test_prometheus_reads_the_fleet_as_it_is(fleet, prometheus):
    expected = {region: n + (BURST if region == "us" else 0) for region, n in LOCAL_REQUESTS.items()}
    wait_for(
        lambda: prometheus.by("sum by (region) (edgefleet_fleet_requests_total)", "region") == expected,
        timeout_s=60,
        interval_s=0.5,
        what=f"sum by (region) (edgefleet_fleet_requests_total) to read {expected}",
    )
    assert prometheus.value('edgefleet_fleet_nodes{state="online"}') == 3
    assert prometheus.value('edgefleet_fleet_nodes{state="revoked"}') == 0
    assert prometheus.value("edgefleet_fleet_enrollments_total") == 3
    assert prometheus.value("sum(edgefleet_fleet_enrollment_refusals_total)") == 0
    assert prometheus.value("edgefleet_fleet_heartbeats_total") > 3
    # The rollout to region=eu completed; the run completed.
    assert prometheus.by("edgefleet_fleet_rollouts", "state") == {
        "running": 0, "paused": 0, "completed": 1, "rolled_back": 0, "aborted": 0
    }  # fmt: skip
    models = {(r["metric"]["model"], r["metric"]["version"]): float(r["value"][1])
              for r in prometheus.query("edgefleet_fleet_nodes_by_model")}  # fmt: skip
    # chat@2.0.0 is chat@1.0.0's bytes: the agent serves them as chat@2.0.0, the version central assigned.
    chat = {version: n for (model, version), n in models.items() if model == "chat" and n}
    others = sum(n for (model, _), n in models.items() if model == "smollm2-135m-instruct")
    assert chat == {"2.0.0": 1} and others == 2, models  # us and ap serve the built-in model, unassigned
    runs = prometheus.by("edgefleet_fleet_federated_runs", "state")
    assert runs["completed"] == 1 and sum(runs.values()) == 1, runs
    # Data residency: nothing restricted left a box; the us box's bursts are counted with their usage and price.
    restricted_out = 'sum(edgefleet_fleet_routed_requests_total{data_class="restricted", route=~"upstream:.*"})'
    assert prometheus.value(f"{restricted_out} or vector(0)") == 0
    routed = prometheus.by('sum by (route) (edgefleet_fleet_routed_requests_total{region="us"})', "route")
    assert routed.get("upstream:cloud") == BURST, routed
    tokens = prometheus.by('sum by (direction) (edgefleet_fleet_burst_tokens_total{region="us"})', "direction")
    assert tokens == {"prompt": BURST * 1, "completion": BURST * 1}  # the logging upstream's usage: 1 and 1
    cost = prometheus.value('sum(edgefleet_fleet_burst_cost_total{region="us", upstream="cloud", currency="EUR"})')
    assert cost == pytest.approx(BURST * (0.5 + 1.5) / 1000)
    # Latency histograms: every request counted in some bucket, per region; never a node id label.
    counts = prometheus.by("sum by (region) (edgefleet_fleet_request_duration_seconds_count)", "region")
    assert counts == expected
    names = httpx.get(prometheus.url + "/api/v1/labels", params={"match[]": '{job="edgefleet-central"}'}).json()
    assert "node_id" not in names["data"] and "node" not in names["data"]
    # The agents' own counters agree with central's rollup.
    agent_requests = prometheus.value(
        'sum(edgefleet_requests_total{job="edgefleet-agent", endpoint="/v1/chat/completions"})'
    )
    assert agent_requests == sum(expected.values())


def test_promtool_accepts_the_shipped_rules():
    _require(PROMTOOL)
    rules = [p for p in RULES if not p.name.endswith(".test.yml")]
    assert rules, "packaging/prometheus/ has no rule files"
    for path in rules:
        done = subprocess.run([PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"promtool check rules {path.name}:\n{done.stdout}{done.stderr}"
    for path in (p for p in RULES if p.name.endswith(".test.yml")):
        done = subprocess.run(
            [PROMTOOL, "test", "rules", path.name], capture_output=True, text=True, timeout=120, cwd=path.parent
        )
        assert done.returncode == 0, f"promtool test rules {path.name}:\n{done.stdout}{done.stderr}"


def _grafana_queries(board: dict) -> tuple[list[tuple[str, str]], list[str]]:
    """((panel title, PromQL expression) of every target, the label_values() definitions of its variables)."""
    exprs = []
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            exprs.append((panel["title"], target["expr"]))
    variables = [v["definition"] for v in board["templating"]["list"] if v.get("type") == "query"]
    return exprs, variables


def _substituted(expr: str) -> str:
    for name in sorted(GRAFANA_VARIABLES, key=len, reverse=True):
        expr = expr.replace(name, GRAFANA_VARIABLES[name])
    assert "$" not in expr, f"a Grafana variable the test does not know: {expr}"
    return expr


@pytest.mark.parametrize("path", GRAFANA, ids=lambda p: p.name)
def test_every_grafana_expression_parses_and_returns_data(fleet, prometheus, path):
    board = json.loads(path.read_text())
    exprs, variables = _grafana_queries(board)
    assert len(exprs) >= 15
    # rate() needs two samples within its window of each series: wait until the slowest panel has some.
    empty: list[str] = []

    def all_answer():
        empty.clear()
        for title, expr in exprs:
            reply = httpx.get(prometheus.url + "/api/v1/query", params={"query": _substituted(expr)}, timeout=30)
            body = reply.json()
            assert body["status"] == "success", f"{path.name}, {title!r}: {expr} does not parse: {body}"
            if not body["data"]["result"]:
                empty.append(f"{title!r}: {expr}")
        return not empty

    try:
        wait_for(all_answer, timeout_s=60, interval_s=1.0, what=f"every expression of {path.name} to return data")
    except AssertionError:
        raise AssertionError(f"{path.name}: no data for\n" + "\n".join(empty)) from None
    for definition in variables:
        match = re.fullmatch(r"label_values\((.+), *(\w+)\)", definition)
        assert match, f"{path.name}: variable query {definition!r} is not label_values(SELECTOR, LABEL)"
        selector, label = _substituted(match.group(1)), match.group(2)
        values = httpx.get(
            prometheus.url + f"/api/v1/label/{label}/values", params={"match[]": selector}, timeout=30
        ).json()["data"]
        assert values, f"{path.name}: {definition} lists no values"
    if path.name == "edgefleet-fleet.json":
        regions = httpx.get(
            prometheus.url + "/api/v1/label/region/values", params={"match[]": "edgefleet_fleet_requests_total"}
        ).json()["data"]
        assert sorted(regions) == ["ap", "eu", "us"]
