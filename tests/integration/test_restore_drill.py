"""The disaster-recovery drill (issue 18), on real processes: lose central's machine, restore it from a backup
onto a new data dir and a new port, and the fleet carries on with no person at any box.

A central (SQLite, 0.5 s heartbeats, its SuperLink) and three real `edge-agent serve` processes on SmolLM2. Before
the backup: chat@1.0.0 on every node, a finished federated usage-stats run, and a rollout of chat@2.0.0 to the three
in progress (its canary step baking). Then `edgefleet central backup` while central serves. After it: the rollout
goes on to every node, an operator labels a node and makes a token, and the agents report (heartbeats central
acknowledges and the backup does not hold). Then central is killed (SIGKILL) and its data dir deleted.

`edgefleet central restore` onto a fresh data dir; central serves it on other ports; each agent is pointed at the
new address with `edge-agent central-addresses set` (no restart, no re-enrollment). Then: every agent is online
with its node id and certificate unchanged; the rollout completes; the federated run is still recorded;
`audit verify` passes across the restore, whose `central.restored` entry follows the backup's head; the reports
acknowledged after the backup arrive again from the agents' spools; and the restore report lists exactly the
assignments made after the backup (the nodes the rollout reached after it), not the nodes it reached before.
What the drill measures (restore time, time until every agent is back) is printed, not asserted.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

import fleet_activity
from agent_process import AgentProcess, start_agent
from central.datadir import initialize
from central_process import CentralProcess, create_token, edgefleet_cli, kill, start_central, wait_for

pytestmark = pytest.mark.skipif(sys.version_info < (3, 11), reason="flwr 1.42 needs Python 3.11+")

PASSPHRASE = "correct horse battery staple, drill edition"
# Long enough that the backup lands while the canary bakes, even on a loaded machine (the test checks it did).
BAKE_S = 20
PASSPHRASE_ENV = {"EDGEFLEET_BACKUP_PASSPHRASE": PASSPHRASE}
SERVE_ARGS = ("--heartbeat-interval", "0.5s", "--superlink-listen", "127.0.0.1:0")


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """`edgefleet ARGS` as a separate process, as an operator runs it on the central's machine."""
    return subprocess.run(
        [sys.executable, "-m", "central.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


def _agent_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge_agent.cli", *args], capture_output=True, text=True, timeout=120)


def _nodes(central: CentralProcess) -> dict[str, dict]:
    return {n["node"]: n for n in json.loads(edgefleet_cli(central, "nodes", "list", "--json"))}


def _desired(central: CentralProcess, rollout_id: str) -> dict[str, str]:
    """Each node's desired version, as the rollout shows it."""
    row = json.loads(edgefleet_cli(central, "rollout", "status", rollout_id, "--json"))
    return {n["node"]: n["desired"] for n in row["nodes"]}


def _versions_in_backup(backup: Path, scratch: Path, node_ids: list[str]) -> dict[str, str]:
    """Each node's desired version as the backup holds it: restored into a scratch data dir and read from its
    store (what the live central said a moment later may already be a step further)."""
    from central.datadir import CentralPaths, store_spec
    from central.store import open_store

    result = _cli(
        "central", "restore", str(backup), "--data-dir", str(scratch), env={"EDGEFLEET_BACKUP_PASSPHRASE": PASSPHRASE}
    )
    assert result.returncode == 0, result.stderr
    store = open_store(store_spec(CentralPaths(scratch)))
    try:
        return {n: (store.heartbeat_target(n).model or {}).get("version", "") for n in node_ids}
    finally:
        store.close()


def _report_sequences(store: Path) -> dict[str, set[int]]:
    """Every report sequence a central's SQLite store holds, by node (read-only: a killed central's file too)."""
    import sqlite3

    conn = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    try:
        held: dict[str, set[int]] = {}
        for node_id, sequence in conn.execute("SELECT node_id, sequence FROM reports"):
            held.setdefault(node_id, set()).add(sequence)
        return held
    finally:
        conn.close()


def _chat(agent: AgentProcess, text: str) -> None:
    model = httpx.get(agent.base_url + "/v1/models", timeout=30).json()["data"][0]["id"]
    reply = httpx.post(
        agent.base_url + "/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": 4},
        timeout=120,
    )
    assert reply.status_code == 200, reply.text


def _online(central: CentralProcess, node_ids: list[str]) -> bool:
    nodes = _nodes(central)
    return all(nodes.get(n, {}).get("status") == "online" for n in node_ids)


def test_restore_drill(tmp_path):
    from edge_agent.control.client import enroll
    from edge_agent.control.identity import FleetFiles
    from edge_agent.models import resolve_model

    passphrase_file = tmp_path / "passphrase"
    passphrase_file.write_text(PASSPHRASE + "\n")
    passphrase_file.chmod(0o600)
    backup = tmp_path / "central.backup"
    central = restored = None
    agents: list[AgentProcess] = []
    node_ids: list[str] = []
    try:
        central = start_central(tmp_path / "central", *SERVE_ARGS)
        for index in range(3):
            token = create_token(central, site=f"s{index}")
            data_dir = tmp_path / f"agent-{index}"
            identity = enroll(central.enroll_address, token.ca_fingerprint, token.token, FleetFiles(data_dir))
            node_ids.append(identity.node_id)
            fleet_activity.write_usage(data_dir, index)
            agents.append(
                start_agent(
                    data_dir,
                    sections={
                        "fleet": {"max_backoff_s": 1.0},
                        "federated": {"enabled": True},
                        "model": {"n_ctx": 512, "n_parallel": 1, "n_threads": 1},
                    },
                )
            )
        certificates = {n: FleetFiles(tmp_path / f"agent-{i}").certificate.read_bytes() for i, n in enumerate(node_ids)}
        fleet_activity.wait_for_flower_keys(central, 3)

        # Before the backup: a finished federated run; chat@1.0.0 everywhere; chat@2.0.0 rolling out, canary baking.
        run = fleet_activity.start_usage_stats_run(central, min_nodes=3)
        assert fleet_activity.run_ended(central, run["run"])["status"] == "completed"
        smol = resolve_model("smollm2-135m-instruct", "", tmp_path / "models")
        for version in ("1.0.0", "2.0.0"):
            fleet_activity.push(central, smol.path, "chat", version)
        for node_id in node_ids:
            fleet_activity.assign(central, node_id, "chat@1.0.0")
        for node_id in node_ids:
            fleet_activity.wait_active(central, node_id, "chat@1.0.0")
        rollout_args = ("--canary", "10", "--steps", "100", "--bake", f"{BAKE_S}s", "--max-p99-ms", "120000")
        rollout = json.loads(edgefleet_cli(central, "rollout", "start", "chat@2.0.0", *rollout_args, "--json"))
        canary = wait_for(
            lambda: [n for n, v in _desired(central, rollout["rollout"]).items() if v == "2.0.0"],
            what="the canary's assignment",
        )
        assert len(canary) == 1

        result = _cli(
            "central", "backup", "--data-dir", str(central.data_dir), "--out", str(backup),
            "--passphrase-file", str(passphrase_file),
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        verified = _cli("central", "backup", "verify", str(backup), "--passphrase-file", str(passphrase_file), "--json")
        assert verified.returncode == 0, verified.stderr
        manifest = json.loads(verified.stdout)
        before_backup = _versions_in_backup(backup, tmp_path / "scratch", node_ids)
        assert before_backup[canary[0]] == "2.0.0"

        # After the backup: the rollout reaches the other two, an operator acts, the agents report.
        for agent in agents:
            _chat(agent, "Say hello.")
        assert fleet_activity.rollout_ended(central, rollout["rollout"])["phase"] == "COMPLETED"
        edgefleet_cli(central, "nodes", "label", node_ids[0], "tier=gold")
        edgefleet_cli(central, "token", "create", "--json")
        assigned_after = sorted(n for n in node_ids if before_backup[n] != "2.0.0")
        assert assigned_after, f"the backup was taken after the rollout's last step (its bake is {BAKE_S} s)"
        # The machine is lost: the process killed (its acknowledged reports read first), the data dir gone.
        kill(central)
        acknowledged = _report_sequences(central.paths.store)
        shutil.rmtree(central.data_dir)

        started = time.monotonic()
        restore_dir = tmp_path / "restored"
        result = _cli(
            "central", "restore", str(backup), "--data-dir", str(restore_dir), "--json",
            env={"EDGEFLEET_BACKUP_PASSPHRASE": PASSPHRASE},
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        restore = json.loads(result.stdout)
        assert restore["backup_id"] == manifest["backup_id"]
        restored = CentralProcess(restore_dir, list(SERVE_ARGS))
        restored.start()
        assert restored.fleet_address != central.fleet_address
        for agent in agents:
            pointed = _agent_cli("central-addresses", "set", restored.fleet_address, "--data-dir", str(agent.data_dir))
            assert pointed.returncode == 0, pointed.stderr
        wait_for(lambda: _online(restored, node_ids), timeout_s=180, what="every agent online at the restored central")
        rto_s = time.monotonic() - started
        print(f"drill: restore to every agent online took {rto_s:.1f} s")

        # Nobody re-enrolled: same node ids, same certificates, every agent still running.
        assert sorted(_nodes(restored)) == sorted(node_ids)
        for node_id, agent in zip(node_ids, agents, strict=True):
            assert agent.proc.poll() is None
            assert FleetFiles(agent.data_dir).certificate.read_bytes() == certificates[node_id]

        # The rollout resumes from its stored state and completes (with traffic on the new version).
        for agent in agents:
            _chat(agent, "Say hello again.")
        assert fleet_activity.rollout_ended(restored, rollout["rollout"])["phase"] == "COMPLETED"
        assert set(_desired(restored, rollout["rollout"]).values()) == {"2.0.0"}

        # The federated run recorded before the backup is still there.
        assert json.loads(edgefleet_cli(restored, "fl", "status", str(run["run"]), "--json"))["status"] == "completed"

        # The audit chain verifies across the restore, which it records after the backup's head.
        edgefleet_cli(restored, "audit", "verify")
        entries = json.loads(edgefleet_cli(restored, "audit", "list", "--json"))
        restored_entries = [e for e in entries if e["action"] == "central.restored"]
        assert len(restored_entries) == 1
        assert int(restored_entries[0]["sequence"]) == manifest["audit_head"]["sequence"] + 1

        # The reports acknowledged after the backup come back from the spools.
        def every_report_back() -> bool:
            held = _report_sequences(restored.paths.store)
            return all(acknowledged.get(n, set()) <= held.get(n, set()) for n in node_ids)

        wait_for(every_report_back, timeout_s=120, what="the reports acknowledged after the backup to arrive again")
        assert not [f for f in json.loads(edgefleet_cli(restored, "central", "restore-report", "--json"))["findings"]
                    if f["kind"] == "reports_lost"]  # fmt: skip

        # The restore report lists exactly what was lost that the nodes could show: the two assignments.
        report = json.loads(edgefleet_cli(restored, "central", "restore-report", "--json"))
        assert report["restored"] is True
        lost = sorted(f["node_id"] for f in report["findings"] if f["kind"] == "assignment_after_backup")
        assert lost == assigned_after
        assert not [f for f in report["findings"] if f["kind"] in ("node_enrolled_after_backup", "model_missing")]
        # The label set after the backup is gone, as the restore said it would be.
        assert "tier" not in _nodes(restored)[node_ids[0]].get("labels", {})
    finally:
        for agent in agents:
            agent.stop()
        for process in (restored, central):
            if process is not None:
                process.stop()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_agents_find_a_restored_central_at_the_second_address_enrollment_gave(tmp_path):
    """Central hands enrolling agents two addresses, its own and a standby's (`--fleet-addresses`); restored onto
    the standby address, it is found by the agents with nobody touching them."""
    from edge_agent.control.client import enroll
    from edge_agent.control.identity import FleetFiles

    primary, standby = f"127.0.0.1:{_free_port()}", f"127.0.0.1:{_free_port()}"
    addresses = ("--heartbeat-interval", "0.5s", "--fleet-addresses", f"{primary},{standby}")
    backup = tmp_path / "central.backup"
    env = {"EDGEFLEET_BACKUP_PASSPHRASE": PASSPHRASE}
    central = restored = agent = None
    try:
        central = CentralProcess(tmp_path / "central", [*addresses, "--no-superlink"])
        initialize(central.data_dir, primary)
        central.start(fleet_listen=primary)
        token = create_token(central)
        identity = enroll(central.enroll_address, token.ca_fingerprint, token.token, FleetFiles(tmp_path / "agent"))
        assert identity.fleet_addresses == (primary, standby)
        agent = start_agent(
            tmp_path / "agent", sections={"fleet": {"max_backoff_s": 1.0}, "model": {"n_ctx": 512, "n_threads": 1}}
        )
        wait_for(lambda: _online(central, [identity.node_id]), what="the agent online")
        result = _cli("central", "backup", "--data-dir", str(central.data_dir), "--out", str(backup), env=env)
        assert result.returncode == 0, result.stderr

        kill(central)
        shutil.rmtree(central.data_dir)
        result = _cli("central", "restore", str(backup), "--data-dir", str(tmp_path / "restored"), env=env)
        assert result.returncode == 0, result.stderr
        restored = CentralProcess(tmp_path / "restored", [*addresses, "--no-superlink"])
        restored.start(fleet_listen=standby)
        wait_for(lambda: _online(restored, [identity.node_id]), timeout_s=120, what="the agent at the standby address")
        assert agent.proc.poll() is None
        assert FleetFiles(agent.data_dir).load().node_id == identity.node_id
    finally:
        if agent is not None:
            agent.stop()
        for process in (restored, central):
            if process is not None:
                process.stop()
