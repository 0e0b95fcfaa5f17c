"""Heartbeat benchmark: simulated agents heartbeating against one real `edgefleet central serve` process.

Setup: central is initialised in a temp dir and started as its own process (default 15 s heartbeat
interval). One bootstrap token with uses=max(N) is created with the admin credential, then max(N) nodes
enroll for real over the TLS enrollment port with the CA pinned (discover_ca once), each with a fresh key
and CSR; certificates and keys stay in memory. The run for a smaller N uses the first N nodes.

Load: W worker processes (--workers; spawned, separate from central; uvloop when installed), each owning
N/W nodes with one grpc.aio mTLS channel per node (each presents its own certificate), one Heartbeat
stream per node (as agents keep one), and one realistic NodeStatus per node (encode_status, parsed once,
reused). All channels connect and beat a few times before the window opens; then, for --duration
seconds, every node heartbeats closed-loop (the next RPC as soon as the previous returns), which
measures capacity. Closed-loop latency is mostly queueing, about N / rate
(Little's law): for latency at a given load use --rate R, an open loop of fixed schedules adding up to R
beats/s. Latency is perf_counter around each write+read in the clients; errors are counted by status code.

Reported per N: heartbeats/s, RPC p50/p99, errors, central's CPU (% of one core over the window, and CPU
ms per heartbeat) and RSS (peak, end), the load generator's CPU, the rest of the machine's CPU meanwhile
(near 0, or the run was disturbed), the fleet that rate carries at a 15 s interval, and the ratios to the
target (3,000 beats/s on 2 cores, p99 < 50 ms). On a 2-core box the load generator takes much of the
CPU: central's CPU ms per heartbeat is the figure that carries over to a box where central has the cores.

Results: bench/results/heartbeats-<date>.json. Usage:
    python bench/heartbeats.py [--nodes 100,1000] [--workers 1] [--duration 15] [--rate 0] [--loop uvloop]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import multiprocessing as mp
import os
import platform
import random
import signal
import sqlite3
import sys
import tempfile
import time
from array import array
from pathlib import Path

import grpc
import psutil
from results_file import write_results  # bench/ is on sys.path when run as a script

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from central_process import create_token, start_central  # noqa: E402
from edge_agent.control.client import ModelInfo, encode_status  # noqa: E402
from edge_agent.control.interval_stats import InferenceWindow  # noqa: E402
from edge_agent.control.telemetry import SystemSample, Temperature  # noqa: E402
from edgefleet import channels, pki  # noqa: E402
from edgefleet.v1 import common_pb2, enrollment_pb2, enrollment_pb2_grpc, fleet_pb2, fleet_pb2_grpc  # noqa: E402

TARGET_RATE = 3000.0
TARGET_P99_MS = 50.0
FLEET_INTERVAL_S = 15.0
WARMUP_BEATS = 3
RPC_TIMEOUT_S = 10.0


def percentile(ordered, q: float) -> float:
    """Of ascending values, interpolated; nan for none."""
    if not len(ordered):
        return float("nan")
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def machine() -> dict:
    cpu = ""
    with contextlib.suppress(OSError, StopIteration), open("/proc/cpuinfo") as cpuinfo:
        cpu = next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    import google.protobuf

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "arch": platform.machine(),
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
        "protobuf": google.protobuf.__version__,
        "sqlite": sqlite3.sqlite_version,
    }


def node_status() -> bytes:
    """What a busy 4-core edge box serving one model reports every interval."""
    system = SystemSample(
        cpu_percent=37.5,
        cpu_count=4,
        load_average_1m=1.25,
        memory_used_bytes=2_150_000_000,
        memory_total_bytes=4_100_000_000,
        disk_used_bytes=12_400_000_000,
        disk_total_bytes=31_900_000_000,
        temperatures=(Temperature("cpu_thermal", 51.2), Temperature("soc", 48.9)),
        gpus=(),
    )
    window = InferenceWindow(
        interval_seconds=15.0,
        requests=42,
        errors=1,
        generated_tokens=5376,
        tokens_per_second=24.1,
        latency_p50_ms=310.0,
        latency_p99_ms=890.0,
        cache_hits=6,
        cache_lookups=42,
    )
    model = ModelInfo("smollm2-135m-instruct", "q8_0", "ab" * 32)
    return encode_status(
        "0.1.0", model, system, window, queue_depth=2, config_generation=0, uptime_s=86_400.0, observed_at=time.time()
    )


def enroll_nodes(address: str, fingerprint: str, token: str, n: int, window: int = 32) -> tuple[bytes, list]:
    """The pinned CA, and n real enrollments (`window` in flight) as [(node_id, certificate_pem, key_pem)]."""
    ca_pem = channels.discover_ca(address, fingerprint)
    nodes, pending = [], []
    with channels.tls_channel(address, ca_pem) as channel:
        stub = enrollment_pb2_grpc.EnrollmentServiceStub(channel)

        def collect(key, future):
            reply = future.result()
            nodes.append((reply.node_id, reply.certificate_pem.encode(), pki.private_key_pem(key)))
            if len(nodes) % 50 == 0 or len(nodes) == n:
                print(f"\renrolled {len(nodes)}/{n}", end="", file=sys.stderr, flush=True)

        for i in range(n):
            key = pki.generate_key()
            request = enrollment_pb2.EnrollRequest(
                token=token, csr_pem=pki.make_csr(key).decode(), hostname=f"bench-{i:05d}"
            )
            pending.append((key, stub.Enroll.future(request, timeout=60)))
            if len(pending) >= window:
                collect(*pending.pop(0))
        for item in pending:
            collect(*item)
    print(file=sys.stderr)
    return ca_pem, nodes


async def _drive(nodes, address: str, ca_pem: bytes, status: bytes, interval_s: float, duration_s: float, conn) -> dict:
    """One worker: connect and warm up every node, report ready, wait for the start time, beat until the end."""
    options = [*channels.CLIENT_OPTIONS, ("grpc.use_local_subchannel_pool", 1)]  # one connection per node
    parsed = common_pb2.NodeStatus.FromString(status)
    chans = [
        grpc.aio.secure_channel(address, channels.mtls_credentials(ca_pem, cert, key), options=options)
        for _, cert, key in nodes
    ]
    stubs = [fleet_pb2_grpc.FleetServiceStub(ch) for ch in chans]
    requests = [fleet_pb2.HeartbeatRequest(node_id=node_id, status=parsed) for node_id, _, _ in nodes]
    latencies, errors = array("d"), {}

    class Beat:
        """One node's Heartbeat stream, as the agent keeps it: reopened after an error."""

        def __init__(self, stub):
            self.stub, self.stream = stub, None

        async def __call__(self, request, timeout):
            if self.stream is None:
                self.stream = self.stub.Heartbeat()
            try:
                await self.stream.write(request)
                return await asyncio.wait_for(self.stream.read(), timeout)
            except BaseException:
                self.stream.cancel()
                self.stream = None
                raise

    calls = [Beat(stub) for stub in stubs]
    try:
        await asyncio.wait_for(asyncio.gather(*(ch.channel_ready() for ch in chans)), 120)
        for _ in range(WARMUP_BEATS):
            await asyncio.gather(*(call(req, timeout=RPC_TIMEOUT_S) for call, req in zip(calls, requests, strict=True)))
        conn.send(("ready", None))
        start = await asyncio.get_running_loop().run_in_executor(None, conn.recv)
        end = start + duration_s

        async def node(call, request):
            perf = time.perf_counter
            next_at = start + random.random() * interval_s  # open loop: spread the nodes over one interval
            while True:
                if interval_s:  # latency from the scheduled time, so a stalled central is not hidden
                    t0, next_at = next_at, next_at + interval_s
                    if t0 > perf():
                        await asyncio.sleep(t0 - perf())
                else:
                    t0 = perf()
                if t0 >= end:
                    return
                try:
                    await call(request, timeout=RPC_TIMEOUT_S)
                except (grpc.aio.AioRpcError, asyncio.TimeoutError) as exc:
                    name = exc.code().name if isinstance(exc, grpc.aio.AioRpcError) else "TIMEOUT"
                    errors[name] = errors.get(name, 0) + 1
                    await asyncio.sleep(0.05)  # no hot loop against a refusing central
                    continue
                t1 = perf()
                if t1 <= end:
                    latencies.append(t1 - t0)

        await asyncio.sleep(max(0.0, start - time.perf_counter()))
        await asyncio.gather(*(node(c, r) for c, r in zip(calls, requests, strict=True)))
        return {"latencies": latencies.tobytes(), "errors": errors}
    finally:
        await asyncio.gather(*(ch.close() for ch in chans), return_exceptions=True)


