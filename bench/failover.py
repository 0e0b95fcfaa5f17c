"""Failover benchmark: three `edgefleet central serve` replicas on one PostgreSQL, one real agent, and
`kill -9` of first the leader, then the replica the agent streams to.

Each run (--runs, default 3) makes a fresh database on the server at 127.0.0.1:5432 (user postgres, trust
auth; EDGEFLEET_BENCH_POSTGRES gives another base URL) and fresh processes, and stops every process by its
pid (and drops the database WITH (FORCE)) at the end, whatever happened:

- Three replicas (tests/central_process.py start_replicas: one data dir made by init, the others copies) with
  `--heartbeat-interval 1s --no-superlink` and one shared blob directory (--blobs, as a shared mount).
- chat@1.0.0 is SmolLM2-135M's GGUF and chat@1.1.0 gemma-3-270m's: two different sha256s, so a rollout from
  one to the other is real work for the agent.
- One real agent (tests/agent_process.py start_agent: `edge-agent serve` with llama-server), enrolled with a
  bootstrap token, `[central] addresses` = the three replicas' fleet addresses, `[fleet] max_backoff_s = 1.0`.
  It is assigned chat@1.0.0 and the bench waits until it reports ACTIVE on it.

Measured per run, all times from the bench's time.time() just before os.kill(pid, SIGKILL) (every process
runs on this machine, so the store's timestamps, written with the replicas' and agent's clocks, compare):

1. Leader failover. A rollout of chat@1.1.0 with one step (canary 100 %) and a bake of BAKE_S is started; once
   the agent reports ACTIVE on 1.1.0, the promotion is due at max(step start, activation) + BAKE_S. The leader
   (the store's leadership record) is killed KILL_BEFORE_DUE_S before that, so the old leader cannot promote
   and the promotion must come from the new leader's controller tick.
   (a) failover s: until the store's leadership record (polled every POLL_S, what `central status` reads)
       names another replica with the term + 1. Also recorded: claim s, the new leader's own timestamp of
       its claim (without the polling).
   (b) tick resumed s: until the rollout's promotion, i.e. the `now` of the tick that decided it (the state's
       step_started_at, written by the new leader). It cannot be under KILL_BEFORE_DUE_S (the bake was not
       over before that); a figure near it means the tick was already running when the bake ended.
   Followers try for the lock every 1 s (central/leadership.py) and the leader ticks after each 1 s
   heartbeat flush, so (a) is expected within about 1 s and (b) within about 2 s.
2. Agent reconnect. The replica the agent streams to (its state.json names it) is killed once the rollout has
   completed; reconnect s: until the store shows the node's last_seen_at past the kill time, i.e. a beat
   that a surviving replica received and flushed. It includes up to 1 s of central's heartbeat flush
   (central buffers beats and writes them every FLUSH_INTERVAL_S) and the polling; beat s (last_seen_at
   minus the kill time) is when that replica received the beat. The agent tries its addresses round-robin,
   so its next address may be the leader killed in step 1: that try fails (connection refused), and the
   agent backs off (at most max_backoff_s) before the one after it reaches the survivor. Each run records
   which case it was (next_address_dead).

Targets: failover and tick under 10 s, reconnect under 5 s. Results: bench/results/failover-<date>.json.
Usage:
    python bench/failover.py [--runs 3] [--out PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import secrets
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from results_file import write_results  # bench/ is on sys.path when run as a script

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from agent_process import AgentProcess, start_agent  # noqa: E402
from central.heartbeats import FLUSH_INTERVAL_S  # noqa: E402
from central.rollout import RolloutState  # noqa: E402
from central.services.rollouts import state_from_json  # noqa: E402
from central.store import FleetStore, open_store  # noqa: E402
from central.store.records import LeaderRecord  # noqa: E402
from central_process import CentralProcess, create_token, edgefleet_cli, kill, start_replicas  # noqa: E402
from edge_agent.control.client import enroll  # noqa: E402
from edge_agent.control.identity import FleetFiles  # noqa: E402
from edge_agent.models import ModelArtifact, resolve_model  # noqa: E402

DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
REPLICAS = 3
HEARTBEAT_S = 1.0
BAKE_S = 6.0  # long enough to see the activation in the store and schedule the kill before the bake ends
KILL_BEFORE_DUE_S = 0.5
POLL_S = 0.05
SETUP_TIMEOUT_S = 180.0  # agent start, model downloads and activations on a busy 2-core box
MEASURE_TIMEOUT_S = 60.0  # far past the targets: a run that needs this long failed
TARGET_FAILOVER_S = 10.0
TARGET_RECONNECT_S = 5.0
ACTIVE = "ACTIVE"
TERMINAL_PHASES = ("COMPLETED", "ROLLED_BACK", "ABORTED")


def postgres_base_url() -> str:
    """The server's URL; its database part is where CREATE DATABASE runs (`postgres` when it names none)."""
    base = os.environ.get("EDGEFLEET_BENCH_POSTGRES") or DEFAULT_POSTGRES
    return base if urlsplit(base).path.strip("/") else with_database(base, "postgres")


