"""What every handler receives: central's parts (:class:`Central`), the caller, and the audit helpers."""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from central import audit
from central.blobs import BlobStore
from central.datadir import Authority
from central.errors import FailedPrecondition, PermissionDenied, ServiceError, Unauthenticated
from central.heartbeats import HeartbeatBuffer, TargetReads
from central.store import FleetStore, OperatorRecord, RestorePoint
from edgefleet import pki

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from central.federation import Federation
    from central.fleet_metrics import FleetMetrics
    from central.rotation import TrustState

log = logging.getLogger(__name__)

# Worker threads for handlers when the store is remote; as many as the PostgreSQL store's connections, so a
# worker never waits for a connection and the database never sees more sessions per replica than this.
STORE_WORKERS = 8

T = TypeVar("T")


@dataclass(frozen=True)
class CentralSettings:
    heartbeat_interval_s: float = 15.0
    certificate_lifetime_s: float = 30 * 86400
    token_default_ttl_s: float = 3600.0
    # What `token create` tells agents to dial, and the fleet port sent back at enrollment.
    enroll_address: str = "127.0.0.1:7444"
    fleet_port: int = 7443
    # The SuperLink's port sent back at enrollment; 0 when central runs no SuperLink.
    superlink_port: int = 0
    # Every live replica's fleet address, this one first, sent back at enrollment; refreshed as replicas come
    # and go (central.server). Empty: agents dial the enrollment host at fleet_port, as before replicas.
    fleet_addresses: tuple[str, ...] = ()
    # The enrollment port (open to anyone, central.enrollment_server): calls per client IP (an IPv6 /64)
    # a second and in a burst, calls in flight at once, and the window its refusals are counted over in
    # the audit log, with how many (peer, reason) pairs one window names before it lumps the rest together.
    enroll_rate_per_s: float = 5.0
    enroll_burst: int = 20
    enroll_max_concurrent: int = 64
    enroll_audit_window_s: float = 60.0
    enroll_audit_max_peers: int = 100
    # The node label keys central keeps rollups (central.rollups) and per-label metrics for (--rollup-labels).
    rollup_labels: tuple[str, ...] = ("region", "site")


@dataclass(frozen=True)
class Caller:
    identity: pki.Identity | None
    peer: str
    # The serial (hex) of the certificate the caller presented; "" when it presented none. Central accepts only
    # the serial it last issued to a node or an operator (require_admin, require_viewer, services.fleet).
    serial: str = ""
    # That certificate (PEM), b"" when none: read only where its serial is not the one central holds, to adopt a
    # certificate issued after the backup a restored store was taken from (services.recovery).
    certificate_pem: bytes = b""

    @property
    def actor(self) -> str:
        return str(self.identity) if self.identity else "anonymous"


class SystemCaller(Caller):
    """Central acting on its own (a finished run's outcome): the audit log names the part that acted."""

    _part: str  # set once in __init__, through object.__setattr__ as Caller is frozen

    def __init__(self, part: str):
        super().__init__(None, "central")
        object.__setattr__(self, "_part", part)

    @property
    def actor(self) -> str:
        return f"central:{self._part}"


class TokenCaller(Caller):
    """An enrolling agent has no certificate yet: the audit log names it by its token id."""

    _token_id: str  # set once in __init__, through object.__setattr__ as Caller is frozen

    def __init__(self, token_id: str, peer: str):
        super().__init__(None, peer)
        object.__setattr__(self, "_token_id", token_id)

    @property
    def actor(self) -> str:
        return f"token:{self._token_id}"


@dataclass
class Central:
    """Central's parts as every handler receives them; `central serve` (or a test) builds one.

    Not a place for decisions: handlers read what they need from it and nothing else holds it.
    """

    store: FleetStore
    authority: Authority
    settings: CentralSettings
    signing_public_key_pem: str
    clock: Callable[[], float] = time.time
    blobs: BlobStore | None = None
    signing_key: Ed25519PrivateKey | None = None  # signs the registry's manifests
    # Set by `central serve` when it runs a SuperLink (central.federation).
    federation: Federation | None = None
    # Set by `central serve` unless --metrics-listen off: heartbeats and enrollments are counted in it.
    metrics: FleetMetrics | None = None
    # Set by `central serve`: the data dir's CAs and signing keys as served (central.services.trust rotates them).
    trust: TrustState | None = None
    beats: HeartbeatBuffer = field(init=False)
    # Held while a finished federated run's outcome is imported (services.federation).
    import_lock: threading.Lock = field(default_factory=threading.Lock, init=False)
    # Where handlers run when the store is remote (see `call`); None for an in-process store.
    workers: ThreadPoolExecutor | None = field(default=None, init=False)
    # Heartbeats' reads of a remote store, in batches; None for an in-process store.
    targets: TargetReads | None = field(default=None, init=False)
    # The restore the store was last restored with (central.restore_state), read once: a restore is recorded before
    # central serves the store. None when it never was.
    restore: RestorePoint | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.restore = self.store.latest_restore()
        self.beats = HeartbeatBuffer(self.store, self.settings.rollup_labels, self.clock)
        if self.store.remote:
            self.workers = ThreadPoolExecutor(max_workers=STORE_WORKERS, thread_name_prefix="store")
            self.targets = TargetReads(self.store, self.workers)

    def close(self) -> None:
        if self.workers is not None:
            self.workers.shutdown(wait=True)


