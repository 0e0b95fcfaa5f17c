"""EnrollmentService: a new node's bootstrap token and CSR become its node certificate.

The enrollment port is open to anyone, so a refusal here writes nothing itself: :func:`enroll` raises
:class:`Refusal`, naming one of :data:`REASONS` (never text the caller sent), and the enrollment server
counts it in a :class:`EnrollmentGate`, which admits calls (per-peer token bucket, concurrency cap) before
they touch the store and writes refusals to the audit log as a bounded number of entries per window.
A successful enrollment gets its own audit entry, as before.
"""

from __future__ import annotations

import datetime as dt
import hmac
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from central import audit, federation, ratelimit, tokens
from central.errors import CentralError, InvalidArgument, ServiceError, Unauthenticated
from central.services.base import Caller, Central, CentralSettings, TokenCaller, record_audit
from central.store import AuditEvent, NodeRecord, TokenRecord
from edgefleet import pki
from edgefleet.addresses import dialable_host

log = logging.getLogger(__name__)

ACTION = "node.enroll"

# Why an enrollment was refused: the only reasons the audit log's refusal entries carry.
RATE_LIMITED = "rate limited"
TOO_MANY_IN_FLIGHT = "too many enrollments in flight"
MALFORMED_TOKEN = "malformed token"
UNKNOWN_TOKEN = "unknown token"
REVOKED_TOKEN = "revoked token"
EXPIRED_TOKEN = "expired token"
USED_UP_TOKEN = "used-up token"
INVALID_CSR = "invalid CSR or Flower key"
REASONS = (
    RATE_LIMITED,
    TOO_MANY_IN_FLIGHT,
    MALFORMED_TOKEN,
    UNKNOWN_TOKEN,
    REVOKED_TOKEN,
    EXPIRED_TOKEN,
    USED_UP_TOKEN,
    INVALID_CSR,
)


# What a caller turned away by the concurrency cap is told to wait: calls in flight finish in well under this.
TOO_MANY_IN_FLIGHT_RETRY_S = 2.0


class ResourceExhausted(ServiceError):
    """Over the enrollment port's rate or concurrency limit (RESOURCE_EXHAUSTED); the message says when to retry,
    and `retry_after_s` too, sent as gRPC's `grpc-retry-pushback-ms` trailer for clients that wait it out."""

    def __init__(self, message: str, retry_after_s: float):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Refusal(CentralError):
    """An enrollment refused: `error` is what the caller gets, `reason` one of :data:`REASONS` for the audit
    log, `target` the token's id when that token exists (so it is bounded by the store), else ""."""

    def __init__(self, error: ServiceError, reason: str, target: str = ""):
        super().__init__(str(error))
        self.error, self.reason, self.target = error, reason, target


def parse_fleet_addresses(text: str) -> tuple[str, ...]:
    """The FleetService addresses central sends agents at enrollment (CentralSettings.fleet_addresses), from
    a comma-separated "HOST:PORT,HOST:PORT" as `central serve --fleet-addresses` takes it: every replica, or the
    one load balancer in front of them. Empty text gives (): agents then dial the host they enrolled through
    at fleet_port, as before replicas. Raises ValueError naming the entry that is not HOST:PORT.

    Agents try the addresses in turn and verify each against the one central name in the server certificate,
    so the names here need not be in the certificate."""
    addresses = []
    for entry in (e.strip() for e in text.split(",")):
        if not entry:
            continue
        host, sep, port = entry.rpartition(":")
        # The same check agents make of what central sends them (an entry they refuse, they ignore the list for).
        if not sep or not dialable_host(host) or not port.isascii() or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(
                f"fleet address {entry!r} is not HOST:PORT with a port 1..65535 (HOST a name or an IPv4 address, or"
                " an IPv6 address in brackets: [2001:db8::5]:7443)"
            )
        addresses.append(entry)
    # A repeat would get twice the agents in a round-robin; order stays, as agents follow it.
    return tuple(dict.fromkeys(addresses))


@dataclass(frozen=True)
class Enrollment:
    node_id: str
    labels: dict[str, str]
    certificate_pem: str


def enroll(
    central: Central, caller: Caller, token_text: str, csr_pem: str, hostname: str, flower_public_key: str = ""
) -> Enrollment:
    """Enroll a node, or raise :class:`Refusal` (nothing written: the caller counts it)."""
    parsed = tokens.parse_token(token_text)
    if parsed is None:
        raise Refusal(Unauthenticated("the bootstrap token is malformed (expected ID.SECRET)"), MALFORMED_TOKEN)
    token_id, secret = parsed
    token_caller = TokenCaller(token_id, caller.peer)
    now = central.clock()
    record = central.store.get_token(token_id)
    refusal = tokens.token_refusal(record, secret, now)
    if refusal or record is None:  # token_refusal refuses a missing token; `is None` tells the type checker
        raise _token_refused(record, secret, now, refusal or "unknown bootstrap token")
    try:
        public_key = pki.public_key_from_csr(csr_pem)
        if flower_public_key:
            federation.validate_flower_key(flower_public_key)
    except (pki.PkiError, InvalidArgument) as exc:
        raise Refusal(InvalidArgument(str(exc)), INVALID_CSR, token_id) from None
    node_id = "node-" + secrets.token_hex(4)
    cert = central.authority.issue(
        public_key,
        pki.Identity("node", node_id),
        dt.timedelta(seconds=central.settings.certificate_lifetime_s),
        pki.utc(now),
    )
    node = NodeRecord(
        node_id=node_id,
        labels=dict(record.labels),
        hostname=hostname[:253],
        enrolled_at=now,
        token_id=token_id,
        certificate_serial=pki.serial_hex(cert),
        certificate_expires_at=cert.not_valid_after_utc.timestamp(),
    )
    if not central.store.enroll(token_id, node, now):
        # Lost a race for the token's last use, or it was revoked meanwhile.
        latest = central.store.get_token(token_id)
        raise _token_refused(latest, secret, now, tokens.token_refusal(latest, secret, now) or "token unusable")
    if flower_public_key:
        # Registered with the SuperLink by the next reconcile pass (services.federation.reconcile).
        central.store.set_flower_key(node_id, flower_public_key.strip())
    record_audit(
        central, token_caller, ACTION, node_id, audit.ALLOWED, f"enrolled {node_id} ({hostname or 'no hostname'})"
    )
    if central.metrics is not None:
        central.metrics.enrolled()
    return Enrollment(node_id, node.labels, pki.certificate_pem(cert).decode())


