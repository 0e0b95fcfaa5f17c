"""Central's store contract: the records it keeps and :class:`FleetStore`, what central needs from storage.

Every method is one transaction. Status reports are opaque bytes (a
serialized ``edgefleet.v1.NodeStatus``), kept for operators to read: the store
does not read them. What central itself decides on arrives beside them, decoded
once at the servicer: :class:`NodeHealth` for the rollout controller, and the
routing counts as :class:`central.routing.RoutingReport` values.
"""

from __future__ import annotations

import abc
import dataclasses
import json
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from central.audit import AuditAnchor, AuditEntry
from central.errors import CentralError
from central.routing import RoutingReport
from edgefleet import histogram_buckets


class StoreError(CentralError):
    """The store cannot do what was asked; the message says why."""


@dataclass(frozen=True)
class TokenRecord:
    token_id: str
    secret_hash: str  # sha256 hex of the secret half; the secret itself is never stored
    labels: dict[str, str]
    created_at: float
    expires_at: float
    uses_total: int
    uses_left: int
    revoked: bool
    created_by: str


@dataclass(frozen=True)
class NodeHealth:
    """What the rollout controller reads of a node's latest status, decoded once from its heartbeat."""

    active_sha256: str = ""  # the model serving now
    activation_sha256: str = ""  # the model the activation below is about
    activation_state: str = ""  # "" or one of central.rollout.ACTIVATION_STATES
    activation_reason: str = ""
    activation_since: float = 0.0  # when the activation reached its state (unix seconds)
    requests: int = 0
    errors: int = 0
    latency_p99_ms: float = 0.0


@dataclass(frozen=True)
class NodeRecord:
    node_id: str
    labels: dict[str, str]
    hostname: str
    enrolled_at: float
    token_id: str
    certificate_serial: str
    certificate_expires_at: float
    last_seen_at: float | None = None
    status: bytes | None = None
    revoked_at: float | None = None
    dropped_reports: int = 0
    config_generation: int = 0
    desired_model: dict[str, str] = field(default_factory=dict)
    health: NodeHealth | None = None  # None until the node's first heartbeat (since the store kept health)


@dataclass(frozen=True)
class ReportRecord:
    sequence: int
    observed_at: float
    kind: str  # "status" or "event"
    payload: bytes


@dataclass(frozen=True)
class FlowerKeyRecord:
    """A node's Flower SuperNode key and where it stands with the SuperLink."""

    node_id: str
    public_key: str  # OpenSSH line
    flower_node_id: int  # 0 until registered
    revoked: bool
    unregistered: bool


@dataclass(frozen=True)
class FederatedRunRecord:
    run_id: int
    task: str
    config: dict
    started_by: str
    started_at: float
    model: str  # NAME@VERSION made from the outcome, '' until imported
    imported_at: float | None


@dataclass(frozen=True)
class ModelRecord:
    name: str
    version: str
    format: str
    sha256: str
    size: int
    params: dict[str, str]
    created_at: float
    pushed_by: str
    manifest: bytes  # the canonical JSON that `signature` signs
    signature: str

    @property
    def desired(self) -> dict[str, str]:
        """What a node's desired state carries for this version (heartbeats read it in one row)."""
        return {
            "name": self.name,
            "version": self.version,
            "sha256": self.sha256,
            "manifest": self.manifest.decode(),
            "signature": self.signature,
        }


@dataclass(frozen=True)
class NodeRoutingRecord:
    """A node's routing totals: every report's counts added up, and the newest audit head heard of."""

    node_id: str
    hostname: str
    counts: list[tuple[str, str, int]]  # (data_class, route, requests), sorted
    audit_sequence: int
    audit_head_hash: str
    updated_at: float


def node_routing_records(heads: Sequence[tuple], totals: Iterable[tuple]) -> list[NodeRoutingRecord]:
    """A page of NodeRoutingRecords from its rows: `heads` (node_id, hostname, audit_sequence, audit_head_hash,
    updated_at) in page order, `totals` (node_id, data_class, route, count) sorted, for the same nodes."""
    counts: dict[str, list[tuple[str, str, int]]] = {}
    for node, data_class, route, count in totals:
        counts.setdefault(node, []).append((data_class, route, count))
    return [NodeRoutingRecord(h[0], h[1], counts.get(h[0], []), h[2], h[3], h[4]) for h in heads]