def with_database(url: str, dbname: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + dbname))


@contextlib.contextmanager
def postgres_database(base: str) -> Iterator[str]:
    """A new, uniquely named database's URL; dropped after WITH (FORCE), since killed replicas leave sessions."""
    import psycopg
    from psycopg import sql

    dbname = f"edgefleet_bench_{secrets.token_hex(6)}"
    with psycopg.connect(base, autocommit=True, connect_timeout=5) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    try:
        yield with_database(base, dbname)
    finally:
        with psycopg.connect(base, autocommit=True, connect_timeout=5) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))


def poll(predicate: Callable[[], Any], timeout_s: float, what: str, interval_s: float = POLL_S) -> Any:
    """predicate()'s first truthy value, polled every interval_s; RuntimeError naming `what` after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(interval_s)


def active_since(store: FleetStore, node_id: str, sha256: str) -> float | None:
    """When the node began serving `sha256`, as its latest flushed heartbeat says; None until it is ACTIVE."""
    node = store.get_node(node_id)
    health = node.health if node is not None else None
    if health is None or health.active_sha256 != sha256 or health.activation_state != ACTIVE:
        return None
    return health.activation_since


def leader_record(store: FleetStore) -> LeaderRecord:
    record = store.leadership()
    if record is None:
        raise RuntimeError("the store names no leader")
    return record


def last_seen(store: FleetStore, node_id: str) -> float:
    """The node's latest flushed heartbeat time; 0 before the first."""
    node = store.get_node(node_id)
    return (node.last_seen_at or 0.0) if node is not None else 0.0


def rollout_state(store: FleetStore, rollout_id: str) -> RolloutState:
    row = store.get_rollout(rollout_id)
    if row is None:
        raise RuntimeError(f"the store has no rollout {rollout_id}")
    return state_from_json(row[1])


def running(replica: CentralProcess) -> bool:
    return replica.proc is not None and replica.proc.poll() is None


def by_address(replicas: list[CentralProcess], address: str) -> CentralProcess:
    return next(r for r in replicas if r.fleet_address == address)


def agent_replica(agent: AgentProcess) -> str:
    """The fleet address the agent's control loop is on now (its state.json, rewritten at every beat)."""
    state = FleetFiles(agent.data_dir).read_state() or {}
    return str(state.get("central", "")) if state.get("state") == "connected" else ""


def measure_failover(store: FleetStore, leader: CentralProcess, rollout_id: str, due: float) -> dict:
    """Kill the leader KILL_BEFORE_DUE_S before the rollout's promotion is due; when the store names the next
    leader, and when the next leader's tick promoted."""
    term = leader_record(store).term
    # A scheduled moment, not a guessed wait: the kill must land before the bake ends and as close to it
    # as is safe, so that the promotion is the new leader's first chance to act.
    time.sleep(max(0.0, due - KILL_BEFORE_DUE_S - time.time()))
    killed_at = time.time()
    kill(leader)
    took_over = poll(
        lambda: (
            (r := store.leadership()) is not None and r.term == term + 1 and r.replica_id != leader.fleet_address and r
        ),
        MEASURE_TIMEOUT_S,
        "a new leader",
    )
    failover_s = time.time() - killed_at

    def decided():
        state = rollout_state(store, rollout_id)
        return state if state.phase in TERMINAL_PHASES else None

    state = poll(decided, MEASURE_TIMEOUT_S, "the new leader's rollout decision")
    if state.phase != "COMPLETED":
        raise RuntimeError(f"rollout {rollout_id} ended {state.phase}: {state.reason}")
    return {
        "killed_leader": leader.fleet_address,
        "new_leader": took_over.replica_id,
        "term": took_over.term,
        "failover_s": round(failover_s, 3),
        "claim_s": round(took_over.since - killed_at, 3),
        "tick_resumed_s": round(state.step_started_at - killed_at, 3),
        "kill_before_due_s": round(due - killed_at, 3),
    }


