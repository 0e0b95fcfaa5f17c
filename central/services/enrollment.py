"""EnrollmentService: a new node's bootstrap token and CSR become its node certificate."""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass

from central import audit, federation, tokens
from central.errors import InvalidArgument, Unauthenticated
from central.services.base import Caller, Central, TokenCaller, record_audit, refuse
from central.store import NodeRecord
from edgefleet import pki


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
        if not sep or not host.strip("[]") or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"fleet address {entry!r} is not HOST:PORT with a port 1..65535")
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
    action = "node.enroll"
    parsed = tokens.parse_token(token_text)
    if parsed is None:
        raise refuse(
            central, Unauthenticated, caller, action, "", "the bootstrap token is malformed (expected ID.SECRET)"
        )
    token_id, secret = parsed
    token_caller = TokenCaller(token_id, caller.peer)
    now = central.clock()
    record = central.store.get_token(token_id)
    refusal = tokens.token_refusal(record, secret, now)
    if refusal or record is None:  # token_refusal refuses a missing token; `is None` tells the type checker
        raise refuse(central, Unauthenticated, token_caller, action, token_id, refusal or "unknown bootstrap token")
    try:
        public_key = pki.public_key_from_csr(csr_pem)
        if flower_public_key:
            federation.validate_flower_key(flower_public_key)
    except (pki.PkiError, InvalidArgument) as exc:
        raise refuse(central, InvalidArgument, token_caller, action, token_id, str(exc)) from None
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
        raise refuse(
            central,
            Unauthenticated,
            token_caller,
            action,
            token_id,
            tokens.token_refusal(central.store.get_token(token_id), secret, now) or "token unusable",
        )
    if flower_public_key:
        # Registered with the SuperLink by the next reconcile pass (services.federation.reconcile).
        central.store.set_flower_key(node_id, flower_public_key.strip())
    record_audit(
        central, token_caller, action, node_id, audit.ALLOWED, f"enrolled {node_id} ({hostname or 'no hostname'})"
    )
    return Enrollment(node_id, node.labels, pki.certificate_pem(cert).decode())