@dataclass(frozen=True)
class DesiredState:
    config_generation: int
    model: dict[str, str]
    # The serial of the certificate central last issued to the node: a beat under any other is refused.
    certificate_serial: str = ""
    # The node's labels, read in the same row: the heartbeat's rollups are kept per label group (central.rollups).
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class OperatorRecord:
    """An operator (an AdminService caller) and the one certificate of theirs central accepts."""

    name: str
    role: str  # "admin" (may change the fleet) or "viewer" (may only read it)
    serial: str  # the serial of the certificate central last issued to the operator; any other is refused
    expires_at: float  # when that certificate expires
    created_at: float
    created_by: str  # the actor that created it ("central:init" for the data dir's first admin)
    revoked_at: float | None = None


@dataclass(frozen=True)
class ReplicaRecord:
    """A central replica serving the fleet, as it announced itself."""

    replica_id: str
    fleet_address: str  # host:port agents heartbeat to
    enroll_address: str  # host:port agents enroll at
    started_at: float
    last_seen_at: float  # the replica's latest announcement


@dataclass(frozen=True)
class LeaderRecord:
    """The replica that last claimed leadership, and the term it got."""

    replica_id: str
    term: int  # 1 for the first claim, one more for each claim after it
    since: float


# What an audit entry keeps of each text field. A refusal's target and detail carry what the caller sent (a
# claimed node id, a model name), which can be megabytes: every store keeps the start and says how much more.
AUDIT_FIELD_MAX_CHARS = 1024


def _bounded(text: str) -> str:
    if len(text) <= AUDIT_FIELD_MAX_CHARS:
        return text
    return f"{text[:AUDIT_FIELD_MAX_CHARS]}... ({len(text) - AUDIT_FIELD_MAX_CHARS} more characters)"


@dataclass(frozen=True)
class AuditEvent:
    """An audit entry to append: what :meth:`FleetStore.append_audit` takes, as one value; its text fields
    bounded to :data:`AUDIT_FIELD_MAX_CHARS` as it is made."""

    at: float
    actor: str
    action: str
    target: str
    outcome: str
    detail: str
    peer: str

    def __post_init__(self) -> None:
        for name in ("actor", "action", "target", "detail", "peer"):
            object.__setattr__(self, name, _bounded(getattr(self, name)))


# -- restores (issue 18): the backup a store was restored from, and what the restore lost -------------------


@dataclass(frozen=True)
class RestorePoint:
    """A restore of the store from a backup (central.restore_state.record_restore): which backup, the recovery
    point it holds, when it was restored, the audit entry it ended at and the fleet CA it held."""

    backup_id: str  # sha256 hex of the backup's manifest
    backup_at: float  # when the backup's snapshot began (unix seconds): nothing after it is in the store
    restored_at: float
    audit_head_sequence: int
    audit_head_hash: str
    ca_fingerprint: str  # sha256:HEX of the fleet CA in the backup


@dataclass(frozen=True)
class RestoreFinding:
    """One thing a restore lost, as learned from the restore itself or a node's calls after it."""

    kind: str  # central.restore_state's kinds, e.g. "node_enrolled_after_backup"
    node_id: str  # "" for the fleet
    detail: str
    found_at: float
    action: str  # "adopted" (central took it back into the store) or "listed"

    def row(self) -> tuple:
        """The values the stores write (kind, node_id, detail, found_at, action): the detail bounded to
        AUDIT_FIELD_MAX_CHARS, as it may quote what a node reported."""
        return (self.kind, self.node_id, _bounded(self.detail), self.found_at, self.action)


# -- history (issue 17): rollups of the heartbeats, objectives, burst usage ----------------------------------

MINUTE_S = 60
HOUR_S = 3600
ROLLUP_PERIODS_S = (MINUTE_S, HOUR_S)
# How long each resolution is kept (prune_rollups), and burst usage (kept per hour).
ROLLUP_KEEP_S = {MINUTE_S: 24 * HOUR_S, HOUR_S: 30 * 24 * HOUR_S}
BURST_USAGE_KEEP_S = 30 * 24 * HOUR_S

# A rollup's additive integer counts, in column order; then queue_depth_max (kept as the largest), upstream_cost
# (a real number) and one column per latency bucket and per time-to-first-token bucket.
ROLLUP_COUNTS = (
    "requests",
    "errors",
    "generated_tokens",
    "prompt_tokens",
    "cached_prompt_tokens",
    "cache_hits",
    "cache_lookups",
    "heartbeats",
    "queue_depth_sum",
    "upstream_requests",
    "upstream_prompt_tokens",
    "upstream_completion_tokens",
)
LATENCY_BUCKET_COLUMNS = tuple(f"latency_b{i}" for i in range(histogram_buckets.BUCKETS))
TTFT_BUCKET_COLUMNS = tuple(f"ttft_b{i}" for i in range(histogram_buckets.BUCKETS))
# Every value column of the rollups table, in RollupRow.values() order.
ROLLUP_VALUE_COLUMNS = (
    *ROLLUP_COUNTS,
    "queue_depth_max",
    "upstream_cost",
    *LATENCY_BUCKET_COLUMNS,
    *TTFT_BUCKET_COLUMNS,
)
_BUCKETS = histogram_buckets.BUCKETS
_ZERO_BUCKETS = (0,) * _BUCKETS


