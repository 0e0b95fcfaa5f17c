"""Federated learning through the whole product: central's supervised SuperLink (TLS from the fleet CA,
SuperNode auth), three enrolled agents each running a supervised SuperNode, `edgefleet fl` commands.

Everything is real: `central serve`, `edge-agent serve` processes, Flower's SuperLink/SuperNode/ClientApp
processes, TLS on loopback. One fleet is shared by the tests of this module (starting it takes a while);
each test leaves it as it found it, or says so.

A mixed fleet, as a real one is: node 0 runs the stock flower-supernode, node 1 the default fast one, and
node 2 is an agent on Python 3.10, as on JetPack 6, whose SuperNode runs under a Python 3.11+ in the
SuperNode venv that `edge-agent supernode-venv` built inside its venv (tests/py310_venv.py: built once and
cached, about 4 minutes the first time for llama-cpp-python). Where no Python 3.10 is found node 2 runs on
this interpreter, and the one test about it skips with the reason (under CI=true it fails).
"""

from __future__ import annotations

import json
import os
import signal
import sys

import numpy as np
import py310_venv
import pytest

from agent_process import start_agent
from central_process import create_token, edgefleet_cli, start_central, wait_for

pytestmark = [
    pytest.mark.skipif(sys.version_info < (3, 11), reason="central's SuperLink (flwr 1.42) needs Python 3.11+"),
    # The first run on a machine builds the Python 3.10 agent's venv (llama-cpp-python compiles) in the fixture.
    pytest.mark.timeout(1200),
]

NODES = 3
RUN_TIMEOUT_S = 420
# A mixed fleet: node 0 runs the stock flower-supernode, the others the default fast one, in the same runs.
AGENT_SECTIONS = {"fleet": {}, "federated": {"enabled": True}}
STOCK_SECTIONS = {"fleet": {}, "federated": {"enabled": True, "supernode": "flower", "accept_code_bundles": True}}


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


def _py310_agent() -> tuple[str, dict, dict] | None:
    """(python, sections, env) for node 2 on Python 3.10, or None where this machine has no Python 3.10."""
    python310 = py310_venv.find_python310()
    if python310 is None:
        return None
    venv, built_s = py310_venv.agent_venv_310(python310)
    if built_s:
        print(f"built the Python 3.10 agent venv {venv} in {built_s:.0f} s")
    # A bare Python 3.11+, as /usr/bin/python3.11 on the box: the agent runs its SuperNode through the venv
    # `edge-agent supernode-venv` built from it.
    sections = {"fleet": {}, "federated": {"enabled": True, "python": py310_venv.supernode_interpreter()}}
    return str(venv / "bin" / "python"), sections, {"PYTHONPATH": str(py310_venv.ROOT)}


@pytest.fixture(scope="module")
def py310_agent():
    return _py310_agent()


def _start_node(index: int, data_dir, py310_agent):
    if index == 2 and py310_agent is not None:
        python, sections, env = py310_agent
        return start_agent(data_dir, sections=sections, env=env, python=python)
    return start_agent(data_dir, sections=STOCK_SECTIONS if index == 0 else AGENT_SECTIONS)


@pytest.fixture(scope="module")
def fl_fleet(tmp_path_factory, py310_agent):
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
        for index, (_node_id, data_dir) in enumerate(nodes):
            agents.append(_start_node(index, data_dir, py310_agent))
        # Every key registered with the SuperLink by central's reconcile pass.
        wait_for(
            lambda: (
                sum(
                    '"fl.node.register"' in line
                    for line in edgefleet_cli(central, "audit", "list", "--json").splitlines()
                )
                >= NODES
            ),
            timeout_s=120,
            what="central registering the nodes' Flower keys",
        )
        yield central, nodes, agents, token
    finally:
        for agent in agents:
            agent.stop()
        central.stop()


