"""Recovery time (RTO) of the disaster-recovery drill (issue 18), on real processes.

A real `edgefleet central serve` (SQLite) with three real `edge-agent serve` processes (SmolLM2, one decoding
thread each) enrolled and online. Each round: `edgefleet central backup` while central serves, central killed
(SIGKILL) and its data dir deleted, then the clock starts: `edgefleet central restore` onto a new data dir,
`central serve` on a new port, `edge-agent central-addresses set` on each box, until central lists every agent
online again. The restored central is the next round's. Two fleets in the same run, the peers of each other: the
three agents alone, and the same three beside 10,000 recorded nodes and 1,000,000 reports (filled by
bench/backup.py's batch SQL), so the ratio says what the store's size adds to the RTO.

Results: bench/results/restore_rto-<date>.json (or --out). Usage:
    python bench/restore_rto.py [--rounds 3] [--nodes 10000] [--reports-per-node 100]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from results_file import describe_machine, write_results  # bench/ is on sys.path when run as a script

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "tests")]

from backup import fill_sqlite  # noqa: E402

from agent_process import start_agent  # noqa: E402
from central.datadir import initialize  # noqa: E402
from central_process import CentralProcess, create_token, edgefleet_cli, kill, wait_for  # noqa: E402
from edge_agent.control.client import enroll  # noqa: E402
from edge_agent.control.identity import FleetFiles  # noqa: E402

ENV = {"EDGEFLEET_BACKUP_PASSPHRASE": "bench passphrase, not a secret"}
SERVE_ARGS = ["--heartbeat-interval", "1s", "--no-superlink"]


def _run(*cmd: str) -> float:
    """Run a command to completion (failing loudly); its wall time in seconds."""
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **ENV}, timeout=900)
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd)} exited {done.returncode}: {done.stderr}")
    return time.perf_counter() - started


def _online(central: CentralProcess, node_ids: list[str]) -> bool:
    rows = {r["node"]: r for r in json.loads(edgefleet_cli(central, "nodes", "list", "--json"))}
    return all(rows.get(n, {}).get("status") == "online" for n in node_ids)


def _cli(module: str, *args: str) -> float:
    return _run(sys.executable, "-m", module, *args)


def _start_agent(work: Path, label: str, index: int, central: CentralProcess):
    """Enroll a box and serve it; (its node id, its process)."""
    token = create_token(central)
    agent_dir = work / f"{label}-agent-{index}"
    identity = enroll(central.enroll_address, token.ca_fingerprint, token.token, FleetFiles(agent_dir))
    sections = {"fleet": {"max_backoff_s": 1.0}, "model": {"n_ctx": 512, "n_threads": 1}}
    return identity.node_id, start_agent(agent_dir, sections=sections)


def _round(work: Path, label: str, round_no: int, central: CentralProcess, agents, node_ids) -> tuple:
    """Back up, lose and restore central once; (the restored central, the round's figures)."""
    archive = work / f"{label}-{round_no}.backup"
    backup_s = _cli("central.cli", "central", "backup", "--data-dir", str(central.data_dir), "--out", str(archive))
    kill(central)
    shutil.rmtree(central.data_dir)
    started = time.perf_counter()
    restored_dir = work / f"{label}-central-{round_no}"
    restore_s = _cli("central.cli", "central", "restore", str(archive), "--data-dir", str(restored_dir))
    restored = CentralProcess(restored_dir, list(SERVE_ARGS)).start()
    serving_s = time.perf_counter() - started
    for agent in agents:
        _cli("edge_agent.cli", "central-addresses", "set", restored.fleet_address, "--data-dir", str(agent.data_dir))
    wait_for(lambda: _online(restored, node_ids), timeout_s=300, interval_s=0.05, what="agents back")
    rto_s = time.perf_counter() - started
    archive.unlink()
    print(
        f"{label:>8} round {round_no}: backup {backup_s:.2f} s; restore {restore_s:.2f} s, serving at"
        f" {serving_s:.2f} s, every agent online at {rto_s:.2f} s"
    )
    return restored, {"backup_s": backup_s, "restore_s": restore_s, "serving_s": serving_s, "rto_s": rto_s}


def measure_fleet(work: Path, label: str, nodes: int, per_node: int, rounds: int) -> dict:
    data_dir = work / f"{label}-central-0"
    paths = initialize(data_dir, "127.0.0.1:0")
    if nodes:
        fill_sqlite(paths.store, nodes, per_node)
    central = CentralProcess(data_dir, list(SERVE_ARGS)).start()
    agents, node_ids, samples = [], [], []
    try:
        for index in range(3):
            node_id, agent = _start_agent(work, label, index, central)
            node_ids.append(node_id)
            agents.append(agent)
        wait_for(lambda: _online(central, node_ids), timeout_s=120, what="three agents online")
        for round_no in range(1, rounds + 1):
            central, figures = _round(work, label, round_no, central, agents, node_ids)
            samples.append(figures)
    finally:
        for agent in agents:
            agent.stop()
        central.stop()
    return {
        "fleet": label,
        "recorded_nodes": nodes,
        "reports": nodes * per_node,
        "agents": len(node_ids),
        "rounds": samples,
        **{f"median_{k}": round(statistics.median(s[k] for s in samples), 2) for k in samples[0]},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--reports-per-node", type=int, default=100)
    parser.add_argument("--out", help="where to write the JSON results")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="edgefleet-rto-") as tmp:
        work = Path(tmp)
        small = measure_fleet(work, "agents", 0, 0, args.rounds)
        large = measure_fleet(work, "large", args.nodes, args.reports_per_node, args.rounds)
    ratio = round(large["median_rto_s"] / small["median_rto_s"], 2)
    print(f"\nRTO median: {small['median_rto_s']} s (three agents), {large['median_rto_s']} s (beside"
          f" {args.nodes:,} nodes and {args.nodes * args.reports_per_node:,} reports): {ratio}x")  # fmt: skip
    write_results(
        "restore_rto",
        {"machine": describe_machine(), "fleets": [small, large], "large_over_small_rto": ratio},
        args.out,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