@dataclass(frozen=True)
class RollupRow:
    """One scope's heartbeats summed over one period (a minute or an hour starting at `start`, unix seconds). The
    same value is a delta to add (FleetStore.add_rollups: counts and buckets add, queue_depth_max keeps the
    largest) and a row read back. Scopes: "fleet", "node:NODE_ID", "label:KEY=VALUE"."""

    scope: str
    period_s: int
    start: int
    requests: int = 0
    errors: int = 0
    generated_tokens: int = 0
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    cache_hits: int = 0
    cache_lookups: int = 0
    heartbeats: int = 0
    queue_depth_sum: int = 0
    upstream_requests: int = 0
    upstream_prompt_tokens: int = 0
    upstream_completion_tokens: int = 0
    queue_depth_max: int = 0
    upstream_cost: float = 0.0
    latency_buckets: tuple[int, ...] = _ZERO_BUCKETS  # per bucket of edgefleet.histogram_buckets, not cumulative
    ttft_buckets: tuple[int, ...] = _ZERO_BUCKETS

    def values(self) -> tuple:
        """The value columns, in ROLLUP_VALUE_COLUMNS order."""
        return (
            *(getattr(self, name) for name in ROLLUP_COUNTS),
            self.queue_depth_max,
            self.upstream_cost,
            *(lat if len(lat := self.latency_buckets) == _BUCKETS else histogram_buckets.normalized(lat)),
            *(ttft if len(ttft := self.ttft_buckets) == _BUCKETS else histogram_buckets.normalized(ttft)),
        )

    def plus(self, other: RollupRow) -> RollupRow:
        """This row with `other`'s values added (queue_depth_max: the larger), under this row's key."""
        return RollupRow(
            self.scope,
            self.period_s,
            self.start,
            **{n: getattr(self, n) + getattr(other, n) for n in ROLLUP_COUNTS},
            queue_depth_max=max(self.queue_depth_max, other.queue_depth_max),
            upstream_cost=self.upstream_cost + other.upstream_cost,
            latency_buckets=tuple(histogram_buckets.merged(self.latency_buckets, other.latency_buckets)),
            ttft_buckets=tuple(histogram_buckets.merged(self.ttft_buckets, other.ttft_buckets)),
        )

    @classmethod
    def from_values(cls, scope: str, period_s: int, start: int, values: Sequence) -> RollupRow:
        """The row of ROLLUP_VALUE_COLUMNS' values (NULL sums read as 0)."""
        v = [x or 0 for x in values]
        n = len(ROLLUP_COUNTS)
        b = histogram_buckets.BUCKETS
        return cls(
            scope,
            int(period_s),
            int(start),
            **{name: int(x) for name, x in zip(ROLLUP_COUNTS, v[:n], strict=True)},
            queue_depth_max=int(v[n]),
            upstream_cost=float(v[n + 1]),
            latency_buckets=tuple(int(x) for x in v[n + 2 : n + 2 + b]),
            ttft_buckets=tuple(int(x) for x in v[n + 2 + b : n + 2 + 2 * b]),
        )


_SCALARS_END = 3 + len(ROLLUP_COUNTS) + 2  # scope, period_s, start, the counts, queue_depth_max, upstream_cost
_LATENCY_END = _SCALARS_END + _BUCKETS


def stored_rollup_row(record: Sequence) -> RollupRow:
    """The RollupRow of a rollups table record as selected (scope, period_s, start, then ROLLUP_VALUE_COLUMNS),
    taken as the database typed it (no column is NULL there): rollup_series' rows, thousands per answer."""
    # Positional, in field order (mypy cannot count a star's length); test_store_history checks every field's place.
    latency, ttft = tuple(record[_SCALARS_END:_LATENCY_END]), tuple(record[_LATENCY_END:])
    return RollupRow(*record[:_SCALARS_END], latency, ttft)  # type: ignore[call-arg]