def _run(central, *args: str) -> dict:
    started = json.loads(edgefleet_cli(central, "fl", "start", *args, "--json"))
    return wait_for(
        lambda: _finished(central, started["run"]),
        timeout_s=RUN_TIMEOUT_S,
        interval_s=1.0,
        what=f"run {started['run']} to finish",
    )


def _finished(central, run_id: str):
    row = json.loads(edgefleet_cli(central, "fl", "status", run_id, "--json"))
    return row if row["status"] in ("completed", "failed") else None


def _local_updates(nodes, task_name: str, config: dict) -> list[list[np.ndarray]]:
    from federated.fab import DEFAULT_RUN_CONFIG
    from federated.tasks import get_task

    task = get_task(task_name)
    merged = {**DEFAULT_RUN_CONFIG, **config}
    return [task.local_update(data_dir, task.initial_arrays(merged), merged).arrays for _, data_dir in nodes]


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--task", "translation", "--min-nodes", "3"],
            "unknown task 'translation'; known tasks: sensitivity, usage-stats",
        ),
        (["--task", "sensitivity", "--min-nodes", "1"], "--min-nodes must be at least 2"),
        (["--task", "sensitivity", "--min-nodes", "2"], "SecAgg+ needs at least 3 nodes"),
        (
            ["--task", "sensitivity", "--min-nodes", "3", "--secagg-threshold", "3"],
            "must be at least 2 and below the shares (3)",
        ),
        (
            ["--task", "sensitivity", "--min-nodes", "3", "--secagg-shares", "4"],
            "--secagg-shares must be between 3 and",
        ),
        (["--task", "sensitivity", "--min-nodes", "3", "--noise", "0.5"], "--noise needs --clip"),
        (["--task", "sensitivity", "--min-nodes", "3", "--no-secagg", "--secagg-shares", "3"], "need SecAgg+"),
        (["--task", "sensitivity", "--min-nodes", "3", "--rounds", "5000"], "--rounds must be between 1 and 1000"),
    ],
)
def test_a_bad_run_request_is_refused_with_the_reason_and_audited(fl_fleet, capsys, args, message):
    from central.cli import main

    central = fl_fleet[0]
    code = main(
        ["--credential", str(central.paths.admin_credential), "--central", central.fleet_address, "fl", "start", *args]
    )
    assert code == 2 and message in capsys.readouterr().err
    entries = json.loads(edgefleet_cli(central, "audit", "list", "--json"))
    last = [e for e in entries if e["action"] == "fl.start"][-1]
    assert last["outcome"] == "AUDIT_OUTCOME_REFUSED" and message in last["detail"]


def test_sensitivity_secagg_run_registers_a_checked_onnx_classifier(fl_fleet):
    central, nodes, _, _ = fl_fleet
    row = _run(central, "--task", "sensitivity", "--rounds", "1", "--min-nodes", str(NODES), "--record-received")
    assert row["status"] == "completed", row
    assert row["secagg"] and row["nodes"] == NODES and row["rounds_done"] == 1
    assert row["model"] == f"sensitivity-classifier@fl-{row['run']}"

    # The aggregate is the plain mean of the three local updates, within SecAgg+'s quantization
    # (clipping range 8 over 2^22 levels: 3.8e-6 a step, a few steps summed).
    from federated.results import aggregate_path

    results = central.data_dir / "superlink" / "results"
    with np.load(aggregate_path(results, int(row["run"]))) as saved:
        aggregate = [saved[k] for k in sorted(saved.files)]
    updates = _local_updates(nodes, "sensitivity", {})
    expected = [np.mean([u[i] for u in updates], axis=0) for i in range(2)]
    for got, want in zip(aggregate, expected, strict=True):
        assert np.max(np.abs(got - want)) < 1e-4
    assert np.max(np.abs(expected[0])) > 1e-2  # the check above compares real weights, not zeros

    # The registered version is an ONNX model that onnxruntime runs and that agrees with numpy.
    shown = json.loads(edgefleet_cli(central, "models", "show", row["model"], "--json"))["model"]
    assert shown["format"] == "onnx" and shown["pushed_by"] == "central:federated-learning"
    from edgefleet.featurize import featurize_all
    from federated.tasks.sensitivity import check_onnx, predict

    blob = central.data_dir / "blobs"
    onnx_bytes = next(p for p in blob.rglob(shown["sha256"])).read_bytes()
    texts = ["my card 4111 1111 1111 1111 expires 01/29", "write a short poem about the season"]
    assert check_onnx(onnx_bytes, expected[0], float(expected[1][0]), texts) < 1e-4
    probability = predict(expected[0], float(expected[1][0]), featurize_all(texts))
    assert probability[0] > 0.5 > probability[1]

    audit = edgefleet_cli(central, "audit", "list", "--json")
    assert '"fl.start"' in audit and '"fl.finish"' in audit

    # What central held of each node: masked vectors, nowhere near any node's own quantized update.
    from flwr.common.secure_aggregation.quantization import quantize

    from federated.results import received_path

    with np.load(received_path(results, int(row["run"]))) as received:
        masked = [received[k] for k in received.files if k.endswith("_array1")]  # [factor, weights, bias]
    assert len(masked) == NODES
    for vector in masked:
        for update in updates:
            (quantized,) = quantize([update[0]], 8.0, 4194304)
            close = np.mean(np.abs(vector.astype(np.int64) - quantized.astype(np.int64)) <= 2)
            assert close < 0.01, f"a received vector matches a node's update in {close:.1%} of coordinates"


