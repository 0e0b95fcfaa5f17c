"""AdminService on trust: rotate and retire the signing key and the fleet CA, and say where the fleet stands.

The data dir's files change through central.rotation (crash-safe steps); the store's part follows here, in an
order a crash can resume from at the next start (:func:`reconcile_store`):

- a CA rotation first records who holds a certificate from the current CA (their serials, so that `ca finish`
  can name whoever has not renewed), then writes the files, then moves the store's CA binding to the new CA;
- a signing key rotation writes the files, then re-signs every manifest, then records the key's id in the store
  (a start that finds an older id there re-signs again).

Replicas share the store but each has its own data dir: the call's replica rotates its own, and the store's
binding and key id tell every other replica its data dir lags (:func:`lag_problem`) until its files are copied.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
from dataclasses import dataclass

from cryptography import x509

from central import audit, rotation
from central.errors import FailedPrecondition, InvalidArgument
from central.rotation import RotationError, SigningKeyInfo, TrustState
from central.services.base import Caller, Central, record_audit, refuse, require_admin, require_viewer
from central.store import FleetStore
from edgefleet import manifest as manifest_mod
from edgefleet import pki
from edgefleet.durations import format_duration

log = logging.getLogger(__name__)

# Fleet settings in the store (FleetStore.fleet_value).
PREVIOUS_CA_HOLDERS = "ca_previous_holders"  # JSON {"ca", "nodes": {id: serial}, "operators": {name: serial}}
SIGNING_KEY_ID = "signing_key_id"
CA_HISTORY = "ca_history"  # JSON list of the fingerprints of every CA the fleet rotated away from, oldest first
MIN_OVERLAP_S = 60.0
MAX_OVERLAP_S = 90 * 86400.0
# How many holders a refusal of `ca finish` names before it counts the rest.
MAX_NAMED_HOLDERS = 20

# One rotation at a time in this process (replicas: the operator runs rotations on one of them).
_rotating = threading.Lock()


@dataclass(frozen=True)
class SigningRotation:
    current: SigningKeyInfo
    previous: SigningKeyInfo
    manifests_resigned: int


@dataclass(frozen=True)
class CaView:
    certificate: x509.Certificate
    state: str  # rotation.CURRENT, PREVIOUS or RETIRED

    @property
    def fingerprint(self) -> str:
        return pki.fingerprint(self.certificate)


@dataclass(frozen=True)
class TrustView:
    cas: list[CaView]
    signing_keys: list[SigningKeyInfo]  # newest first, with their state now
    on_previous_ca: list[str]
    version: int


def trust_state(central: Central) -> TrustState:
    if central.trust is None:
        raise FailedPrecondition("this central was started without its data dir's trust files; restart it")
    return central.trust


def apply(central: Central, state: TrustState) -> None:
    """Make `state` what central issues, signs and serves from (the TLS credentials read central.trust)."""
    central.trust = state
    central.authority = state.authority
    central.signing_key = state.signing_key
    central.signing_public_key_pem = state.signing_public_key_pem
    if central.federation is not None:
        central.federation.authority = state.authority  # the SuperLink's next certificate (at its restart)


# -- signing keys ---------------------------------------------------------------------------


def rotate_signing_key(central: Central, caller: Caller, overlap_s: float) -> SigningRotation:
    action = "keys.rotate_signing"
    require_admin(central, caller, action)
    overlap_s = overlap_s or rotation.DEFAULT_SIGNING_OVERLAP_S
    if not MIN_OVERLAP_S <= overlap_s <= MAX_OVERLAP_S:
        raise InvalidArgument(
            f"the overlap must be from {format_duration(MIN_OVERLAP_S)} to {format_duration(MAX_OVERLAP_S)},"
            f" got {format_duration(overlap_s)}"
        )
    with _rotating:
        state = trust_state(central)
        try:
            new = rotation.rotate_signing_key(state.paths, central.clock(), overlap_s)
        except RotationError as exc:
            raise refuse(central, FailedPrecondition, caller, action, state.history.current.key_id, str(exc)) from None
        apply(central, new)
        resigned = resign_manifests(central.store, new)
        central.store.set_fleet_value(SIGNING_KEY_ID, new.history.current.key_id)
    previous = new.history.keys[-2]
    record_audit(
        central,
        caller,
        action,
        new.history.current.key_id,
        audit.ALLOWED,
        f"signing key {new.history.current.key_id} replaces {previous.key_id}, which nodes accept until"
        f" {rotation.iso_time(previous.valid_until)}; {resigned} manifests re-signed",
    )
    log.warning(
        "signing key rotated to %s (previous %s trusted until %s); with replicas, copy signing.key, signing.pub"
        " and signing-history.json to their data dirs",
        new.history.current.key_id,
        previous.key_id,
        rotation.iso_time(previous.valid_until),
    )
    return SigningRotation(new.history.current, previous, resigned)


def finish_signing_rotation(central: Central, caller: Caller) -> SigningKeyInfo:
    action = "keys.finish_signing"
    require_admin(central, caller, action)
    with _rotating:
        state = trust_state(central)
        try:
            new, retired = rotation.finish_signing_rotation(state.paths, central.clock())
        except RotationError as exc:
            raise refuse(central, FailedPrecondition, caller, action, "", str(exc)) from None
        apply(central, new)
    record_audit(
        central,
        caller,
        action,
        retired.key_id,
        audit.ALLOWED,
        f"signing key {retired.key_id} retired; nodes accept {new.history.current.key_id} only",
    )
    return retired


def resign_manifests(store: FleetStore, state: TrustState) -> int:
    """Sign every stored manifest whose signature is not the current key's again (the bytes are unchanged)."""
    current = state.signing_public_key_pem.encode()
    signatures = []
    for model in store.list_models():
        try:
            manifest_mod.verify(model.manifest, model.signature, current)
            continue
        except manifest_mod.ManifestError:
            pass
        signature = base64.b64encode(state.signing_key.sign(model.manifest)).decode()
        signatures.append((model.name, model.version, signature))
    return store.replace_model_signatures(signatures) if signatures else 0