def worker_main(nodes, address, ca_pem, status, interval_s, duration_s, loop, conn) -> None:
    try:
        if loop == "uvloop":
            import uvloop

            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        conn.send(("done", asyncio.run(_drive(nodes, address, ca_pem, status, interval_s, duration_s, conn))))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which stops everything
        conn.send(("error", f"{type(exc).__name__}: {exc}"))


def run_load(central, nodes, ca_pem, status, args) -> dict:
    ctx = mp.get_context("spawn")  # no fork of a process that has used gRPC
    interval_s, duration_s = (len(nodes) / args.rate if args.rate else 0.0), args.duration
    procs, pipes, finished = [], [], False
    try:
        for w in range(args.workers):
            parent, child = ctx.Pipe()
            procs.append(
                ctx.Process(
                    target=worker_main,
                    daemon=True,
                    args=(
                        nodes[w :: args.workers],
                        central.fleet_address,
                        ca_pem,
                        status,
                        interval_s,
                        duration_s,
                        args.loop,
                        child,
                    ),
                )
            )
            procs[-1].start()
            pipes.append(parent)

        def receive(kind):
            out = []
            for pipe in pipes:
                if not pipe.poll(300):
                    raise RuntimeError(f"a load worker sent no {kind!r} within 300 s")
                tag, value = pipe.recv()
                if tag == "error":
                    raise RuntimeError(f"load worker failed: {value}")
                out.append(value)
            return out

        receive("ready")
        central_proc, load_procs = psutil.Process(central.pid), [psutil.Process(p.pid) for p in procs]
        start = time.perf_counter() + 0.2  # CLOCK_MONOTONIC: the same clock in every process
        for pipe in pipes:
            pipe.send(start)
        time.sleep(max(0.0, start - time.perf_counter()))
        for p in [central_proc, *load_procs]:
            p.cpu_percent(None)
        psutil.cpu_percent(None)
        rss_peak = 0
        while time.perf_counter() < start + duration_s:
            rss_peak = max(rss_peak, central_proc.memory_info().rss)
            time.sleep(0.25)
        central_cpu = central_proc.cpu_percent(None)
        load_cpu = sum(p.cpu_percent(None) for p in load_procs)
        machine_cpu = psutil.cpu_percent(None) * psutil.cpu_count()
        rss_end = central_proc.memory_info().rss
        results = receive("done")
        finished = True
    finally:
        for p in procs:
            p.join(30 if finished else 0.5)
            if p.is_alive():
                p.kill()  # by its pid
                p.join()
    samples, errors = array("d"), {}
    for r in results:
        samples.frombytes(r["latencies"])
        for code, count in r["errors"].items():
            errors[code] = errors.get(code, 0) + count
    latencies = sorted(samples)
    rate = len(latencies) / duration_s
    p99 = percentile(latencies, 0.99) * 1000
    return {
        "nodes": len(nodes),
        "workers": args.workers,
        "loop": args.loop,
        "duration_s": duration_s,
        "mode": f"open loop at {args.rate:g}/s" if args.rate else "closed loop",
        "heartbeats": len(latencies),
        "heartbeats_per_s": round(rate, 1),
        "latency_p50_ms": round(percentile(latencies, 0.5) * 1000, 2),
        "latency_p99_ms": round(p99, 2),
        "latency_max_ms": round(latencies[-1] * 1000 if latencies else float("nan"), 2),
        "errors": sum(errors.values()),
        "errors_by_code": errors,
        "central_cpu_percent": round(central_cpu, 1),
        "central_cpu_ms_per_beat": round(central_cpu * 10 / rate, 3) if rate else None,
        "central_rss_peak_mib": round(rss_peak / 2**20, 1),
        "central_rss_end_mib": round(rss_end / 2**20, 1),
        "load_cpu_percent": round(load_cpu, 1),
        "load_cpu_ms_per_beat": round(load_cpu * 10 / rate, 3) if rate else None,
        "other_cpu_percent": round(machine_cpu - central_cpu - load_cpu, 1),
        "equivalent_nodes_at_15s": int(rate * FLEET_INTERVAL_S),
        "rate_vs_target": round(rate / TARGET_RATE, 3),
        "p99_vs_target": round(p99 / TARGET_P99_MS, 3),
    }