def test_the_python_310_agent_takes_part_through_its_supernode_venv(fl_fleet, py310_agent):
    """Node 2's agent runs on Python 3.10 and its SuperNode on a 3.11+ in <venv>/supernode; status and doctor
    say so. (The sensitivity run above, with --min-nodes 3 of three nodes, had it take part.)"""
    import subprocess

    import psutil

    if py310_agent is None:
        if os.environ.get("CI") == "true":
            pytest.fail("no Python 3.10 on this machine (EDGEFLEET_TEST_PYTHON310, python3.10 or pyenv's)")
        pytest.skip("no Python 3.10 on this machine (set EDGEFLEET_TEST_PYTHON310): node 2 ran on this interpreter")
    python, _, env = py310_agent
    _, nodes, agents, _ = fl_fleet
    data_dir = nodes[2][1]

    def version(path: str) -> tuple[int, int]:
        out = subprocess.run([path, "-c", "import sys; print(*sys.version_info[:2])"], capture_output=True, text=True)
        major, minor = out.stdout.split()
        return int(major), int(minor)

    agent_process = psutil.Process(agents[2].pid)
    assert version(agent_process.exe()) == (3, 10)
    supernode_venv = os.path.join(os.path.dirname(os.path.dirname(python)), "supernode")
    (supernode,) = [p for p in agent_process.children() if "federated.fast_supernode" in " ".join(p.cmdline())]
    assert supernode.cmdline()[0] == os.path.join(supernode_venv, "bin", "python")
    assert version(supernode.cmdline()[0]) >= (3, 11)

    cli_env = {**os.environ, **env}
    status = json.loads(
        subprocess.run(
            [python, "-m", "edge_agent.cli", "status", "--data-dir", str(data_dir), "--json"],
            capture_output=True,
            text=True,
            env=cli_env,
            check=True,
        ).stdout
    )
    federated = status["federated"]
    assert federated["enabled"] and federated["able"] and federated["detail"] == "", federated
    assert federated["python"] == supernode.cmdline()[0] and federated["python_version"].startswith("3.1")
    doctor = json.loads(
        subprocess.run(
            [python, "-m", "edge_agent.cli", "doctor", "--config", str(data_dir / "agent.toml"), "--json"],
            capture_output=True,
            text=True,
            env=cli_env,
            check=False,
        ).stdout
    )
    (finding,) = [f for f in doctor["findings"] if f["check"] == "federated"]
    assert finding["status"] == "ok" and "takes part in central's runs" in finding["message"], finding


