"""Central's store: nodes, bootstrap tokens, models, rollouts, reports, routing totals, the audit log, the
replicas serving the fleet with their leader, and its history (rollups of heartbeats, objectives, burst usage).

:class:`FleetStore` (``records``) is the contract, with the records it keeps; :class:`SqliteFleetStore`
(``sqlite``) implements it on one SQLite file for a single central, and ``PostgresFleetStore``
(``postgres``) on PostgreSQL for several central replicas. Both run the same contract suite
(tests/unit/central/test_store.py). :func:`open_store` picks one from a spec. Handlers and servicers
never see SQL.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from central.store.records import (
    AuditEvent,
    BurstUsageRecord,
    DesiredState,
    FederatedRunRecord,
    FleetStore,
    FlowerKeyRecord,
    LeaderLock,
    LeaderRecord,
    ModelRecord,
    NodeHealth,
    NodeRecord,
    NodeRoutingRecord,
    ObjectiveRecord,
    OperatorRecord,
    ReplicaRecord,
    ReportRecord,
    RestoreFinding,
    RestorePoint,
    RollupRow,
    StoreError,
    TokenRecord,
)
from central.store.sqlite import SqliteFleetStore

__all__ = [
    "AuditEvent",
    "BurstUsageRecord",
    "DesiredState",
    "FederatedRunRecord",
    "FleetStore",
    "FlowerKeyRecord",
    "LeaderLock",
    "LeaderRecord",
    "ModelRecord",
    "NodeHealth",
    "NodeRecord",
    "NodeRoutingRecord",
    "ObjectiveRecord",
    "OperatorRecord",
    "ReplicaRecord",
    "ReportRecord",
    "RestoreFinding",
    "RestorePoint",
    "RollupRow",
    "SqliteFleetStore",
    "StoreError",
    "TokenRecord",
    "display_store",
    "is_postgres",
    "open_store",
]

POSTGRES_SCHEMES = ("postgresql", "postgres")


def is_postgres(spec: str | Path) -> bool:
    """Whether the spec is a PostgreSQL URL (postgresql:// or postgres://) rather than a SQLite path."""
    return isinstance(spec, str) and spec.split("://", 1)[0].lower() in POSTGRES_SCHEMES and "://" in spec


def open_store(spec: str | Path) -> FleetStore:
    """The store a spec names: a PostgreSQL URL (postgresql://user@host:port/dbname) or a SQLite file's path.
    StoreError when the URL is malformed or the store cannot be opened."""
    if not is_postgres(spec):
        return SqliteFleetStore(Path(spec))
    url = str(spec)
    _check_url(url)
    # Imported here so that a central on SQLite (and every CLI call) never pays for importing psycopg.
    from central.store.postgres import PostgresFleetStore

    return PostgresFleetStore(url)


def display_store(spec: str | Path) -> str:
    """The spec as it may be shown and logged: a URL's password (in its user part or its query) as ***."""
    if not is_postgres(spec):
        return str(spec)
    try:
        parts = urlsplit(str(spec))
        netloc = parts.netloc
        if "@" in netloc:
            user, _, hosts = netloc.rpartition("@")
            if ":" in user:
                user = user.split(":", 1)[0] + ":***"
            netloc = f"{user}@{hosts}"
        query = urlencode(
            [(k, "***" if k == "password" else v) for k, v in parse_qsl(parts.query, keep_blank_values=True)],
            safe="*",
        )
        return urlunsplit(parts._replace(netloc=netloc, query=query))
    except ValueError:
        return f"{str(spec).split('://', 1)[0]}://(malformed)"


def _check_url(url: str) -> None:
    """StoreError naming what is wrong with a PostgreSQL URL, before any connection is tried."""
    shown = display_store(url)
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise StoreError(f"malformed PostgreSQL URL {shown}: {exc}") from None
    for host_port in parts.netloc.rpartition("@")[2].split(","):  # libpq takes several hosts, comma-separated
        after_host = host_port.rpartition("]")[2] if host_port.startswith("[") else host_port
        port = after_host.partition(":")[2]
        if port and not (port.isdigit() and 0 < int(port) < 65536):
            raise StoreError(f"malformed PostgreSQL URL {shown}: port {port!r} is not a number from 1 to 65535")
    if parts.fragment:
        raise StoreError(f"malformed PostgreSQL URL {shown}: a '#' part means nothing to PostgreSQL")
