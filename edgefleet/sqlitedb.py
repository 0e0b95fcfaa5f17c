"""SQLite helpers shared by the agent's files and central's store."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger(__name__)

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


def open_checked(path: Path, migrations: Sequence[Migration], synchronous: str = "NORMAL") -> sqlite3.Connection:
    """Open (or create) a WAL file for `with conn:` transactions, check it and migrate it.

    Raises sqlite3.DatabaseError when the file is corrupt or not SQLite; OperationalError (locked, no
    permission, disk full) means the file may be fine, and callers must not set it aside for that.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, check_same_thread=False)
    try:
        if conn.execute("PRAGMA quick_check").fetchone()[0] != "ok":
            raise sqlite3.DatabaseError("PRAGMA quick_check failed")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        apply_migrations(conn, migrations)
    except sqlite3.DatabaseError:
        conn.close()
        raise
    return conn


def set_aside(path: Path, what: str, exc: Exception) -> Path:
    """Rename an unreadable file (and its -wal/-shm) to ``*.corrupt-<time>`` so a fresh one can start."""
    aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
    log.warning("%s %s is unreadable (%s); moved it to %s and starting an empty one", what, path, exc, aside)
    for suffix in ("", "-wal", "-shm"):
        src = Path(f"{path}{suffix}")
        if src.exists():
            src.replace(Path(f"{aside}{suffix}"))
    return aside


def open_or_set_aside(path: Path, what: str, opener) -> tuple[sqlite3.Connection, bool]:
    """opener() → connection; when the file is corrupt, set it aside and open a fresh one. Returns the
    connection and whether a file was set aside. A locked file, missing permission or a full disk
    (OperationalError) is not corruption: it propagates and the file is kept."""
    try:
        return opener(), False
    except sqlite3.OperationalError:
        raise
    except sqlite3.DatabaseError as exc:
        set_aside(path, what, exc)
        return opener(), True


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
