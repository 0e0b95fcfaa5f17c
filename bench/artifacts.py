"""Artifact benchmark: push and fetch model artifacts over mTLS on loopback against one real
`edgefleet central serve` process, beside a plain copy of the same bytes on the same disk, then a rollout
of a new version across real agents.

Setup: random files of each size (--sizes) are written in a temp dir on the repo's disk (never tmpfs:
/tmp is used only if it is on the same device as the repo, else build/). Central runs as its own process
with --heartbeat-interval 1s; one node enrolls for real (mTLS certificate, pinned signing key) and serves
as the downloader. Each blob store in --blob-stores gets a central of its own: "local" keeps the blobs in
its data dir, "s3" in a bucket of a moto server (tests/s3_server.py, S3 on loopback, objects in its memory)
through `central serve --blobs s3://BUCKET/blobs`. Per store and size, each figure is the median of
--repeat runs:
  copy    shutil.copyfile to a new file + fsync: the limit for moving these bytes on this disk;
  push    `edgefleet models push` in-process (central.cli.main) as bench-<size>@1.0.<i>: client reads,
          gRPC over TLS, central hashes and stores the blob (local: write, fsync, rename; s3: multipart
          upload to a temp key, server-side copy to its sha256 key; the same bytes again skip the copy);
  fetch   ModelSlots(data_dir, signing key).download(...) exactly as the agent calls it: FetchArtifact
          chunks from a FleetClient, written to download.part while a thread hashes them, fsync, size and
          sha256 check, rename into the slot, manifest stored durably;
  raw     the same FetchArtifact stream written to a file + fsync, no hashing: the transport alone;
  verify  sha256 of the downloaded file alone (edge_agent.models.sha256_file, 1 MiB blocks).
All figures are warm-cache: nothing is dropped from the page cache, so every read (the source file,
central's blob, the downloaded file) comes from RAM; every write ends with fsync, so the disk's write
speed is in all figures but verify. MB/s is 10^6 bytes per second. CPU seconds of central, of the S3
server, of this process and of the rest of the machine (kernel writeback threads count there too; anything
else means the run was disturbed) are recorded per run to show where the time goes. Target: fetch at least
0.8x the plain copy, from each store.

Rollout: --agents real `edge-agent serve` processes (smollm2-135m-instruct, n_parallel 1, n_ctx 256)
enroll with a label, chat@1.0.0 (SmolLM2's GGUF) is assigned to each and must go ACTIVE; then
`rollout start chat@1.1.0 --canary 20 --steps 100 --bake 1ms` (gemma-3-270m's GGUF; the CLI refuses 0s)
is timed until the rollout is COMPLETED and every agent reports 1.1.0 ACTIVE.

Results: bench/results/artifacts-<date>.json: "sizes" for the local store (as before), "s3" for S3. Usage:
    python bench/artifacts.py [--sizes 256M,1G] [--repeat 3] [--blob-stores local,s3] [--agents 5] [--skip-rollout]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import grpc
import psutil
from results_file import describe_machine, write_results  # bench/ is on sys.path when run as a script

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from agent_process import start_agent  # noqa: E402
from central.cli import main as edgefleet  # noqa: E402
from central_process import create_token, start_central, wait_for  # noqa: E402
from edge_agent.control.artifacts import ModelSlots  # noqa: E402
from edge_agent.control.client import FleetClient, enroll  # noqa: E402
from edge_agent.control.identity import FleetFiles  # noqa: E402
from edge_agent.models import resolve_model, sha256_file  # noqa: E402
from edgefleet.v1 import admin_pb2, common_pb2  # noqa: E402
from s3_server import start_s3_server  # noqa: E402

TARGET_FETCH_VS_COPY = 0.8
AGENT_SECTIONS = {"fleet": {"max_backoff_s": 1.0}, "model": {"n_parallel": 1, "n_ctx": 256}}
ACTIVE = common_pb2.ACTIVATION_STATE_ACTIVE
BLOCK = 16 << 20


def parse_size(text: str) -> int:
    text = text.strip().upper().removesuffix("B").removesuffix("I")
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(float(text[:-1]) * units[text[-1]]) if text[-1] in units else int(text)


def label(n: int) -> str:
    return f"{n >> 30}GiB" if n % (1 << 30) == 0 else f"{n >> 20}MiB"


def machine() -> dict:
    import google.protobuf

    return describe_machine(
        memory_gib=round(psutil.virtual_memory().total / 2**30, 1),
        grpcio=grpc.__version__,
        protobuf=google.protobuf.__version__,
    )


def work_parent() -> Path:
    """A temp parent on the repo's disk: /tmp when it is the same device (so not tmpfs), else build/."""
    tmp = Path(tempfile.gettempdir())
    if os.stat(tmp).st_dev == os.stat(ROOT).st_dev:
        return tmp
    (ROOT / "build").mkdir(exist_ok=True)
    return ROOT / "build"


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def random_file(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        for done in range(0, size, BLOCK):
            f.write(os.urandom(min(BLOCK, size - done)))
        f.flush()
        os.fsync(f.fileno())


def cli(central, *args: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = edgefleet(
            ["--credential", str(central.paths.admin_credential), "--central", central.fleet_address, *args]
        )
    if code != 0:
        raise RuntimeError(f"edgefleet {' '.join(args)} exited with {code}")
    return out.getvalue()


def busy_s() -> float:
    t = psutil.cpu_times()
    return t.user + t.nice + t.system + getattr(t, "irq", 0) + getattr(t, "softirq", 0)


def cpu_s(proc: psutil.Process | None) -> float:
    return sum(proc.cpu_times()[:2]) if proc is not None else 0.0


def timed(central_proc: psutil.Process, fn, s3_proc: psutil.Process | None = None) -> dict:
    """Wall seconds of fn(); CPU seconds of central, of the S3 server (if any), of this process, and of the rest
    of the machine meanwhile (near 0, or something else disturbed the run)."""
    c0, s0, p0, m0 = cpu_s(central_proc), cpu_s(s3_proc), time.process_time(), busy_s()
    t0 = time.perf_counter()
    fn()
    wall = time.perf_counter() - t0
    central_s, s3_s, client_s = cpu_s(central_proc) - c0, cpu_s(s3_proc) - s0, time.process_time() - p0
    return {
        "s": wall,
        "central_cpu_s": central_s,
        "s3_cpu_s": s3_s,
        "client_cpu_s": client_s,
        "other_cpu_s": max(0.0, busy_s() - m0 - central_s - s3_s - client_s),
    }


def bench_size(central, identity, size: int, repeat: int, work: Path, s3_pid: int | None = None) -> dict:
    central_proc = psutil.Process(central.pid)
    s3_proc = psutil.Process(s3_pid) if s3_pid is not None else None

    def measure(fn) -> dict:
        return timed(central_proc, fn, s3_proc)

    src = work / f"artifact-{label(size)}.gguf"
    print(f"[{label(size)}] writing {size} random bytes to {src}", flush=True)
    random_file(src, size)
    name = f"bench-{label(size).lower()}"
    runs: dict[str, list[dict]] = {k: [] for k in ("copy", "push", "fetch", "raw", "verify")}
    client = FleetClient(identity, rpc_timeout_s=30)
    try:
        for i in range(repeat):
            dst = work / "copy.bin"

            # The closures take this iteration's values as defaults, though timed() calls each at once.
            def copy(dst: Path = dst) -> None:
                shutil.copyfile(src, dst)
                fsync_file(dst)

            runs["copy"].append(measure(copy))
            dst.unlink()
            runs["push"].append(
                measure(
                    lambda i=i: cli(
                        central, "models", "push", str(src), "--name", name, "--version", f"1.0.{i}", "--format", "gguf"
                    ),
                )
            )
            with central.admin() as admin:
                got = admin.call("GetModel", admin_pb2.GetModelRequest(name=name, version=f"1.0.{i}"))
            sha = got.model.sha256
            slots = ModelSlots(work / "node-data", identity.signing_public_key_pem)
            manifest = slots.verify_manifest(got.manifest.body, got.manifest.signature)
            holder = {}
            runs["fetch"].append(
                measure(
                    lambda holder=holder, slots=slots, manifest=manifest, sha=sha: holder.setdefault(
                        "path", slots.download(manifest, lambda offset: client.fetch_artifact(sha, offset))
                    ),
                )
            )
            runs["verify"].append(measure(lambda holder=holder: holder.setdefault("sha", sha256_file(holder["path"]))))
            if holder["sha"] != sha or holder["path"].stat().st_size != size:
                raise RuntimeError(f"downloaded {holder['path']} does not match {sha}")
            shutil.rmtree(work / "node-data")
            raw = work / "raw.bin"

            def fetch_raw(raw: Path = raw, sha: str = sha) -> None:
                with open(raw, "wb") as f:
                    for _offset, data, _total in client.fetch_artifact(sha, 0):
                        f.write(data)
                    f.flush()
                    os.fsync(f.fileno())

            runs["raw"].append(measure(fetch_raw))
            if raw.stat().st_size != size:
                raise RuntimeError(f"raw fetch got {raw.stat().st_size} of {size} bytes")
            raw.unlink()
            print(
                f"[{label(size)}] run {i + 1}/{repeat}: "
                + ", ".join(f"{k} {size / 1e6 / v[-1]['s']:.0f} MB/s" for k, v in runs.items()),
                flush=True,
            )
    finally:
        client.close()
        src.unlink(missing_ok=True)
    result = {"bytes": size, "repeat": repeat, "runs": runs, "median": {}}
    for k, v in runs.items():
        s = statistics.median(r["s"] for r in v)
        result["median"][k] = {
            "s": round(s, 3),
            "mb_per_s": round(size / 1e6 / s, 1),
            "central_cpu_s": round(statistics.median(r["central_cpu_s"] for r in v), 2),
            "s3_cpu_s": round(statistics.median(r["s3_cpu_s"] for r in v), 2),
            "client_cpu_s": round(statistics.median(r["client_cpu_s"] for r in v), 2),
            "other_cpu_s": round(statistics.median(r["other_cpu_s"] for r in v), 2),
        }
    copy_rate = result["median"]["copy"]["mb_per_s"]
    for k in result["median"]:
        result["median"][k]["vs_copy"] = round(result["median"][k]["mb_per_s"] / copy_rate, 3)
    result["fetch_vs_copy"] = result["median"]["fetch"]["vs_copy"]
    result["fetch_vs_raw"] = round(result["median"]["fetch"]["mb_per_s"] / result["median"]["raw"]["mb_per_s"], 3)
    result["meets_target"] = result["fetch_vs_copy"] >= TARGET_FETCH_VS_COPY
    return result


def nodes_on(central, node_ids: list[str], version: str) -> bool:
    with central.admin() as admin:
        listed = admin.call("ListNodes", admin_pb2.ListNodesRequest(selector={"bench": "rollout"})).nodes
    on = {
        n.node_id
        for n in listed
        if n.status.activation.model.version == version and n.status.activation.state == ACTIVE
    }
    return on >= set(node_ids)


def bench_rollout(central, n_agents: int, work: Path, agents: list) -> dict:
    smol = resolve_model("smollm2-135m-instruct", "", work / "models")
    gemma = resolve_model("gemma-3-270m", "", work / "models")
    cli(central, "models", "push", str(smol.path), "--name", "chat", "--version", "1.0.0")
    cli(central, "models", "push", str(gemma.path), "--name", "chat", "--version", "1.1.0")
    node_ids = []
    for i in range(n_agents):
        data_dir = work / f"agent-{i}"
        token = create_token(central, bench="rollout")
        node_ids.append(enroll(central.enroll_address, token.ca_fingerprint, token.token, FleetFiles(data_dir)).node_id)
        agents.append(start_agent(data_dir, "smollm2-135m-instruct", AGENT_SECTIONS))
        print(f"[rollout] agent {i + 1}/{n_agents} ready (pid {agents[-1].pid})", flush=True)
    started = time.perf_counter()
    for node_id in node_ids:
        cli(central, "nodes", "assign", node_id, "chat@1.0.0")
    wait_for(
        lambda: nodes_on(central, node_ids, "1.0.0"),
        timeout_s=300,
        interval_s=0.2,
        what="every agent ACTIVE on chat@1.0.0",
    )
    assign_s = time.perf_counter() - started
    print(f"[rollout] all {n_agents} ACTIVE on chat@1.0.0 after {assign_s:.1f} s; starting the rollout", flush=True)
    started = time.perf_counter()
    row = json.loads(
        cli(
            central,
            "rollout",
            "start",
            "chat@1.1.0",
            "--selector",
            "bench=rollout",
            "--canary",
            "20",
            "--steps",
            "100",
            "--bake",
            "1ms",
            "--max-p99-ms",
            "600000",
            "--json",
        )
    )
    canary = [n["node"] for n in row["nodes"] if n["in_step"]]
    marks: dict[str, float] = {}

    def done() -> bool:
        now = time.perf_counter() - started
        if "canary_active_s" not in marks and nodes_on(central, canary, "1.1.0"):
            marks["canary_active_s"] = now
        with central.admin() as admin:
            phase = admin.call("GetRollout", admin_pb2.GetRolloutRequest(rollout_id=row["rollout"])).rollout.phase
        if phase in ("ROLLED_BACK", "ABORTED"):
            raise RuntimeError(f"rollout {row['rollout']} ended {phase}")
        if phase == "COMPLETED":
            marks.setdefault("completed_s", now)
        if "all_active_s" not in marks and nodes_on(central, node_ids, "1.1.0"):
            marks["all_active_s"] = now
        return "completed_s" in marks and "all_active_s" in marks

    wait_for(done, timeout_s=600, interval_s=0.2, what="the rollout of chat@1.1.0 to complete")
    total = time.perf_counter() - started
    return {
        "agents": n_agents,
        "canary_nodes": len(canary),
        "heartbeat_interval_s": 1.0,
        "v1_bytes": smol.size,
        "v2_bytes": gemma.size,
        "assign_v1_all_active_s": round(assign_s, 2),
        **{k: round(v, 2) for k, v in marks.items()},
        "start_to_all_active_and_completed_s": round(total, 2),
    }


def by_store(report: dict) -> dict[str, dict]:
    """Each measured blob store's sizes: the local store's stay at the top level, as in earlier results."""
    stores = {"local": report.get("sizes", {}), "s3": report.get("s3", {}).get("sizes", {})}
    return {store: sizes for store, sizes in stores.items() if sizes}


def print_table(report: dict) -> None:
    print(
        f"\n{'store':<6}{'size':>7} {'step':<8}{'MB/s':>8}{'median s':>10}{'vs copy':>9}{'central CPU s':>15}"
        f"{'S3 CPU s':>10}{'client CPU s':>14}{'other CPU s':>13}"
    )
    for store, sizes in by_store(report).items():
        for name, r in sizes.items():
            for k, m in r["median"].items():
                print(
                    f"{store:<6}{name:>7} {k:<8}{m['mb_per_s']:>8.0f}{m['s']:>10.2f}{m['vs_copy']:>8.2f}x"
                    f"{m['central_cpu_s']:>15.2f}{m.get('s3_cpu_s', 0):>10.2f}{m['client_cpu_s']:>14.2f}"
                    f"{m['other_cpu_s']:>13.2f}"
                )
    for store, sizes in by_store(report).items():
        for name, r in sizes.items():
            print(
                f"{store} {name}: fetch/copy {r['fetch_vs_copy']:.2f}x, fetch/raw {r['fetch_vs_raw']:.2f}x "
                f"(target fetch/copy >= {TARGET_FETCH_VS_COPY}x): {'met' if r['meets_target'] else 'MISSED'}"
            )
    r = report.get("rollout")
    if r:
        print(
            f"rollout of chat@1.1.0 to {r['agents']} agents (canary {r['canary_nodes']}, bake 1ms, heartbeat 1s): "
            f"canary ACTIVE {r.get('canary_active_s', float('nan')):.1f} s, COMPLETED {r['completed_s']:.1f} s, "
            f"all ACTIVE {r['all_active_s']:.1f} s after `rollout start`"
        )
    print(
        "medians over --repeat runs; warm page cache; fetch = ModelSlots.download (hash while writing), "
        "raw = FetchArtifact to a file, no hash; client CPU = this process; S3 CPU = the moto server; "
        "other CPU = the rest of the machine (near 0, or the run was disturbed)"
    )


def bench_local(sizes: list[int], args: argparse.Namespace, work: Path, report: dict) -> dict:
    """Transfers with central's blobs in its data dir, then the rollout (into report) unless skipped."""
    central, agents, results = None, [], {}
    try:
        central = start_central(work / "central", "--heartbeat-interval", "1s")
        token = create_token(central)
        identity = enroll(central.enroll_address, token.ca_fingerprint, token.token, FleetFiles(work / "node"))
        for size in sizes:
            results[label(size)] = bench_size(central, identity, size, args.repeat, work)
        if not args.skip_rollout:
            report["rollout"] = bench_rollout(central, args.agents, work, agents)
    finally:
        for agent in agents:
            agent.stop()
        if central is not None:
            central.stop()
    return results


def bench_s3(sizes: list[int], repeat: int, work: Path) -> dict:
    """Transfers with central's blobs in a bucket of a moto server on loopback."""
    s3, central, results = None, None, {}
    try:
        s3 = start_s3_server(work / "moto.log")
        bucket = s3.create_bucket("edgefleet-bench")
        central = start_central(
            work / "central-s3", "--heartbeat-interval", "1s", "--blobs", f"s3://{bucket}/blobs", env=s3.env()
        )
        token = create_token(central)
        identity = enroll(central.enroll_address, token.ca_fingerprint, token.token, FleetFiles(work / "node-s3"))
        for size in sizes:
            print(f"[s3] central's blobs in s3://{bucket}/blobs at {s3.endpoint_url}", flush=True)
            results[label(size)] = bench_size(central, identity, size, repeat, work, s3.pid)
    finally:
        if central is not None:
            central.stop()
        if s3 is not None:
            s3.stop()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="256M,1G", help="artifact sizes, comma-separated (K, M, G = KiB, MiB, GiB)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement; medians are reported")
    parser.add_argument(
        "--blob-stores", default="local,s3", help="central's blob stores to measure: local, s3 (default both)"
    )
    parser.add_argument("--agents", type=int, default=5, help="real agents in the rollout (default 5)")
    parser.add_argument("--skip-rollout", action="store_true", help="measure the artifact transfers only")
    parser.add_argument("--out", help="JSON output (default bench/results/artifacts-<date>.json)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks that stop our processes
    sizes = [parse_size(s) for s in args.sizes.split(",") if s.strip()]
    stores = [s.strip() for s in args.blob_stores.split(",") if s.strip()]
    if set(stores) - {"local", "s3"}:
        parser.error(f"--blob-stores: unknown {', '.join(sorted(set(stores) - {'local', 's3'}))}; use local, s3")
    report = {
        "benchmark": "artifacts",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "target": {"fetch_vs_copy": TARGET_FETCH_VS_COPY},
        "sizes": {},
    }
    with tempfile.TemporaryDirectory(prefix="edgefleet-artifacts-", dir=work_parent()) as tmp:
        work = Path(tmp)
        report["workdir"] = str(work.parent)
        if "local" in stores:
            report["sizes"] = bench_local(sizes, args, work, report)
        if "s3" in stores:
            report["s3"] = {"endpoint": "moto_server on 127.0.0.1", "sizes": bench_s3(sizes, args.repeat, work)}
    print_table(report)
    write_results("artifacts", report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
