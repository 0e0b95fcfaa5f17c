"""Central's store on one SQLite file (WAL): :class:`SqliteFleetStore` implements
:class:`central.store.records.FleetStore` and passes its contract suite (tests/unit/central/test_store.py).

The schema grows by numbered migrations, recorded in the file itself.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, astuple
from pathlib import Path

from central import reports as reports_mod
from central import routing as routing_mod
from central.audit import GENESIS_HASH, AuditAnchor, AuditEntry, entry_hash
from central.routing import RoutingReport
from central.store.records import (
    BURST_USAGE_KEEP_S,
    HOUR_S,
    MINUTE_S,
    ROLLUP_KEEP_S,
    ROLLUP_SUMS_SQL,
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
from edgefleet.sqlitedb import apply_migrations, connect_wal

# A rollout's phase, read from its state (JSON the store does not otherwise read) by the index the controller's
# tick reads through; NULL for a state that is not JSON.
_ROLLOUT_PHASE = "CASE WHEN json_valid(state) THEN json_extract(state, '$.phase') END"

_MIGRATIONS = [
    (
        1,
        [
            "CREATE TABLE tokens (token_id TEXT PRIMARY KEY, secret_hash TEXT NOT NULL, labels TEXT NOT NULL,"
            " created_at REAL NOT NULL, expires_at REAL NOT NULL, uses_total INTEGER NOT NULL,"
            " uses_left INTEGER NOT NULL, revoked INTEGER NOT NULL DEFAULT 0, created_by TEXT NOT NULL)",
            "CREATE TABLE nodes (node_id TEXT PRIMARY KEY, labels TEXT NOT NULL, hostname TEXT NOT NULL,"
            " enrolled_at REAL NOT NULL, token_id TEXT NOT NULL, certificate_serial TEXT NOT NULL,"
            " certificate_expires_at REAL NOT NULL, last_seen_at REAL, status BLOB, revoked_at REAL,"
            " dropped_reports INTEGER NOT NULL DEFAULT 0, config_generation INTEGER NOT NULL DEFAULT 0,"
            " desired_model TEXT NOT NULL DEFAULT '{}')",
            "CREATE TABLE reports (node_id TEXT NOT NULL REFERENCES nodes(node_id), sequence INTEGER NOT NULL,"
            " observed_at REAL NOT NULL, kind TEXT NOT NULL, payload BLOB NOT NULL, received_at REAL NOT NULL,"
            " PRIMARY KEY (node_id, sequence))",
            "CREATE TABLE audit (sequence INTEGER PRIMARY KEY, at REAL NOT NULL, actor TEXT NOT NULL,"
            " action TEXT NOT NULL, target TEXT NOT NULL, outcome TEXT NOT NULL, detail TEXT NOT NULL,"
            " peer TEXT NOT NULL, previous_hash TEXT NOT NULL, hash TEXT NOT NULL)",
            # The log is append-only in the file itself, not only by convention.
            "CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit"
            " BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END",
            "CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit"
            " BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END",
        ],
    ),
    (
        2,
        [
            "CREATE TABLE models (name TEXT NOT NULL, version TEXT NOT NULL, format TEXT NOT NULL,"
            " sha256 TEXT NOT NULL, size INTEGER NOT NULL, params TEXT NOT NULL, created_at REAL NOT NULL,"
            " pushed_by TEXT NOT NULL, manifest BLOB NOT NULL, signature TEXT NOT NULL, PRIMARY KEY (name, version))",
            "CREATE INDEX models_sha256 ON models (sha256)",
            "ALTER TABLE nodes ADD COLUMN desired_sha256 TEXT NOT NULL DEFAULT ''",
            "CREATE INDEX nodes_desired_sha256 ON nodes (desired_sha256)",
        ],
    ),
    (
        3,
        [
            "CREATE TABLE rollouts (rollout_id TEXT PRIMARY KEY, spec TEXT NOT NULL, state TEXT NOT NULL,"
            " created_at REAL NOT NULL)",
        ],
    ),
    (
        4,
        [
            # Flower node ids are unsigned 64-bit: kept as text, SQLite integers are signed.
            "CREATE TABLE flower_keys (node_id TEXT PRIMARY KEY REFERENCES nodes(node_id), public_key TEXT NOT NULL,"
            " flower_node_id TEXT NOT NULL DEFAULT '0', unregistered INTEGER NOT NULL DEFAULT 0)",
            "CREATE TABLE federated_runs (run_id TEXT PRIMARY KEY, task TEXT NOT NULL, config TEXT NOT NULL,"
            " started_by TEXT NOT NULL, started_at REAL NOT NULL, model TEXT NOT NULL DEFAULT '', imported_at REAL)",
        ],
    ),
    (
        5,
        [
            # Requests per node, data class and route, summed from the nodes' reports.
            "CREATE TABLE routing_totals (node_id TEXT NOT NULL REFERENCES nodes(node_id), data_class TEXT NOT NULL,"
            " route TEXT NOT NULL, count INTEGER NOT NULL, updated_at REAL NOT NULL,"
            " PRIMARY KEY (node_id, data_class, route))",
            # The newest head of each node's local routing audit central has heard of.
            "CREATE TABLE routing_heads (node_id TEXT PRIMARY KEY REFERENCES nodes(node_id),"
            " audit_sequence INTEGER NOT NULL, audit_head_hash TEXT NOT NULL, updated_at REAL NOT NULL)",
        ],
    ),
    (
        6,
        [
            # The rollout controller's view of the latest status (JSON of NodeHealth), so it never decodes the
            # status bytes. NULL until the node's next heartbeat: until then the controller waits on the node.
            "ALTER TABLE nodes ADD COLUMN health TEXT",
        ],
    ),
    (
        7,
        [
            "CREATE TABLE replicas (replica_id TEXT PRIMARY KEY, fleet_address TEXT NOT NULL,"
            " enroll_address TEXT NOT NULL, started_at REAL NOT NULL, last_seen_at REAL NOT NULL)",
            # One row at most: the latest leadership claim.
            "CREATE TABLE leadership (singleton INTEGER PRIMARY KEY CHECK (singleton = 1), replica_id TEXT NOT NULL,"
            " term INTEGER NOT NULL, since REAL NOT NULL)",
        ],
    ),
    (
        8,
        [
            # Facts about the fleet itself, e.g. its CA's fingerprint (bind_ca).
            "CREATE TABLE fleet (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        ],
    ),
    (
        9,
        [
            # Operators (AdminService callers): their role and the one certificate serial central accepts.
            "CREATE TABLE operators (name TEXT PRIMARY KEY, role TEXT NOT NULL, serial TEXT NOT NULL,"
            " expires_at REAL NOT NULL, created_at REAL NOT NULL, created_by TEXT NOT NULL, revoked_at REAL)",
        ],
    ),
    (
        10,
        [
            # Audit retention: entries up to the latest anchor's sequence may be pruned (prune_audit), no others;
            # the anchors themselves are append-only.
            "CREATE TABLE audit_anchors (sequence INTEGER PRIMARY KEY, hash TEXT NOT NULL, at REAL NOT NULL,"
            " signature TEXT NOT NULL)",
            "DROP TRIGGER audit_no_delete",
            "CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit"
            " WHEN OLD.sequence > coalesce((SELECT max(sequence) FROM audit_anchors), 0)"
            " BEGIN SELECT RAISE(ABORT, 'audit log is append-only: only entries behind a signed anchor may be pruned');"
            " END",
            "CREATE TRIGGER audit_anchors_no_update BEFORE UPDATE ON audit_anchors"
            " BEGIN SELECT RAISE(ABORT, 'audit anchors are append-only'); END",
            "CREATE TRIGGER audit_anchors_no_delete BEFORE DELETE ON audit_anchors"
            " BEGIN SELECT RAISE(ABORT, 'audit anchors are append-only'); END",
        ],
    ),
    (
        11,
        [
            # Each node's spool epoch and the base its reports are numbered from (central.reports).
            "ALTER TABLE nodes ADD COLUMN spool_epoch TEXT NOT NULL DEFAULT ''",
            "ALTER TABLE nodes ADD COLUMN spool_base INTEGER NOT NULL DEFAULT 0",
            # The controller's tick reads the live rollouts only (list_rollouts_in_phases).
            f"CREATE INDEX rollouts_phase ON rollouts ({_ROLLOUT_PHASE})",
        ],
    ),
    (
        12,
        [
            # Heartbeats summed per scope ("fleet", "node:ID", "label:K=V") and minute or hour (central.rollups).
            "CREATE TABLE rollups (scope TEXT NOT NULL, period_s INTEGER NOT NULL, start INTEGER NOT NULL, "
            + ", ".join(
                f"{c} REAL NOT NULL DEFAULT 0" if c == "upstream_cost" else f"{c} INTEGER NOT NULL DEFAULT 0"
                for c in ROLLUP_VALUE_COLUMNS
            )
            + ", PRIMARY KEY (scope, period_s, start)) WITHOUT ROWID",
            # prune_rollups deletes by age.
            "CREATE INDEX rollups_age ON rollups (period_s, start)",
            "CREATE TABLE objectives (name TEXT PRIMARY KEY, selector TEXT NOT NULL,"
            " availability_percent REAL NOT NULL, latency_threshold_ms REAL NOT NULL, latency_percent REAL NOT NULL,"
            " window_s INTEGER NOT NULL, updated_at REAL NOT NULL, updated_by TEXT NOT NULL)",
            # What nodes sent to upstreams, per hour (burst_usage_rows; pruned after 30 days).
            "CREATE TABLE burst_usage (hour INTEGER NOT NULL, node_id TEXT NOT NULL, upstream TEXT NOT NULL,"
            " tenant TEXT NOT NULL, data_class TEXT NOT NULL, currency TEXT NOT NULL, requests INTEGER NOT NULL,"
            " prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL, cost REAL NOT NULL,"
            " last_at REAL NOT NULL, PRIMARY KEY (hour, node_id, upstream, tenant, data_class, currency))"
            " WITHOUT ROWID",
        ],
    ),
    (
        13,
        [
            # The last hour whose rollup rows were derived from its minute rows (derive_rollup_hours); NULL: none.
            # Before, heartbeats wrote the hour rows themselves: the hours they wrote count as derived.
            "CREATE TABLE rollup_hours (id INTEGER PRIMARY KEY CHECK (id = 1), last_hour INTEGER)",
            "INSERT INTO rollup_hours (id, last_hour) SELECT 1, max(start) FROM rollups WHERE period_s = 3600",
        ],
    ),
    (
        14,
        [
            # Each restore of this store from a backup (central.restore_state), the latest last; and what each lost,
            # as learned from the nodes after it: one finding per node and kind.
            "CREATE TABLE restores (restore_id INTEGER PRIMARY KEY, backup_id TEXT NOT NULL, backup_at REAL NOT NULL,"
            " restored_at REAL NOT NULL, audit_head_sequence INTEGER NOT NULL, audit_head_hash TEXT NOT NULL,"
            " ca_fingerprint TEXT NOT NULL)",
            "CREATE TABLE restore_findings (finding_id INTEGER PRIMARY KEY,"
            " restore_id INTEGER NOT NULL REFERENCES restores (restore_id), kind TEXT NOT NULL, node_id TEXT NOT NULL,"
            " detail TEXT NOT NULL, found_at REAL NOT NULL, action TEXT NOT NULL, UNIQUE (restore_id, node_id, kind))",
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
_OPERATOR_COLUMNS = "name, role, serial, expires_at, created_at, created_by, revoked_at"
_OBJECTIVE_COLUMNS = (
    "name, selector, availability_percent, latency_threshold_ms, latency_percent, window_s, updated_at, updated_by"
)
_RESTORE_COLUMNS = "backup_id, backup_at, restored_at, audit_head_sequence, audit_head_hash, ca_fingerprint"
# A finding of the latest restore; nothing when there is none, or it has one of the same node and kind.
_ADD_FINDING = (
    "INSERT OR IGNORE INTO restore_findings (restore_id, kind, node_id, detail, found_at, action)"
    " SELECT restore_id, ?, ?, ?, ?, ? FROM restores ORDER BY restore_id DESC LIMIT 1"
)
_BURST_COLUMNS = (
    "hour, node_id, upstream, tenant, data_class, currency, requests, prompt_tokens, completion_tokens, cost, last_at"
)
_ADD_ROLLUP = (
    f"INSERT INTO rollups (scope, period_s, start, {', '.join(ROLLUP_VALUE_COLUMNS)})"
    f" VALUES ({', '.join('?' * (3 + len(ROLLUP_VALUE_COLUMNS)))}) ON CONFLICT (scope, period_s, start) DO UPDATE SET "
    + ", ".join(
        f"{c} = max({c}, excluded.{c})" if c == "queue_depth_max" else f"{c} = {c} + excluded.{c}"
        for c in ROLLUP_VALUE_COLUMNS
    )
)


_VALUES = ", ".join(ROLLUP_VALUE_COLUMNS)
# Each ended hour's rows, summed from its minute rows (derive_rollup_hours); an hour row already there stays.
_DERIVE_HOURS = (
    f"INSERT INTO rollups (scope, period_s, start, {_VALUES})"
    f" SELECT scope, {HOUR_S}, start / {HOUR_S} * {HOUR_S}, {ROLLUP_SUMS_SQL} FROM rollups"
    f" WHERE period_s = {MINUTE_S} AND start >= ? AND start < ? GROUP BY scope, start / {HOUR_S} * {HOUR_S}"
    " ON CONFLICT (scope, period_s, start) DO NOTHING"
)


def _hour_rows_sql(scopes: int) -> str:
    """The rows, one per hour or minute, that the hours of `scopes` scopes starting in [start, end) add up: their
    hour rows, and the minute rows of each hour not derived yet that has no hour row. Parameters: the scopes,
    start, end, the scopes again, the first hour start at or after `start` twice, the same after `end`."""
    marks = ", ".join("?" * scopes)
    return (
        f"SELECT scope, start AS hour, {_VALUES} FROM rollups"
        f" WHERE scope IN ({marks}) AND period_s = {HOUR_S} AND start >= ? AND start < ?"
        f" UNION ALL SELECT scope, start / {HOUR_S} * {HOUR_S}, {_VALUES} FROM rollups m"
        f" WHERE scope IN ({marks}) AND period_s = {MINUTE_S}"
        f" AND start >= max(?, coalesce((SELECT last_hour + {HOUR_S} FROM rollup_hours), ?)) AND start < ?"
        f" AND NOT EXISTS (SELECT 1 FROM rollups h WHERE h.scope = m.scope AND h.period_s = {HOUR_S}"
        f" AND h.start = m.start / {HOUR_S} * {HOUR_S})"
    )


def _hour_params(chunk: Sequence[str], start: float, end: float) -> tuple:
    first, after = hour_ceiling(start), hour_ceiling(end)
    return (*chunk, start, end, *chunk, first, first, after)


class SqliteFleetStore(FleetStore):
    remote = False  # calls are in-process and short

    def __init__(self, path: Path):
        self.path = Path(path)
        try:
            self._conn = connect_wal(self.path)
            if self._conn.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise sqlite3.DatabaseError("PRAGMA quick_check failed")
            apply_migrations(self._conn, _MIGRATIONS)
        except sqlite3.DatabaseError as exc:
            # Unlike the agent's cache, this file is the fleet's record: never set it aside silently.
            raise StoreError(f"central's store {self.path} cannot be opened: {exc}; restore it from a backup") from exc
        self._lock = threading.Lock()

    # -- plumbing ------------------------------------------------------------

    def _tx(self):
        return _Transaction(self._conn, self._lock)

    def _query(self, sql: str, args=()) -> list[tuple]:
        with self._lock:
            return self._conn.execute(sql, args).fetchall()

    # -- tokens --------------------------------------------------------------

    def add_token(self, token: TokenRecord) -> None:
        try:
            with self._tx() as c:
                c.execute(
                    f"INSERT INTO tokens ({_TOKEN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        token.token_id,
                        token.secret_hash,
                        json.dumps(token.labels),
                        token.created_at,
                        token.expires_at,
                        token.uses_total,
                        token.uses_left,
                        int(token.revoked),
                        token.created_by,
                    ),
                )
        except sqlite3.IntegrityError as exc:
            raise StoreError(f"token {token.token_id} already exists") from exc

    def get_token(self, token_id: str) -> TokenRecord | None:
        rows = self._query(f"SELECT {_TOKEN_COLUMNS} FROM tokens WHERE token_id = ?", (token_id,))
        return _token(rows[0]) if rows else None

    def list_tokens(self) -> list[TokenRecord]:
        return [_token(r) for r in self._query(f"SELECT {_TOKEN_COLUMNS} FROM tokens ORDER BY created_at DESC")]

    def revoke_token(self, token_id: str) -> TokenRecord | None:
        with self._tx() as c:
            row = c.execute(
                f"UPDATE tokens SET revoked = 1 WHERE token_id = ? RETURNING {_TOKEN_COLUMNS}", (token_id,)
            ).fetchone()
        return _token(row) if row else None

    # -- nodes ---------------------------------------------------------------

    def enroll(self, token_id: str, node: NodeRecord, now: float) -> bool:
        with self._tx() as c:
            spent = c.execute(
                "UPDATE tokens SET uses_left = uses_left - 1"
                " WHERE token_id = ? AND uses_left > 0 AND revoked = 0 AND expires_at > ?",
                (token_id, now),
            ).rowcount
            if not spent:
                return False
            c.execute(
                f"INSERT INTO nodes ({_NODE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                _node_row(node),
            )
        return True

    def get_node(self, node_id: str) -> NodeRecord | None:
        rows = self._query(f"SELECT {_NODE_COLUMNS} FROM nodes WHERE node_id = ?", (node_id,))
        return _node(rows[0]) if rows else None

    def list_nodes(
        self, selector: dict[str, str] | None = None, after_node_id: str = "", limit: int | None = None
    ) -> list[NodeRecord]:
        wanted = limit if limit is not None else float("inf")
        nodes: list[NodeRecord] = []
        while len(nodes) < wanted:
            rows = self._query(
                f"SELECT {_NODE_COLUMNS} FROM nodes WHERE node_id > ? ORDER BY node_id LIMIT 1000", (after_node_id,)
            )
            for node in map(_node, rows):
                if not selector or all(node.labels.get(k) == v for k, v in selector.items()):
                    nodes.append(node)
                    if len(nodes) >= wanted:
                        break
            if len(rows) < 1000:
                break
            after_node_id = rows[-1][0]
        return nodes

    def heartbeat_target(self, node_id: str) -> DesiredState | None:
        rows = self._query(
            "SELECT config_generation, desired_model, certificate_serial, labels FROM nodes"
            " WHERE node_id = ? AND revoked_at IS NULL",
            (node_id,),
        )
        return DesiredState(rows[0][0], json.loads(rows[0][1]), rows[0][2], json.loads(rows[0][3])) if rows else None

    def heartbeat_targets(self, node_ids: Sequence[str]) -> dict[str, DesiredState]:
        targets: dict[str, DesiredState] = {}
        ids = list(dict.fromkeys(node_ids))
        for at in range(0, len(ids), 500):  # under SQLite's limit of bound parameters
            chunk = ids[at : at + 500]
            rows = self._query(
                "SELECT node_id, config_generation, desired_model, certificate_serial, labels FROM nodes"
                f" WHERE node_id IN ({', '.join('?' * len(chunk))}) AND revoked_at IS NULL",
                chunk,
            )
            targets.update((r[0], DesiredState(r[1], json.loads(r[2]), r[3], json.loads(r[4]))) for r in rows)
        return targets

    def record_heartbeats(
        self, beats: dict[str, tuple[float, bytes]], health: dict[str, NodeHealth] | None = None
    ) -> None:
        if not beats:
            return
        health = health or {}
        with self._tx() as c:
            c.executemany(
                "UPDATE nodes SET last_seen_at = ?, status = ?, health = ? WHERE node_id = ? AND revoked_at IS NULL",
                [(at, status, _health_json(health.get(node_id)), node_id) for node_id, (at, status) in beats.items()],
            )

    def set_labels(self, node_id: str, labels: dict[str, str]) -> NodeRecord | None:
        with self._tx() as c:
            row = c.execute(
                f"UPDATE nodes SET labels = ? WHERE node_id = ? RETURNING {_NODE_COLUMNS}",
                (json.dumps(labels, sort_keys=True), node_id),
            ).fetchone()
        return _node(row) if row else None

    def revoke_node(self, node_id: str, at: float) -> NodeRecord | None:
        with self._tx() as c:
            row = c.execute(
                f"UPDATE nodes SET revoked_at = coalesce(revoked_at, ?) WHERE node_id = ? RETURNING {_NODE_COLUMNS}",
                (at, node_id),
            ).fetchone()
        return _node(row) if row else None

    def set_certificate(self, node_id: str, serial: str, expires_at: float) -> None:
        with self._tx() as c:
            c.execute(
                "UPDATE nodes SET certificate_serial = ?, certificate_expires_at = ? WHERE node_id = ?",
                (serial, expires_at, node_id),
            )

    # -- federated learning ----------------------------------------------------

    def set_flower_key(self, node_id: str, public_key: str) -> None:
        with self._tx() as c:
            c.execute(
                "INSERT INTO flower_keys (node_id, public_key) VALUES (?, ?) ON CONFLICT (node_id)"
                " DO UPDATE SET public_key = excluded.public_key, flower_node_id = '0', unregistered = 0",
                (node_id, public_key),
            )

    def flower_keys(self) -> list[FlowerKeyRecord]:
        rows = self._query(
            "SELECT k.node_id, k.public_key, k.flower_node_id, n.revoked_at IS NOT NULL,"
            " k.unregistered FROM flower_keys k JOIN nodes n USING (node_id) ORDER BY k.node_id"
        )
        return [FlowerKeyRecord(r[0], r[1], int(r[2]), bool(r[3]), bool(r[4])) for r in rows]

    def set_flower_registration(self, node_id: str, flower_node_id: int, unregistered: bool) -> None:
        with self._tx() as c:
            c.execute(
                "UPDATE flower_keys SET flower_node_id = ?, unregistered = ? WHERE node_id = ?",
                (str(flower_node_id), int(unregistered), node_id),
            )

    def add_federated_run(self, run: FederatedRunRecord) -> None:
        with self._tx() as c:
            c.execute(
                "INSERT INTO federated_runs (run_id, task, config, started_by, started_at, model, imported_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    str(run.run_id),
                    run.task,
                    json.dumps(run.config, sort_keys=True),
                    run.started_by,
                    run.started_at,
                    run.model,
                    run.imported_at,
                ),
            )

    def get_federated_run(self, run_id: int) -> FederatedRunRecord | None:
        rows = self._query(f"SELECT {_RUN_COLUMNS} FROM federated_runs WHERE run_id = ?", (str(run_id),))
        return _federated_run(rows[0]) if rows else None

    def list_federated_runs(self) -> list[FederatedRunRecord]:
        return [
            _federated_run(r)
            for r in self._query(f"SELECT {_RUN_COLUMNS} FROM federated_runs ORDER BY started_at DESC")
        ]

    def set_federated_run_outcome(self, run_id: int, model: str, at: float) -> None:
        with self._tx() as c:
            c.execute("UPDATE federated_runs SET model = ?, imported_at = ? WHERE run_id = ?", (model, at, str(run_id)))

    # -- models --------------------------------------------------------------

    def add_model(self, model: ModelRecord) -> None:
        try:
            with self._tx() as c:
                c.execute(
                    f"INSERT INTO models ({_MODEL_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        model.name,
                        model.version,
                        model.format,
                        model.sha256,
                        model.size,
                        json.dumps(model.params, sort_keys=True),
                        model.created_at,
                        model.pushed_by,
                        model.manifest,
                        model.signature,
                    ),
                )
        except sqlite3.IntegrityError as exc:
            raise StoreError(f"{model.name}@{model.version} already exists") from exc

    def get_model(self, name: str, version: str) -> ModelRecord | None:
        rows = self._query(f"SELECT {_MODEL_COLUMNS} FROM models WHERE name = ? AND version = ?", (name, version))
        return _model(rows[0]) if rows else None

    def list_models(self, name: str = "") -> list[ModelRecord]:
        rows = self._query(
            f"SELECT {_MODEL_COLUMNS} FROM models WHERE ? = '' OR name = ? ORDER BY name, created_at DESC", (name, name)
        )
        return [_model(r) for r in rows]

    def delete_model(self, name: str, version: str) -> list[str]:
        with self._tx() as c:
            row = c.execute("SELECT sha256 FROM models WHERE name = ? AND version = ?", (name, version)).fetchone()
            if row is None:
                raise StoreError(f"no model {name}@{version}")
            # Assignments name a version by its bytes: another version with the same bytes still counts.
            assigned = [
                r[0]
                for r in c.execute(
                    "SELECT node_id FROM nodes WHERE desired_sha256 = ? AND json_extract(desired_model, '$.name') = ?"
                    " AND json_extract(desired_model, '$.version') = ? ORDER BY node_id",
                    (row[0], name, version),
                )
            ]
            if not assigned:
                c.execute("DELETE FROM models WHERE name = ? AND version = ?", (name, version))
        return assigned

    def models_with_sha256(self, sha256: str) -> list[ModelRecord]:
        return [_model(r) for r in self._query(f"SELECT {_MODEL_COLUMNS} FROM models WHERE sha256 = ?", (sha256,))]

    def nodes_assigned(self, sha256: str) -> list[str]:
        return [
            r[0] for r in self._query("SELECT node_id FROM nodes WHERE desired_sha256 = ? ORDER BY node_id", (sha256,))
        ]

    def assign_model(self, node_id: str, model: ModelRecord | None) -> NodeRecord | None:
        desired = model.desired if model else {}
        with self._tx() as c:
            row = c.execute(
                f"UPDATE nodes SET desired_model = ?, desired_sha256 = ?,"
                f" config_generation = config_generation + 1 WHERE node_id = ? RETURNING {_NODE_COLUMNS}",
                (json.dumps(desired, sort_keys=True), model.sha256 if model else "", node_id),
            ).fetchone()
        return _node(row) if row else None

    # -- rollouts ------------------------------------------------------------

    def add_rollout(self, rollout_id: str, spec: str, state: str, created_at: float) -> None:
        with self._tx() as c:
            c.execute("INSERT INTO rollouts VALUES (?, ?, ?, ?)", (rollout_id, spec, state, created_at))

    def set_rollout_state(self, rollout_id: str, state: str) -> None:
        with self._tx() as c:
            c.execute("UPDATE rollouts SET state = ? WHERE rollout_id = ?", (state, rollout_id))

    def get_rollout(self, rollout_id: str) -> tuple[str, str, float] | None:
        rows = self._query("SELECT spec, state, created_at FROM rollouts WHERE rollout_id = ?", (rollout_id,))
        return tuple(rows[0]) if rows else None

    def list_rollouts(self) -> list[tuple[str, str, str, float]]:
        return [
            tuple(r)
            for r in self._query("SELECT rollout_id, spec, state, created_at FROM rollouts ORDER BY created_at DESC")
        ]

    def list_rollouts_in_phases(self, phases: Sequence[str]) -> list[tuple[str, str, str, float]]:
        if not phases:
            return []
        rows = self._query(
            "SELECT rollout_id, spec, state, created_at FROM rollouts"
            f" WHERE {_ROLLOUT_PHASE} IN ({', '.join('?' * len(phases))}) ORDER BY created_at DESC",
            list(phases),
        )
        return [tuple(r) for r in rows]

    def advance_rollout(
        self, rollout_id: str, expected_state: str, state: str, events: Sequence[AuditEvent] = ()
    ) -> bool:
        with self._tx() as c:
            changed = c.execute(
                "UPDATE rollouts SET state = ? WHERE rollout_id = ? AND state = ?", (state, rollout_id, expected_state)
            ).rowcount
            if changed:
                for event in events:
                    _append_audit(c, event)
        return bool(changed)

    # -- replicas and leadership ---------------------------------------------

    def announce_replica(self, replica: ReplicaRecord) -> None:
        with self._tx() as c:
            c.execute(
                "INSERT OR REPLACE INTO replicas (replica_id, fleet_address, enroll_address, started_at, last_seen_at)"
                " VALUES (?, ?, ?, ?, ?)",
                astuple(replica),
            )

    def list_replicas(self) -> list[ReplicaRecord]:
        rows = self._query(
            "SELECT replica_id, fleet_address, enroll_address, started_at, last_seen_at FROM replicas"
            " ORDER BY replica_id"
        )
        return [ReplicaRecord(*r) for r in rows]

    def forget_replica(self, replica_id: str) -> None:
        with self._tx() as c:
            c.execute("DELETE FROM replicas WHERE replica_id = ?", (replica_id,))

    def claim_leadership(self, replica_id: str, at: float) -> int:
        with self._tx() as c:
            row = c.execute(
                "INSERT INTO leadership (singleton, replica_id, term, since) VALUES (1, ?, 1, ?)"
                " ON CONFLICT (singleton) DO UPDATE SET replica_id = excluded.replica_id, term = term + 1,"
                " since = excluded.since RETURNING term",
                (replica_id, at),
            ).fetchone()
        return int(row[0])

    def leadership(self) -> LeaderRecord | None:
        rows = self._query("SELECT replica_id, term, since FROM leadership")
        return LeaderRecord(*rows[0]) if rows else None

    def bind_ca(self, fingerprint: str) -> str:
        with self._tx() as c:
            c.execute("INSERT OR IGNORE INTO fleet (key, value) VALUES ('ca_fingerprint', ?)", (fingerprint,))
            return c.execute("SELECT value FROM fleet WHERE key = 'ca_fingerprint'").fetchone()[0]

    def rebind_ca(self, previous: str, current: str) -> str:
        with self._tx() as c:
            c.execute("UPDATE fleet SET value = ? WHERE key = 'ca_fingerprint' AND value = ?", (current, previous))
            return c.execute("SELECT value FROM fleet WHERE key = 'ca_fingerprint'").fetchone()[0]

    def fleet_value(self, key: str) -> str | None:
        rows = self._query("SELECT value FROM fleet WHERE key = ?", (key,))
        return rows[0][0] if rows else None

    def set_fleet_value(self, key: str, value: str | None) -> None:
        if key == "ca_fingerprint":
            raise StoreError("the CA binding changes through bind_ca and rebind_ca only")
        with self._tx() as c:
            if value is None:
                c.execute("DELETE FROM fleet WHERE key = ?", (key,))
            else:
                c.execute("INSERT OR REPLACE INTO fleet (key, value) VALUES (?, ?)", (key, value))

    def replace_model_signatures(self, signatures: Sequence[tuple[str, str, str]]) -> int:
        changed = 0
        with self._tx() as c:
            for name, version, signature in signatures:
                changed += c.execute(
                    "UPDATE models SET signature = ? WHERE name = ? AND version = ?", (signature, name, version)
                ).rowcount
                c.execute(
                    "UPDATE nodes SET desired_model = json_set(desired_model, '$.signature', ?)"
                    " WHERE json_extract(desired_model, '$.name') = ? AND json_extract(desired_model, '$.version') = ?",
                    (signature, name, version),
                )
        return changed

    def leader_lock(self) -> LeaderLock:
        return FileLeaderLock(self.path.with_name(self.path.name + ".leader"))

    # -- operators -------------------------------------------------------------

    def add_operator(self, operator: OperatorRecord) -> None:
        try:
            with self._tx() as c:
                c.execute(
                    f"INSERT INTO operators ({_OPERATOR_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)", astuple(operator)
                )
        except sqlite3.IntegrityError as exc:
            raise StoreError(f"operator {operator.name} already exists") from exc

    def add_first_operator(self, operator: OperatorRecord) -> bool:
        with self._tx() as c:
            return bool(
                c.execute(
                    f"INSERT INTO operators ({_OPERATOR_COLUMNS}) SELECT ?, ?, ?, ?, ?, ?, ?"
                    " WHERE NOT EXISTS (SELECT 1 FROM operators)",
                    astuple(operator),
                ).rowcount
            )

    def get_operator(self, name: str) -> OperatorRecord | None:
        rows = self._query(f"SELECT {_OPERATOR_COLUMNS} FROM operators WHERE name = ?", (name,))
        return OperatorRecord(*rows[0]) if rows else None

    def list_operators(self) -> list[OperatorRecord]:
        return [OperatorRecord(*r) for r in self._query(f"SELECT {_OPERATOR_COLUMNS} FROM operators ORDER BY name")]

    def revoke_operator(self, name: str, at: float) -> OperatorRecord | None:
        with self._tx() as c:
            row = c.execute(f"SELECT {_OPERATOR_COLUMNS} FROM operators WHERE name = ?", (name,)).fetchone()
            if row is None:
                return None
            operator = OperatorRecord(*row)
            if operator.revoked_at is None and operator.role == "admin":
                admins = c.execute("SELECT count(*) FROM operators WHERE role = 'admin' AND revoked_at IS NULL")
                if admins.fetchone()[0] <= 1:
                    return operator  # the last admin: kept
            row = c.execute(
                f"UPDATE operators SET revoked_at = coalesce(revoked_at, ?) WHERE name = ?"
                f" RETURNING {_OPERATOR_COLUMNS}",
                (at, name),
            ).fetchone()
        return OperatorRecord(*row)

    def renew_operator(self, name: str, old_serial: str, serial: str, expires_at: float) -> OperatorRecord | None:
        with self._tx() as c:
            row = c.execute(
                f"UPDATE operators SET serial = ?, expires_at = ? WHERE name = ? AND serial = ? AND revoked_at IS NULL"
                f" RETURNING {_OPERATOR_COLUMNS}",
                (serial, expires_at, name, old_serial),
            ).fetchone()
        return OperatorRecord(*row) if row else None

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
        insert = (
            "INSERT OR IGNORE INTO reports (node_id, sequence, observed_at, kind, payload, received_at)"
            " VALUES (?, ?, ?, ?, ?, ?)"
        )
        with self._tx() as c:
            base = _spool_base(c, node_id, epoch, reports, restart_events)
            if routing:
                for r in reports:
                    row = (node_id, base + r.sequence, r.observed_at, r.kind, r.payload, received)
                    if c.execute(insert, row).rowcount and r.sequence in routing:
                        _add_routing(c, node_id, received, routing[r.sequence])
            else:
                c.executemany(
                    insert, [(node_id, base + r.sequence, r.observed_at, r.kind, r.payload, received) for r in reports]
                )
            if dropped_count:  # saturates, so a node's total never leaves a signed 64-bit integer
                c.execute(
                    "UPDATE nodes SET dropped_reports = MIN(dropped_reports + ?, ?) WHERE node_id = ?",
                    (dropped_count, reports_mod.MAX_AGENT_SEQUENCE, node_id),
                )
            sizes = c.execute(
                "SELECT sequence, length(payload) FROM reports WHERE node_id = ? ORDER BY sequence DESC", (node_id,)
            ).fetchall()
            through = reports_mod.prune_through(sizes, keep, keep_bytes)
            if through is not None:
                c.execute("DELETE FROM reports WHERE node_id = ? AND sequence <= ?", (node_id, through))
            top = sizes[0][0] if sizes else 0
        return max(0, top - base)

    def spool_epoch(self, node_id: str) -> str:
        rows = self._query("SELECT spool_epoch FROM nodes WHERE node_id = ?", (node_id,))
        return rows[0][0] if rows else ""

    def recent_reports(self, node_id: str, limit: int) -> list[ReportRecord]:
        rows = self._query(
            "SELECT sequence, observed_at, kind, payload FROM reports WHERE node_id = ? ORDER BY sequence DESC LIMIT ?",
            (node_id, limit),
        )
        return [ReportRecord(*r) for r in reversed(rows)]

    # -- routing totals --------------------------------------------------------

    def add_routing(self, reports: dict[str, tuple[float, RoutingReport]]) -> None:
        if not reports:
            return
        with self._tx() as c:
            for node_id, (at, report) in reports.items():
                _add_routing(c, node_id, at, report)

    def routing_totals(
        self, node_id: str = "", after_node_id: str = "", limit: int | None = None
    ) -> list[NodeRoutingRecord]:
        with self._lock:
            heads = self._conn.execute(
                "SELECT h.node_id, n.hostname, h.audit_sequence, h.audit_head_hash, h.updated_at FROM routing_heads h"
                " JOIN nodes n USING (node_id) WHERE (? = '' OR h.node_id = ?) AND h.node_id > ?"
                " ORDER BY h.node_id LIMIT ?",
                (node_id, node_id, after_node_id, -1 if limit is None else limit),
            ).fetchall()
            totals = (
                self._conn.execute(
                    "SELECT node_id, data_class, route, count FROM routing_totals WHERE node_id >= ? AND node_id <= ?"
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
        with self._tx() as c:
            return _append_audit(c, AuditEvent(at, actor, action, target, outcome, detail, peer))

    def list_audit(self, after_sequence: int = 0, limit: int = 100) -> list[AuditEntry]:
        rows = self._query(
            f"SELECT {_AUDIT_COLUMNS} FROM audit WHERE sequence > ? ORDER BY sequence LIMIT ?", (after_sequence, limit)
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
        with self._tx() as c:
            latest = c.execute("SELECT max(sequence) FROM audit_anchors").fetchone()[0]
            if latest is not None and anchor.sequence <= latest:
                raise StoreError(f"the audit log is pruned up to {latest} already")
            row = c.execute("SELECT hash FROM audit WHERE sequence = ?", (anchor.sequence,)).fetchone()
            if row is None or row[0] != anchor.hash:
                raise StoreError(f"audit entry {anchor.sequence} with hash {anchor.hash} is not in the log")
            if c.execute("SELECT 1 FROM audit WHERE sequence > ? LIMIT 1", (anchor.sequence,)).fetchone() is None:
                raise StoreError("the newest audit entry is never pruned: the next one links to it")
            c.execute("INSERT INTO audit_anchors (sequence, hash, at, signature) VALUES (?, ?, ?, ?)", astuple(anchor))
            return c.execute("DELETE FROM audit WHERE sequence <= ?", (anchor.sequence,)).rowcount

    # -- history (issue 17) ------------------------------------------------------

    def add_rollups(self, deltas) -> None:
        deltas = list(deltas)
        if not deltas:
            return
        with self._tx() as c:
            (last_hour,) = c.execute("SELECT last_hour FROM rollup_hours").fetchone()
            late = late_hour_deltas(deltas, last_hour)
            c.executemany(_ADD_ROLLUP, [(d.scope, d.period_s, d.start, *d.values()) for d in (*deltas, *late)])

    def derive_rollup_hours(self, until: float) -> int:
        end = int(until) // HOUR_S * HOUR_S  # hours starting before it have ended
        with self._tx() as c:
            (last_hour,) = c.execute("SELECT last_hour FROM rollup_hours").fetchone()
            if last_hour is None:  # never derived: from the first minute kept
                (first,) = c.execute("SELECT min(start) FROM rollups WHERE period_s = ?", (MINUTE_S,)).fetchone()
                begin = end if first is None else first // HOUR_S * HOUR_S
            else:
                begin = last_hour + HOUR_S
            if begin >= end:
                if last_hour is None:
                    c.execute("UPDATE rollup_hours SET last_hour = ?", (end - HOUR_S,))
                return 0
            written = c.execute(_DERIVE_HOURS, (begin, end)).rowcount
            c.execute("UPDATE rollup_hours SET last_hour = ?", (end - HOUR_S,))
            return written

    def rollup_series(
        self, scopes: Sequence[str], period_s: int, start: float, end: float
    ) -> dict[str, list[RollupRow]]:
        series: dict[str, list[RollupRow]] = {scope: [] for scope in scopes}
        wanted = list(series)
        for at in range(0, len(wanted), 400):  # under SQLite's limit of bound parameters
            chunk = wanted[at : at + 400]
            if period_s == HOUR_S:
                rows = self._query(
                    f"SELECT scope, {HOUR_S}, hour, {ROLLUP_SUMS_SQL} FROM ({_hour_rows_sql(len(chunk))})"
                    " GROUP BY scope, hour ORDER BY scope, hour",
                    _hour_params(chunk, start, end),
                )
            else:
                rows = self._query(
                    f"SELECT scope, period_s, start, {_VALUES} FROM rollups"
                    f" WHERE scope IN ({', '.join('?' * len(chunk))}) AND period_s = ? AND start >= ? AND start < ?"
                    " ORDER BY scope, start",
                    (*chunk, period_s, start, end),
                )
            for r in rows:
                series[r[0]].append(stored_rollup_row(r))
        return series

    def rollup_sums(self, scopes: Sequence[str], period_s: int, start: float, end: float) -> RollupRow:
        total = RollupRow("", period_s, int(start))
        wanted = list(dict.fromkeys(scopes))
        for at in range(0, len(wanted), 400):
            chunk = wanted[at : at + 400]
            if period_s == HOUR_S:
                row = self._query(
                    f"SELECT {ROLLUP_SUMS_SQL} FROM ({_hour_rows_sql(len(chunk))})", _hour_params(chunk, start, end)
                )[0]
            else:
                row = self._query(
                    f"SELECT {ROLLUP_SUMS_SQL} FROM rollups"
                    f" WHERE scope IN ({', '.join('?' * len(chunk))}) AND period_s = ? AND start >= ? AND start < ?",
                    (*chunk, period_s, start, end),
                )[0]
            total = total.plus(RollupRow.from_values("", period_s, int(start), row))
        return total

    def prune_rollups(self, now: float) -> int:
        with self._tx() as c:
            gone = sum(
                c.execute("DELETE FROM rollups WHERE period_s = ? AND start < ?", (period, now - keep)).rowcount
                for period, keep in ROLLUP_KEEP_S.items()
            )
            return gone + c.execute("DELETE FROM burst_usage WHERE hour < ?", (now - BURST_USAGE_KEEP_S,)).rowcount

    def add_burst_usage(self, rows) -> None:
        rows = list(rows)
        if not rows:
            return
        with self._tx() as c:
            c.executemany(
                f"INSERT INTO burst_usage ({_BURST_COLUMNS}) SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?"
                " WHERE EXISTS (SELECT 1 FROM nodes WHERE node_id = ?)"
                " ON CONFLICT (hour, node_id, upstream, tenant, data_class, currency) DO UPDATE SET"
                " requests = requests + excluded.requests, prompt_tokens = prompt_tokens + excluded.prompt_tokens,"
                " completion_tokens = completion_tokens + excluded.completion_tokens, cost = cost + excluded.cost,"
                " last_at = max(last_at, excluded.last_at)",
                [(*r.values(), r.node_id) for r in rows],
            )

    def burst_usage_rows(self, since: float = 0.0) -> list[tuple[BurstUsageRecord, dict[str, str]]]:
        rows = self._query(
            f"SELECT {', '.join('b.' + c for c in _BURST_COLUMNS.split(', '))}, n.labels FROM burst_usage b"
            " JOIN nodes n USING (node_id) WHERE b.hour > ?"
            " ORDER BY b.hour, b.node_id, b.upstream, b.tenant, b.data_class, b.currency",
            (since - 3600,),
        )
        return [(BurstUsageRecord(*r[:11]), json.loads(r[11])) for r in rows]

    def burst_usage_totals(self, since: float = 0.0) -> list[tuple[BurstUsageRecord, Mapping[str, str]]]:
        rows = self._query(
            f"SELECT {', '.join('b.' + c for c in _BURST_COLUMNS.split(', '))}, n.labels FROM (SELECT max(hour) AS"
            " hour, node_id, upstream, tenant, data_class, currency, sum(requests) AS requests, sum(prompt_tokens) AS"
            " prompt_tokens, sum(completion_tokens) AS completion_tokens, sum(cost) AS cost, max(last_at) AS last_at"
            " FROM burst_usage WHERE hour > ? GROUP BY node_id, upstream, tenant, data_class, currency) b"
            " JOIN nodes n USING (node_id) ORDER BY b.node_id, b.upstream, b.tenant, b.data_class, b.currency",
            (since - 3600,),
        )
        return burst_totals_with_labels(rows)

    def set_objective(self, objective: ObjectiveRecord) -> None:
        o = objective
        with self._tx() as c:
            c.execute(
                f"INSERT OR REPLACE INTO objectives ({_OBJECTIVE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    o.name,
                    json.dumps(o.selector, sort_keys=True),
                    o.availability_percent,
                    o.latency_threshold_ms,
                    o.latency_percent,
                    o.window_s,
                    o.updated_at,
                    o.updated_by,
                ),
            )

    def list_objectives(self) -> list[ObjectiveRecord]:
        rows = self._query(f"SELECT {_OBJECTIVE_COLUMNS} FROM objectives ORDER BY name")
        return [ObjectiveRecord(r[0], json.loads(r[1]), *r[2:]) for r in rows]

    def delete_objective(self, name: str) -> bool:
        with self._tx() as c:
            return bool(c.execute("DELETE FROM objectives WHERE name = ?", (name,)).rowcount)

    # -- restores (issue 18) ----------------------------------------------------

    def add_restore(self, point: RestorePoint, findings: Sequence[RestoreFinding] = ()) -> None:
        with self._tx() as c:
            c.execute(f"INSERT INTO restores ({_RESTORE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)", astuple(point))
            for finding in findings:
                c.execute(_ADD_FINDING, finding.row())

    def latest_restore(self) -> RestorePoint | None:
        rows = self._query(f"SELECT {_RESTORE_COLUMNS} FROM restores ORDER BY restore_id DESC LIMIT 1")
        return RestorePoint(*rows[0]) if rows else None

    def restore_findings(self, limit: int | None = None) -> list[RestoreFinding]:
        rows = self._query(
            "SELECT kind, node_id, detail, found_at, action FROM restore_findings"
            " WHERE restore_id = (SELECT max(restore_id) FROM restores) ORDER BY finding_id LIMIT ?",
            (-1 if limit is None else limit,),
        )
        return [RestoreFinding(*r) for r in rows]

    def add_restore_finding(self, finding: RestoreFinding) -> bool:
        with self._tx() as c:
            return bool(c.execute(_ADD_FINDING, finding.row()).rowcount)

    def adopt_node(self, node: NodeRecord, finding: RestoreFinding) -> bool:
        with self._tx() as c:
            added = c.execute(
                f"INSERT OR IGNORE INTO nodes ({_NODE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                _node_row(node),
            ).rowcount
            if added:
                c.execute(_ADD_FINDING, finding.row())
        return bool(added)

    def adopt_certificate(
        self, node_id: str, replaced_serial: str, serial: str, expires_at: float, finding: RestoreFinding
    ) -> bool:
        with self._tx() as c:
            taken = c.execute(
                "UPDATE nodes SET certificate_serial = ?, certificate_expires_at = ?"
                " WHERE node_id = ? AND certificate_serial = ? AND revoked_at IS NULL",
                (serial, expires_at, node_id, replaced_serial),
            ).rowcount
            if taken:
                c.execute(_ADD_FINDING, finding.row())
        return bool(taken)

    def adopt_assignment(
        self,
        node_id: str,
        stored_generation: int,
        desired_model: dict[str, str],
        generation: int,
        finding: RestoreFinding,
    ) -> bool:
        with self._tx() as c:
            row = c.execute(
                "SELECT config_generation FROM nodes WHERE node_id = ? AND revoked_at IS NULL", (node_id,)
            ).fetchone()
            if row is None or row[0] != stored_generation:
                return False
            if not c.execute(_ADD_FINDING, finding.row()).rowcount:
                return False
            c.execute(
                "UPDATE nodes SET desired_model = ?, desired_sha256 = ?, config_generation = ? WHERE node_id = ?",
                (json.dumps(desired_model, sort_keys=True), desired_model.get("sha256", ""), generation, node_id),
            )
        return True

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _append_audit(c: sqlite3.Connection, event: AuditEvent) -> AuditEntry:
    """Inside a transaction (IMMEDIATE: no other writer can read the same head): chain the event to the log."""
    last = c.execute("SELECT sequence, hash FROM audit ORDER BY sequence DESC LIMIT 1").fetchone()
    sequence, previous = (last[0] + 1, last[1]) if last else (1, GENESIS_HASH)
    e = event
    digest = entry_hash(sequence, e.at, e.actor, e.action, e.target, e.outcome, e.detail, e.peer, previous)
    entry = AuditEntry(sequence, e.at, e.actor, e.action, e.target, e.outcome, e.detail, e.peer, previous, digest)
    c.execute(f"INSERT INTO audit ({_AUDIT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", astuple(entry))
    return entry


class FileLeaderLock(LeaderLock):
    """An exclusive, non-blocking flock on a file beside the database: one holder per host, which is
    all a SQLite store serves. The kernel drops the lock when the holding process dies."""

    def __init__(self, path: Path):
        self.path = path
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        if self.held():
            return True
        self.release()
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StoreError(f"leader lock {self.path} cannot be opened: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # BlockingIOError: another holder has it
            os.close(fd)
            return False
        self._fd = fd
        return True

    def held(self) -> bool:
        if self._fd is None:
            return False
        try:
            # A lock on a file that was since removed or replaced excludes no one any more.
            return os.fstat(self._fd).st_ino == os.stat(self.path).st_ino
        except OSError:
            return False

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the only descriptor drops the flock


def _add_routing(c: sqlite3.Connection, node_id: str, at: float, report: RoutingReport) -> None:
    """Inside a transaction: add a report's counts to the node's totals (folded past the node's bound on
    pairs, central.routing.fold) and keep its head if not older."""
    known = "WHERE EXISTS (SELECT 1 FROM nodes WHERE node_id = ?)"
    counts = {pair: count for pair, count in report.counts.items() if count}
    if counts:
        held = c.execute("SELECT data_class, route FROM routing_totals WHERE node_id = ?", (node_id,)).fetchall()
        counts = routing_mod.fold({(r[0], r[1]) for r in held}, counts)
    c.executemany(
        "INSERT INTO routing_totals (node_id, data_class, route, count, updated_at) SELECT ?, ?, ?, ?, ? "
        + known
        + " ON CONFLICT (node_id, data_class, route) DO UPDATE SET count = count + excluded.count,"
        " updated_at = max(updated_at, excluded.updated_at)",
        [(node_id, data_class, route, count, at, node_id) for (data_class, route), count in counts.items()],
    )
    c.execute(
        "INSERT INTO routing_heads (node_id, audit_sequence, audit_head_hash, updated_at) SELECT ?, ?, ?, ? "
        + known
        + " ON CONFLICT (node_id) DO UPDATE SET updated_at = max(updated_at, excluded.updated_at),"
        " audit_head_hash = CASE WHEN excluded.audit_sequence >= audit_sequence"
        " THEN excluded.audit_head_hash ELSE audit_head_hash END,"
        " audit_sequence = max(audit_sequence, excluded.audit_sequence)",
        (node_id, report.audit_sequence, report.audit_head_hash, at, node_id),
    )


def _spool_base(
    c: sqlite3.Connection, node_id: str, epoch: str, reports: list[ReportRecord], restart_events: Sequence[AuditEvent]
) -> int:
    """Inside a transaction: the base this batch of the node's reports is numbered from (central.reports), after
    recording a new spool epoch and, when it restarts the numbering, appending `restart_events`."""
    row = c.execute("SELECT spool_epoch, spool_base FROM nodes WHERE node_id = ?", (node_id,)).fetchone()
    if row is None:
        return 0
    held_epoch, held_base = row
    if not epoch or not reports or epoch == held_epoch:
        return held_base
    top = c.execute("SELECT max(sequence) FROM reports WHERE node_id = ?", (node_id,)).fetchone()[0] or 0
    base, restarted = reports_mod.next_base(held_epoch, held_base, top, epoch, min(r.sequence for r in reports))
    c.execute("UPDATE nodes SET spool_epoch = ?, spool_base = ? WHERE node_id = ?", (epoch, base, node_id))
    if restarted:
        for event in restart_events:
            _append_audit(c, event)
    return base


def _federated_run(row) -> FederatedRunRecord:
    return FederatedRunRecord(int(row[0]), row[1], json.loads(row[2]), row[3], row[4], row[5], row[6])


class _Transaction:
    """`with store._tx() as conn:` — one IMMEDIATE transaction under the store's lock."""

    def __init__(self, conn: sqlite3.Connection, lock: threading.Lock):
        self._conn, self._lock = conn, lock

    def __enter__(self) -> sqlite3.Connection:
        self._lock.acquire()
        self._conn.execute("BEGIN IMMEDIATE")
        return self._conn

    def __exit__(self, exc_type, exc, tb):
        try:
            self._conn.execute("ROLLBACK" if exc_type else "COMMIT")
        finally:
            self._lock.release()


def _token(r) -> TokenRecord:
    return TokenRecord(r[0], r[1], json.loads(r[2]), r[3], r[4], r[5], r[6], bool(r[7]), r[8])


def _model(r) -> ModelRecord:
    return ModelRecord(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]), r[6], r[7], bytes(r[8]), r[9])


def _node(r) -> NodeRecord:
    return NodeRecord(
        node_id=r[0],
        labels=json.loads(r[1]),
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
        desired_model=json.loads(r[12]),
        health=NodeHealth(**json.loads(r[13])) if r[13] else None,
    )


def _node_row(n: NodeRecord) -> tuple:
    return (
        n.node_id,
        json.dumps(n.labels, sort_keys=True),
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
        json.dumps(n.desired_model, sort_keys=True),
        _health_json(n.health),
    )


def _health_json(health: NodeHealth | None) -> str | None:
    return json.dumps(asdict(health), sort_keys=True) if health is not None else None
