"""Central's store on PostgreSQL, shared by several central replicas: :class:`PostgresFleetStore` implements
:class:`central.store.records.FleetStore` and passes its contract suite (tests/unit/central/test_store.py).

Every method is one transaction on a connection from a bounded pool, at READ COMMITTED. What must stay
right when replicas race is decided inside the database, never by reading then writing from Python:

- enroll spends a token use with a conditional UPDATE (``uses_left > 0``), which a racing replica
  re-checks after the first commits, so a token is never overspent;
- the audit log stays one hash chain: appends take a transaction-scoped advisory lock before they read
  the head, so they follow each other whichever replica makes them;
- advance_rollout compares and sets the rollout's state, with its audit events, in one transaction;
- batched writes (heartbeats, routing) touch rows in node id order, so two replicas writing overlapping
  batches wait for each other instead of deadlocking;
- leadership is a session-level advisory lock on a dedicated connection: it is gone the moment that
  connection is.

The schema grows by numbered migrations, recorded in ``schema_migrations`` and applied at open under an
advisory lock, so replicas starting together apply each one once. Calls are network round trips
(``remote = True``): central runs them on a bounded thread pool, never on its event loop.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, astuple

import psycopg
from psycopg import conninfo as pg_conninfo
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool, PoolTimeout

from central import reports as reports_mod
from central import routing as routing_mod
from central.audit import GENESIS_HASH, AuditAnchor, AuditEntry, entry_hash
from central.routing import RoutingReport
from central.store.records import (
    BURST_USAGE_KEEP_S,
    HOUR_S,
    MINUTE_S,
    ROLLUP_KEEP_S,
    ROLLUP_VALUE_COLUMNS,
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
    burst_totals_with_labels,
    hour_ceiling,
    late_hour_deltas,
    node_routing_records,
    stored_rollup_row,
)

log = logging.getLogger(__name__)

# Advisory lock keys, one per purpose, in this database's key space (below 2**31, so pg_locks shows them
# as classid 0, objid KEY).
MIGRATION_LOCK_KEY = 7_310_001
AUDIT_LOCK_KEY = 7_310_002
LEADER_LOCK_KEY = 7_310_003
MODELS_LOCK_KEY = 7_310_004
OPERATORS_LOCK_KEY = 7_310_016  # revoke_operator and add_first_operator decide on every operator's row
ROLLUPS_LOCK_KEY = 7_310_017  # derive_rollup_hours alone; add_rollups shared

CONNECT_TIMEOUT_S = 5  # libpq counts whole seconds, at least 2
POOL_TIMEOUT_S = 10.0
# A connection whose peer vanished (host down, network cut) is found dead within about 15 s, not the
# kernel's default of two hours: it matters most for the leader lock's connection.
_KEEPALIVE = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 15_000,  # ms: unacknowledged data (a query sent into a cut network)
}

# Ids that are ordered and paged through compare bytewise, as in SQLite, whatever the database's locale.
_ID = 'text COLLATE "C"'

_MIGRATIONS: list[tuple[int, list[str]]] = [
    (
        1,
        [
            "CREATE TABLE tokens (token_id text PRIMARY KEY, secret_hash text NOT NULL, labels jsonb NOT NULL,"
            " created_at double precision NOT NULL, expires_at double precision NOT NULL,"
            " uses_total bigint NOT NULL, uses_left bigint NOT NULL, revoked boolean NOT NULL DEFAULT false,"
            " created_by text NOT NULL)",
            f"CREATE TABLE nodes (node_id {_ID} PRIMARY KEY, labels jsonb NOT NULL, hostname text NOT NULL,"
            " enrolled_at double precision NOT NULL, token_id text NOT NULL, certificate_serial text NOT NULL,"
            " certificate_expires_at double precision NOT NULL, last_seen_at double precision, status bytea,"
            " revoked_at double precision, dropped_reports bigint NOT NULL DEFAULT 0,"
            " config_generation bigint NOT NULL DEFAULT 0, desired_model jsonb NOT NULL DEFAULT '{}',"
            " desired_sha256 text NOT NULL DEFAULT '', health jsonb)",
            "CREATE INDEX nodes_desired_sha256 ON nodes (desired_sha256)",
            f"CREATE TABLE reports (node_id {_ID} NOT NULL REFERENCES nodes (node_id), sequence bigint NOT NULL,"
            " observed_at double precision NOT NULL, kind text NOT NULL, payload bytea NOT NULL,"
            " received_at double precision NOT NULL, PRIMARY KEY (node_id, sequence))",
            "CREATE TABLE audit (sequence bigint PRIMARY KEY, at double precision NOT NULL, actor text NOT NULL,"
            " action text NOT NULL, target text NOT NULL, outcome text NOT NULL, detail text NOT NULL,"
            " peer text NOT NULL, previous_hash text NOT NULL, hash text NOT NULL)",
            # The log is append-only in the database itself, not only by convention.
            "CREATE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS"
            " $$ BEGIN RAISE EXCEPTION 'audit log is append-only'; END $$",
            "CREATE TRIGGER audit_no_change BEFORE UPDATE OR DELETE ON audit"
            " FOR EACH ROW EXECUTE FUNCTION audit_append_only()",
            "CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit"
            " FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only()",
            f"CREATE TABLE models (name {_ID} NOT NULL, version text NOT NULL, format text NOT NULL,"
            " sha256 text NOT NULL, size bigint NOT NULL, params jsonb NOT NULL,"
            " created_at double precision NOT NULL, pushed_by text NOT NULL, manifest bytea NOT NULL,"
            " signature text NOT NULL, PRIMARY KEY (name, version))",
            "CREATE INDEX models_sha256 ON models (sha256)",
            "CREATE TABLE rollouts (rollout_id text PRIMARY KEY, spec text NOT NULL, state text NOT NULL,"
            " created_at double precision NOT NULL)",
            # Flower node ids are unsigned 64-bit, beyond bigint.
            f"CREATE TABLE flower_keys (node_id {_ID} PRIMARY KEY REFERENCES nodes (node_id),"
            " public_key text NOT NULL, flower_node_id numeric(20, 0) NOT NULL DEFAULT 0,"
            " unregistered boolean NOT NULL DEFAULT false)",
            "CREATE TABLE federated_runs (run_id numeric(20, 0) PRIMARY KEY, task text NOT NULL,"
            " config jsonb NOT NULL, started_by text NOT NULL, started_at double precision NOT NULL,"
            " model text NOT NULL DEFAULT '', imported_at double precision)",
            f"CREATE TABLE routing_totals (node_id {_ID} NOT NULL REFERENCES nodes (node_id),"
            f" data_class {_ID} NOT NULL, route {_ID} NOT NULL, count bigint NOT NULL,"
            " updated_at double precision NOT NULL, PRIMARY KEY (node_id, data_class, route))",
            f"CREATE TABLE routing_heads (node_id {_ID} PRIMARY KEY REFERENCES nodes (node_id),"
            " audit_sequence bigint NOT NULL, audit_head_hash text NOT NULL, updated_at double precision NOT NULL)",
        ],
    ),
    (
        2,
        [
            f"CREATE TABLE replicas (replica_id {_ID} PRIMARY KEY, fleet_address text NOT NULL,"
            " enroll_address text NOT NULL, started_at double precision NOT NULL,"
            " last_seen_at double precision NOT NULL)",
            # One row at most: the latest leadership claim.
            "CREATE TABLE leadership (singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),"
            " replica_id text NOT NULL, term bigint NOT NULL, since double precision NOT NULL)",
        ],
    ),
    (
        3,
        [
            # Facts about the fleet itself, e.g. its CA's fingerprint (bind_ca).
            f"CREATE TABLE fleet (key {_ID} PRIMARY KEY, value text NOT NULL)",
        ],
    ),
    (
        4,
        [
            # Operators (AdminService callers): their role and the one certificate serial central accepts.
            f"CREATE TABLE operators (name {_ID} PRIMARY KEY, role text NOT NULL, serial text NOT NULL,"
            " expires_at double precision NOT NULL, created_at double precision NOT NULL,"
            " created_by text NOT NULL, revoked_at double precision)",
        ],
    ),
    (
        5,
        [
            # Audit retention: entries up to the latest anchor's sequence may be pruned (prune_audit), no others;
            # the anchors themselves are append-only. (A trigger's WHEN cannot hold a subquery: a function checks.)
            "CREATE TABLE audit_anchors (sequence bigint PRIMARY KEY, hash text NOT NULL,"
            " at double precision NOT NULL, signature text NOT NULL)",
            "CREATE FUNCTION audit_prune_only() RETURNS trigger LANGUAGE plpgsql AS"
            " $$ BEGIN IF OLD.sequence > coalesce((SELECT max(sequence) FROM audit_anchors), 0) THEN"
            " RAISE EXCEPTION 'audit log is append-only: only entries behind a signed anchor may be pruned';"
            " END IF; RETURN OLD; END $$",
            "DROP TRIGGER audit_no_change ON audit",
            "CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit FOR EACH ROW EXECUTE FUNCTION audit_append_only()",
            "CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit FOR EACH ROW EXECUTE FUNCTION audit_prune_only()",
            "CREATE TRIGGER audit_anchors_no_change BEFORE UPDATE OR DELETE ON audit_anchors"
            " FOR EACH ROW EXECUTE FUNCTION audit_append_only()",
            "CREATE TRIGGER audit_anchors_no_truncate BEFORE TRUNCATE ON audit_anchors"
            " FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only()",
        ],
    ),
    (
        6,
        [
            # Each node's spool epoch and the base its reports are numbered from (central.reports).
            "ALTER TABLE nodes ADD COLUMN spool_epoch text NOT NULL DEFAULT ''",
            "ALTER TABLE nodes ADD COLUMN spool_base bigint NOT NULL DEFAULT 0",
            # The controller's tick reads the live rollouts only (list_rollouts_in_phases).
            # A rollout's phase, read from its state (JSON the store does not otherwise read); NULL for a state
            # that is not JSON.
            "CREATE FUNCTION edgefleet_rollout_phase(state text) RETURNS text LANGUAGE plpgsql IMMUTABLE AS"
            " $$ BEGIN RETURN state::jsonb ->> 'phase'; EXCEPTION WHEN others THEN RETURN NULL; END $$",
            "CREATE INDEX rollouts_phase ON rollouts (edgefleet_rollout_phase(state))",
        ],
    ),
    (
        7,
        [
            # Heartbeats summed per scope ("fleet", "node:ID", "label:K=V") and minute or hour (central.rollups).
            f"CREATE TABLE rollups (scope {_ID} NOT NULL, period_s integer NOT NULL, start bigint NOT NULL, "
            + ", ".join(
                f"{c} double precision NOT NULL DEFAULT 0" if c == "upstream_cost" else f"{c} bigint NOT NULL DEFAULT 0"
                for c in ROLLUP_VALUE_COLUMNS
            )
            + ", PRIMARY KEY (scope, period_s, start))",
            # prune_rollups deletes by age.
            "CREATE INDEX rollups_age ON rollups (period_s, start)",
            f"CREATE TABLE objectives (name {_ID} PRIMARY KEY, selector jsonb NOT NULL,"
            " availability_percent double precision NOT NULL, latency_threshold_ms double precision NOT NULL,"
            " latency_percent double precision NOT NULL, window_s bigint NOT NULL,"
            " updated_at double precision NOT NULL, updated_by text NOT NULL)",
            # What nodes sent to upstreams, per hour (burst_usage_rows; pruned after 30 days).
            f"CREATE TABLE burst_usage (hour bigint NOT NULL, node_id {_ID} NOT NULL, upstream {_ID} NOT NULL,"
            f" tenant {_ID} NOT NULL, data_class {_ID} NOT NULL, currency {_ID} NOT NULL, requests bigint NOT NULL,"
            " prompt_tokens bigint NOT NULL, completion_tokens bigint NOT NULL, cost double precision NOT NULL,"
            " last_at double precision NOT NULL, PRIMARY KEY (hour, node_id, upstream, tenant, data_class, currency))",
        ],
    ),
    (
        8,
        [
            # A zero is stored as NULL (add_rollups): a NULL costs one bit of the row's null bitmap, a bigint 8 bytes,
            # and most of a row's 54 counts (latency and TTFT buckets above all) are zero. Readers coalesce.
            "ALTER TABLE rollups "
            + ", ".join(f"ALTER COLUMN {c} DROP NOT NULL, ALTER COLUMN {c} DROP DEFAULT" for c in ROLLUP_VALUE_COLUMNS),
            # The last hour whose rollup rows were derived from its minute rows (derive_rollup_hours); NULL: none.
            # Before, heartbeats wrote the hour rows themselves: the hours they wrote count as derived.
            "CREATE TABLE rollup_hours (id boolean PRIMARY KEY DEFAULT true CHECK (id), last_hour bigint)",
            "INSERT INTO rollup_hours (last_hour) SELECT max(start) FROM rollups WHERE period_s = 3600",
        ],
    ),
    (
        9,
        [
            # Each restore of this store from a backup (central.restore_state), the latest last; and what each lost,
            # as learned from the nodes after it: one finding per node and kind.
            "CREATE TABLE restores (restore_id bigserial PRIMARY KEY, backup_id text NOT NULL,"
            " backup_at double precision NOT NULL, restored_at double precision NOT NULL,"
            " audit_head_sequence bigint NOT NULL, audit_head_hash text NOT NULL, ca_fingerprint text NOT NULL)",
            "CREATE TABLE restore_findings (finding_id bigserial PRIMARY KEY,"
            f" restore_id bigint NOT NULL REFERENCES restores (restore_id), kind text NOT NULL, node_id {_ID} NOT NULL,"
            " detail text NOT NULL, found_at double precision NOT NULL, action text NOT NULL,"
            " UNIQUE (restore_id, node_id, kind))",
        ],
    ),
]

_NODE_COLUMNS = (
    "node_id, labels, hostname, enrolled_at, token_id, certificate_serial, certificate_expires_at,"
    " last_seen_at, status, revoked_at, dropped_reports, config_generation, desired_model, health"
)
_TOKEN_COLUMNS = "token_id, secret_hash, labels, created_at, expires_at, uses_total, uses_left, revoked, created_by"
_MODEL_COLUMNS = "name, version, format, sha256, size, params, created_at, pushed_by, manifest, signature"
_RUN_COLUMNS = "run_id, task, config, started_by, started_at, model, imported_at"
_AUDIT_COLUMNS = "sequence, at, actor, action, target, outcome, detail, peer, previous_hash, hash"
_REPLICA_COLUMNS = "replica_id, fleet_address, enroll_address, started_at, last_seen_at"
_OPERATOR_COLUMNS = "name, role, serial, expires_at, created_at, created_by, revoked_at"
_OBJECTIVE_COLUMNS = (
    "name, selector, availability_percent, latency_threshold_ms, latency_percent, window_s, updated_at, updated_by"
)
_RESTORE_COLUMNS = "backup_id, backup_at, restored_at, audit_head_sequence, audit_head_hash, ca_fingerprint"
# A finding of the latest restore; nothing when there is none, or it has one of the same node and kind.
_ADD_FINDING = (
    "INSERT INTO restore_findings (restore_id, kind, node_id, detail, found_at, action)"
    " SELECT restore_id, %s, %s, %s, %s, %s FROM restores ORDER BY restore_id DESC LIMIT 1"
    " ON CONFLICT (restore_id, node_id, kind) DO NOTHING"
)
_BURST_COLUMNS = (
    "hour, node_id, upstream, tenant, data_class, currency, requests, prompt_tokens, completion_tokens, cost, last_at"
)
_VALUES = ", ".join(ROLLUP_VALUE_COLUMNS)
# Zeros are written as NULL (migration 8): NULL + x is x, greatest() skips NULLs.
_ADD_ROLLUP = (
    f"INSERT INTO rollups (scope, period_s, start, {_VALUES})"
    f" VALUES ({', '.join(['%s'] * (3 + len(ROLLUP_VALUE_COLUMNS)))})"
    " ON CONFLICT (scope, period_s, start) DO UPDATE SET "
    + ", ".join(
        f"{c} = greatest(rollups.{c}, excluded.{c})"
        if c == "queue_depth_max"
        else f"{c} = coalesce(rollups.{c} + excluded.{c}, rollups.{c}, excluded.{c})"
        for c in ROLLUP_VALUE_COLUMNS
    )
)
# The value columns as read: a NULL is 0.
_READ_VALUES = ", ".join(
    f"coalesce({c}, 0)::float8" if c == "upstream_cost" else f"coalesce({c}, 0)" for c in ROLLUP_VALUE_COLUMNS
)
# Summed over rows, as bigint (sum() of a bigint is numeric), a NULL sum 0.
_READ_SUMS = ", ".join(
    f"coalesce(max({c}), 0)"
    if c == "queue_depth_max"
    else f"coalesce(sum({c}), 0)::float8"
    if c == "upstream_cost"
    else f"coalesce(sum({c}), 0)::bigint"
    for c in ROLLUP_VALUE_COLUMNS
)
# Each ended hour's rows, summed from its minute rows (derive_rollup_hours); an hour row already there stays.
_DERIVE_HOURS = (
    f"INSERT INTO rollups (scope, period_s, start, {_VALUES})"
    f" SELECT scope, {HOUR_S}, start / {HOUR_S} * {HOUR_S}, "
    + ", ".join(
        f"max({c})" if c == "queue_depth_max" else f"sum({c})" if c == "upstream_cost" else f"sum({c})::bigint"
        for c in ROLLUP_VALUE_COLUMNS
    )
    + f" FROM rollups WHERE period_s = {MINUTE_S} AND start >= %s AND start < %s"
    f" GROUP BY scope, start / {HOUR_S} * {HOUR_S} ON CONFLICT (scope, period_s, start) DO NOTHING"
)
# The rows, one per hour or minute, that the hours of the scopes (%(scopes)s) starting in [start, end) add up: their
# hour rows, and the minute rows of each hour not derived yet that has no hour row.
_HOUR_ROWS = (
    f"SELECT scope, start AS hour, {_VALUES} FROM rollups"
    f" WHERE scope = ANY(%(scopes)s) AND period_s = {HOUR_S} AND start >= %(start)s AND start < %(end)s"
    f" UNION ALL SELECT scope, start / {HOUR_S} * {HOUR_S}, {_VALUES} FROM rollups m"
    f" WHERE scope = ANY(%(scopes)s) AND period_s = {MINUTE_S}"
    f" AND start >= greatest(%(first)s, (SELECT last_hour + {HOUR_S} FROM rollup_hours)) AND start < %(after)s"
    f" AND NOT EXISTS (SELECT 1 FROM rollups h WHERE h.scope = m.scope AND h.period_s = {HOUR_S}"
    f" AND h.start = m.start / {HOUR_S} * {HOUR_S})"
)


def _first(row: tuple | None, at: int = 0):
    """Column `at` of a row an aggregate query always returns."""
    assert row is not None
    return row[at]


def _hour_params(scopes: list[str], start: float, end: float) -> dict:
    return {"scopes": scopes, "start": start, "end": end, "first": hour_ceiling(start), "after": hour_ceiling(end)}


def describe(url: str) -> str:
    """host:port/dbname of a PostgreSQL URL or conninfo, for messages: never the user or the password."""
    try:
        params = pg_conninfo.conninfo_to_dict(url)
    except psycopg.Error:
        return "(a malformed PostgreSQL URL)"
    host = str(params.get("host") or params.get("hostaddr") or "the local socket")
    host = f"[{host}]" if ":" in host else host
    return f"{host}:{params.get('port') or 5432}/{params.get('dbname') or params.get('user') or '?'}"


def _conninfo(url: str) -> str:
    """The URL as libpq keywords, with our connect timeout and keepalives where it names none; StoreError when
    malformed."""
    try:
        params = pg_conninfo.conninfo_to_dict(url)
    except psycopg.Error as exc:
        raise StoreError(f"malformed PostgreSQL URL: {_reason(exc)}") from None
    params.setdefault("connect_timeout", CONNECT_TIMEOUT_S)
    for keyword, value in _KEEPALIVE.items():
        params.setdefault(keyword, value)
    params.setdefault("application_name", "edgefleet-central")
    return pg_conninfo.make_conninfo("", **params)


class PostgresFleetStore(FleetStore):
    remote = True  # every call is a network round trip

    def __init__(self, url: str, pool_size: int = 8, pool_timeout_s: float = POOL_TIMEOUT_S):
        if pool_size < 1:
            raise StoreError(f"pool_size must be at least 1, not {pool_size}")
        self.where = describe(url)
        self._conninfo = _conninfo(url)
        self._pool_size, self._pool_timeout_s = pool_size, pool_timeout_s
        # Migrate on a connection of its own first: an unreachable database or a refused login fails here,
        # at once, with libpq's reason, rather than as a pool timeout later.
        try:
            with psycopg.connect(self._conninfo, autocommit=True) as conn:
                _apply_migrations(conn)
        except psycopg.Error as exc:
            raise StoreError(f"central's store on PostgreSQL at {self.where} cannot be opened: {_reason(exc)}") from exc
        self._pool = ConnectionPool(
            self._conninfo,
            min_size=1,
            max_size=pool_size,
            kwargs={"autocommit": True},
            timeout=pool_timeout_s,
            open=False,
            name="central-store",
        )
        try:
            self._pool.open(wait=True, timeout=pool_timeout_s)
        except PoolTimeout as exc:
            self._pool.close()
            raise StoreError(f"no connection to PostgreSQL at {self.where} within {pool_timeout_s:g} s") from exc

    # -- plumbing ------------------------------------------------------------

    @contextmanager
    def _tx(self) -> Iterator[psycopg.Connection]:
        """`with self._tx() as conn:` — one transaction on a pooled connection; psycopg errors become StoreError."""
        try:
            with self._pool.connection() as conn, conn.transaction():
                yield conn
        except PoolTimeout as exc:
            raise StoreError(
                f"no connection to PostgreSQL at {self.where} within {self._pool_timeout_s:g} s: the database"
                f" is unreachable or all {self._pool_size} pooled connections are busy"
            ) from exc
        except psycopg.Error as exc:
            raise StoreError(f"PostgreSQL at {self.where}: {_reason(exc)}") from exc

    def _query(self, sql: str, args: Sequence | Mapping = ()) -> list[tuple]:
        """One statement that returns rows, in a transaction of its own."""
        with self._tx() as conn:
            return conn.execute(sql, args).fetchall()

    def _execute(self, sql: str, args: Sequence = ()) -> None:
        """One statement that returns none, in a transaction of its own."""
        with self._tx() as conn:
            conn.execute(sql, args)

    # -- tokens --------------------------------------------------------------

    def add_token(self, token: TokenRecord) -> None:
        with self._tx() as conn:
            added = conn.execute(
                f"INSERT INTO tokens ({_TOKEN_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (token_id) DO NOTHING",
                (
                    token.token_id,
                    token.secret_hash,
                    Jsonb(token.labels),
                    token.created_at,
                    token.expires_at,
                    token.uses_total,
                    token.uses_left,
                    token.revoked,
                    token.created_by,
                ),
            ).rowcount
        if not added:
            raise StoreError(f"token {token.token_id} already exists")

    def get_token(self, token_id: str) -> TokenRecord | None:
        rows = self._query(f"SELECT {_TOKEN_COLUMNS} FROM tokens WHERE token_id = %s", (token_id,))
        return TokenRecord(*rows[0]) if rows else None

    def list_tokens(self) -> list[TokenRecord]:
        return [TokenRecord(*r) for r in self._query(f"SELECT {_TOKEN_COLUMNS} FROM tokens ORDER BY created_at DESC")]

    def revoke_token(self, token_id: str) -> TokenRecord | None:
        rows = self._query(
            f"UPDATE tokens SET revoked = true WHERE token_id = %s RETURNING {_TOKEN_COLUMNS}", (token_id,)
        )
        return TokenRecord(*rows[0]) if rows else None

    # -- nodes ---------------------------------------------------------------

    def enroll(self, token_id: str, node: NodeRecord, now: float) -> bool:
        with self._tx() as conn:
            # A racing enrollment blocks on the row, then re-checks uses_left > 0 against the committed value.
            spent = conn.execute(
                "UPDATE tokens SET uses_left = uses_left - 1"
                " WHERE token_id = %s AND uses_left > 0 AND NOT revoked AND expires_at > %s",
                (token_id, now),
            ).rowcount
            if not spent:
                return False
            conn.execute(
                f"INSERT INTO nodes ({_NODE_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                _node_row(node),
            )
        return True

    def get_node(self, node_id: str) -> NodeRecord | None:
        rows = self._query(f"SELECT {_NODE_COLUMNS} FROM nodes WHERE node_id = %s", (node_id,))
        return _node(rows[0]) if rows else None

    def list_nodes(
        self, selector: dict[str, str] | None = None, after_node_id: str = "", limit: int | None = None
    ) -> list[NodeRecord]:
        rows = self._query(
            f"SELECT {_NODE_COLUMNS} FROM nodes WHERE node_id > %s AND labels @> %s ORDER BY node_id LIMIT %s",
            (after_node_id, Jsonb(selector or {}), limit),
        )
        return [_node(r) for r in rows]

    def heartbeat_target(self, node_id: str) -> DesiredState | None:
        rows = self._query(
            "SELECT config_generation, desired_model, certificate_serial, labels FROM nodes"
            " WHERE node_id = %s AND revoked_at IS NULL",
            (node_id,),
        )
        return DesiredState(*rows[0]) if rows else None

    def heartbeat_targets(self, node_ids: Sequence[str]) -> dict[str, DesiredState]:
        if not node_ids:
            return {}
        rows = self._query(
            "SELECT node_id, config_generation, desired_model, certificate_serial, labels FROM nodes"
            " WHERE node_id = ANY(%s) AND revoked_at IS NULL",
            (list(dict.fromkeys(node_ids)),),
        )
        return {r[0]: DesiredState(*r[1:]) for r in rows}

    def record_heartbeats(
        self, beats: dict[str, tuple[float, bytes]], health: dict[str, NodeHealth] | None = None
    ) -> None:
        if not beats:
            return
        health = health or {}
        with self._tx() as conn, conn.cursor() as cur:
            # executemany runs as one pipeline (one round trip); node id order keeps replicas' row locks in step.
            cur.executemany(
                "UPDATE nodes SET last_seen_at = %s, status = %s, health = %s"
                " WHERE node_id = %s AND revoked_at IS NULL",
                [
                    (at, status, _health_json(health.get(node_id)), node_id)
                    for node_id, (at, status) in sorted(beats.items())
                ],
            )

    def set_labels(self, node_id: str, labels: dict[str, str]) -> NodeRecord | None:
        rows = self._query(
            f"UPDATE nodes SET labels = %s WHERE node_id = %s RETURNING {_NODE_COLUMNS}", (Jsonb(labels), node_id)
        )
        return _node(rows[0]) if rows else None

    def revoke_node(self, node_id: str, at: float) -> NodeRecord | None:
        rows = self._query(
            f"UPDATE nodes SET revoked_at = coalesce(revoked_at, %s) WHERE node_id = %s RETURNING {_NODE_COLUMNS}",
            (at, node_id),
        )
        return _node(rows[0]) if rows else None

    def set_certificate(self, node_id: str, serial: str, expires_at: float) -> None:
        self._execute(
            "UPDATE nodes SET certificate_serial = %s, certificate_expires_at = %s WHERE node_id = %s",
            (serial, expires_at, node_id),
        )

    # -- federated learning ----------------------------------------------------

    def set_flower_key(self, node_id: str, public_key: str) -> None:
        self._execute(
            "INSERT INTO flower_keys (node_id, public_key) VALUES (%s, %s) ON CONFLICT (node_id)"
            " DO UPDATE SET public_key = excluded.public_key, flower_node_id = 0, unregistered = false",
            (node_id, public_key),
        )

    def flower_keys(self) -> list[FlowerKeyRecord]:
        rows = self._query(
            "SELECT k.node_id, k.public_key, k.flower_node_id, n.revoked_at IS NOT NULL,"
            " k.unregistered FROM flower_keys k JOIN nodes n USING (node_id) ORDER BY k.node_id"
        )
        return [FlowerKeyRecord(r[0], r[1], int(r[2]), r[3], r[4]) for r in rows]

    def set_flower_registration(self, node_id: str, flower_node_id: int, unregistered: bool) -> None:
        self._execute(
            "UPDATE flower_keys SET flower_node_id = %s, unregistered = %s WHERE node_id = %s",
            (flower_node_id, unregistered, node_id),
        )

    def add_federated_run(self, run: FederatedRunRecord) -> None:
        self._execute(
            f"INSERT INTO federated_runs ({_RUN_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (run.run_id, run.task, Jsonb(run.config), run.started_by, run.started_at, run.model, run.imported_at),
        )

    def get_federated_run(self, run_id: int) -> FederatedRunRecord | None:
        rows = self._query(f"SELECT {_RUN_COLUMNS} FROM federated_runs WHERE run_id = %s", (run_id,))
        return _federated_run(rows[0]) if rows else None

    def list_federated_runs(self) -> list[FederatedRunRecord]:
        rows = self._query(f"SELECT {_RUN_COLUMNS} FROM federated_runs ORDER BY started_at DESC")
        return [_federated_run(r) for r in rows]

    def set_federated_run_outcome(self, run_id: int, model: str, at: float) -> None:
        self._execute("UPDATE federated_runs SET model = %s, imported_at = %s WHERE run_id = %s", (model, at, run_id))

    # -- models --------------------------------------------------------------

    def add_model(self, model: ModelRecord) -> None:
        with self._tx() as conn:
            added = conn.execute(
                f"INSERT INTO models ({_MODEL_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (name, version) DO NOTHING",
                (
                    model.name,
                    model.version,
                    model.format,
                    model.sha256,
                    model.size,
                    Jsonb(model.params),
                    model.created_at,
                    model.pushed_by,
                    model.manifest,
                    model.signature,
                ),
            ).rowcount
        if not added:
            raise StoreError(f"{model.name}@{model.version} already exists")

    def get_model(self, name: str, version: str) -> ModelRecord | None:
        rows = self._query(f"SELECT {_MODEL_COLUMNS} FROM models WHERE name = %s AND version = %s", (name, version))
        return _model(rows[0]) if rows else None

    def list_models(self, name: str = "") -> list[ModelRecord]:
        rows = self._query(
            f"SELECT {_MODEL_COLUMNS} FROM models WHERE %s::text = '' OR name = %s ORDER BY name, created_at DESC",
            (name, name),
        )
        return [_model(r) for r in rows]

    def delete_model(self, name: str, version: str) -> list[str]:
        with self._tx() as conn:
            # Exclusive against assign_model's shared lock: no assignment commits between the check and the delete.
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MODELS_LOCK_KEY,))
            row = conn.execute("SELECT sha256 FROM models WHERE name = %s AND version = %s", (name, version)).fetchone()
            if row is None:
                raise StoreError(f"no model {name}@{version}")
            # Assignments name a version by its bytes: another version with the same bytes still counts.
            assigned = [
                r[0]
                for r in conn.execute(
                    "SELECT node_id FROM nodes WHERE desired_sha256 = %s AND desired_model->>'name' = %s"
                    " AND desired_model->>'version' = %s ORDER BY node_id",
                    (row[0], name, version),
                )
            ]
            if not assigned:
                conn.execute("DELETE FROM models WHERE name = %s AND version = %s", (name, version))
        return assigned

    def models_with_sha256(self, sha256: str) -> list[ModelRecord]:
        return [_model(r) for r in self._query(f"SELECT {_MODEL_COLUMNS} FROM models WHERE sha256 = %s", (sha256,))]

    def nodes_assigned(self, sha256: str) -> list[str]:
        rows = self._query("SELECT node_id FROM nodes WHERE desired_sha256 = %s ORDER BY node_id", (sha256,))
        return [r[0] for r in rows]

    def assign_model(self, node_id: str, model: ModelRecord | None) -> NodeRecord | None:
        with self._tx() as conn:
            conn.execute("SELECT pg_advisory_xact_lock_shared(%s)", (MODELS_LOCK_KEY,))
            row = conn.execute(
                f"UPDATE nodes SET desired_model = %s, desired_sha256 = %s,"
                f" config_generation = config_generation + 1 WHERE node_id = %s RETURNING {_NODE_COLUMNS}",
                (Jsonb(model.desired if model else {}), model.sha256 if model else "", node_id),
            ).fetchone()
        return _node(row) if row else None

    # -- rollouts ------------------------------------------------------------

    def add_rollout(self, rollout_id: str, spec: str, state: str, created_at: float) -> None:
        self._execute(
            "INSERT INTO rollouts (rollout_id, spec, state, created_at) VALUES (%s, %s, %s, %s)",
            (rollout_id, spec, state, created_at),
        )

    def set_rollout_state(self, rollout_id: str, state: str) -> None:
        self._execute("UPDATE rollouts SET state = %s WHERE rollout_id = %s", (state, rollout_id))

    def get_rollout(self, rollout_id: str) -> tuple[str, str, float] | None:
        rows = self._query("SELECT spec, state, created_at FROM rollouts WHERE rollout_id = %s", (rollout_id,))
        return (rows[0][0], rows[0][1], rows[0][2]) if rows else None

    def list_rollouts(self) -> list[tuple[str, str, str, float]]:
        rows = self._query("SELECT rollout_id, spec, state, created_at FROM rollouts ORDER BY created_at DESC")
        return [(r[0], r[1], r[2], r[3]) for r in rows]

    def list_rollouts_in_phases(self, phases: Sequence[str]) -> list[tuple[str, str, str, float]]:
        rows = self._query(
            "SELECT rollout_id, spec, state, created_at FROM rollouts"
            " WHERE edgefleet_rollout_phase(state) = ANY(%s) ORDER BY created_at DESC",
            (list(phases),),
        )
        return [tuple(r) for r in rows]

    def advance_rollout(
        self, rollout_id: str, expected_state: str, state: str, events: Sequence[AuditEvent] = ()
    ) -> bool:
        with self._tx() as conn:
            # The loser of a race blocks on the row, then finds the state changed: nothing written.
            changed = conn.execute(
                "UPDATE rollouts SET state = %s WHERE rollout_id = %s AND state = %s",
                (state, rollout_id, expected_state),
            ).rowcount
            if changed:
                for event in events:
                    _append_audit(conn, event)
        return bool(changed)

    # -- replicas and leadership ---------------------------------------------

    def announce_replica(self, replica: ReplicaRecord) -> None:
        self._execute(
            f"INSERT INTO replicas ({_REPLICA_COLUMNS}) VALUES (%s, %s, %s, %s, %s) ON CONFLICT (replica_id)"
            " DO UPDATE SET fleet_address = excluded.fleet_address, enroll_address = excluded.enroll_address,"
            " started_at = excluded.started_at, last_seen_at = excluded.last_seen_at",
            astuple(replica),
        )

    def list_replicas(self) -> list[ReplicaRecord]:
        return [ReplicaRecord(*r) for r in self._query(f"SELECT {_REPLICA_COLUMNS} FROM replicas ORDER BY replica_id")]

    def forget_replica(self, replica_id: str) -> None:
        self._execute("DELETE FROM replicas WHERE replica_id = %s", (replica_id,))

    def claim_leadership(self, replica_id: str, at: float) -> int:
        rows = self._query(
            "INSERT INTO leadership (replica_id, term, since) VALUES (%s, 1, %s) ON CONFLICT (singleton)"
            " DO UPDATE SET replica_id = excluded.replica_id, term = leadership.term + 1, since = excluded.since"
            " RETURNING term",
            (replica_id, at),
        )
        return int(rows[0][0])

    def leadership(self) -> LeaderRecord | None:
        rows = self._query("SELECT replica_id, term, since FROM leadership")
        return LeaderRecord(*rows[0]) if rows else None

    def bind_ca(self, fingerprint: str) -> str:
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO fleet (key, value) VALUES ('ca_fingerprint', %s) ON CONFLICT (key) DO NOTHING",
                (fingerprint,),
            )
            row = conn.execute("SELECT value FROM fleet WHERE key = 'ca_fingerprint'").fetchone()
        assert row is not None  # inserted just above, or there before
        return str(row[0])

    def rebind_ca(self, previous: str, current: str) -> str:
        with self._tx() as conn:
            conn.execute("UPDATE fleet SET value = %s WHERE key = 'ca_fingerprint' AND value = %s", (current, previous))
            row = conn.execute("SELECT value FROM fleet WHERE key = 'ca_fingerprint'").fetchone()
        if row is None:
            raise StoreError("the store is bound to no fleet CA yet")
        return str(row[0])

    def fleet_value(self, key: str) -> str | None:
        rows = self._query("SELECT value FROM fleet WHERE key = %s", (key,))
        return str(rows[0][0]) if rows else None

    def set_fleet_value(self, key: str, value: str | None) -> None:
        if key == "ca_fingerprint":
            raise StoreError("the CA binding changes through bind_ca and rebind_ca only")
        if value is None:
            self._execute("DELETE FROM fleet WHERE key = %s", (key,))
        else:
            self._execute(
                "INSERT INTO fleet (key, value) VALUES (%s, %s) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                (key, value),
            )

    def replace_model_signatures(self, signatures: Sequence[tuple[str, str, str]]) -> int:
        changed = 0
        with self._tx() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MODELS_LOCK_KEY,))
            for name, version, signature in signatures:
                changed += conn.execute(
                    "UPDATE models SET signature = %s WHERE name = %s AND version = %s", (signature, name, version)
                ).rowcount
                conn.execute(
                    "UPDATE nodes SET desired_model = jsonb_set(desired_model, '{signature}', to_jsonb(%s::text))"
                    " WHERE desired_model->>'name' = %s AND desired_model->>'version' = %s",
                    (signature, name, version),
                )
        return changed

    def leader_lock(self) -> LeaderLock:
        return PostgresLeaderLock(self._conninfo, self.where)

    # -- operators -------------------------------------------------------------

    def add_operator(self, operator: OperatorRecord) -> None:
        with self._tx() as conn:
            added = conn.execute(
                f"INSERT INTO operators ({_OPERATOR_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (name) DO NOTHING",
                astuple(operator),
            ).rowcount
        if not added:
            raise StoreError(f"operator {operator.name} already exists")

    def add_first_operator(self, operator: OperatorRecord) -> bool:
        with self._tx() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (OPERATORS_LOCK_KEY,))
            return bool(
                conn.execute(
                    f"INSERT INTO operators ({_OPERATOR_COLUMNS}) SELECT %s, %s, %s, %s, %s, %s, %s"
                    " WHERE NOT EXISTS (SELECT 1 FROM operators)",
                    astuple(operator),
                ).rowcount
            )

    def get_operator(self, name: str) -> OperatorRecord | None:
        rows = self._query(f"SELECT {_OPERATOR_COLUMNS} FROM operators WHERE name = %s", (name,))
        return OperatorRecord(*rows[0]) if rows else None

    def list_operators(self) -> list[OperatorRecord]:
        return [OperatorRecord(*r) for r in self._query(f"SELECT {_OPERATOR_COLUMNS} FROM operators ORDER BY name")]

    def revoke_operator(self, name: str, at: float) -> OperatorRecord | None:
        with self._tx() as conn:
            # Revocations follow each other, so two admins revoking each other cannot both see the other left.
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (OPERATORS_LOCK_KEY,))
            row = conn.execute(f"SELECT {_OPERATOR_COLUMNS} FROM operators WHERE name = %s", (name,)).fetchone()
            if row is None:
                return None
            operator = OperatorRecord(*row)
            if operator.revoked_at is None and operator.role == "admin":
                admins = conn.execute(
                    "SELECT count(*) FROM operators WHERE role = 'admin' AND revoked_at IS NULL"
                ).fetchall()
                if admins[0][0] <= 1:
                    return operator  # the last admin: kept
            rows = conn.execute(
                f"UPDATE operators SET revoked_at = coalesce(revoked_at, %s) WHERE name = %s"
                f" RETURNING {_OPERATOR_COLUMNS}",
                (at, name),
            ).fetchall()
        return OperatorRecord(*rows[0])

    def renew_operator(self, name: str, old_serial: str, serial: str, expires_at: float) -> OperatorRecord | None:
        rows = self._query(
            f"UPDATE operators SET serial = %s, expires_at = %s WHERE name = %s AND serial = %s"
            f" AND revoked_at IS NULL RETURNING {_OPERATOR_COLUMNS}",
            (serial, expires_at, name, old_serial),
        )
        return OperatorRecord(*rows[0]) if rows else None

    # -- reports -------------------------------------------------------------

    def add_reports(
        self,
        node_id: str,
        reports: list[ReportRecord],
        dropped_count: int,
        keep: int = reports_mod.KEEP_REPORTS,
        routing: dict[int, RoutingReport] | None = None,
        epoch: str = "",
        restart_events: Sequence[AuditEvent] = (),
        keep_bytes: int = reports_mod.KEEP_REPORT_BYTES,
    ) -> int:
        received = time.time()
        with self._tx() as conn:
            base = _spool_base(conn, node_id, epoch, reports, restart_events)
            # One statement for the batch; RETURNING names the reports new to the store, the only ones whose
            # routing counts. A racing flush of the same reports waits for this one, then inserts nothing.
            new = [
                r[0] - base
                for r in conn.execute(
                    "INSERT INTO reports (node_id, sequence, observed_at, kind, payload, received_at)"
                    " SELECT %s, * , %s FROM unnest(%s::bigint[], %s::double precision[], %s::text[], %s::bytea[])"
                    " ON CONFLICT (node_id, sequence) DO NOTHING RETURNING sequence",
                    (
                        node_id,
                        received,
                        [base + r.sequence for r in reports],
                        [r.observed_at for r in reports],
                        [r.kind for r in reports],
                        [r.payload for r in reports],
                    ),
                )
            ]
            if routing:
                for sequence in sorted(new):
                    if sequence in routing:
                        _add_routing(conn, [(node_id, received, routing[sequence])])
            if dropped_count:  # saturates, so a node's total never leaves bigint
                conn.execute(
                    "UPDATE nodes SET dropped_reports = LEAST(dropped_reports + %s, %s) WHERE node_id = %s",
                    (dropped_count, reports_mod.MAX_AGENT_SEQUENCE, node_id),
                )
            sizes = conn.execute(
                "SELECT sequence, octet_length(payload) FROM reports WHERE node_id = %s ORDER BY sequence DESC",
                (node_id,),
            ).fetchall()
            through = reports_mod.prune_through(sizes, keep, keep_bytes)
            if through is not None:
                conn.execute("DELETE FROM reports WHERE node_id = %s AND sequence <= %s", (node_id, through))
        top = sizes[0][0] if sizes else 0
        return max(0, top - base)

    def spool_epoch(self, node_id: str) -> str:
        rows = self._query("SELECT spool_epoch FROM nodes WHERE node_id = %s", (node_id,))
        return rows[0][0] if rows else ""

    def recent_reports(self, node_id: str, limit: int) -> list[ReportRecord]:
        rows = self._query(
            "SELECT sequence, observed_at, kind, payload FROM reports WHERE node_id = %s"
            " ORDER BY sequence DESC LIMIT %s",
            (node_id, limit),
        )
        return [ReportRecord(*r) for r in reversed(rows)]

    # -- routing totals --------------------------------------------------------

    def add_routing(self, reports: dict[str, tuple[float, RoutingReport]]) -> None:
        if not reports:
            return
        with self._tx() as conn:
            _add_routing(conn, [(node_id, at, report) for node_id, (at, report) in sorted(reports.items())])

    def routing_totals(
        self, node_id: str = "", after_node_id: str = "", limit: int | None = None
    ) -> list[NodeRoutingRecord]:
        with self._tx() as conn:
            # One transaction, but READ COMMITTED reads each statement's own snapshot: a flush committing in
            # between may show in the totals and not yet in the heads, which a reader of totals can live with.
            heads = conn.execute(
                "SELECT h.node_id, n.hostname, h.audit_sequence, h.audit_head_hash, h.updated_at FROM routing_heads h"
                " JOIN nodes n USING (node_id) WHERE (%s::text = '' OR h.node_id = %s) AND h.node_id > %s"
                " ORDER BY h.node_id LIMIT %s",
                (node_id, node_id, after_node_id, limit),
            ).fetchall()
            totals = (
                conn.execute(
                    "SELECT node_id, data_class, route, count FROM routing_totals WHERE node_id >= %s AND node_id <= %s"
                    " ORDER BY node_id, data_class, route",
                    (heads[0][0], heads[-1][0]),
                ).fetchall()
                if heads
                else []
            )
        return node_routing_records(heads, totals)

    # -- audit ---------------------------------------------------------------

    def append_audit(
        self, at: float, actor: str, action: str, target: str, outcome: str, detail: str, peer: str
    ) -> AuditEntry:
        with self._tx() as conn:
            return _append_audit(conn, AuditEvent(at, actor, action, target, outcome, detail, peer))

    def list_audit(self, after_sequence: int = 0, limit: int = 100) -> list[AuditEntry]:
        rows = self._query(
            f"SELECT {_AUDIT_COLUMNS} FROM audit WHERE sequence > %s ORDER BY sequence LIMIT %s",
            (after_sequence, limit),
        )
        return [AuditEntry(*r) for r in rows]

    def iter_audit(self) -> Iterator[AuditEntry]:
        after = 0
        while True:
            page = self.list_audit(after, 1000)
            yield from page
            if len(page) < 1000:
                return
            after = page[-1].sequence

    # -- audit retention (issue 16) ------------------------------------------------

    def audit_anchor(self) -> AuditAnchor | None:
        rows = self._query("SELECT sequence, hash, at, signature FROM audit_anchors ORDER BY sequence DESC LIMIT 1")
        return AuditAnchor(*rows[0]) if rows else None

    def prune_audit(self, anchor: AuditAnchor) -> int:
        with self._tx() as conn:
            # Under the appends' lock: the head cannot move while entries go.
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (AUDIT_LOCK_KEY,))
            latest = conn.execute("SELECT max(sequence) FROM audit_anchors").fetchone()
            if latest and latest[0] is not None and anchor.sequence <= latest[0]:
                raise StoreError(f"the audit log is pruned up to {latest[0]} already")
            row = conn.execute("SELECT hash FROM audit WHERE sequence = %s", (anchor.sequence,)).fetchone()
            if row is None or row[0] != anchor.hash:
                raise StoreError(f"audit entry {anchor.sequence} with hash {anchor.hash} is not in the log")
            if conn.execute("SELECT 1 FROM audit WHERE sequence > %s LIMIT 1", (anchor.sequence,)).fetchone() is None:
                raise StoreError("the newest audit entry is never pruned: the next one links to it")
            conn.execute(
                "INSERT INTO audit_anchors (sequence, hash, at, signature) VALUES (%s, %s, %s, %s)", astuple(anchor)
            )
            return conn.execute("DELETE FROM audit WHERE sequence <= %s", (anchor.sequence,)).rowcount

    # -- history (issue 17) ------------------------------------------------------

    def add_rollups(self, deltas) -> None:
        deltas = list(deltas)
        if not deltas:
            return
        with self._tx() as conn, conn.cursor() as cur:
            # Shared: derive_rollup_hours, which takes it alone, never runs between reading last_hour and the writes.
            cur.execute(
                "SELECT pg_advisory_xact_lock_shared(%s), (SELECT last_hour FROM rollup_hours)", (ROLLUPS_LOCK_KEY,)
            )
            last_hour = _first(cur.fetchone(), 1)
            # Key order: replicas adding to overlapping rows (the fleet's, a label group's) wait instead of
            # deadlocking. A zero goes as NULL.
            rows = sorted(
                (d.scope, d.period_s, d.start, *[v or None for v in d.values()])
                for d in (*deltas, *late_hour_deltas(deltas, last_hour))
            )
            cur.executemany(_ADD_ROLLUP, rows)

    def derive_rollup_hours(self, until: float) -> int:
        end = int(until) // HOUR_S * HOUR_S  # hours starting before it have ended
        with self._tx() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (ROLLUPS_LOCK_KEY,))
            last_hour = _first(conn.execute("SELECT last_hour FROM rollup_hours").fetchone())
            if last_hour is None:  # never derived: from the first minute kept
                first = _first(
                    conn.execute("SELECT min(start) FROM rollups WHERE period_s = %s", (MINUTE_S,)).fetchone()
                )
                begin = end if first is None else first // HOUR_S * HOUR_S
            else:
                begin = last_hour + HOUR_S
            if begin >= end:
                if last_hour is None:
                    conn.execute("UPDATE rollup_hours SET last_hour = %s", (end - HOUR_S,))
                return 0
            written = conn.execute(_DERIVE_HOURS, (begin, end)).rowcount
            conn.execute("UPDATE rollup_hours SET last_hour = %s", (end - HOUR_S,))
            return written

    def rollup_series(
        self, scopes: Sequence[str], period_s: int, start: float, end: float
    ) -> dict[str, list[RollupRow]]:
        series: dict[str, list[RollupRow]] = {scope: [] for scope in scopes}
        if not series:
            return series
        if period_s == HOUR_S:
            rows = self._query(
                f"SELECT scope, {HOUR_S}, hour, {_READ_SUMS} FROM ({_HOUR_ROWS}) AS r"
                " GROUP BY scope, hour ORDER BY scope, hour",
                _hour_params(list(series), start, end),
            )
        else:
            rows = self._query(
                f"SELECT scope, period_s, start, {_READ_VALUES} FROM rollups"
                " WHERE scope = ANY(%s) AND period_s = %s AND start >= %s AND start < %s ORDER BY scope, start",
                (list(series), period_s, start, end),
            )
        for r in rows:
            series[r[0]].append(stored_rollup_row(r))
        return series

    def rollup_sums(self, scopes: Sequence[str], period_s: int, start: float, end: float) -> RollupRow:
        wanted = list(dict.fromkeys(scopes))
        if period_s == HOUR_S:
            rows = self._query(f"SELECT {_READ_SUMS} FROM ({_HOUR_ROWS}) AS r", _hour_params(wanted, start, end))
        else:
            rows = self._query(
                f"SELECT {_READ_SUMS} FROM rollups"
                " WHERE scope = ANY(%s) AND period_s = %s AND start >= %s AND start < %s",
                (wanted, period_s, start, end),
            )
        return RollupRow.from_values("", period_s, int(start), rows[0])

    def prune_rollups(self, now: float) -> int:
        with self._tx() as conn:
            gone = sum(
                conn.execute("DELETE FROM rollups WHERE period_s = %s AND start < %s", (period, now - keep)).rowcount
                for period, keep in ROLLUP_KEEP_S.items()
            )
            return gone + conn.execute("DELETE FROM burst_usage WHERE hour < %s", (now - BURST_USAGE_KEEP_S,)).rowcount

    def add_burst_usage(self, rows) -> None:
        ordered = sorted(rows, key=lambda r: r.key)
        if not ordered:
            return
        with self._tx() as conn, conn.cursor() as cur:
            cur.executemany(
                f"INSERT INTO burst_usage ({_BURST_COLUMNS}) SELECT %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s"
                " WHERE EXISTS (SELECT 1 FROM nodes WHERE node_id = %s)"
                " ON CONFLICT (hour, node_id, upstream, tenant, data_class, currency) DO UPDATE SET"
                " requests = burst_usage.requests + excluded.requests,"
                " prompt_tokens = burst_usage.prompt_tokens + excluded.prompt_tokens,"
                " completion_tokens = burst_usage.completion_tokens + excluded.completion_tokens,"
                " cost = burst_usage.cost + excluded.cost, last_at = greatest(burst_usage.last_at, excluded.last_at)",
                [(*r.values(), r.node_id) for r in ordered],
            )

    def burst_usage_rows(self, since: float = 0.0) -> list[tuple[BurstUsageRecord, dict[str, str]]]:
        rows = self._query(
            f"SELECT {', '.join('b.' + c for c in _BURST_COLUMNS.split(', '))}, n.labels FROM burst_usage b"
            " JOIN nodes n USING (node_id) WHERE b.hour > %s"
            " ORDER BY b.hour, b.node_id, b.upstream, b.tenant, b.data_class, b.currency",
            (since - 3600,),
        )
        return [(BurstUsageRecord(*r[:11]), r[11]) for r in rows]

    def burst_usage_totals(self, since: float = 0.0) -> list[tuple[BurstUsageRecord, Mapping[str, str]]]:
        # The labels as text, parsed once per node (as jsonb, psycopg would parse them once per row).
        rows = self._query(
            f"SELECT {', '.join('b.' + c for c in _BURST_COLUMNS.split(', '))}, n.labels::text FROM (SELECT"
            " max(hour) AS hour, node_id, upstream, tenant, data_class, currency, sum(requests)::bigint AS requests,"
            " sum(prompt_tokens)::bigint AS prompt_tokens, sum(completion_tokens)::bigint AS completion_tokens,"
            " sum(cost) AS cost, max(last_at) AS last_at FROM burst_usage WHERE hour > %s"
            " GROUP BY node_id, upstream, tenant, data_class, currency) b"
            " JOIN nodes n USING (node_id) ORDER BY b.node_id, b.upstream, b.tenant, b.data_class, b.currency",
            (since - 3600,),
        )
        return burst_totals_with_labels(rows)

    def set_objective(self, objective: ObjectiveRecord) -> None:
        o = objective
        self._execute(
            f"INSERT INTO objectives ({_OBJECTIVE_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (name) DO UPDATE SET selector = excluded.selector,"
            " availability_percent = excluded.availability_percent,"
            " latency_threshold_ms = excluded.latency_threshold_ms, latency_percent = excluded.latency_percent,"
            " window_s = excluded.window_s, updated_at = excluded.updated_at, updated_by = excluded.updated_by",
            (
                o.name,
                Jsonb(o.selector),
                o.availability_percent,
                o.latency_threshold_ms,
                o.latency_percent,
                o.window_s,
                o.updated_at,
                o.updated_by,
            ),
        )

    def list_objectives(self) -> list[ObjectiveRecord]:
        return [ObjectiveRecord(*r) for r in self._query(f"SELECT {_OBJECTIVE_COLUMNS} FROM objectives ORDER BY name")]

    def delete_objective(self, name: str) -> bool:
        with self._tx() as conn:
            return bool(conn.execute("DELETE FROM objectives WHERE name = %s", (name,)).rowcount)

    # -- restores (issue 18) ----------------------------------------------------

    def add_restore(self, point: RestorePoint, findings: Sequence[RestoreFinding] = ()) -> None:
        with self._tx() as conn:
            conn.execute(f"INSERT INTO restores ({_RESTORE_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s)", astuple(point))
            for finding in findings:
                conn.execute(_ADD_FINDING, finding.row())

    def latest_restore(self) -> RestorePoint | None:
        rows = self._query(f"SELECT {_RESTORE_COLUMNS} FROM restores ORDER BY restore_id DESC LIMIT 1")
        return RestorePoint(*rows[0]) if rows else None

    def restore_findings(self, limit: int | None = None) -> list[RestoreFinding]:
        rows = self._query(
            "SELECT kind, node_id, detail, found_at, action FROM restore_findings"
            " WHERE restore_id = (SELECT max(restore_id) FROM restores) ORDER BY finding_id LIMIT %s",
            (limit,),
        )
        return [RestoreFinding(*r) for r in rows]

    def add_restore_finding(self, finding: RestoreFinding) -> bool:
        with self._tx() as conn:
            return bool(conn.execute(_ADD_FINDING, finding.row()).rowcount)

    def adopt_node(self, node: NodeRecord, finding: RestoreFinding) -> bool:
        with self._tx() as conn:
            added = conn.execute(
                f"INSERT INTO nodes ({_NODE_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (node_id) DO NOTHING",
                _node_row(node),
            ).rowcount
            if added:
                conn.execute(_ADD_FINDING, finding.row())
        return bool(added)

    def adopt_certificate(
        self, node_id: str, replaced_serial: str, serial: str, expires_at: float, finding: RestoreFinding
    ) -> bool:
        with self._tx() as conn:
            # The loser of a race blocks on the row, then finds the serial changed: nothing written.
            taken = conn.execute(
                "UPDATE nodes SET certificate_serial = %s, certificate_expires_at = %s"
                " WHERE node_id = %s AND certificate_serial = %s AND revoked_at IS NULL",
                (serial, expires_at, node_id, replaced_serial),
            ).rowcount
            if taken:
                conn.execute(_ADD_FINDING, finding.row())
        return bool(taken)

    def adopt_assignment(
        self,
        node_id: str,
        stored_generation: int,
        desired_model: dict[str, str],
        generation: int,
        finding: RestoreFinding,
    ) -> bool:
        with self._tx() as conn:
            conn.execute("SELECT pg_advisory_xact_lock_shared(%s)", (MODELS_LOCK_KEY,))  # as assign_model
            # The row locked to the end: a racing assignment waits, then finds the generation moved on.
            row = conn.execute(
                "SELECT config_generation FROM nodes WHERE node_id = %s AND revoked_at IS NULL FOR UPDATE", (node_id,)
            ).fetchone()
            if row is None or row[0] != stored_generation:
                return False
            if not conn.execute(_ADD_FINDING, finding.row()).rowcount:
                return False
            conn.execute(
                "UPDATE nodes SET desired_model = %s, desired_sha256 = %s, config_generation = %s WHERE node_id = %s",
                (Jsonb(desired_model), desired_model.get("sha256", ""), generation, node_id),
            )
        return True

    def close(self) -> None:
        self._pool.close()


class PostgresLeaderLock(LeaderLock):
    """A session-level advisory lock on a dedicated autocommit connection, outside the pool: PostgreSQL
    drops it the moment that session ends (the replica dies, its connection is cut or terminated), and
    another replica's try_acquire can then take it."""

    def __init__(self, conninfo: str, where: str):
        self._conninfo, self._where = conninfo, where
        self._conn: psycopg.Connection | None = None

    def try_acquire(self) -> bool:
        if self.held():
            return True
        self.release()
        try:
            conn = psycopg.connect(self._conninfo, autocommit=True)
        except psycopg.Error as exc:
            raise StoreError(f"leader lock: PostgreSQL at {self._where} cannot be reached: {_reason(exc)}") from exc
        try:
            row = conn.execute("SELECT pg_try_advisory_lock(%s)", (LEADER_LOCK_KEY,)).fetchone()
        except psycopg.Error as exc:
            conn.close()
            raise StoreError(f"leader lock on PostgreSQL at {self._where}: {_reason(exc)}") from exc
        if not (row and row[0]):
            conn.close()
            return False
        self._conn = conn
        return True

    def held(self) -> bool:
        if self._conn is None:
            return False
        try:
            # Asks the server whether this very session holds the lock: any error means it may not.
            row = self._conn.execute(
                "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
                f" AND granted AND classid = 0 AND objid = {LEADER_LOCK_KEY} AND objsubid = 1)"
            ).fetchone()
        except psycopg.Error:
            return False
        return bool(row and row[0])

    def release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            # Unlock before closing: the server ends a closed session a moment later, and another holder
            # trying right after release() must find the lock free.
            conn.execute("SELECT pg_advisory_unlock(%s)", (LEADER_LOCK_KEY,))
        except psycopg.Error:
            pass  # the session is gone or going, and its locks with it
        finally:
            conn.close()