def print_table(runs: list[dict]) -> None:
    print(
        f"\n{'N':>6}{'W':>3}{'beats/s':>9}{'p50 ms':>8}{'p99 ms':>8}{'err':>5}{'central CPU%':>13}{'ms/beat':>8}"
        f"{'RSS MiB peak/end':>18}{'load CPU%':>10}{'other CPU%':>11}{'nodes@15s':>10}"
    )
    for r in runs:
        print(
            f"{r['nodes']:>6}{r['workers']:>3}{r['heartbeats_per_s']:>9.0f}{r['latency_p50_ms']:>8.1f}"
            f"{r['latency_p99_ms']:>8.1f}{r['errors']:>5}{r['central_cpu_percent']:>13.0f}"
            f"{r['central_cpu_ms_per_beat'] or 0:>8.2f}{r['central_rss_peak_mib']:>10.0f} / "
            f"{r['central_rss_end_mib']:<5.0f}{r['load_cpu_percent']:>10.0f}{r['other_cpu_percent']:>11.0f}"
            f"{r['equivalent_nodes_at_15s']:>10}"
        )
    for r in runs:
        print(
            f"N={r['nodes']} ({r['mode']}): rate/target {r['rate_vs_target']:.2f}x (target {TARGET_RATE:.0f}/s),"
            f" p99/target {r['p99_vs_target']:.2f}x (target {TARGET_P99_MS:.0f} ms)"
            + (f", errors {r['errors_by_code']}" if r["errors"] else "")
        )
    print(
        "CPU% is % of one core; ms/beat: central's CPU time per heartbeat; other CPU%: the rest of the machine "
        "meanwhile (near 0, or the run was disturbed)"
    )