def test_a_python_310_agent_whose_supernode_python_is_unusable_serves_and_says_why(py310_agent, tmp_path):
    """Tried: [federated] python naming a missing interpreter, then a Python 3.10 one. The agent starts, serves,
    logs the reason with the steps, and `edge-agent status` shows them; nothing is enrolled, so nothing else
    could be the reason."""
    import subprocess

    import httpx

    if py310_agent is None:
        if os.environ.get("CI") == "true":
            pytest.fail("no Python 3.10 on this machine (EDGEFLEET_TEST_PYTHON310, python3.10 or pyenv's)")
        pytest.skip("no Python 3.10 on this machine (set EDGEFLEET_TEST_PYTHON310)")
    python, _, env = py310_agent
    cases = [(str(tmp_path / "no-such-python3.11"), "does not exist"), (python, "flwr 1.42.0 needs Python 3.11")]
    for configured, reason in cases:
        data_dir = tmp_path / f"agent-{len(reason)}"
        sections = {"federated": {"enabled": True, "python": configured}}
        agent = start_agent(data_dir, sections=sections, env=env, python=python)
        try:
            assert httpx.get(agent.base_url + "/healthz", timeout=10).status_code == 200
            assert "does not take part in federated learning" in agent.log() and reason in agent.log()
            status = subprocess.run(
                [python, "-m", "edge_agent.cli", "status", "--data-dir", str(data_dir)],
                capture_output=True,
                text=True,
                env={**os.environ, **env},
                check=True,
            ).stdout
            (line,) = [x for x in status.splitlines() if x.startswith("federated:")]
            assert line.startswith("federated:   not taking part: ") and reason in line
            # Neither is a Python 3.11+: the steps start with installing one.
            assert "(1) install a Python 3.11+" in line and "supernode-venv --python /usr/bin/python3.11" in line, line
        finally:
            agent.stop()


def test_usage_stats_secagg_gives_fleet_sums_only(fl_fleet):
    central, _nodes, _, _ = fl_fleet
    row = _run(central, "--task", "usage-stats", "--rounds", "1", "--min-nodes", str(NODES))
    assert row["status"] == "completed", row
    outcome = row["outcome"]
    usages = [_usage(i) for i in range(NODES)]
    assert outcome["requests_per_hour"] == [sum(u["requests_per_hour"][h] for u in usages) for h in range(24)]
    assert outcome["latency_counts"] == [sum(u["latency_buckets"][b] for u in usages) for b in range(9)]
    assert outcome["cache_hits"] == sum(u["cache"][0] for u in usages)
    assert outcome["cache_lookups"] == sum(u["cache"][1] for u in usages)
    assert row["model"] == ""  # analytics, nothing for the registry
    listed = json.loads(edgefleet_cli(central, "fl", "list", "--json"))
    assert listed[0]["run"] == row["run"]


def test_plain_fedavg_without_secagg_gives_the_exact_mean(fl_fleet):
    from federated.results import aggregate_path

    central, nodes, _, _ = fl_fleet
    row = _run(central, "--task", "sensitivity", "--rounds", "1", "--min-nodes", str(NODES), "--no-secagg")
    assert row["status"] == "completed" and not row["secagg"], row
    with np.load(aggregate_path(central.data_dir / "superlink" / "results", int(row["run"]))) as saved:
        aggregate = [saved[k] for k in sorted(saved.files)]
    updates = _local_updates(nodes, "sensitivity", {})
    for got, i in zip(aggregate, range(2), strict=True):
        assert np.max(np.abs(got - np.mean([u[i] for u in updates], axis=0))) < 1e-6


