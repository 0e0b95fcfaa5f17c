"""Federated round benchmark: SecAgg+ against plain FedAvg, task `sensitivity` (16,385 floats), real processes.

Setup per supernode kind and node count N: a TLS SuperLink started as central starts it
(federated.superlink.command: the guard, a client CA of its own, its Runtime certificate, the Landlock
sandbox writing only its own dir; --enable-supernode-auth, --disable-runtime-dependency-installation) on a
free loopback port; N node keys registered through the Control API (federated.control, presenting the
Control certificate); N SuperNodes, either stock
`flower-supernode` (--supernode flower) or `python -m federated.fast_supernode` (--supernode fast), each
with its own data dir holding the same 80 labeled prompts per node (federated.local_data). On those same
processes two runs follow, FedAvg (run config secagg=false) then SecAgg+ (secagg=true), --rounds rounds each,
min-nodes N. Every process is started in its own session and stopped by its process group (SIGTERM, then
SIGKILL): SuperLink and stock SuperNode spawn children (ServerApp, SuperExec, ClientApps).

Per run: the ServerApp's report (results-dir/run-<id>.json) gives seconds per round and per exchange
(one exchange for a FedAvg round; four for SecAgg+: setup, share keys, collect masked vectors, unmask);
the run's wall time from StartRun to finished includes the ServerApp's start. The fast SuperNode logs
pull/app/push seconds per message: the nodes' side of each exchange. Direct measurements beside:
  clientapp start  a fresh interpreter importing what a `flwr-clientapp` process needs before it can run
                   the app (flwr's clientapp CLI and federated.flower_app); stock pays it per message;
  local_update     the task's training step on one node's data, in-process;
  crypto           the node side of SecAgg+ with flwr's own primitives for N nodes (2 key pairs;
                   Shamir shares of seed and key, N-1 ECDH + encryptions; N-1 decryptions, quantize,
                   N-1 ECDH + 1+(N-1) masks of 16,385 values), and the server's N seed-mask regenerations;
  poll quanta      what stock Flower sleeps: a SuperNode 3 s after an empty poll, the ServerApp's grid
                   3 s between its polls for replies (flwr/superlink/grid/http_grid.py).

Reported: median seconds per round, the SecAgg+/FedAvg ratio, and the target (SecAgg+ round under 8 s at
5 nodes and within 2x of FedAvg). The machine may be shared: each run records the 1-minute load average
before and after it. Results: bench/results/federated.json. Usage:
    python bench/federated.py [--nodes 3,5] [--rounds 2] [--supernode flower,fast] [--poll-interval 0.2]
        [--app-path DIR --note TEXT --out FILE]   # measure a patched copy of `federated` without touching this tree
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from results_file import RESULTS, describe_machine, write_results  # bench/ is on sys.path when run as a script

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edgefleet import pki  # noqa: E402
from edgefleet.nodekeys import generate_node_key  # noqa: E402
from federated import control, fab, local_data, superlink  # noqa: E402
from federated.superlink_credentials import ClientAuthority  # noqa: E402

PY = sys.executable
BIN = Path(sys.executable).parent
TARGET_ROUND_S, TARGET_RATIO, TARGET_NODES = 8.0, 2.0, 5
STAGES = ["setup", "share_keys", "collect_masked_vectors", "unmask"]
MESSAGE_LINE = re.compile(
    r"run (\d+) round (\S+): (\S+)(?: secagg:(\S+))? ok in ([\d.]+) s "
    r"\(pull ([\d.]+), app ([\d.]+), push ([\d.]+)\)"
)


def machine() -> dict:
    import flwr
    import numpy

    return describe_machine(flwr=flwr.__version__, numpy=numpy.__version__)


def median(values) -> float | None:
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 3) if values else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_node_data(data_dir: Path, index: int) -> None:
    """80 labeled prompts, the same for node `index` in every run."""
    for k in range(40):
        local_data.append_example(
            data_dir,
            f"my card is 4111 1111 1111 {1000 + 7 * k + index} call me at 555-01{(k + index) % 100:02d}",
            "sensitive",
            "operator",
        )
        local_data.append_example(data_dir, f"what is the weather like in city {k + index} today", "public", "operator")


def stop_group(proc: subprocess.Popen, timeout_s: float = 10.0) -> None:
    """SIGTERM the process group of `proc` (its session: it and what it spawned), then SIGKILL it."""
    for sig, wait in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(wait)
            # the leader is gone; make sure none of its children is left in the group
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            return
        except subprocess.TimeoutExpired:
            continue


class Cluster:
    """One TLS SuperLink with supernode auth and N SuperNodes of one kind, under `root`."""

    def __init__(self, root: Path, nodes: int, kind: str, poll_interval: float, app_path: str = ""):
        self.root, self.kind, self.n, self.poll_interval = root, kind, nodes, poll_interval
        self.procs: list[subprocess.Popen] = []
        self.node_dirs: list[Path] = []
        # --app-path: the SuperLink, its ServerApp and the SuperNodes import `federated` from there first
        self.env = dict(
            os.environ,
            PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            FLWR_HOME=str(root / "flwr-home"),
            PYTHONPATH=os.pathsep.join(p for p in (app_path, str(ROOT)) if p),
        )
        self.ctl: control.FlowerControl | None = None
        self.superlink_dir = root / "superlink"  # all the sandboxed SuperLink may write
        self.central_dir = root / "central"  # the Control certificate and key, unreadable to the SuperLink
        self.superlink_log = root / "superlink.log"
        self.control_cert: tuple[Path, Path] = (Path(), Path())

    def _spawn(self, command: list[str], log: Path, cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, env=env or self.env, cwd=cwd, start_new_session=True
            )
        self.procs.append(proc)
        return proc

    def start(self) -> None:
        """The SuperLink as central starts it (central/federation.py): federated.superlink's launcher with
        a client CA made for it alone, its Runtime certificate, the guard, and the Landlock sandbox, which
        lets it write only `superlink_dir` (the ServerApp's results go there too)."""
        self.root.mkdir(parents=True, exist_ok=True)
        for directory in (self.superlink_dir / "flwr", self.superlink_dir / "tmp", self.superlink_dir / "results"):
            directory.mkdir(parents=True, exist_ok=True)
        self.central_dir.mkdir(mode=0o700, exist_ok=True)
        ca_key, ca = pki.create_ca()
        key = pki.generate_key()
        cert = pki.issue_server_certificate(ca_key, ca, key.public_key(), valid_days=1, extra_names=["127.0.0.1"])
        (self.root / "ca.pem").write_bytes(pki.certificate_pem(ca))
        (self.superlink_dir / "ca.pem").write_bytes(pki.certificate_pem(ca))
        (self.superlink_dir / "superlink.crt").write_bytes(pki.certificate_pem(cert))
        pki.write_private(self.superlink_dir / "superlink.key", pki.private_key_pem(key))
        # The Control and Runtime APIs open only to certificates from a CA made for this SuperLink:
        # the Control certificate (ours, as central's) stays outside the sandbox and is protected from it.
        authority = ClientAuthority.create()
        self.control_cert = authority.issue_control(self.central_dir)
        runtime_cert, runtime_key = authority.issue_runtime(self.superlink_dir)
        client_ca = authority.write_certificate(self.superlink_dir / "client-ca.crt")
        self.port = free_port()
        # As central runs it (central/federation.py).
        flower_args = superlink.flower_args("127.0.0.1", self.port, self.superlink_dir, self.superlink_dir / "ca.pem")
        self.superlink = self._spawn(
            superlink.command(
                self.superlink_dir, client_ca, runtime_cert, runtime_key, flower_args, [self.control_cert[1]]
            ),
            self.superlink_log,
            self.superlink_dir,
            superlink.child_env(self.superlink_dir, self.env),
        )
        deadline = time.monotonic() + 60
        while True:
            ctl = control.FlowerControl(
                f"127.0.0.1:{self.port}", (self.root / "ca.pem").read_bytes(), *self.control_cert
            )
            try:
                ctl.registered_nodes()
                self.ctl = ctl
                break
            except control.FlowerControlError as exc:
                ctl.close()
                if self.superlink.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"SuperLink did not come up ({exc}); see {self.superlink_log}") from exc
                time.sleep(0.5)
        for i in range(self.n):
            self.node_dirs.append(self.add_node(i))

    def add_node(self, index: int, register: bool = True) -> Path:
        node = self.root / f"node{index}"
        node.mkdir()
        private, public = generate_node_key()
        pki.write_private(node / "flower.key", private)
        if register:
            self.ctl.register_node(public, f"node{index}")
        write_node_data(node, index)
        self._spawn(self.node_command(node), node / "supernode.log", node)
        return node

    def node_command(self, node: Path) -> list[str]:
        common = [
            "--superlink",
            f"127.0.0.1:{self.port}",
            "--root-certificates",
            str(self.root / "ca.pem"),
            "--auth-supernode-private-key",
            str(node / "flower.key"),
            "--node-config",
            f"data-dir='{node}'",
        ]
        if self.kind == "fast":
            return [PY, "-m", "federated.fast_supernode", *common, "--poll-interval", str(self.poll_interval)]
        return [str(BIN / "flower-supernode"), *common, "--port", str(free_port())]

    def wait_online(self, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while sum(s == "online" for s in self.ctl.registered_nodes().values()) < self.n:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nodes not all online: {self.ctl.registered_nodes()}")
            time.sleep(0.5)

    def run(self, config: dict, timeout_s: float = 900.0) -> dict:
        results_dir = self.superlink_dir / "results"
        blob, digest = fab.build()
        started = time.monotonic()
        run_id = self.ctl.start_run(blob, digest, {"results-dir": str(results_dir), **config})
        while (run := self.ctl.runs(run_id)[0]).status != "finished":
            if time.monotonic() - started > timeout_s:
                self.ctl.stop_run(run_id)
                raise RuntimeError(f"run {run_id} did not finish in {timeout_s:.0f} s")
            time.sleep(0.25)
        wall = time.monotonic() - started
        report = json.loads((results_dir / f"run-{run_id}.json").read_text())
        return {
            "run_id": run_id,
            "sub_status": run.sub_status,
            "details": run.details,
            "wall_s": round(wall, 2),
            "report": report,
        }

    def node_messages(self, run_id: int) -> list[dict]:
        """The fast SuperNodes' per-message timings for one run, from their logs."""
        rows = []
        for node, path in enumerate(d / "supernode.log" for d in self.node_dirs):
            for m in MESSAGE_LINE.finditer(path.read_text(errors="replace")):
                if int(m[1]) == run_id:
                    rows.append(
                        {
                            "node": node,
                            "round": m[2],
                            "type": m[3],
                            "stage": m[4] or m[3],
                            "total_s": float(m[5]),
                            "pull_s": float(m[6]),
                            "app_s": float(m[7]),
                            "push_s": float(m[8]),
                        }
                    )
        return rows

    def stop(self) -> None:
        if self.ctl is not None:
            self.ctl.close()
        for proc in reversed(self.procs):  # nodes first, then the SuperLink
            stop_group(proc)


def run_summary(result: dict, secagg: bool, node_rows: list[dict]) -> dict:
    report = result["report"]
    rounds = [r["seconds"] for r in report.get("rounds", [])]
    exchanges = report.get("exchanges", [])
    # group exchanges by stage (FedAvg: its one train exchange per round)
    by_stage: dict[str, list[float]] = {}
    for ex in exchanges:
        by_stage.setdefault(ex["stage"].removeprefix("secagg:"), []).append(ex["seconds"])
    stages = {}
    for stage, seconds in by_stage.items():
        rows = [r for r in node_rows if r["stage"] == stage]
        # per exchange the slowest node's handling is what the ServerApp waits for; median over rounds
        per_round: dict[str, list[dict]] = {}
        for r in rows:
            per_round.setdefault(r["round"], []).append(r)
        slowest = [max(rs, key=lambda r: r["total_s"]) for rs in per_round.values()]
        stages[stage] = {
            "exchange_s": median(seconds),
            "count": len(seconds),
            "node_total_s": median(r["total_s"] for r in slowest),
            "node_app_s": median(r["app_s"] for r in slowest),
            "node_transfer_s": median(r["pull_s"] + r["push_s"] for r in slowest),
        }
    return {
        "mode": "secagg+" if secagg else "fedavg",
        "run_id": result["run_id"],
        "status": report.get("status"),
        "sub_status": result["sub_status"],
        "error": report.get("error"),
        "round_s": rounds,
        "round_median_s": median(rounds),
        "run_wall_s": result["wall_s"],
        "exchanges": exchanges,
        "stages": stages,
    }


def bench_cluster(kind: str, n: int, rounds: int, poll_interval: float, work: Path, app_path: str) -> dict:
    cluster = Cluster(work / f"{kind}-{n}", n, kind, poll_interval, app_path)
    out = {"supernode": kind, "nodes": n}
    try:
        started = time.monotonic()
        cluster.start()
        cluster.wait_online()
        out["startup_s"] = round(time.monotonic() - started, 2)
        base = {"task": "sensitivity", "rounds": rounds, "min-nodes": n, "timeout-s": 120.0, "wait-nodes-s": 60.0}
        for secagg in (False, True):
            label = "SecAgg+" if secagg else "FedAvg"
            print(f"{kind} N={n}: {label}, {rounds} round(s) ...", flush=True)
            load_before = os.getloadavg()[0]
            result = cluster.run({**base, "secagg": secagg})
            rows = cluster.node_messages(result["run_id"]) if kind == "fast" else []
            summary = run_summary(result, secagg, rows)
            # the machine is shared: a 1-minute load average well above what this run adds means disturbed
            summary["loadavg_1m"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
            out["secagg" if secagg else "fedavg"] = summary
            print(
                f"{kind} N={n}: {label} {summary['status']} rounds {summary['round_s']} s, "
                f"run wall {summary['run_wall_s']} s" + (f", error {summary['error']}" if summary["error"] else ""),
                flush=True,
            )
    finally:
        cluster.stop()
    f, s = out.get("fedavg", {}).get("round_median_s"), out.get("secagg", {}).get("round_median_s")
    out["ratio"] = round(s / f, 2) if f and s else None
    return out


def add_breakdowns(report: dict) -> None:
    """Split each run's median round into exchanges, node work, process start-up and the rest (polling)."""
    direct = report["direct"]
    for c in report["clusters"]:
        for mode in ("fedavg", "secagg"):
            run = c.get(mode)
            if not run or not run["round_median_s"]:
                continue
            stages = run["stages"].values()
            exchange = sum(st["exchange_s"] * st["count"] for st in stages) / max(1, len(run["round_s"]))
            if c["supernode"] == "fast":
                app = sum(st["node_app_s"] or 0 for st in stages)
                transfer = sum(st["node_transfer_s"] or 0 for st in stages)
                start = 0.0
            else:  # stock: measured outside the run; one flwr-clientapp process per message
                crypto = direct["crypto"][str(c["nodes"])]["node_total_s"] if mode == "secagg" else 0.0
                app, transfer = direct["local_update"]["seconds"] + crypto, None
                start = len(run["stages"]) * direct["clientapp_start"]["imports_s"]
            run["breakdown"] = {
                "round_s": run["round_median_s"],
                "exchanges_s": round(exchange, 3),
                "node_app_s": round(app, 3),
                "node_transfer_s": round(transfer, 3) if transfer is not None else None,
                "clientapp_start_s": round(start, 3),
                "polling_and_waiting_s": round(exchange - app - (transfer or 0) - start, 3),
                "outside_exchanges_s": round(run["round_median_s"] - exchange, 3),
            }


# --- direct measurements ---------------------------------------------------------------------------


def measure_clientapp_start(repeat: int = 3) -> dict:
    code = "import flwr.supernode.cli.flwr_clientapp, federated.flower_app"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run([PY, "-c", code], check=True, env=env, cwd=ROOT)
        times.append(time.perf_counter() - t0)
    cli = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run([str(BIN / "flwr-clientapp"), "--help"], check=True, env=env, stdout=subprocess.DEVNULL)
        cli.append(time.perf_counter() - t0)
    return {"imports_s": median(times), "flwr_clientapp_help_s": median(cli)}


def measure_local_update(work: Path, repeat: int = 5) -> dict:
    from federated.tasks import get_task

    task = get_task("sensitivity")
    data = work / "local-update"
    write_node_data(data, 0)
    config = dict(fab.DEFAULT_RUN_CONFIG)
    arrays = task.initial_arrays(config)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        task.local_update(data, arrays, config)
        times.append(time.perf_counter() - t0)
    return {"seconds": median(times), "values": sum(a.size for a in arrays)}


def measure_crypto(n: int, repeat: int = 3) -> dict:
    """The node's and the server's SecAgg+ work for n nodes with flwr's primitives, as secaggplus_mod does it."""
    import numpy as np
    from flwr.common.secure_aggregation.crypto.shamir import combine_shares, create_shares
    from flwr.common.secure_aggregation.crypto.symmetric_encryption import decrypt, encrypt, generate_shared_key
    from flwr.common.secure_aggregation.quantization import quantize
    from flwr.common.secure_aggregation.secaggplus_utils import pseudo_rand_gen
    from flwr.supercore.primitives.asymmetric import generate_key_pairs

    dims = [(16384,), (1,)]
    arrays = [np.random.default_rng(0).uniform(-1, 1, d).astype(np.float32) for d in dims]
    threshold, mod_range = max(2, (2 * n + 2) // 3), 1 << 30
    peers = [generate_key_pairs() for _ in range(n - 1)]
    rows = []
    for _ in range(repeat):
        t = {}
        t0 = time.perf_counter()
        sk1, _ = generate_key_pairs()
        sk2, _ = generate_key_pairs()
        t["setup"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        seed = os.urandom(32)
        seed_shares = create_shares(seed, threshold, n)
        create_shares(os.urandom(48), threshold, n)  # the private key's shares
        ciphertexts = []
        for _, pk in peers:
            ciphertexts.append(encrypt(generate_shared_key(sk2, pk), b"x" * 200))
        t["share_keys"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        for (_, pk), ct in zip(peers, ciphertexts, strict=True):
            decrypt(generate_shared_key(sk2, pk), ct)
        q = quantize(arrays, 8.0, 1 << 22)
        masked = [a + m for a, m in zip(q, pseudo_rand_gen(seed, mod_range, dims), strict=True)]
        for _, pk in peers:
            masked = [
                a - m
                for a, m in zip(masked, pseudo_rand_gen(generate_shared_key(sk1, pk), mod_range, dims), strict=True)
            ]
        [a % mod_range for a in masked]
        t["collect_masked_vectors"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(n):  # the server: rebuild every node's seed and remove its mask
            combine_shares(seed_shares[:threshold])
            pseudo_rand_gen(seed, mod_range, dims)
        t["server_unmask"] = time.perf_counter() - t0
        rows.append(t)
    out = {k: median(r[k] for r in rows) for k in rows[0]}
    out["node_total_s"] = round(sum(v for k, v in out.items() if k != "server_unmask"), 3)
    return out


# --- output ----------------------------------------------------------------------------------------


def print_table(report: dict) -> None:
    print(
        f"\n{'supernode':<10}{'N':>3}{'FedAvg s/round':>16}{'SecAgg+ s/round':>17}{'ratio':>7}"
        f"{'FedAvg run s':>14}{'SecAgg+ run s':>15}  target"
    )
    for c in report["clusters"]:
        f, s = c.get("fedavg", {}), c.get("secagg", {})
        met = "-"
        if c["nodes"] == TARGET_NODES and s.get("round_median_s"):
            met = "met" if s["round_median_s"] < TARGET_ROUND_S and (c["ratio"] or 99) <= TARGET_RATIO else "missed"
        print(
            f"{c['supernode']:<10}{c['nodes']:>3}{f.get('round_median_s') or float('nan'):>16.2f}"
            f"{s.get('round_median_s') or float('nan'):>17.2f}{c['ratio'] or float('nan'):>7.2f}"
            f"{f.get('run_wall_s') or float('nan'):>14.1f}{s.get('run_wall_s') or float('nan'):>15.1f}  {met}"
        )
    print(
        f"target: SecAgg+ round < {TARGET_ROUND_S:g} s at {TARGET_NODES} nodes and <= {TARGET_RATIO:g}x FedAvg; "
        "s/round: median of the ServerApp's round times; run s: StartRun to finished (ServerApp start included)"
    )

    print("\nper exchange, median s (node side from the fast SuperNode's log: slowest node's handling, app part)")
    print(f"{'supernode':<10}{'N':>3}  {'mode':<8}{'stage':<24}{'exchange':>9}{'node':>7}{'app':>7}{'waiting':>9}")
    for c in report["clusters"]:
        for mode in ("fedavg", "secagg"):
            for stage, st in c.get(mode, {}).get("stages", {}).items():
                node = st["node_total_s"]
                wait = st["exchange_s"] - node if node is not None else None
                print(
                    f"{c['supernode']:<10}{c['nodes']:>3}  {mode:<8}{stage:<24}{st['exchange_s']:>9.2f}"
                    f"{node if node is not None else float('nan'):>7.3f}"
                    f"{st['node_app_s'] if st['node_app_s'] is not None else float('nan'):>7.3f}"
                    f"{wait if wait is not None else float('nan'):>9.2f}"
                )
    print("\nwhere a round's seconds go (medians; stock node side from the direct measurements below):")
    for c in report["clusters"]:
        for mode in ("fedavg", "secagg"):
            b = c.get(mode, {}).get("breakdown")
            if b:
                parts = ", ".join(f"{k.removesuffix('_s')} {v:.2f}" for k, v in b.items() if v is not None)
                print(f"  {c['supernode']:<7}N={c['nodes']} {mode:<7}{parts}")
            if c.get(mode, {}).get("error"):
                print(f"  {c['supernode']:<7}N={c['nodes']} {mode:<7}run {c[mode]['status']}: {c[mode]['error']}")
    d = report["direct"]
    print(
        f"\ndirect: clientapp process start (imports) {d['clientapp_start']['imports_s']} s "
        f"(`flwr-clientapp --help` {d['clientapp_start']['flwr_clientapp_help_s']} s); "
        f"sensitivity local_update {d['local_update']['seconds']} s"
    )
    for n, c in d["crypto"].items():
        print(
            f"direct: SecAgg+ crypto at N={n}: node setup {c['setup']} s, share_keys {c['share_keys']} s, "
            f"collect_masked_vectors {c['collect_masked_vectors']} s (node total {c['node_total_s']} s); "
            f"server unmask {c['server_unmask']} s"
        )
    print(
        f"stock poll quanta: SuperNode {report['poll_quanta']['supernode_empty_poll_s']} s after an empty poll; "
        f"ServerApp grid {report['poll_quanta']['serverapp_grid_poll_s']} s between polls for replies"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", default="3,5", help="node counts, comma-separated")
    parser.add_argument("--rounds", type=int, default=2, help="rounds per run (default 2)")
    parser.add_argument(
        "--supernode",
        default="flower,fast",
        help="flower (stock flower-supernode), fast (federated.fast_supernode), or both",
    )
    parser.add_argument("--poll-interval", type=float, default=0.2, help="the fast SuperNode's poll interval")
    parser.add_argument(
        "--app-path",
        default="",
        help="a directory whose `federated` package the SuperLink, ServerApp and SuperNodes import "
        "instead of this checkout's (to measure a change without touching this tree)",
    )
    parser.add_argument("--note", default="", help="recorded in the JSON, e.g. what --app-path changes")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs) and print its path")
    parser.add_argument("--out", default=str(RESULTS / "federated.json"), help="JSON output")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks that stop our processes
    sizes = [int(n) for n in args.nodes.split(",") if n.strip()]
    kinds = [k.strip() for k in args.supernode.split(",") if k.strip()]
    if set(kinds) - {"flower", "fast"}:
        parser.error("--supernode takes flower, fast or flower,fast")
    report = {
        "benchmark": "federated",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "task": "sensitivity",
        "rounds": args.rounds,
        "target": {"secagg_round_s": TARGET_ROUND_S, "ratio": TARGET_RATIO, "nodes": TARGET_NODES},
        "fast_poll_interval_s": args.poll_interval,
        "app_path": args.app_path or str(ROOT),
        "note": args.note,
        "poll_quanta": {"supernode_empty_poll_s": 3.0, "serverapp_grid_poll_s": 3.0},
        "clusters": [],
    }
    work = Path(tempfile.mkdtemp(prefix="edgefleet-federated-"))
    try:
        print("direct measurements ...", flush=True)
        report["direct"] = {
            "clientapp_start": measure_clientapp_start(),
            "local_update": measure_local_update(work),
            "crypto": {str(n): measure_crypto(n) for n in sizes},
        }
        for kind in kinds:
            for n in sizes:
                report["clusters"].append(bench_cluster(kind, n, args.rounds, args.poll_interval, work, args.app_path))
    finally:
        if args.keep:
            print(f"work dir kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    add_breakdowns(report)
    print_table(report)
    write_results("federated", report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