def _apply_migrations(conn: psycopg.Connection) -> None:
    """Apply the migrations this database lacks, in order, in one transaction, under an advisory lock: of
    replicas starting together one migrates, the others wait and then find nothing left to do."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY,"
            " applied_at double precision NOT NULL)"
        )
        applied = {r[0] for r in conn.execute("SELECT version FROM schema_migrations")}
        known = {v for v, _ in _MIGRATIONS}
        if applied - known:
            log.warning(
                "the database has schema migrations %s this central does not know; it was migrated by a newer one",
                sorted(applied - known),
            )
        for version, statements in _MIGRATIONS:
            if version in applied:
                continue
            for sql in statements:
                conn.execute(sql)
            conn.execute("INSERT INTO schema_migrations (version, applied_at) VALUES (%s, %s)", (version, time.time()))
            log.info("applied schema migration %d", version)


def _append_audit(conn: psycopg.Connection, event: AuditEvent) -> AuditEntry:
    """Inside a transaction: chain the event to the log. The advisory lock, held to the transaction's end,
    makes appends from every replica follow each other, so each reads the head the previous one wrote."""
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (AUDIT_LOCK_KEY,))
    last = conn.execute("SELECT sequence, hash FROM audit ORDER BY sequence DESC LIMIT 1").fetchone()
    sequence, previous = (last[0] + 1, last[1]) if last else (1, GENESIS_HASH)
    e = event
    digest = entry_hash(sequence, e.at, e.actor, e.action, e.target, e.outcome, e.detail, e.peer, previous)
    entry = AuditEntry(sequence, e.at, e.actor, e.action, e.target, e.outcome, e.detail, e.peer, previous, digest)
    conn.execute(
        f"INSERT INTO audit ({_AUDIT_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (sequence, e.at, e.actor, e.action, e.target, e.outcome, e.detail, e.peer, previous, digest),
    )
    return entry


def _add_routing(conn: psycopg.Connection, reports: list[tuple[str, float, RoutingReport]]) -> None:
    """Inside a transaction: add each report's counts to its node's totals (folded past the node's bound on pairs,
    central.routing.fold) and keep its head if not older. Unknown nodes are skipped. The nodes' rows are locked
    first, so two replicas folding the same node's pairs follow each other; rows are written in key order, so
    replicas' batches do not deadlock."""
    known = "WHERE EXISTS (SELECT 1 FROM nodes WHERE node_id = %s)"
    wanted = {node_id: {pair: c for pair, c in report.counts.items() if c} for node_id, _, report in reports}
    counting = sorted(node_id for node_id, counts in wanted.items() if counts)
    held: dict[str, set[tuple[str, str]]] = {node_id: set() for node_id in counting}
    if counting:
        conn.execute(
            "SELECT node_id FROM nodes WHERE node_id = ANY(%s) ORDER BY node_id FOR NO KEY UPDATE", (counting,)
        )
        for node_id, data_class, route in conn.execute(
            "SELECT node_id, data_class, route FROM routing_totals WHERE node_id = ANY(%s)", (counting,)
        ):
            held[node_id].add((data_class, route))
    totals = sorted(
        (node_id, data_class, route, count, at)
        for node_id, at, _ in reports
        if node_id in held
        for (data_class, route), count in routing_mod.fold(held[node_id], wanted[node_id]).items()
    )
    with conn.cursor() as cur:
        if totals:
            cur.executemany(
                "INSERT INTO routing_totals (node_id, data_class, route, count, updated_at) SELECT %s, %s, %s, %s, %s "
                + known
                + " ON CONFLICT (node_id, data_class, route) DO UPDATE"
                " SET count = routing_totals.count + excluded.count,"
                " updated_at = greatest(routing_totals.updated_at, excluded.updated_at)",
                [(*row, row[0]) for row in totals],
            )
        cur.executemany(
            "INSERT INTO routing_heads (node_id, audit_sequence, audit_head_hash, updated_at) SELECT %s, %s, %s, %s "
            + known
            + " ON CONFLICT (node_id) DO UPDATE"
            " SET updated_at = greatest(routing_heads.updated_at, excluded.updated_at),"
            " audit_head_hash = CASE WHEN excluded.audit_sequence >= routing_heads.audit_sequence"
            " THEN excluded.audit_head_hash ELSE routing_heads.audit_head_hash END,"
            " audit_sequence = greatest(routing_heads.audit_sequence, excluded.audit_sequence)",
            [
                (node_id, report.audit_sequence, report.audit_head_hash, at, node_id)
                for node_id, at, report in sorted(reports, key=lambda r: r[0])
            ],
        )


