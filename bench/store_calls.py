"""Store-call benchmark: what `heartbeat_target` (the read on every heartbeat) costs central's event loop.

Decides how central calls a remote store: psycopg's async API, or the sync store on a bounded thread pool.
Three peers in the same run, on the same input (the same fleet of --nodes enrolled nodes, a quarter of
them with a model assigned, read round-robin):

  sqlite-on-loop    SqliteFleetStore.heartbeat_target called straight from a coroutine, as central does today
  pg-thread-pool    PostgresFleetStore.heartbeat_target via loop.run_in_executor on a ThreadPoolExecutor with
                    --pool workers, over the store's pool of --pool connections
  pg-async-pool     the same SQL through psycopg_pool.AsyncConnectionPool (--pool connections), no threads

For each concurrency level (--concurrency: coroutines each calling in a closed loop, so that many calls in
flight) and peer: --calls calls after a warm-up, per-call latency (perf_counter around the await; a
sqlite-on-loop call never yields, so its calls run one after another whatever the level and its latency is
the time it holds the loop), calls/s, and the process's CPU per call
(time.process_time over the window / calls: what central itself pays; PostgreSQL's own CPU is not in it).
PostgreSQL runs on --postgres (default: EDGEFLEET_TEST_POSTGRES or postgres@127.0.0.1:5432), in a throwaway
database. On a small box the server shares the cores with this process; latency then includes that.

Results: bench/results/store_calls-<date>.json. Usage:
    python bench/store_calls.py [--nodes 1000] [--calls 5000] [--concurrency 1,16,64] [--pool 8] [--postgres URL]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import psycopg_pool
from results_file import write_results  # bench/ is on sys.path when run as a script

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from central.store import DesiredState, FleetStore, ModelRecord, NodeRecord, SqliteFleetStore, TokenRecord  # noqa: E402
from central.store.postgres import PostgresFleetStore  # noqa: E402
from postgres_db import base_url, postgres_database  # noqa: E402

WARMUP_CALLS = 500
# What PostgresFleetStore.heartbeat_target runs, for the async peer.
TARGET_SQL = "SELECT config_generation, desired_model FROM nodes WHERE node_id = %s AND revoked_at IS NULL"

Call = Callable[[str], Awaitable[DesiredState | None]]


def percentile(ordered: list[float], q: float) -> float:
    """Of ascending values, interpolated; nan for none."""
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def fill(store: FleetStore, node_ids: list[str]) -> None:
    """The same fleet in every store: one token, every node enrolled, a quarter assigned a model."""
    store.add_token(TokenRecord("bench", "hash", {}, 0.0, 1e12, len(node_ids), len(node_ids), False, "admin:bench"))
    model = ModelRecord("smollm2", "1", "gguf", "ab" * 32, 1, {}, 0.0, "admin:bench", b'{"m": 1}', "sig")
    store.add_model(model)
    for i, node_id in enumerate(node_ids):
        store.enroll("bench", NodeRecord(node_id, {"site": f"s{i % 7}"}, f"h{i}", 1.0, "bench", "ff", 2e9), 1.0)
        if i % 4 == 0:
            store.assign_model(node_id, model)


async def measure(call: Call, node_ids: list[str], concurrency: int, calls: int) -> dict:
    """`calls` calls spread over `concurrency` closed-loop coroutines: latency, rate and CPU per call."""
    latencies: list[float] = []
    next_index = 0

    async def worker(count: int, record: bool) -> None:
        nonlocal next_index
        perf = time.perf_counter
        for _ in range(count):
            node_id = node_ids[next_index % len(node_ids)]
            next_index += 1
            t0 = perf()
            if await call(node_id) is None:
                raise RuntimeError(f"{node_id} has no desired state: the fleet was not filled")
            if record:
                latencies.append(perf() - t0)

    await asyncio.gather(*(worker(WARMUP_CALLS // concurrency + 1, False) for _ in range(concurrency)))
    per_worker = calls // concurrency
    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker(per_worker, True) for _ in range(concurrency)))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    latencies.sort()
    n = len(latencies)
    return {
        "calls": n,
        "calls_per_s": round(n / wall, 1),
        "p50_ms": round(percentile(latencies, 0.50) * 1e3, 4),
        "p99_ms": round(percentile(latencies, 0.99) * 1e3, 4),
        "mean_ms": round(statistics.fmean(latencies) * 1e3, 4),
        "cpu_us_per_call": round(cpu / n * 1e6, 2),
        "cpu_percent_of_one_core": round(cpu / wall * 100, 1),
    }


async def run_all(args, sqlite_store: SqliteFleetStore, pg_store: PostgresFleetStore, pg_url: str, node_ids) -> list:
    loop = asyncio.get_running_loop()
    executor = ThreadPoolExecutor(max_workers=args.pool, thread_name_prefix="store")
    apool = psycopg_pool.AsyncConnectionPool(
        pg_url, min_size=args.pool, max_size=args.pool, kwargs={"autocommit": True}, open=False
    )
    await apool.open(wait=True, timeout=30)

    async def sqlite_on_loop(node_id: str) -> DesiredState | None:
        return sqlite_store.heartbeat_target(node_id)

    async def pg_thread_pool(node_id: str) -> DesiredState | None:
        return await loop.run_in_executor(executor, pg_store.heartbeat_target, node_id)

    async def pg_async_pool(node_id: str) -> DesiredState | None:
        async with apool.connection() as conn:
            row = await (await conn.execute(TARGET_SQL, (node_id,))).fetchone()
        return DesiredState(row[0], row[1]) if row else None

    peers: list[tuple[str, Call]] = [
        ("sqlite-on-loop", sqlite_on_loop),
        ("pg-thread-pool", pg_thread_pool),
        ("pg-async-pool", pg_async_pool),
    ]
    runs = []
    try:
        for concurrency in args.concurrency:
            for name, call in peers:
                result = await measure(call, node_ids, concurrency, args.calls)
                runs.append({"peer": name, "concurrency": concurrency, **result})
                print(
                    f"{name:15} in flight {concurrency:3}: {result['calls_per_s']:9.0f} calls/s"
                    f"  p50 {result['p50_ms']:7.3f} ms  p99 {result['p99_ms']:7.3f} ms"
                    f"  cpu {result['cpu_us_per_call']:7.1f} us/call",
                    flush=True,
                )
    finally:
        await apool.close()
        executor.shutdown()
    return runs


def ratios(runs: list[dict]) -> list[dict]:
    """Per concurrency level: thread pool against async, and PostgreSQL against SQLite on the loop."""
    by = {(r["peer"], r["concurrency"]): r for r in runs}
    out = []
    for concurrency in sorted({r["concurrency"] for r in runs}):
        thread, aio, lite = (by.get((p, concurrency)) for p in ("pg-thread-pool", "pg-async-pool", "sqlite-on-loop"))
        if not (thread and aio and lite):
            continue
        out.append(
            {
                "concurrency": concurrency,
                "thread_over_async": {k: round(thread[k] / aio[k], 2) for k in ("p50_ms", "p99_ms", "cpu_us_per_call")},
                "thread_over_async_calls_per_s": round(thread["calls_per_s"] / aio["calls_per_s"], 2),
                "thread_cpu_over_sqlite": round(thread["cpu_us_per_call"] / lite["cpu_us_per_call"], 2),
            }
        )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=1000, help="enrolled nodes, read round-robin")
    parser.add_argument("--calls", type=int, default=5000, help="measured calls per peer and concurrency level")
    parser.add_argument("--concurrency", default="1,16,64", help="calls in flight, comma-separated")
    parser.add_argument("--pool", type=int, default=8, help="threads and connections of the PostgreSQL peers")
    parser.add_argument("--postgres", default="", help="base URL of a PostgreSQL server (a database is made there)")
    parser.add_argument("--out", help="JSON output (default bench/results/store_calls-<date>.json)")
    args = parser.parse_args()
    args.concurrency = [int(c) for c in args.concurrency.split(",") if c.strip()]
    if args.postgres:
        os.environ["EDGEFLEET_TEST_POSTGRES"] = args.postgres
    node_ids = [f"node-{i:06d}" for i in range(args.nodes)]

    with tempfile.TemporaryDirectory(prefix="edgefleet-store-calls-") as tmp, postgres_database() as pg_url:
        sqlite_store = SqliteFleetStore(Path(tmp) / "central.db")
        pg_store = PostgresFleetStore(pg_url, pool_size=args.pool)
        try:
            fill(sqlite_store, node_ids)
            fill(pg_store, node_ids)
            with psycopg.connect(pg_url) as conn:
                server = str((conn.execute("SHOW server_version").fetchone() or ("?",))[0])
            runs = asyncio.run(run_all(args, sqlite_store, pg_store, pg_url, node_ids))
        finally:
            sqlite_store.close()
            pg_store.close()

    report: dict[str, Any] = {
        "benchmark": "store_calls",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "cores": os.cpu_count(),
            "arch": platform.machine(),
            "python": platform.python_version(),
            "sqlite": sqlite3.sqlite_version,
            "psycopg": psycopg.__version__,
            "libpq": psycopg.pq.version(),
            "postgres_server": server,
            "postgres_at": base_url().rpartition("@")[2],
        },
        "load": {"nodes": args.nodes, "calls": args.calls, "warmup_calls": WARMUP_CALLS, "pool": args.pool},
        "runs": runs,
        "ratios": ratios(runs),
    }
    print()
    for r in report["ratios"]:
        print(
            f"in flight {r['concurrency']:3}: thread pool / async  p50 x{r['thread_over_async']['p50_ms']}"
            f"  p99 x{r['thread_over_async']['p99_ms']}  cpu/call x{r['thread_over_async']['cpu_us_per_call']}"
            f"  calls/s x{r['thread_over_async_calls_per_s']};"
            f"  thread-pool cpu/call vs SQLite x{r['thread_cpu_over_sqlite']}"
        )
    write_results("store_calls", report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
