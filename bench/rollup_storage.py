"""Rollup storage per node per day, for bench/heartbeats.py: a simulated day of heartbeats through central's own
parts (central.rollups.figures, HeartbeatBuffer, the store's add_rollups), on a clock the simulation moves.

N nodes, each beating every `interval_s` (15 s, central's default) with the bench's realistic status, labelled
region and site (two label groups), are recorded in a HeartbeatBuffer on a real store (SQLite in a temp dir;
PostgreSQL in the bench's database) and flushed once a simulated minute (the rows written do not depend on how
often central flushes: a row is per scope and minute or hour). After 24 hours the rollups table's bytes (SQLite:
dbstat, table and index; PostgreSQL: pg_total_relation_size) divided by N is the storage one node adds in a day.
At steady state a node holds a day of minute rows and 30 days of hour rows: `steady_state_bytes_per_node`
extrapolates that from the bytes per minute row and per hour row measured here.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

DAY_S = 86400
DERIVE_EVERY_S = 300  # central.server.PRUNE_INTERVAL_S


def simulate_day(
    store, nodes: int, status_bytes: bytes, interval_s: float = 15.0, start: float = 1_900_000_800.0
) -> tuple[float, float, int]:
    """Feed a day of beats of `nodes` nodes into `store` through a HeartbeatBuffer, as central's heartbeat path
    does (figures of each beat's status, record_history, a flush every simulated second writing the minutes
    that ended, the hours derived from them every 5 minutes as the leader does); (wall seconds, this process's CPU
    seconds, beats). The CPU is central's whole cost of rollups
    at that cadence: on PostgreSQL the server's share is not in it."""
    from central import rollups
    from central.heartbeats import HeartbeatBuffer
    from edgefleet.v1 import common_pb2

    status = common_pb2.NodeStatus.FromString(status_bytes)
    labels = [{"region": f"r{i % 3}", "site": f"s{i % 12}"} for i in range(nodes)]
    node_ids = [f"node-{i:05d}" for i in range(nodes)]
    now = [start]
    buffer = HeartbeatBuffer(store, ("region", "site"), clock=lambda: now[0])
    # Beats spread over the interval, as agents' are; central flushes every second.
    per_second: dict[int, list[int]] = {}
    for i in range(nodes):
        per_second.setdefault(int(interval_s * i / nodes), []).append(i)
    started, cpu = time.perf_counter(), time.process_time()
    beats = 0
    for second in range(DAY_S):
        now[0] = start + second
        for i in per_second.get(second % int(interval_s), ()):
            buffer.record_history(node_ids[i], labels[i], rollups.figures(status), now[0])
            beats += 1
        buffer.flush()
        if second % DERIVE_EVERY_S == 0:  # the leader's prune round: the hours that ended, from their minutes
            store.derive_rollup_hours(now[0] - rollups.HOUR_DERIVE_DELAY_S)
    buffer.flush(history=True)
    store.derive_rollup_hours(start + DAY_S + rollups.HOUR_DERIVE_DELAY_S)
    return time.perf_counter() - started, time.process_time() - cpu, beats


def sqlite_figures(path: Path, nodes: int, status_bytes: bytes) -> dict:
    from central.store import SqliteFleetStore

    store = SqliteFleetStore(path)
    try:
        timing = simulate_day(store, nodes, status_bytes)
    finally:
        store.close()
    conn = sqlite3.connect(path)
    try:
        rows = dict(conn.execute("SELECT period_s, count(*) FROM rollups GROUP BY period_s").fetchall())
        try:
            table, index = (
                conn.execute("SELECT coalesce(sum(pgsize), 0) FROM dbstat WHERE name = ?", (name,)).fetchone()[0]
                for name in ("rollups", "rollups_age")
            )
        except sqlite3.OperationalError:  # no dbstat in this SQLite build
            table = index = None
    finally:
        conn.close()
    return _figures("sqlite", nodes, rows, table, index, timing)


def postgres_figures(url: str, nodes: int, status_bytes: bytes) -> dict:
    import psycopg

    from central.store.postgres import PostgresFleetStore

    store = PostgresFleetStore(url, pool_size=2)
    try:
        timing = simulate_day(store, nodes, status_bytes)
    finally:
        store.close()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE rollups")
        rows = dict(conn.execute("SELECT period_s, count(*) FROM rollups GROUP BY period_s").fetchall())
        table, index = conn.execute("SELECT pg_table_size('rollups'), pg_indexes_size('rollups')").fetchone()
        live = conn.execute("SELECT avg(pg_column_size(r.*)) FROM rollups r").fetchone()[0]
    out = _figures("postgres", nodes, rows, table, index, timing)
    out["live_row_bytes"] = round(float(live or 0), 1)  # a row's tuple, without page overhead or dead versions
    return out


def _figures(store: str, nodes: int, rows: dict, table, index, timing: tuple[float, float, int]) -> dict:
    seconds, cpu_s, beats = timing
    minute_rows, hour_rows = rows.get(60, 0), rows.get(3600, 0)
    total = (table or 0) + (index or 0)
    per_row = total / (minute_rows + hour_rows) if total and (minute_rows + hour_rows) else None
    out = {
        "store": store,
        "nodes": nodes,
        "simulated_s": DAY_S,
        "interval_s": 15.0,
        "label_keys": ["region", "site"],
        "minute_rows": minute_rows,
        "hour_rows": hour_rows,
        "table_bytes": table,
        "index_bytes": index,
        "bytes_per_row": round(per_row, 1) if per_row else None,
        "bytes_per_node_per_day": round(total / nodes) if total else None,
        "simulation_seconds": round(seconds, 1),
        "beats": beats,
        # Central's CPU for rollups per beat at a 15 s cadence: figures, record_history, its share of the flushes.
        "rollup_cpu_us_per_beat": round(cpu_s / beats * 1e6, 1) if beats else None,
    }
    if per_row:
        # At steady state: a day of minute rows and 30 days of hour rows, per node (fleet and label rows shared).
        out["steady_state_bytes_per_node"] = round(per_row * (minute_rows + 30 * hour_rows) / nodes)
    return out
