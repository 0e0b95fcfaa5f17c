"""SQLite helpers shared by the agent's files and central's store."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Sequence

Migration = tuple[int, Sequence[str]]


def connect_wal(path: Path) -> sqlite3.Connection:
    """A connection in WAL mode with synchronous=NORMAL: durable across process crashes,
    and a commit costs no fsync (the WAL is synced at checkpoints)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
    except sqlite3.DatabaseError:
        conn.close()
        raise
    return conn


def apply_migrations(conn: sqlite3.Connection, migrations: Sequence[Migration]) -> None:
    """Schema migrations as a small registry recorded in the file: each version runs once, in order."""
    versions = [v for v, _ in migrations]
    if versions != sorted(set(versions)):
        raise ValueError(f"migration versions must increase: {versions}")
    conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at REAL)")
    applied = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
    for version, statements in migrations:
        if version in applied:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            for sql in statements:
                conn.execute(sql)
            conn.execute("INSERT INTO schema_migrations VALUES (?, ?)", (version, time.time()))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