def late_hour_deltas(deltas: Iterable[RollupRow], last_derived_hour: int | None) -> list[RollupRow]:
    """The hour deltas of the minute deltas whose hour's rows were already derived (it starts at or before
    `last_derived_hour`; FleetStore.derive_rollup_hours): add_rollups adds them to those hour rows too, so a
    minute written late (kept over a failed write) still counts in its hour."""
    held: dict[tuple[str, int], RollupRow] = {}
    if last_derived_hour is None:
        return []
    for d in deltas:
        hour = d.start // HOUR_S * HOUR_S
        if d.period_s == MINUTE_S and hour <= last_derived_hour:
            delta = dataclasses.replace(d, period_s=HOUR_S, start=hour)
            held[(d.scope, hour)] = held[(d.scope, hour)].plus(delta) if (d.scope, hour) in held else delta
    return list(held.values())


def hour_ceiling(t: float) -> int:
    """The start of the first hour starting at or after `t`."""
    return -(-math.ceil(t) // HOUR_S) * HOUR_S


# The select list summing every value column (the largest queue_depth_max), for rollup_sums.
ROLLUP_SUMS_SQL = ", ".join(f"max({c})" if c == "queue_depth_max" else f"sum({c})" for c in ROLLUP_VALUE_COLUMNS)


@dataclass(frozen=True)
class ObjectiveRecord:
    """A service level objective (central.slo judges it over the rollups)."""

    name: str
    selector: dict[str, str]  # the nodes it covers: every node with all these labels; empty for all
    availability_percent: float  # 0 for none
    latency_threshold_ms: float  # 0 for none
    latency_percent: float
    window_s: int
    updated_at: float
    updated_by: str


@dataclass(frozen=True)
class BurstUsageRecord:
    """What one node sent to one upstream in one hour, per tenant, data class and currency."""

    hour: int  # the hour's start, unix seconds
    node_id: str
    upstream: str
    tenant: str
    data_class: str
    currency: str
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    last_at: float = 0.0  # when the node's last beat carrying usage for it arrived

    @property
    def key(self) -> tuple[int, str, str, str, str, str]:
        return (self.hour, self.node_id, self.upstream, self.tenant, self.data_class, self.currency)

    def values(self) -> tuple:
        """Every field, in order (the table's columns)."""
        return (*self.key, self.requests, self.prompt_tokens, self.completion_tokens, self.cost, self.last_at)


class LeaderLock(abc.ABC):
    """A lock that at most one holder in the whole fleet (any replica, any process) has at a time.

    Held apart from the store's ordinary calls and used from one thread. It can be lost without
    release() (the database connection dies, the host goes away): the leader checks held() before
    acting, and its writes that must happen once are compare-and-set anyway (advance_rollout).
    """

    @abc.abstractmethod
    def try_acquire(self) -> bool:
        """Take the lock without waiting; True if this holder has it now (also when it already had it).
        StoreError when the store cannot be reached."""

    @abc.abstractmethod
    def held(self) -> bool:
        """Whether this holder still has the lock; False as soon as it may have been lost. Never raises."""

    @abc.abstractmethod
    def release(self) -> None:
        """Give the lock up (nothing happens when it is not held)."""


class FleetStore(abc.ABC):
    """What central needs from storage. Implementations must be safe to call from one thread at a time
    per instance and must make each method atomic."""

    #: True when each call is a network round trip (PostgreSQL): central runs such calls on a bounded
    #: thread pool, never on its event loop. False when calls are in-process and short (SQLite).
    remote: ClassVar[bool]

    # tokens
    @abc.abstractmethod
    def add_token(self, token: TokenRecord) -> None:
        """Store a new token; StoreError if its id exists."""

    @abc.abstractmethod
    def get_token(self, token_id: str) -> TokenRecord | None: ...

    @abc.abstractmethod
    def list_tokens(self) -> list[TokenRecord]:
        """Newest first."""

    @abc.abstractmethod
    def revoke_token(self, token_id: str) -> TokenRecord | None:
        """Mark revoked; None if there is no such token."""

    # nodes
    @abc.abstractmethod
    def enroll(self, token_id: str, node: NodeRecord, now: float) -> bool:
        """Spend one use of the token and add the node, together. False (and nothing written) when the
        token has no use left, is revoked or has expired at `now`: two enrollments racing for the last
        use cannot both win."""

    @abc.abstractmethod
    def get_node(self, node_id: str) -> NodeRecord | None: ...

    @abc.abstractmethod
    def list_nodes(
        self, selector: dict[str, str] | None = None, after_node_id: str = "", limit: int | None = None
    ) -> list[NodeRecord]:
        """Nodes carrying every label in selector, by id, starting after after_node_id, at most limit."""

    @abc.abstractmethod
    def heartbeat_target(self, node_id: str) -> DesiredState | None:
        """The desired state of an enrolled, unrevoked node; None if the node is unknown or revoked.
        Read on every heartbeat, so a revocation by any replica takes effect at the node's next beat."""

    @abc.abstractmethod
    def heartbeat_targets(self, node_ids: Sequence[str]) -> dict[str, DesiredState]:
        """heartbeat_target of many nodes in one read (the unknown and revoked are absent): a replica on a
        remote store reads the targets of the heartbeats that arrived together in one round trip."""

    @abc.abstractmethod
    def record_heartbeats(
        self, beats: dict[str, tuple[float, bytes]], health: dict[str, NodeHealth] | None = None
    ) -> None:
        """Keep each node's latest (time, status) and the health decoded from that status (None where `health`
        has none), in one transaction; revoked and unknown nodes are skipped."""

    @abc.abstractmethod
    def set_labels(self, node_id: str, labels: dict[str, str]) -> NodeRecord | None: ...

    @abc.abstractmethod
    def revoke_node(self, node_id: str, at: float) -> NodeRecord | None:
        """Mark revoked (idempotent: the first time is kept); None if unknown."""

    @abc.abstractmethod
    def set_certificate(self, node_id: str, serial: str, expires_at: float) -> None: ...

    # federated learning
    @abc.abstractmethod
    def set_flower_key(self, node_id: str, public_key: str) -> None:
        """Record the node's Flower public key (at enrollment)."""

    @abc.abstractmethod
    def flower_keys(self) -> list[FlowerKeyRecord]:
        """Every node that sent a Flower key."""

    @abc.abstractmethod
    def set_flower_registration(self, node_id: str, flower_node_id: int, unregistered: bool) -> None:
        """The SuperLink's id for the node's key, and whether it has been unregistered since."""

    @abc.abstractmethod
    def add_federated_run(self, run: FederatedRunRecord) -> None: ...

    @abc.abstractmethod
    def get_federated_run(self, run_id: int) -> FederatedRunRecord | None: ...

    @abc.abstractmethod
    def list_federated_runs(self) -> list[FederatedRunRecord]:
        """Newest first."""

    @abc.abstractmethod
    def set_federated_run_outcome(self, run_id: int, model: str, at: float) -> None:
        """Mark the run's outcome imported (model is '' when the outcome is not a model)."""

    # model registry
    @abc.abstractmethod
    def add_model(self, model: ModelRecord) -> None:
        """Store a version; StoreError if name@version exists (versions are immutable)."""

    @abc.abstractmethod
    def get_model(self, name: str, version: str) -> ModelRecord | None: ...

    @abc.abstractmethod
    def list_models(self, name: str = "") -> list[ModelRecord]:
        """By name, newest first."""

    @abc.abstractmethod
    def delete_model(self, name: str, version: str) -> list[str]:
        """Delete the version unless a node is assigned to it; returns the assigned node ids (nothing is
        deleted when there are any). StoreError if there is no such version."""

    @abc.abstractmethod
    def nodes_assigned(self, sha256: str) -> list[str]: ...

    @abc.abstractmethod
    def models_with_sha256(self, sha256: str) -> list[ModelRecord]:
        """Every version whose file has these bytes (versions may share a blob)."""

    @abc.abstractmethod
    def assign_model(self, node_id: str, model: ModelRecord | None) -> NodeRecord | None:
        """Set the node's desired model (None: no assignment) and bump its config generation."""

    # rollouts: the controller's spec and state, as JSON the store does not read
    @abc.abstractmethod
    def add_rollout(self, rollout_id: str, spec: str, state: str, created_at: float) -> None: ...

    @abc.abstractmethod
    def set_rollout_state(self, rollout_id: str, state: str) -> None: ...

    @abc.abstractmethod
    def get_rollout(self, rollout_id: str) -> tuple[str, str, float] | None:
        """(spec, state, created_at)."""

    @abc.abstractmethod
    def list_rollouts(self) -> list[tuple[str, str, str, float]]:
        """(rollout_id, spec, state, created_at), newest first."""

    @abc.abstractmethod
    def list_rollouts_in_phases(self, phases: Sequence[str]) -> list[tuple[str, str, str, float]]:
        """As list_rollouts, only the rollouts whose state's "phase" is one of `phases`, read through an index:
        the controller's tick reads the live ones every second, never every rollout ever made."""

    @abc.abstractmethod
    def advance_rollout(
        self, rollout_id: str, expected_state: str, state: str, events: Sequence[AuditEvent] = ()
    ) -> bool:
        """Set the rollout's state to `state` if it is still `expected_state` (the same string), and append
        `events` to the audit log, in one transaction. False, and nothing written, when the stored state is
        another (or there is no such rollout): of two replicas racing, or a deposed leader acting late, one
        step is promoted once and audited once."""

    # replicas and leadership
    @abc.abstractmethod
    def announce_replica(self, replica: ReplicaRecord) -> None:
        """Add the replica, or replace what it announced before (by replica_id)."""

    @abc.abstractmethod
    def list_replicas(self) -> list[ReplicaRecord]:
        """By replica_id."""

    @abc.abstractmethod
    def forget_replica(self, replica_id: str) -> None:
        """Remove the replica (nothing happens if it is unknown)."""

    @abc.abstractmethod
    def claim_leadership(self, replica_id: str, at: float) -> int:
        """Record `replica_id` as the leader since `at`, with the previous term + 1 (1 for the first claim);
        returns that term. Call it while holding the :meth:`leader_lock`."""

    @abc.abstractmethod
    def leadership(self) -> LeaderRecord | None:
        """The latest claim; None before the first."""

    @abc.abstractmethod
    def bind_ca(self, fingerprint: str) -> str:
        """Record the fleet CA's fingerprint unless one is recorded; return the one recorded. Replicas check
        their data dir's CA against it, so a replica given a data dir of another fleet (or a fresh one made by
        mistake) refuses to serve this store instead of issuing certificates its nodes cannot trust."""

    # key rotation (central.services.trust)
    @abc.abstractmethod
    def rebind_ca(self, previous: str, current: str) -> str:
        """Move the fleet CA's binding (bind_ca) from `previous` to `current`, a CA rotation; return the binding
        now. A binding to neither is left as it is (another fleet's store, or a replica whose data dir lags)."""

    @abc.abstractmethod
    def fleet_value(self, key: str) -> str | None:
        """A fleet-wide setting (the table bind_ca writes), None when unset."""

    @abc.abstractmethod
    def set_fleet_value(self, key: str, value: str | None) -> None:
        """Set a fleet-wide setting; None removes it. Not for 'ca_fingerprint' (bind_ca, rebind_ca)."""

    @abc.abstractmethod
    def replace_model_signatures(self, signatures: Sequence[tuple[str, str, str]]) -> int:
        """In one transaction, each (name, version, signature): the model's signature, and the signature in every
        node's desired state naming that version (config generations unchanged: the manifest is the same bytes).
        Returns how many models changed."""

    @abc.abstractmethod
    def leader_lock(self) -> LeaderLock:
        """A new, unheld :class:`LeaderLock` on this store's database."""

    # operators: who may call AdminService, in which role, with which certificate
    @abc.abstractmethod
    def add_operator(self, operator: OperatorRecord) -> None:
        """Store a new operator; StoreError if the name exists (revoked or not: names are never reused)."""

    @abc.abstractmethod
    def add_first_operator(self, operator: OperatorRecord) -> bool:
        """Store the operator only if there is none yet (a fleet from before operators were kept); whether it
        was stored. Replicas starting together store one."""

    @abc.abstractmethod
    def get_operator(self, name: str) -> OperatorRecord | None:
        """Read on every AdminService call, so a revocation or renewal by any replica counts at the next call."""

    @abc.abstractmethod
    def list_operators(self) -> list[OperatorRecord]:
        """By name."""

    @abc.abstractmethod
    def revoke_operator(self, name: str, at: float) -> OperatorRecord | None:
        """Mark revoked (idempotent: the first time is kept), unless the operator is the last unrevoked admin:
        then nothing is written and the record comes back unrevoked. Two admins revoking each other at once
        cannot leave the fleet with none. None if unknown."""

    @abc.abstractmethod
    def renew_operator(self, name: str, old_serial: str, serial: str, expires_at: float) -> OperatorRecord | None:
        """Replace the operator's certificate serial and expiry if it is unrevoked and its serial is still
        `old_serial` (compare and set: of two renewals racing, one wins); the new record, or None."""

    # reports flushed from agents' spools
    @abc.abstractmethod
    def add_reports(
        self,
        node_id: str,
        reports: list[ReportRecord],
        dropped_count: int,
        keep: int = 1000,
        routing: dict[int, RoutingReport] | None = None,
        epoch: str = "",
        restart_events: Sequence[AuditEvent] = (),
        keep_bytes: int = 4 * 1024 * 1024,
    ) -> int:
        """Keep reports, ignoring sequences already held; add dropped_count to the node's total; keep at most
        `keep` per node and at most `keep_bytes` of their payloads (oldest go; the newest always stays).
        `routing` (by report sequence) is added to the node's routing totals for the reports new to the store
        only, in the same transaction, so a retried flush counts nothing twice.

        `epoch` is the agent's spool epoch ("" from older agents): the reports are stored under base + their
        sequence, the base fixed per epoch by :func:`central.reports.next_base`; when the epoch restarts the
        node's numbering, `restart_events` are appended to the audit log in the same transaction (of two
        replicas racing, one appends them). Returns the highest sequence held for the node, in the epoch's
        numbering (minus the base)."""

    @abc.abstractmethod
    def spool_epoch(self, node_id: str) -> str:
        """The node's latest spool epoch ("" before any, or for an unknown node)."""

    @abc.abstractmethod
    def recent_reports(self, node_id: str, limit: int) -> list[ReportRecord]:
        """The node's latest reports, oldest first."""

    # routing totals from agents' heartbeats
    @abc.abstractmethod
    def add_routing(self, reports: dict[str, tuple[float, RoutingReport]]) -> None:
        """Add each node's counts to its totals and keep its audit head when its sequence is not lower than the
        one held, all at `at` (central's clock), in one transaction; unknown nodes are skipped. A node keeps at
        most central.routing.MAX_PAIRS_PER_NODE (data class, route) pairs: counts of a pair beyond them are
        added to the node's overflow pair (central.routing.fold), so every request is counted once."""

    @abc.abstractmethod
    def routing_totals(
        self, node_id: str = "", after_node_id: str = "", limit: int | None = None
    ) -> list[NodeRoutingRecord]:
        """The nodes that reported routing (one node when node_id is given), by id: those after `after_node_id`,
        `limit` of them at most (every one when None)."""

    # audit log
    @abc.abstractmethod
    def append_audit(
        self, at: float, actor: str, action: str, target: str, outcome: str, detail: str, peer: str
    ) -> AuditEntry:
        """Append an entry chained to the previous one by hash."""

    @abc.abstractmethod
    def list_audit(self, after_sequence: int = 0, limit: int = 100) -> list[AuditEntry]:
        """Oldest first."""

    @abc.abstractmethod
    def iter_audit(self) -> Iterator[AuditEntry]:
        """Every entry, oldest first."""

    # audit retention (issue 16)
    @abc.abstractmethod
    def audit_anchor(self) -> AuditAnchor | None:
        """The latest anchor (where the kept log starts); None when nothing was ever pruned."""

    @abc.abstractmethod
    def prune_audit(self, anchor: AuditAnchor) -> int:
        """In one transaction: keep `anchor` and delete the entries up to anchor.sequence; returns how many were
        deleted. StoreError, with nothing changed, when entry anchor.sequence is not in the log with anchor.hash
        or the anchor is not past the latest one. Nothing else ever deletes an audit entry (the database refuses)."""

    # history (issue 17)
    @abc.abstractmethod
    def add_rollups(self, deltas: Iterable[RollupRow]) -> None:
        """Add each delta to its (scope, period_s, start) row, creating it, in one transaction: counts and buckets
        add up, queue_depth_max keeps the larger. Additive, so replicas writing the same rows lose nothing. A
        minute delta counts in its hour as well: through derive_rollup_hours, or added to the hour row when that
        hour was already derived (late_hour_deltas). Give hour deltas only for what no minute delta carries."""

    @abc.abstractmethod
    def rollup_series(
        self, scopes: Sequence[str], period_s: int, start: float, end: float
    ) -> dict[str, list[RollupRow]]:
        """Each scope's rows of that period starting in [start, end), oldest first; a scope with none maps to [].
        An hour not derived yet (derive_rollup_hours) reads as its hour row if there is one, else as the sum of
        the scope's minute rows in it: the current hour, as far as its minutes were written."""

    @abc.abstractmethod
    def rollup_sums(self, scopes: Sequence[str], period_s: int, start: float, end: float) -> RollupRow:
        """The rows of rollup_series summed over the scopes and the time (queue_depth_max: the largest), as one
        RollupRow with scope "" and the given period_s and start (int)."""

    @abc.abstractmethod
    def derive_rollup_hours(self, until: float) -> int:
        """Write the hour rows of every hour ended by `until` and not derived yet, each scope's row the sum of its
        minute rows of that hour, and remember the last hour derived; returns how many rows were written. Until
        an hour is derived, rollup_series and rollup_sums at hour resolution read it from its minute rows; after,
        add_rollups adds a late minute delta of it to its hour row too. An hour row already there (an hour delta
        given to add_rollups) is kept as it is. Idempotent; replicas may call it together."""

    @abc.abstractmethod
    def prune_rollups(self, now: float) -> int:
        """Delete minute rows older than ROLLUP_KEEP_S[60], hour rows older than ROLLUP_KEEP_S[3600] and burst
        usage older than BURST_USAGE_KEEP_S; returns how many rows went."""

    @abc.abstractmethod
    def add_burst_usage(self, rows: Iterable[BurstUsageRecord]) -> None:
        """Add each row to its (hour, node, upstream, tenant, data class, currency) total, creating it; last_at
        keeps the later. Rows of unknown nodes are skipped."""

    @abc.abstractmethod
    def burst_usage_rows(self, since: float = 0.0) -> list[tuple[BurstUsageRecord, dict[str, str]]]:
        """The burst usage of the hours that end after `since`, each with its node's labels, by key."""

    @abc.abstractmethod
    def burst_usage_totals(self, since: float = 0.0) -> list[tuple[BurstUsageRecord, Mapping[str, str]]]:
        """burst_usage_rows added up over the hours per node, upstream, tenant, data class and currency (hour: the
        latest hour added, last_at the latest), by node then the rest of the key; each with its node's labels,
        read once per node (the node's rows share one mapping: do not change it)."""

    @abc.abstractmethod
    def set_objective(self, objective: ObjectiveRecord) -> None:
        """Create or replace the objective of that name."""

    @abc.abstractmethod
    def list_objectives(self) -> list[ObjectiveRecord]:
        """Every objective, by name."""

    @abc.abstractmethod
    def delete_objective(self, name: str) -> bool:
        """Remove the objective; False when there was none of that name."""

    # restores (issue 18): central.restore_state
    @abc.abstractmethod
    def add_restore(self, point: RestorePoint, findings: Sequence[RestoreFinding] = ()) -> None:
        """Record a restore of this store from a backup, with the findings known at once, in one transaction. It
        becomes the latest restore, which later findings belong to."""

    @abc.abstractmethod
    def latest_restore(self) -> RestorePoint | None:
        """The latest restore recorded; None when the store was never restored from a backup."""

    @abc.abstractmethod
    def restore_findings(self, limit: int | None = None) -> list[RestoreFinding]:
        """The latest restore's findings in the order they were made, at most `limit`; [] when never restored."""

    @abc.abstractmethod
    def add_restore_finding(self, finding: RestoreFinding) -> bool:
        """Add the finding to the latest restore unless it has one of the same node and kind; whether it was added
        (False too when the store was never restored). Of replicas racing, one adds it."""

    @abc.abstractmethod
    def adopt_node(self, node: NodeRecord, finding: RestoreFinding) -> bool:
        """Add a node the restore lost (enrolled after the backup) and the finding, in one transaction, unless a
        node of that id is there (revoked or not): then nothing is written and False comes back."""

    @abc.abstractmethod
    def adopt_certificate(
        self, node_id: str, replaced_serial: str, serial: str, expires_at: float, finding: RestoreFinding
    ) -> bool:
        """Take a certificate issued to the node after the backup as its live one, if the node is unrevoked and its
        serial is still `replaced_serial` (compare and set), with the finding (once per node and kind), in one
        transaction; whether the certificate was taken."""

    @abc.abstractmethod
    def adopt_assignment(
        self,
        node_id: str,
        stored_generation: int,
        desired_model: dict[str, str],
        generation: int,
        finding: RestoreFinding,
    ) -> bool:
        """Set the node's desired model (a ModelRecord.desired, {} for none) and config generation, with the finding,
        in one transaction; whether they were set. Only once per node and kind (nothing is written when the latest
        restore has a finding of that node and kind: a node cannot steer its assignment beat after beat), and only if
        the node is unrevoked and its generation is still `stored_generation` (compare and set)."""

    @abc.abstractmethod
    def close(self) -> None: ...


def burst_totals_with_labels(rows: Iterable[Sequence]) -> list[tuple[BurstUsageRecord, Mapping[str, str]]]:
    """Burst usage totals as selected (BurstUsageRecord's columns, then the node's labels as JSON text), each with
    its node's labels, parsed once per node rather than once per row (a node has a row per upstream, tenant,
    data class and currency)."""
    labels: dict[str, Mapping[str, str]] = {}
    result = []
    for r in rows:
        node_labels = labels.get(r[1])
        if node_labels is None:
            node_labels = labels[r[1]] = json.loads(r[11])
        result.append((BurstUsageRecord(*r[:11]), node_labels))
    return result