def main() -> int:
    try:
        import uvloop  # noqa: F401

        default_loop = "uvloop"
    except ImportError:
        default_loop = "asyncio"
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", default="100,1000", help="simulated fleet sizes, comma-separated")
    parser.add_argument("--workers", type=int, default=1, help="load-generator processes (default 1)")
    parser.add_argument("--duration", type=float, default=15.0, help="measured seconds per fleet size")
    parser.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="total beats/s on a fixed schedule (open loop); 0 = closed loop, i.e. capacity",
    )
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default=default_loop, help="the workers' loop")
    parser.add_argument("--out", help="JSON output (default bench/results/heartbeats-<date>.json)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks that stop our processes
    sizes = [int(n) for n in args.nodes.split(",") if n.strip()]

    report = {
        "benchmark": "heartbeats",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "target": {"heartbeats_per_s": TARGET_RATE, "p99_ms": TARGET_P99_MS},
        "load": {
            "workers": args.workers,
            "loop": args.loop,
            "duration_s": args.duration,
            "rate": args.rate or "closed loop",
            "warmup_beats_per_node": WARMUP_BEATS,
            "status_bytes": len(node_status()),
            "central_heartbeat_interval_s": 15.0,
        },
        "runs": [],
    }
    with tempfile.TemporaryDirectory(prefix="edgefleet-hb-") as tmp:
        central = None
        try:
            central = start_central(Path(tmp) / "central")
            token = create_token(central, uses=max(sizes), ttl_s=3600)
            started = time.perf_counter()
            ca_pem, nodes = enroll_nodes(central.enroll_address, token.ca_fingerprint, token.token, max(sizes))
            report["enrollment"] = {"nodes": len(nodes), "seconds": round(time.perf_counter() - started, 2)}
            print(f"enrolled {len(nodes)} nodes in {report['enrollment']['seconds']} s", flush=True)
            for n in sizes:
                print(f"N={n}: {args.workers} worker(s), {args.duration:g} s ...", flush=True)
                run = run_load(central, nodes[:n], ca_pem, node_status(), args)
                report["runs"].append(run)
                print(
                    f"N={n}: {run['heartbeats_per_s']:.0f} beats/s, p50 {run['latency_p50_ms']} ms, "
                    f"p99 {run['latency_p99_ms']} ms, central CPU {run['central_cpu_percent']}%",
                    flush=True,
                )
        finally:
            if central is not None:
                central.stop()  # SIGTERM by its pid, then SIGKILL
    print_table(report["runs"])
    write_results("heartbeats", report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
