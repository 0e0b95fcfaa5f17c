"""Federated learning through the whole product: central's supervised SuperLink (TLS from the fleet CA,
SuperNode auth), three enrolled agents each running a supervised SuperNode, `edgefleet fl` commands.

Everything is real: `central serve`, `edge-agent serve` processes, Flower's SuperLink/SuperNode/ClientApp
processes, TLS on loopback. One fleet is shared by the tests of this module (starting it takes a while);
each test leaves it as it found it, or says so.
"""

from __future__ import annotations

import json
import os
import signal
import sys

import numpy as np
import pytest

from tests.agent_process import start_agent
from tests.central_process import create_token, edgefleet_cli, start_central, wait_for

pytestmark = pytest.mark.skipif(sys.version_info < (3, 11), reason="flwr 1.42 needs Python 3.11+")

NODES = 3
RUN_TIMEOUT_S = 420


def _examples(index: int) -> list[tuple[str, str]]:
    rows = []
    for k in range(30):
        rows.append((f"customer {index}-{k} card 4111 1111 1111 {1000 + k} expires 0{k % 9 + 1}/29", "sensitive"))
        rows.append((f"patient record {k}: diagnosis and date of birth 19{50 + k}-0{k % 9 + 1}-1{k % 9}", "sensitive"))
        rows.append((f"summarize the news about topic number {index * 100 + k}", "public"))
        rows.append((f"write a short poem about the season {k} of the year", "public"))
    return rows


def _usage(index: int) -> dict:
    hours = [(h * 7 + index * 13) % 50 for h in range(24)]
    latency = [10 * (index + 1), 5, 3, 2, 1, 0, 0, 0, index]
    return {"requests_per_hour": hours, "latency_buckets": latency, "cache": [index * 4, 40 + index]}


def _write_local_data(data_dir, index: int) -> None:
    from federated.local_data import append_example, usage_path

    for text, label in _examples(index):
        append_example(data_dir, text, label, "operator")
    usage_path(data_dir).write_text(json.dumps(_usage(index)))


@pytest.fixture(scope="module")
def fl_fleet(tmp_path_factory):
    from edge_agent.control.client import enroll
    from edge_agent.control.identity import FleetFiles

    root = tmp_path_factory.mktemp("fl")
    central = start_central(root / "central", "--heartbeat-interval", "0.5s", "--superlink-listen", "127.0.0.1:0")
    agents = []
    try:
        token = create_token(central, uses=NODES + 1)
        nodes = []
        for index in range(NODES):
            data_dir = root / f"agent{index}"
            identity = enroll(central.enroll_address, token.ca_fingerprint, token.token, FleetFiles(data_dir))
            _write_local_data(data_dir, index)
            nodes.append((identity.node_id, data_dir))
        for node_id, data_dir in nodes:
            agents.append(start_agent(data_dir, sections={
                "fleet": {}, "federated": {"enabled": True, "supernode": "flower"}}))
        # Every key registered with the SuperLink by central's reconcile pass.
        wait_for(lambda: sum('"fl.node.register"' in line for line in
                             edgefleet_cli(central, "audit", "list", "--json").splitlines()) >= NODES,
                 timeout_s=60, what="central registering the nodes' Flower keys")
        yield central, nodes, agents, token
    finally:
        for agent in agents:
            agent.stop()
        central.stop()


def _run(central, *args: str) -> dict:
    started = json.loads(edgefleet_cli(central, "fl", "start", *args, "--json"))
    return wait_for(lambda: _finished(central, started["run"]), timeout_s=RUN_TIMEOUT_S, interval_s=1.0,
                    what=f"run {started['run']} to finish")


def _finished(central, run_id: str):
    row = json.loads(edgefleet_cli(central, "fl", "status", run_id, "--json"))
    return row if row["status"] in ("completed", "failed") else None


def _local_updates(nodes, task_name: str, config: dict) -> list[list[np.ndarray]]:
    from federated.fab import DEFAULT_RUN_CONFIG
    from federated.tasks import get_task

    task = get_task(task_name)
    merged = {**DEFAULT_RUN_CONFIG, **config}
    return [task.local_update(data_dir, task.initial_arrays(merged), merged).arrays for _, data_dir in nodes]


def test_sensitivity_secagg_run_registers_a_checked_onnx_classifier(fl_fleet):
    central, nodes, _, _ = fl_fleet
    row = _run(central, "--task", "sensitivity", "--rounds", "1", "--min-nodes", str(NODES))
    assert row["status"] == "completed", row
    assert row["secagg"] and row["nodes"] == NODES and row["rounds_done"] == 1
    assert row["model"] == f"sensitivity-classifier@fl-{row['run']}"

    # The aggregate is the plain mean of the three local updates, within SecAgg+'s quantization
    # (clipping range 8 over 2^22 levels: 3.8e-6 a step, a few steps summed).
    from federated.results import aggregate_path
    results = central.data_dir / "flower" / "results"
    with np.load(aggregate_path(results, int(row["run"]))) as saved:
        aggregate = [saved[k] for k in sorted(saved.files)]
    updates = _local_updates(nodes, "sensitivity", {})
    expected = [np.mean([u[i] for u in updates], axis=0) for i in range(2)]
    for got, want in zip(aggregate, expected):
        assert np.max(np.abs(got - want)) < 1e-4
    assert np.max(np.abs(expected[0])) > 1e-2  # the check above compares real weights, not zeros

    # The registered version is an ONNX model that onnxruntime runs and that agrees with numpy.
    shown = json.loads(edgefleet_cli(central, "models", "show", row["model"], "--json"))["model"]
    assert shown["format"] == "onnx" and shown["pushed_by"] == "central:federated-learning"
    from federated.tasks.sensitivity import check_onnx, featurize_all, predict
    blob = central.data_dir / "blobs"
    onnx_bytes = next(p for p in blob.rglob(shown["sha256"])).read_bytes()
    texts = ["my card 4111 1111 1111 1111 expires 01/29", "write a short poem about the season"]
    assert check_onnx(onnx_bytes, expected[0], float(expected[1][0]), texts) < 1e-4
    probability = predict(expected[0], float(expected[1][0]), featurize_all(texts))
    assert probability[0] > 0.5 > probability[1]

    audit = edgefleet_cli(central, "audit", "list", "--json")
    assert '"fl.start"' in audit and '"fl.finish"' in audit