async def call(central: Central, fn: Callable[..., T], *args) -> T:
    """Run `fn(*args)`, a handler or anything else that touches the store, from central's event loop.

    In-process store (SQLite): right here on the loop, as a call costs microseconds and a thread hop would
    cost more than the call. Remote store (PostgreSQL): on central's bounded worker pool, so no network round
    trip ever stalls the loop that carries every heartbeat stream (bench/store_calls.py measured both ways).
    """
    if central.workers is None:
        return fn(*args)
    return await asyncio.get_running_loop().run_in_executor(central.workers, functools.partial(fn, *args))


def blob_store(central: Central) -> BlobStore:
    """The registry's blobs: `central serve` always sets them; a Central built without them has no registry."""
    if central.blobs is None:
        raise FailedPrecondition("this central has no blob store, so no model registry")
    return central.blobs


def manifest_signing_key(central: Central) -> Ed25519PrivateKey:
    """The key that signs the registry's manifests; like the blobs, set by `central serve`."""
    if central.signing_key is None:
        raise FailedPrecondition("this central has no signing key, so it cannot sign model manifests")
    return central.signing_key


def record_audit(central: Central, caller: Caller, action: str, target: str, outcome: str, detail: str) -> None:
    central.store.append_audit(central.clock(), caller.actor, action, target, outcome, detail, caller.peer)


def refuse(
    central: Central, error_type: type[ServiceError], caller: Caller, action: str, target: str, detail: str
) -> ServiceError:
    """The error to raise, once the refusal is in the audit log."""
    record_audit(central, caller, action, target, audit.REFUSED, detail)
    error = error_type(detail)
    # The error's message is bounded (a detail may quote megabytes a caller sent); the log line takes that form.
    log.warning("refused %s by %s from %s: %s", action, caller.actor, caller.peer, error)
    return error


def require_admin(central: Central, caller: Caller, action: str, target: str = "") -> None:
    """For an AdminService call that changes something: an unrevoked operator in the admin role, with the
    certificate central last issued to it."""
    _require_operator(central, caller, action, target, ("admin",))


def require_viewer(central: Central, caller: Caller, action: str, target: str = "") -> None:
    """For an AdminService call that only reads: any unrevoked operator (admin or viewer), with the certificate
    central last issued to it."""
    _require_operator(central, caller, action, target, pki.OPERATOR_ROLES)


def _require_operator(central: Central, caller: Caller, action: str, target: str, roles: tuple[str, ...]) -> None:
    """The operator's row is read on every call, so a revocation or renewal by any replica counts at the next."""
    identity = caller.identity
    if identity is None:
        raise refuse(central, Unauthenticated, caller, action, target, "no fleet identity in the client certificate")
    record = central.store.get_operator(identity.name) if identity.role in pki.OPERATOR_ROLES else None
    problem = operator_problem(caller, record, action, roles)
    if problem is not None:
        raise refuse(central, PermissionDenied, caller, action, target, problem)


def operator_problem(caller: Caller, record: OperatorRecord | None, action: str, roles: tuple[str, ...]) -> str | None:
    """Why `caller` (who has an identity) may not make an AdminService call `action` open to `roles`, given the
    store's record of the operator it names (None if there is none); None when it may."""
    identity = caller.identity
    assert identity is not None
    if identity.role not in pki.OPERATOR_ROLES:
        return f"{identity} is not an admin certificate; AdminService needs one"
    if record is None:
        return f"{identity} is not a registered operator; an admin creates one with `edgefleet admin create`"
    if record.revoked_at is not None:
        return f"operator {identity.name} was revoked"
    if record.role != identity.role:
        return f"{identity}'s certificate says {identity.role}, but operator {identity.name} is a {record.role}"
    if caller.serial != record.serial:
        return (
            f"certificate serial {caller.serial or '(none)'} was replaced at renewal: only the certificate central"
            f" last issued to operator {identity.name} is accepted"
        )
    if identity.role not in roles:
        return (
            f"{identity} has the {identity.role} role, which may read but not change anything;"
            f" {action} needs the {' or '.join(roles)} role"
        )
    return None