def _spool_base(
    conn: psycopg.Connection,
    node_id: str,
    epoch: str,
    reports: list[ReportRecord],
    restart_events: Sequence[AuditEvent],
) -> int:
    """Inside a transaction: the base this batch of the node's reports is numbered from (central.reports), after
    recording a new spool epoch and, when it restarts the numbering, appending `restart_events`. The node's row
    is locked when the epoch is new, so of two replicas taking the same new epoch one moves the base."""
    lock = " FOR NO KEY UPDATE" if epoch and reports else ""
    row = conn.execute(f"SELECT spool_epoch, spool_base FROM nodes WHERE node_id = %s{lock}", (node_id,)).fetchone()
    if row is None:
        return 0
    held_epoch, held_base = row
    if not epoch or not reports or epoch == held_epoch:
        return held_base
    top = conn.execute("SELECT max(sequence) FROM reports WHERE node_id = %s", (node_id,)).fetchone()
    base, restarted = reports_mod.next_base(
        held_epoch, held_base, (top[0] if top else None) or 0, epoch, min(r.sequence for r in reports)
    )
    conn.execute("UPDATE nodes SET spool_epoch = %s, spool_base = %s WHERE node_id = %s", (epoch, base, node_id))
    if restarted:
        for event in restart_events:
            _append_audit(conn, event)
    return base