# -- CAs ----------------------------------------------------------------------------------------


def rotate_ca(central: Central, caller: Caller, renew_now: bool) -> tuple[CaView, CaView]:
    action = "ca.rotate"
    require_admin(central, caller, action)
    with _rotating:
        state = trust_state(central)
        if state.previous_ca is not None:
            raise refuse(
                central,
                FailedPrecondition,
                caller,
                action,
                state.authority.fingerprint,
                f"a CA rotation is in progress (previous CA {pki.fingerprint(state.previous_ca)} still trusted):"
                " finish it first (`edgefleet ca finish`)",
            )
        old = state.authority
        # Before the files: who holds a certificate from the CA about to become the previous one.
        central.store.set_fleet_value(PREVIOUS_CA_HOLDERS, json.dumps(_holders(central.store, old.fingerprint)))
        try:
            new = rotation.rotate_ca(state.paths, central.clock(), renew_now)
        except RotationError as exc:
            raise refuse(central, FailedPrecondition, caller, action, old.fingerprint, str(exc)) from None
        bound = record_ca_rotation(central.store, old.fingerprint, new.authority.fingerprint)
        apply(central, new)
    if bound != new.authority.fingerprint:
        log.error("the store stays bound to CA %s, not the new %s", bound, new.authority.fingerprint)
    record_audit(
        central,
        caller,
        action,
        new.authority.fingerprint,
        audit.ALLOWED,
        f"CA {new.authority.fingerprint} replaces {old.fingerprint}, which stays trusted until `ca finish`;"
        f" nodes renew onto it {'at their next heartbeat' if renew_now else 'at their next renewal'}",
    )
    log.warning(
        "fleet CA rotated to %s (previous %s trusted until `ca finish`); with replicas, copy ca.key, ca.crt,"
        " ca-previous.crt, ca-cross.crt, server.crt and trust.json to their data dirs",
        new.authority.fingerprint,
        old.fingerprint,
    )
    return CaView(new.authority.certificate, rotation.CURRENT), CaView(old.certificate, rotation.PREVIOUS)