def measure_reconnect(store: FleetStore, replicas: list[CentralProcess], agent: AgentProcess, node_id: str) -> dict:
    """Kill the replica the agent streams to; when a surviving replica flushed a beat of the node's."""
    on = poll(lambda: agent_replica(agent), MEASURE_TIMEOUT_S, "the agent to be connected")
    victim = by_address(replicas, on)
    if not running(victim):
        raise RuntimeError(f"the agent reports streaming to {on}, which is not running")
    # Its stream must be live on the victim: one beat received there after this moment.
    mark = time.time()
    poll(lambda: last_seen(store, node_id) > mark, MEASURE_TIMEOUT_S, "a beat before the kill")
    killed_at = time.time()
    kill(victim)
    seen = poll(
        lambda: (t := last_seen(store, node_id)) > killed_at and t,
        MEASURE_TIMEOUT_S,
        "a beat on a surviving replica",
    )
    reconnect_s = time.time() - killed_at
    addresses = [r.fleet_address for r in replicas]  # the agent's [central] addresses, in order
    after = addresses[(addresses.index(on) + 1) % len(addresses)]
    return {
        "killed_agent_replica": on,
        # Round-robin: when the address after the killed one is a dead replica, that try fails first.
        "next_address_dead": not running(by_address(replicas, after)),
        "agent_now_on": agent_replica(agent),
        "reconnect_s": round(reconnect_s, 3),
        "beat_s": round(seen - killed_at, 3),
    }


def one_run(index: int, base: str, work: Path, smol: ModelArtifact, gemma: ModelArtifact) -> dict:
    root = work / f"run-{index}"
    blobs = root / "shared-blobs"
    blobs.mkdir(parents=True)
    replicas: list[CentralProcess] = []
    agent: AgentProcess | None = None
    started = time.monotonic()
    with postgres_database(base) as url:
        store = open_store(url)
        try:
            replicas = start_replicas(
                root / "central", url, REPLICAS, "--heartbeat-interval", f"{HEARTBEAT_S:g}s", "--blobs", str(blobs)
            )
            first = replicas[0]
            poll(lambda: store.leadership(), MEASURE_TIMEOUT_S, "a first leader")
            edgefleet_cli(first, "models", "push", str(smol.path), "--name", "chat", "--version", "1.0.0")
            edgefleet_cli(first, "models", "push", str(gemma.path), "--name", "chat", "--version", "1.1.0")
            token = create_token(first, region="eu")
            agent_dir = root / "agent"
            node_id = enroll(first.enroll_address, token.ca_fingerprint, token.token, FleetFiles(agent_dir)).node_id
            sections = {
                "fleet": {"max_backoff_s": 1.0},
                "central": {"addresses": [r.fleet_address for r in replicas]},
                "model": {"n_parallel": 1, "n_ctx": 256},
            }
            agent = start_agent(agent_dir, sections=sections)
            edgefleet_cli(first, "nodes", "assign", node_id, "chat@1.0.0")
            poll(lambda: active_since(store, node_id, smol.sha256), SETUP_TIMEOUT_S, "ACTIVE on chat@1.0.0", 0.2)

            rollout = json.loads(
                edgefleet_cli(
                    first,
                    *("rollout", "start", "chat@1.1.0", "--selector", "region=eu", "--canary", "100"),
                    *("--steps", "100", "--bake", f"{BAKE_S:g}s", "--max-p99-ms", "120000", "--json"),
                )
            )["rollout"]
            activated = poll(
                lambda: active_since(store, node_id, gemma.sha256), SETUP_TIMEOUT_S, "ACTIVE on chat@1.1.0", POLL_S
            )
            step_started = rollout_state(store, rollout).step_started_at
            due = max(step_started, activated) + BAKE_S
            if due - KILL_BEFORE_DUE_S <= time.time():
                raise RuntimeError(f"saw the activation too late to kill the leader before the bake ended ({BAKE_S} s)")
            leader = by_address(replicas, leader_record(store).replica_id)
            agent_on_leader = agent_replica(agent) == leader.fleet_address
            failover = measure_failover(store, leader, rollout, due)
            reconnect = measure_reconnect(store, replicas, agent, node_id)
            return {
                "run": index,
                **failover,
                "agent_was_on_leader": agent_on_leader,
                **reconnect,
                "run_s": round(time.monotonic() - started, 1),
            }
        finally:
            if agent is not None:
                agent.stop()  # SIGTERM by its pid, then SIGKILL
            for replica in replicas:
                replica.stop()
            store.close()


