"""AdminService on operators: create one for a key the caller made, list, revoke, renew.

An operator is a name, a role (``admin`` changes the fleet, ``viewer`` only reads it) and the one certificate
central accepts from it: the serial central last issued, kept in the store and compared on every call
(:func:`central.services.base.require_admin`, :func:`~central.services.base.require_viewer`). The caller
generates the key and sends a CSR, so the key never crosses the wire. The operator `central init` writes
is the first admin and lives under the same rules.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from central import audit
from central.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from central.services.base import Caller, Central, record_audit, refuse, require_admin, require_viewer
from central.store import OperatorRecord, StoreError
from edgefleet import pki
from edgefleet.durations import format_duration

DEFAULT_TTL_S = 30 * 86400.0
MIN_TTL_S = 60.0
MAX_TTL_S = 366 * 86400.0
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


@dataclass(frozen=True)
class Issued:
    """A certificate central issued to an operator, with the operator as stored after it."""

    operator: OperatorRecord
    certificate_pem: str
    replaced_serial: str = ""  # at renewal: the serial refused from now on


# -- pure checks ---------------------------------------------------------------------


def name_problem(name: str) -> str | None:
    if _NAME.fullmatch(name):
        return None
    return (
        f"operator name {name[:80]!r} must be 1 to 64 lowercase letters, digits, '.', '_' or '-',"
        " starting with a letter or a digit"
    )


def role_problem(role: str) -> str | None:
    if role in pki.OPERATOR_ROLES:
        return None
    return f"operator role must be one of {', '.join(pki.OPERATOR_ROLES)}, got {role or 'none'}"


def ttl_seconds(ttl_s: float) -> float:
    """The certificate lifetime a request asks for (0: the default); InvalidArgument when out of bounds."""
    ttl_s = ttl_s or DEFAULT_TTL_S
    if not MIN_TTL_S <= ttl_s <= MAX_TTL_S:
        raise InvalidArgument(
            f"an operator certificate's lifetime must be from {format_duration(MIN_TTL_S)} to"
            f" {format_duration(MAX_TTL_S)}, got {format_duration(ttl_s)}"
        )
    return ttl_s


# -- handlers ------------------------------------------------------------------------


def create_operator(central: Central, caller: Caller, name: str, role: str, ttl_s: float, csr_pem: str) -> Issued:
    action = "operator.create"
    require_admin(central, caller, action, name)
    problem = name_problem(name) or role_problem(role)
    if problem:
        raise InvalidArgument(problem)
    lifetime = ttl_seconds(ttl_s)
    public_key = _public_key(central, caller, action, name, csr_pem)
    if central.store.get_operator(name) is not None:
        raise AlreadyExists(f"operator {name} already exists (names are never reused, even once revoked)")
    now = central.clock()
    cert = _issue(central, public_key, pki.Identity(role, name), lifetime, now)
    record = OperatorRecord(name, role, pki.serial_hex(cert), cert.not_valid_after_utc.timestamp(), now, caller.actor)
    try:
        central.store.add_operator(record)
    except StoreError:
        if central.store.get_operator(name) is None:
            raise
        raise AlreadyExists(f"operator {name} already exists (names are never reused, even once revoked)") from None
    record_audit(
        central,
        caller,
        action,
        name,
        audit.ALLOWED,
        f"created {role} {name} with certificate {record.serial}, valid until {_iso(record.expires_at)}",
    )
    return Issued(record, pki.certificate_pem(cert).decode())


def list_operators(central: Central, caller: Caller) -> list[OperatorRecord]:
    require_viewer(central, caller, "operator.list")
    return central.store.list_operators()


def revoke_operator(central: Central, caller: Caller, name: str, reason: str) -> OperatorRecord:
    action = "operator.revoke"
    require_admin(central, caller, action, name)
    problem = name_problem(name)
    if problem:
        raise InvalidArgument(problem)
    record = central.store.revoke_operator(name, central.clock())
    if record is None:
        raise NotFound(f"no operator {name!r}")
    if record.revoked_at is None:
        raise refuse(
            central,
            FailedPrecondition,
            caller,
            action,
            name,
            f"operator {name} is the last admin: revoking it would leave nobody able to change the fleet;"
            " create another admin first (`edgefleet admin create NAME --role admin`)",
        )
    record_audit(central, caller, action, name, audit.ALLOWED, reason or "revoked")
    return record


def renew_operator(central: Central, caller: Caller, name: str, ttl_s: float, csr_pem: str) -> Issued:
    """A new certificate for the caller itself (any operator), or for `name` (admins only); the one it replaces
    is refused from the next call on."""
    action = "operator.renew"
    own = caller.identity.name if caller.identity and caller.identity.role in pki.OPERATOR_ROLES else ""
    target = name or own
    if target and target == own:
        require_viewer(central, caller, action, target)  # any operator may renew itself
    else:
        require_admin(central, caller, action, target)
    problem = name_problem(target)
    if problem:
        raise InvalidArgument(problem)
    lifetime = ttl_seconds(ttl_s)
    public_key = _public_key(central, caller, action, target, csr_pem)
    record = central.store.get_operator(target)
    if record is None:
        raise NotFound(f"no operator {target!r}")
    if record.revoked_at is not None:
        raise FailedPrecondition(f"operator {target} was revoked; an admin creates a new one instead")
    cert = _issue(central, public_key, pki.Identity(record.role, target), lifetime, central.clock())
    serial = pki.serial_hex(cert)
    renewed = central.store.renew_operator(target, record.serial, serial, cert.not_valid_after_utc.timestamp())
    if renewed is None:
        raise FailedPrecondition(f"operator {target} was renewed or revoked meanwhile; try again")
    record_audit(
        central,
        caller,
        action,
        target,
        audit.ALLOWED,
        f"issued certificate {serial}, replacing {record.serial} (refused from now on),"
        f" valid until {_iso(renewed.expires_at)}",
    )
    return Issued(renewed, pki.certificate_pem(cert).decode(), record.serial)


# -- helpers -------------------------------------------------------------------------


def _public_key(central: Central, caller: Caller, action: str, target: str, csr_pem: str):
    try:
        return pki.public_key_from_csr(csr_pem)
    except pki.PkiError as exc:
        raise refuse(central, InvalidArgument, caller, action, target, str(exc)) from None


def _issue(central: Central, public_key, identity: pki.Identity, lifetime_s: float, now: float):
    return central.authority.issue(public_key, identity, dt.timedelta(seconds=lifetime_s), pki.utc(now))


def _iso(unix_seconds: float) -> str:
    return dt.datetime.fromtimestamp(unix_seconds, tz=dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