def _token_refused(record: TokenRecord | None, secret: str, now: float, message: str) -> Refusal:
    """The refusal of a token that cannot enroll: named by its id only when it exists and the secret matches."""
    if record is None or not hmac.compare_digest(record.secret_hash, tokens.hash_secret(secret)):
        return Refusal(Unauthenticated(message), UNKNOWN_TOKEN)
    if record.revoked:
        reason = REVOKED_TOKEN
    elif now >= record.expires_at:
        reason = EXPIRED_TOKEN
    else:
        reason = USED_UP_TOKEN
    return Refusal(Unauthenticated(message), reason, record.token_id)


class EnrollmentGate:
    """What the enrollment server keeps between calls: admission (a token bucket per peer IP and a cap on
    calls in flight) decided without the store, and the tally of refusals it writes to the audit log.

    Used from the enrollment server's one event loop only, so it takes no lock. `monotonic` drives the
    buckets; audit times come from central.clock.
    """

    def __init__(self, settings: CentralSettings, monotonic: Callable[[], float] = time.monotonic):
        self.buckets = ratelimit.PeerBuckets(settings.enroll_rate_per_s, settings.enroll_burst)
        self.cap = ratelimit.ConcurrencyCap(settings.enroll_max_concurrent)
        self.tally = ratelimit.RefusalTally(settings.enroll_audit_window_s, settings.enroll_audit_max_peers)
        self._monotonic = monotonic
        self._describe = (
            f"{settings.enroll_rate_per_s:g} a second, bursts of {settings.enroll_burst}",
            settings.enroll_max_concurrent,
        )

    def admit(self, peer: str) -> Refusal | None:
        """None when the call may go on (then call :meth:`leave` when it ends), else the refusal to count."""
        wait_s = self.buckets.take(peer, self._monotonic())
        if wait_s > 0:
            return Refusal(
                ResourceExhausted(
                    f"too many enrollment calls from {peer} (limit {self._describe[0]}); retry in {wait_s:.1f} s",
                    wait_s,
                ),
                RATE_LIMITED,
            )
        if not self.cap.enter():
            return Refusal(
                ResourceExhausted(
                    f"central is handling {self._describe[1]} enrollments already; retry in a few seconds",
                    TOO_MANY_IN_FLIGHT_RETRY_S,
                ),
                TOO_MANY_IN_FLIGHT,
            )
        return None

    def leave(self) -> None:
        self.cap.leave()

    def refused(self, central: Central, peer: str, refusal: Refusal) -> AuditEvent | None:
        """Count a refusal; the audit event to write now when it is its kind's first in the window, else None."""
        now = central.clock()
        if central.metrics is not None:
            central.metrics.enrollment_refused(refusal.reason)
        if not self.tally.add(now, peer, refusal.reason, refusal.target):
            return None
        log.warning("refused %s from %s: %s", ACTION, peer, refusal)
        return AuditEvent(now, _actor(refusal.target), ACTION, refusal.target, audit.REFUSED, str(refusal), peer)

    def drain(self, central: Central, force: bool = False) -> list[AuditEvent]:
        """When the window has ended (or `force`, at shutdown): its counts as audit events, one line logged."""
        if not force and not self.tally.due(central.clock()):
            return []
        counts = self.tally.drain()
        if counts:
            total = sum(c.count for c in counts)
            peers = len({c.peer for c in counts})
            log.warning(
                "enrollment refused %d more call(s) from %d peer(s) in the last %.0f s: %s",
                total,
                peers,
                self.tally.window_s,
                ", ".join(f"{c.peer} {c.reason} x{c.count}" for c in counts[:5]),
            )
        return [
            AuditEvent(
                c.last_at,
                _actor(c.target),
                ACTION,
                c.target,
                audit.REFUSED,
                f"{c.count} more refused ({c.reason}) from {c.first_at:.3f} to {c.last_at:.3f}",
                c.peer,
            )
            for c in counts
        ]


def _actor(token_id: str) -> str:
    return f"token:{token_id}" if token_id else "anonymous"


def write_audit(central: Central, events: list[AuditEvent]) -> None:
    """Append the gate's refusal entries (from the enrollment server's loop, through services.base.call)."""
    for e in events:
        central.store.append_audit(e.at, e.actor, e.action, e.target, e.outcome, e.detail, e.peer)