def finish_ca_rotation(central: Central, caller: Caller, force: bool) -> tuple[CaView, list[str]]:
    action = "ca.finish"
    require_admin(central, caller, action)
    with _rotating:
        state = trust_state(central)
        if state.previous_ca is None:
            raise refuse(
                central,
                FailedPrecondition,
                caller,
                action,
                "",
                "no CA rotation to finish: only the current CA is trusted",
            )
        previous_fp = pki.fingerprint(state.previous_ca)
        stranded = holders_on_previous_ca(central.store, previous_fp)
        if stranded and not force:
            raise refuse(
                central,
                FailedPrecondition,
                caller,
                action,
                previous_fp,
                f"still holding only a certificate from the previous CA: {len(stranded)}"
                f" ({name_list(stranded)}); they are refused once it is retired. Let nodes renew (`edgefleet ca"
                " rotate --now` asks them to at once) and operators run `edgefleet admin renew`; or finish with"
                " --force (they must enroll again)",
            )
        try:
            new, retired = rotation.finish_ca_rotation(state.paths)
        except RotationError as exc:
            raise refuse(central, FailedPrecondition, caller, action, previous_fp, str(exc)) from None
        apply(central, new)
        central.store.set_fleet_value(PREVIOUS_CA_HOLDERS, None)
    record_audit(
        central,
        caller,
        action,
        previous_fp,
        audit.ALLOWED,
        f"CA {previous_fp} retired; certificates it signed are refused from now on"
        + (f"; stranded (forced): {name_list(stranded)}" if stranded else ""),
    )
    return CaView(retired, rotation.RETIRED), stranded


def holders_on_previous_ca(store: FleetStore, previous_fingerprint: str) -> list[str]:
    """node:ID, admin:NAME, viewer:NAME whose live certificate is still the one they held when the CA was rotated
    away from `previous_fingerprint` (so the previous CA signed it); unrevoked only."""
    raw = store.fleet_value(PREVIOUS_CA_HOLDERS)
    if not raw:
        return []
    try:
        held = json.loads(raw)
    except ValueError:
        log.error("the store's %s is not JSON; nobody is listed as on the previous CA", PREVIOUS_CA_HOLDERS)
        return []
    if held.get("ca") != previous_fingerprint:
        return []
    return still_on_previous(held, store.list_nodes(), store.list_operators())


def still_on_previous(held: dict, nodes, operators) -> list[str]:
    """Of the holders recorded at the rotation (`held`), those whose live serial is still the recorded one."""
    node_serials = held.get("nodes", {})
    operator_serials = held.get("operators", {})
    out = [
        f"node:{n.node_id}"
        for n in nodes
        if n.revoked_at is None and node_serials.get(n.node_id) == n.certificate_serial
    ]
    out += [
        f"{o.role}:{o.name}" for o in operators if o.revoked_at is None and operator_serials.get(o.name) == o.serial
    ]
    return out


def name_list(names: list[str]) -> str:
    shown = ", ".join(names[:MAX_NAMED_HOLDERS])
    more = len(names) - MAX_NAMED_HOLDERS
    return shown + (f" and {more} more" if more > 0 else "")


def _holders(store: FleetStore, ca_fingerprint: str) -> dict:
    return {
        "ca": ca_fingerprint,
        "nodes": {n.node_id: n.certificate_serial for n in store.list_nodes() if n.revoked_at is None},
        "operators": {o.name: o.serial for o in store.list_operators() if o.revoked_at is None},
    }


# -- reading --------------------------------------------------------------------------------------


def get_trust(central: Central, caller: Caller) -> TrustView:
    require_viewer(central, caller, "trust.get")
    state = trust_state(central)
    now = central.clock()
    cas = [CaView(state.authority.certificate, rotation.CURRENT)]
    on_previous: list[str] = []
    if state.previous_ca is not None:
        cas.append(CaView(state.previous_ca, rotation.PREVIOUS))
        on_previous = holders_on_previous_ca(central.store, pki.fingerprint(state.previous_ca))
    keys = [_with_state_now(k, now) for k in reversed(state.history.keys)]
    return TrustView(cas, keys, on_previous, state.version)


def _with_state_now(key: SigningKeyInfo, now: float) -> SigningKeyInfo:
    state = key.state_at(now)
    return (
        key
        if state == key.state
        else SigningKeyInfo(key.key_id, key.public_key_pem, key.created_at, key.valid_until, state)
    )


def ca_bundle_pem(central: Central) -> str:
    """What a node or operator is told to trust when central issues it a certificate."""
    return central.trust.ca_bundle_pem if central.trust is not None else central.authority.certificate_pem