def summary(runs: list[dict], key: str) -> dict:
    values = [r[key] for r in runs if r.get(key) is not None]
    if not values:
        return {"median": None, "max": None}
    return {"median": round(statistics.median(values), 3), "max": round(max(values), 3)}


def print_table(runs: list[dict], summaries: dict) -> None:
    print(f"\n{'run':>6}{'failover s':>12}{'claim s':>9}{'tick resumed s':>16}{'reconnect s':>13}{'beat s':>8}  agent")
    for r in runs:
        where = "on the leader" if r["agent_was_on_leader"] else "on a follower"
        then = "the dead leader" if r["next_address_dead"] else "a live replica"
        print(
            f"{r['run']:>6}{r['failover_s']:>12.2f}{r['claim_s']:>9.2f}{r['tick_resumed_s']:>16.2f}"
            f"{r['reconnect_s']:>13.2f}{r['beat_s']:>8.2f}  {where} at the leader kill; next address {then}"
        )
    for label, key in (("median", "median"), ("max", "max")):
        print(
            f"{label:>6}{summaries['failover_s'][key]:>12.2f}{summaries['claim_s'][key]:>9.2f}"
            f"{summaries['tick_resumed_s'][key]:>16.2f}{summaries['reconnect_s'][key]:>13.2f}"
            f"{summaries['beat_s'][key]:>8.2f}"
        )
    print(
        f"failover: kill -9 of the leader to the store naming the next leader (term + 1), polled every {POLL_S:g} s;"
        " claim: the next leader's own claim time; tick resumed: to the next leader's promotion of the rollout"
        f" (not under {KILL_BEFORE_DUE_S:g} s: the kill came that long before the bake ended); reconnect: kill -9"
        " of the agent's replica to its last_seen_at past the kill in the store (includes up to"
        f" {FLUSH_INTERVAL_S:g} s of heartbeat flush); beat: when the surviving replica received that beat"
    )
    print(
        f"targets: failover and tick under {TARGET_FAILOVER_S:g} s (max {summaries['failover_s']['max']:.2f} /"
        f" {summaries['tick_resumed_s']['max']:.2f} s), reconnect under {TARGET_RECONNECT_S:g} s"
        f" (max {summaries['reconnect_s']['max']:.2f} s)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="runs, each on a fresh database and processes")
    parser.add_argument("--out", help="JSON output (default bench/results/failover-<date>.json)")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks that stop our processes
    base = postgres_base_url()
    runs: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="edgefleet-failover-") as tmp:
        work = Path(tmp)
        smol = resolve_model("smollm2-135m-instruct", "", work)
        gemma = resolve_model("gemma-3-270m", "", work / "gemma")
        for i in range(1, args.runs + 1):
            runs.append(one_run(i, base, work, smol, gemma))
            r = runs[-1]
            print(
                f"run {i}: failover {r['failover_s']:.2f} s, tick resumed {r['tick_resumed_s']:.2f} s,"
                f" reconnect {r['reconnect_s']:.2f} s ({r['run_s']:.0f} s)",
                flush=True,
            )
    keys = ("failover_s", "claim_s", "tick_resumed_s", "reconnect_s", "beat_s")
    summaries = {k: summary(runs, k) for k in keys}
    print_table(runs, summaries)
    report = {
        "benchmark": "failover",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cores": os.cpu_count(), "arch": platform.machine(), "python": platform.python_version()},
        "setup": {
            "replicas": REPLICAS,
            "heartbeat_interval_s": HEARTBEAT_S,
            "agent_max_backoff_s": 1.0,
            "models": {"1.0.0": smol.name, "1.1.0": gemma.name},
            "bake_s": BAKE_S,
            "kill_before_due_s": KILL_BEFORE_DUE_S,
            "poll_s": POLL_S,
            "flush_interval_s": FLUSH_INTERVAL_S,
        },
        "targets": {
            "failover_s": TARGET_FAILOVER_S,
            "tick_resumed_s": TARGET_FAILOVER_S,
            "reconnect_s": TARGET_RECONNECT_S,
        },
        "summary": summaries,
        "runs": runs,
    }
    write_results("failover", report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
