"""Fleet activity for integration tests, through the `edgefleet` CLI as an operator runs it: a rollout of a model
file pushed under a name and version, a federated usage-stats run, and waiting for each to end.

Used by the tests that look at a busy fleet from outside (Prometheus, the dashboard), so both run the same cheap
rollout and run: the built-in model's file pushed as chat@1.0.0 and chat@2.0.0, a node assigned 1.0.0 (a rollout
needs a version to roll back to), then 2.0.0 rolled out to it; a one-round usage-stats run.
"""

from __future__ import annotations

import json
from pathlib import Path

from central_process import CentralProcess, edgefleet_cli, wait_for

ROLLOUT_ENDS = ("COMPLETED", "ROLLED_BACK", "ABORTED")
RUN_ENDS = ("completed", "failed")


def write_usage(data_dir: Path, index: int) -> None:
    """A node's local usage data for the usage-stats task, a little different per index."""
    from federated.local_data import usage_path

    path = usage_path(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    hours = [(h + index) % 5 for h in range(24)]
    path.write_text(json.dumps({"requests_per_hour": hours, "latency_buckets": [index, 1, 0, 0, 0, 0, 0, 0, 0],
                                "cache": [index, 10]}))  # fmt: skip


def registered_flower_keys(central: CentralProcess) -> int:
    return sum('"fl.node.register"' in line for line in edgefleet_cli(central, "audit", "list", "--json").splitlines())


def wait_for_flower_keys(central: CentralProcess, count: int, timeout_s: float = 120) -> None:
    """Until central has registered `count` nodes' Flower keys (their SuperNodes may then join a run)."""
    wait_for(
        lambda: registered_flower_keys(central) >= count,
        timeout_s=timeout_s,
        what=f"central registering {count} nodes' Flower keys",
    )


def push(central: CentralProcess, path: Path, name: str, version: str) -> None:
    edgefleet_cli(central, "models", "push", str(path), "--name", name, "--version", version)


def assign(central: CentralProcess, node_id: str, ref: str) -> None:
    edgefleet_cli(central, "nodes", "assign", node_id, ref)


def active_version(central: CentralProcess, node_id: str) -> str:
    """ "NAME@VERSION" of the model a node's last heartbeat reports serving (NodeStatus.active_model) with its
    activation of that same version ACTIVE; "" otherwise."""
    from edgefleet.v1 import admin_pb2, common_pb2

    with central.admin() as admin:
        node = admin.call("GetNode", admin_pb2.GetNodeRequest(node_id=node_id)).node
    served, activation = node.status.active_model, node.status.activation
    if activation.state != common_pb2.ACTIVATION_STATE_ACTIVE or activation.model != served:
        return ""
    return f"{served.name}@{served.version}"


def wait_active(central: CentralProcess, node_id: str, ref: str, timeout_s: float = 180) -> None:
    """Until the node reports serving `ref` ("NAME@VERSION"), activated."""
    wait_for(lambda: active_version(central, node_id) == ref, timeout_s=timeout_s, what=f"{node_id} on {ref}")


def start_rollout(central: CentralProcess, ref: str, selector: str) -> dict:
    """`rollout start REF --selector SELECTOR` in one step (canary 100 %), a 1 s bake and a p99 bound no test
    machine breaks; the rollout as `rollout status --json` shows it ("rollout" is its id)."""
    out = edgefleet_cli(
        central, "rollout", "start", ref, "--selector", selector, "--canary", "100", "--bake", "1s",
        "--max-p99-ms", "120000", "--json",
    )  # fmt: skip
    return json.loads(out)


def rollout_ended(central: CentralProcess, rollout_id: str, timeout_s: float = 300) -> dict:
    """The rollout once it has ended (completed, rolled back or aborted), as `rollout status --json` shows it.
    It completes only after the nodes' heartbeats carry requests answered by the new version."""

    def ended():
        row = json.loads(edgefleet_cli(central, "rollout", "status", rollout_id, "--json"))
        return row if row["phase"] in ROLLOUT_ENDS else None

    return wait_for(ended, timeout_s=timeout_s, interval_s=0.5, what=f"rollout {rollout_id} to end")


def start_usage_stats_run(central: CentralProcess, min_nodes: int) -> dict:
    """A one-round federated usage-stats run; the run as `fl start --json` shows it ("run" is its id)."""
    out = edgefleet_cli(
        central, "fl", "start", "--task", "usage-stats", "--rounds", "1", "--min-nodes", str(min_nodes), "--json"
    )
    return json.loads(out)


def run_ended(central: CentralProcess, run_id: int | str, timeout_s: float = 420) -> dict:
    """The federated run once it has ended (completed or failed), as `fl status --json` shows it."""

    def ended():
        row = json.loads(edgefleet_cli(central, "fl", "status", str(run_id), "--json"))
        return row if row["status"] in RUN_ENDS else None

    return wait_for(ended, timeout_s=timeout_s, interval_s=1.0, what=f"federated run {run_id} to end")