def audit_public_keys(central: Central) -> list[str]:
    """Every signing key central ever had: an audit anchor signed by any of them is central's."""
    if central.trust is None:
        return [central.signing_public_key_pem]
    return central.trust.history.public_keys()


# -- replicas and restarts ------------------------------------------------------------------------


def lag_problem(bound_ca: str, rotated_away: list[str], store_key_id: str | None, state: TrustState) -> str | None:
    """Why this data dir's trust is behind the store's (another replica rotated), or None. `rotated_away`: the CAs
    the store's fleet rotated away from. A store bound to a CA this fleet never had is another fleet's (None here:
    datadir.require_fleet_ca refuses it). A store behind the data dir (a stop before its part of a rotation, or a
    store restored from before it) is not a problem: :func:`reconcile_store` brings it forward."""
    ours = state.authority.fingerprint
    previous = pki.fingerprint(state.previous_ca) if state.previous_ca is not None else ""
    if bound_ca not in (ours, previous):
        if ours not in rotated_away:
            return None
        return (
            f"the store's fleet CA is {bound_ca}, but this data dir still holds {ours}, which the fleet rotated away"
            f" from: copy ca.key, ca.crt, ca-previous.crt, ca-cross.crt (or their absence), server.crt and"
            f" trust.json from the replica that rotated it into {state.paths.root}"
        )
    known = {k.key_id for k in state.history.keys}
    if store_key_id and store_key_id not in known:
        return (
            f"the store's manifests are signed with key {store_key_id}, which this data dir does not know: if"
            f" another replica rotated the signing key (`edgefleet keys rotate-signing`), copy its signing.key,"
            f" signing.pub and signing-history.json into {state.paths.root}"
        )
    return None


def rotated_away(store: FleetStore) -> list[str]:
    try:
        history = json.loads(store.fleet_value(CA_HISTORY) or "[]")
    except ValueError:
        log.error(
            "the store's %s is not JSON; a lagging replica is told apart from another fleet's no more", CA_HISTORY
        )
        return []
    return [str(fp) for fp in history] if isinstance(history, list) else []


def record_ca_rotation(store: FleetStore, previous: str, current: str) -> str:
    """The store's part of a CA rotation: the previous CA in its history, the binding moved; the binding now."""
    history = rotated_away(store)
    if previous not in history:
        store.set_fleet_value(CA_HISTORY, json.dumps([*history, previous]))
    return store.rebind_ca(previous, current)


def reload_from_files(central: Central) -> TrustState:
    """The data dir's trust read again (files another replica's rotation left, copied in) and applied."""
    with _rotating:
        state = rotation.load_trust(trust_state(central).paths)
        apply(central, state)
    return state


def lag_against_store(store: FleetStore, state: TrustState) -> str | None:
    """lag_problem, read from the store now (a running replica's periodic check)."""
    bound = store.fleet_value("ca_fingerprint") or ""
    return lag_problem(bound, rotated_away(store), store.fleet_value(SIGNING_KEY_ID), state)


def reconcile_store(store: FleetStore, state: TrustState) -> list[str]:
    """At start: bring the store forward to the data dir's trust (a rotation a stop cut short between the files
    and the store); raise RotationError when the data dir is the one behind. Another fleet's store is left as it
    is (datadir.require_fleet_ca refuses it). What was done, for the log."""
    ours = state.authority.fingerprint
    previous = pki.fingerprint(state.previous_ca) if state.previous_ca is not None else ""
    bound = store.bind_ca(ours)
    problem = lag_problem(bound, rotated_away(store), store.fleet_value(SIGNING_KEY_ID), state)
    if problem:
        raise RotationError(problem)
    if bound not in (ours, previous):
        return []
    notes = []
    if bound == previous:
        record_ca_rotation(store, previous, ours)
        notes.append(f"the store's CA binding moved to {ours} (a rotation a stop cut short)")
    current = state.history.current.key_id
    if store.fleet_value(SIGNING_KEY_ID) != current:
        resigned = resign_manifests(store, state)
        store.set_fleet_value(SIGNING_KEY_ID, current)
        if resigned:
            notes.append(f"re-signed {resigned} manifests with signing key {current}")
    return notes