def test_differential_privacy_clips_and_adds_noise_inside_secagg(fl_fleet):
    from federated.results import aggregate_path

    central, nodes, _, _ = fl_fleet
    row = _run(
        central, "--task", "sensitivity", "--rounds", "1", "--min-nodes", str(NODES), "--clip", "0.5", "--noise", "0.1"
    )
    assert row["status"] == "completed", row
    with np.load(aggregate_path(central.data_dir / "superlink" / "results", int(row["run"]))) as saved:
        weights = saved[sorted(saved.files)[0]]
    updates = _local_updates(nodes, "sensitivity", {})
    # Each node's update (from zeros) is clipped to norm 0.5 before masking, so without noise the
    # aggregate's norm would be at most 0.5; the plain mean's is far above that.
    plain = np.mean([u[0] for u in updates], axis=0)
    assert np.linalg.norm(plain) > 1.0
    # Gaussian noise of std noise * clip / nodes on each of 16,384 weights: the norm of the noise alone.
    expected_noise_norm = 0.1 * 0.5 / NODES * np.sqrt(weights.size)
    assert np.linalg.norm(weights) < 0.5 + 2 * expected_noise_norm
    assert np.linalg.norm(weights) > 0.5 * expected_noise_norm


def test_bad_local_data_is_a_node_error_in_the_status_not_a_hung_round(fl_fleet):
    from federated.local_data import examples_path

    central, nodes, _, _ = fl_fleet
    (bad_id, bad_dir), (empty_id, empty_dir) = nodes[2], nodes[1]
    saved = {d: examples_path(d).read_bytes() for d in (bad_dir, empty_dir)}
    try:
        with open(examples_path(bad_dir), "a") as rows:
            rows.write('{"text": "no label here"}\n')
        # One bad node of three: SecAgg+'s threshold (2) is met without it; the status names its error. Each
        # node answers or reports its error, so the stage timeout is only a bound, generous for a busy machine.
        row = _run(
            central, "--task", "sensitivity", "--rounds", "1", "--min-nodes", str(NODES), "--stage-timeout", "120s"
        )
        assert row["status"] == "completed", row
        line = len(saved[bad_dir].splitlines()) + 1
        assert any(
            e.startswith(f"{bad_id}: ") and f"examples.jsonl:{line}: label must be one of" in e
            for e in row["node_errors"]
        ), row["node_errors"]

        # Two of three: too few for the threshold; the run fails with a clear status and registers nothing.
        examples_path(empty_dir).write_text("")
        row = _run(
            central, "--task", "sensitivity", "--rounds", "1", "--min-nodes", str(NODES), "--stage-timeout", "120s"
        )
        assert row["status"] == "failed" and row["model"] == "", row
        assert "round 1 failed: too few nodes returned an update" in row["error"]
        assert any(e.startswith(f"{empty_id}: ") and "is empty" in e for e in row["node_errors"]), row
    finally:
        for data_dir, content in saved.items():
            examples_path(data_dir).write_bytes(content)


def test_a_node_killed_after_share_keys_leaves_the_threshold_met(fl_fleet, py310_agent):
    from federated.local_data import examples_path
    from federated.results import aggregate_path, read_report

    central, nodes, agents, _ = fl_fleet
    results = central.data_dir / "superlink" / "results"
    victim_dir = nodes[2][1]
    saved = examples_path(victim_dir).read_bytes()
    # Long prompts make the victim's training take seconds (about 40 ms each to featurize), so it is
    # surely still training, after the key exchange and before its masked vector, when it is killed.
    long_text = " ".join(f"word{i}" for i in range(5000))[:30_000]
    with open(examples_path(victim_dir), "a") as rows:
        rows.writelines(json.dumps({"text": long_text, "label": "public"}) + "\n" for _ in range(300))
    try:
        started = json.loads(
            edgefleet_cli(
                central,
                "fl",
                "start",
                "--task",
                "sensitivity",
                "--rounds",
                "1",
                "--min-nodes",
                str(NODES),
                "--stage-timeout",
                "60s",
                "--json",
            )
        )
        run_id = int(started["run"])

        def share_keys_done():
            report = read_report(results, run_id) or {}
            return any(e["stage"].endswith("share_keys") for e in report.get("exchanges", []))

        wait_for(share_keys_done, timeout_s=RUN_TIMEOUT_S, interval_s=0.05, what="the share-keys stage")
        victim = agents[2]
        os.kill(victim.pid, signal.SIGKILL)  # its SuperNode goes with it (it dies with its parent)
        victim.proc.wait(10)
        row = wait_for(
            lambda: _finished(central, str(run_id)),
            timeout_s=RUN_TIMEOUT_S,
            interval_s=1.0,
            what="the run to finish without the killed node",
        )
    finally:
        examples_path(victim_dir).write_bytes(saved)
        # Back to three nodes for the next test.
        agents[2] = _start_node(2, victim_dir, py310_agent)
    assert row["status"] == "completed", row
    # The dead node is named in the status: by the SuperLink's "Node Unavailable" error reply, or as
    # "no reply within 60s" when the stage timed out first (60 s: the survivors on a busy machine answer well
    # within it).
    assert [e.split(":")[0] for e in row["node_errors"]] == [nodes[2][0]], row["node_errors"]
    with np.load(aggregate_path(results, run_id)) as saved_arrays:
        aggregate = [saved_arrays[k] for k in sorted(saved_arrays.files)]
    survivors = _local_updates(nodes[:2], "sensitivity", {})
    for got, i in zip(aggregate, range(2), strict=True):
        assert np.max(np.abs(got - np.mean([u[i] for u in survivors], axis=0))) < 1e-4


