"""A throwaway PostgreSQL database per test, on the server at 127.0.0.1:5432 (user postgres, trust auth).

EDGEFLEET_TEST_POSTGRES overrides the server with a base URL (its database part is where CREATE
DATABASE runs, `postgres` when it names none). When the server cannot be reached the test is skipped
with the reason, except under CI=true, where PostgreSQL is part of the setup and the test fails.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

DEFAULT_BASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def base_url() -> str:
    return os.environ.get("EDGEFLEET_TEST_POSTGRES") or DEFAULT_BASE_URL


def _with_database(url: str, dbname: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + dbname))


def _admin_connection(base: str) -> psycopg.Connection:
    """An autocommit connection for CREATE/DROP DATABASE; skips (or fails under CI) when none is possible."""
    url = base if urlsplit(base).path.strip("/") else _with_database(base, "postgres")
    try:
        return psycopg.connect(url, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        where = f"{urlsplit(base).hostname}:{urlsplit(base).port or 5432}"
        reason = f"PostgreSQL for tests is unreachable at {where}: {' '.join(str(exc).split())}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)


@contextmanager
def postgres_database() -> Iterator[str]:
    """Create a uniquely named empty database (edgefleet_test_<hex>), yield its URL, drop it after."""
    base = base_url()
    dbname = f"edgefleet_test_{secrets.token_hex(6)}"
    with _admin_connection(base) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    try:
        yield _with_database(base, dbname)
    finally:
        with _admin_connection(base) as admin:
            # FORCE ends sessions a test left open (a leader lock's connection, a killed store's pool).
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """The URL of a fresh database, dropped after the test. Import it into a test module to use it."""
    with postgres_database() as url:
        yield url


def fleet_stores(kind: str, tmp_path) -> Iterator:
    """Yield a fresh central store for a store contract test, then close it: kind "sqlite" (a file in tmp_path) or
    "postgres" (a database of its own, dropped after)."""
    from central.store.sqlite import SqliteFleetStore

    if kind == "sqlite":
        store = SqliteFleetStore(tmp_path / "central.db")
        yield store
        store.close()
        return
    from central.store.postgres import PostgresFleetStore

    with postgres_database() as url:
        store = PostgresFleetStore(url, pool_size=4)
        yield store
        store.close()
