"""Backup benchmark (issue 18): how long `central backup`, `backup verify` and `central restore` take, and how
large the archive is, for a store of 10,000 nodes and 1,000,000 reports, on SQLite and on PostgreSQL.

The store is made by central's own code (`central init`, its migrations), then filled fast with batch SQL
(PostgreSQL: COPY): --nodes nodes, each enrolled with a status and --reports-per-node reports (a realistic
380-byte NodeStatus, as agents send every interval, its first 32 bytes random so rows differ), and an audit
log of one enrollment per node, chained by central.audit's own hash. Then the same functions the CLI calls:
take_backup (passphrase-sealed, scrypt included), verify_file, restore_file onto a new data dir (PostgreSQL:
a second, empty database), each timed with the wall clock. --blob-mib adds a model blob of that size.

Results: bench/results/backup.json (or --out). Usage:
    python bench/backup.py [--nodes 10000] [--reports-per-node 100] [--blob-mib 0] [--postgres URL] [--no-postgres]
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

from results_file import describe_machine, write_results  # bench/ is on sys.path when run as a script

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from heartbeats import node_status  # noqa: E402

from central.audit import ALLOWED, GENESIS_HASH, entry_hash  # noqa: E402
from central.backup import archive as ar  # noqa: E402
from central.backup.restore import RestoreTarget, restore_file  # noqa: E402
from central.backup.snapshot import BackupSource, take_backup  # noqa: E402
from central.backup.verify import verify_file  # noqa: E402
from central.datadir import initialize, store_spec  # noqa: E402
from edgefleet import __version__  # noqa: E402

PASSPHRASE = ar.Passphrase(b"bench passphrase, not a secret")
START = 1_900_000_000.0


def node_rows(nodes: int) -> list[tuple]:
    status = node_status()
    return [
        (
            f"node-{i:05d}",
            json.dumps({"region": f"r{i % 3}", "site": f"s{i % 12}"}),
            f"box-{i:05d}",
            START + i,
            "tok",
            f"{i:032x}",
            START + 30 * 86400,
            START + 86400,
            status,
        )
        for i in range(nodes)
    ]


def report_rows(nodes: int, per_node: int):
    status = node_status()
    for i in range(nodes):
        node_id = f"node-{i:05d}"
        for sequence in range(1, per_node + 1):
            yield (node_id, sequence, START + sequence * 15.0, "status", os.urandom(32) + status[32:], START + sequence)


def audit_rows(nodes: int) -> list[tuple]:
    rows, previous = [], GENESIS_HASH
    for i in range(nodes):
        fields = (
            i + 1,
            START + i,
            f"node:node-{i:05d}",
            "node.enroll",
            f"node-{i:05d}",
            ALLOWED,
            "token tok",
            "",
            previous,
        )
        previous = entry_hash(*fields)
        rows.append((*fields, previous))
    return rows


def fill_sqlite(path: Path, nodes: int, per_node: int) -> None:
    conn = sqlite3.connect(path)
    try:
        with conn:
            conn.executemany(
                "INSERT INTO nodes (node_id, labels, hostname, enrolled_at, token_id, certificate_serial,"
                " certificate_expires_at, last_seen_at, status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                node_rows(nodes),
            )
            conn.executemany("INSERT INTO reports VALUES (?, ?, ?, ?, ?, ?)", report_rows(nodes, per_node))
            conn.executemany("INSERT INTO audit VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", audit_rows(nodes))
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


def fill_postgres(url: str, nodes: int, per_node: int) -> None:
    import psycopg

    with psycopg.connect(url) as conn, conn.cursor() as cur:
        with cur.copy(
            "COPY nodes (node_id, labels, hostname, enrolled_at, token_id, certificate_serial,"
            " certificate_expires_at, last_seen_at, status) FROM STDIN"
        ) as copy:
            for row in node_rows(nodes):
                copy.write_row(row)
        with cur.copy("COPY reports (node_id, sequence, observed_at, kind, payload, received_at) FROM STDIN") as copy:
            for row in report_rows(nodes, per_node):
                copy.write_row(row)
        with cur.copy(
            "COPY audit (sequence, at, actor, action, target, outcome, detail, peer, previous_hash, hash) FROM STDIN"
        ) as copy:
            for row in audit_rows(nodes):
                copy.write_row(row)
        cur.execute("ANALYZE")


def add_blob(data_dir: Path, spec: str, mib: int) -> None:
    """A model of `mib` MiB pushed as central does: blob through the blob store, then the registry row."""
    from central.blobs import open_blob_store
    from central.store import ModelRecord, open_store

    writer = open_blob_store("", data_dir / "blobs").writer()
    for _ in range(mib):
        writer.write(os.urandom(1 << 20))
    sha256, size = writer.commit()
    store = open_store(spec)
    try:
        store.add_model(ModelRecord("bench", "1.0.0", "gguf", sha256, size, {}, START, "admin", b"{}", ""))
    finally:
        store.close()


def measure(kind: str, data_dir: Path, spec: str, work: Path, restore_url: str = "") -> dict:
    archive = work / f"{kind}.edgefleet-backup"
    started = time.perf_counter()
    taken = take_backup(BackupSource(data_dir, spec), archive, PASSPHRASE, time.time(), __version__)
    backup_s = time.perf_counter() - started
    scratch = work / f"{kind}-verify"
    scratch.mkdir()
    started = time.perf_counter()
    verified = verify_file(archive, PASSPHRASE, scratch)
    verify_s = time.perf_counter() - started
    for leftover in scratch.iterdir():
        leftover.unlink()
    started = time.perf_counter()
    restored = restore_file(archive, PASSPHRASE, RestoreTarget(work / f"{kind}-restored", restore_url), time.time())
    restore_s = time.perf_counter() - started
    counts = taken.manifest.counts
    store_bytes = next(f.size for f in taken.manifest.files if f.path == taken.manifest.store_member)
    row = {
        "store": kind,
        "nodes": counts.nodes,
        "reports": counts.reports,
        "audit_entries": counts.audit_entries,
        "models": counts.models,
        "store_snapshot_bytes": store_bytes,
        "archive_bytes": taken.archive_bytes,
        "archive_mib": round(taken.archive_bytes / 2**20, 1),
        "backup_s": round(backup_s, 2),
        "verify_s": round(verify_s, 2),
        "restore_s": round(restore_s, 2),
        "verify_store_check": verified.snapshot.integrity,
        "restored_audit_entry": restored.audit_entry.sequence,
    }
    print(
        f"{kind:>10}: {counts.nodes} nodes, {counts.reports} reports; archive {row['archive_mib']} MiB"
        f" (store {store_bytes / 2**20:.1f} MiB); backup {row['backup_s']} s, verify {row['verify_s']} s,"
        f" restore {row['restore_s']} s"
    )
    return row


def run_sqlite(work: Path, nodes: int, per_node: int, blob_mib: int) -> dict:
    paths = initialize(work / "sqlite-central", "127.0.0.1:0")
    started = time.perf_counter()
    fill_sqlite(paths.store, nodes, per_node)
    if blob_mib:
        add_blob(paths.root, store_spec(paths), blob_mib)
    print(f"    sqlite: store filled in {time.perf_counter() - started:.1f} s")
    return measure("sqlite", paths.root, store_spec(paths), work)


def run_postgres(work: Path, nodes: int, per_node: int, blob_mib: int) -> dict:
    from postgres_db import postgres_database

    with postgres_database() as url, postgres_database() as restore_url:
        paths = initialize(work / "pg-central", "127.0.0.1:0", store=url)
        started = time.perf_counter()
        fill_postgres(url, nodes, per_node)
        if blob_mib:
            add_blob(paths.root, url, blob_mib)
        print(f"postgresql: store filled in {time.perf_counter() - started:.1f} s")
        return measure("postgresql", paths.root, url, work, restore_url)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--reports-per-node", type=int, default=100)
    parser.add_argument("--blob-mib", type=int, default=0, help="a model blob of this many MiB (default none)")
    parser.add_argument("--postgres", default="", help="base URL of a PostgreSQL server (databases are made there)")
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    parser.add_argument("--work", default="", help="directory for the stores and archives (default: a temp dir)")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "backup.json"))
    args = parser.parse_args()
    if args.postgres:
        os.environ["EDGEFLEET_TEST_POSTGRES"] = args.postgres
    runs, skipped = [], ""
    with tempfile.TemporaryDirectory(prefix="edgefleet-bench-backup-", dir=args.work or None) as tmp:
        work = Path(tmp)
        runs.append(run_sqlite(work, args.nodes, args.reports_per_node, args.blob_mib))
        if not args.no_postgres:
            try:
                runs.append(run_postgres(work, args.nodes, args.reports_per_node, args.blob_mib))
            except BaseException as exc:  # pytest's skip (a BaseException) when the server is unreachable
                if type(exc).__name__ not in ("Skipped", "Failed"):
                    raise
                skipped = str(exc)
                print(f"postgresql: skipped ({skipped})")
    report = {
        "benchmark": "backup",
        "machine": describe_machine(edgefleet=__version__),
        "nodes": args.nodes,
        "reports_per_node": args.reports_per_node,
        "blob_mib": args.blob_mib,
        "runs": runs,
        "postgresql_skipped": skipped,
    }
    write_results("backup", report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