def test_a_superlink_restart_loses_the_run_in_flight_and_the_fleet_carries_on(fl_fleet):
    import psutil

    central, _nodes, _, _ = fl_fleet
    waiting = json.loads(
        edgefleet_cli(
            central,
            "fl",
            "start",
            "--task",
            "sensitivity",
            "--min-nodes",
            str(NODES + 1),
            "--wait-nodes",
            "10m",
            "--json",
        )
    )
    wait_for(
        lambda: (
            json.loads(edgefleet_cli(central, "fl", "status", waiting["run"], "--json"))["status"]
            == "waiting-for-nodes"
        ),
        timeout_s=120,
        what="the run to wait for a fourth node",
    )
    superlink = next(
        p for p in psutil.Process(central.pid).children() if "federated.superlink" in " ".join(p.cmdline())
    )
    superlink.kill()  # central's supervisor starts it again, with empty state
    lost = wait_for(lambda: _finished(central, waiting["run"]), timeout_s=120, what="the lost run to fail")
    assert lost["status"] == "failed" and "restarted during the run" in lost["error"], lost
    # Every node's key registered again, and the SuperNodes back: a new run completes.
    wait_for(
        lambda: edgefleet_cli(central, "audit", "list", "--json").count("the SuperLink had lost node") >= NODES,
        timeout_s=120,
        what="the keys registered again",
    )
    row = _run(central, "--task", "usage-stats", "--rounds", "1", "--min-nodes", str(NODES), "--wait-nodes", "5m")
    assert row["status"] == "completed", row


def test_a_revoked_node_is_unregistered_and_cannot_join(fl_fleet):
    from federated.control import FlowerControl

    central, nodes, _, _ = fl_fleet
    revoked_id = nodes[2][0]
    edgefleet_cli(central, "nodes", "revoke", revoked_id)
    wait_for(
        lambda: '"fl.node.unregister"' in edgefleet_cli(central, "audit", "list", "--json"),
        timeout_s=60,
        what="central unregistering the revoked node's key",
    )
    superlink = (central.data_dir / "superlink-address").read_text().strip()
    flower = central.data_dir / "flower"  # central's Control certificate: the SuperLink refuses any other caller
    control = FlowerControl(
        superlink, central.paths.ca_cert.read_bytes(), flower / "control.crt", flower / "control.key"
    )
    try:
        statuses = sorted(control.registered_nodes().values())
    finally:
        control.close()
    assert statuses.count("unregistered") == 1
    row = _run(central, "--task", "sensitivity", "--rounds", "1", "--min-nodes", str(NODES), "--wait-nodes", "15s")
    assert row["status"] == "failed" and row["model"] == ""
    assert f"only 2 of the {NODES} nodes needed connected" in row["error"], row