def _reason(exc: psycopg.Error) -> str:
    """libpq's message on one line (it names host and port, never the password)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def _node(r: tuple) -> NodeRecord:
    return NodeRecord(
        node_id=r[0],
        labels=r[1],
        hostname=r[2],
        enrolled_at=r[3],
        token_id=r[4],
        certificate_serial=r[5],
        certificate_expires_at=r[6],
        last_seen_at=r[7],
        status=r[8],
        revoked_at=r[9],
        dropped_reports=r[10],
        config_generation=r[11],
        desired_model=r[12],
        health=NodeHealth(**r[13]) if r[13] else None,
    )


def _node_row(n: NodeRecord) -> tuple:
    return (
        n.node_id,
        Jsonb(n.labels),
        n.hostname,
        n.enrolled_at,
        n.token_id,
        n.certificate_serial,
        n.certificate_expires_at,
        n.last_seen_at,
        n.status,
        n.revoked_at,
        n.dropped_reports,
        n.config_generation,
        Jsonb(n.desired_model),
        _health_json(n.health),
    )


def _health_json(health: NodeHealth | None) -> Jsonb | None:
    return Jsonb(asdict(health)) if health is not None else None


def _model(r: tuple) -> ModelRecord:
    return ModelRecord(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], bytes(r[8]), r[9])


def _federated_run(r: tuple) -> FederatedRunRecord:
    return FederatedRunRecord(int(r[0]), r[1], r[2], r[3], r[4], r[5], r[6])
