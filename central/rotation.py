"""The data dir's side of key rotation: the CAs and signing keys central holds, each step written so a crash
anywhere leaves the old trust or the new, never a mix.

Files (central.datadir.CentralPaths):

    ca.key, ca.crt            the current CA: Authority.load issues from it
    ca-previous.crt           the CA before it, still trusted while a CA rotation overlaps (until `ca finish`)
    ca-cross.crt              the current CA signed by the previous one (same subject and key as ca.crt)
    server.crt                central's server certificate, from the current CA (server.key never changes)
    signing.key, signing.pub  the current signing key
    signing-history.json      every signing key's public half, state and validity; the statements chaining them
    trust.json                {version, renew_now, digest}: the TrustBundle's version grows when what it describes does
    retired/                  every CA and signing key replaced, moved here and never deleted

A step writes its new files beside the old ones, then one file commits it (ca-next.key for a CA rotation,
signing-history.json naming the new key for a signing rotation), then renames them into place.
:func:`complete_pending` (run by :func:`load_trust`) finishes a committed step and drops one that was not.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from central.datadir import Authority, CentralPaths, DataDirError
from edgefleet import pki
from edgefleet.atomicfile import write_private, write_public
from edgefleet.privatedir import make_private_dir
from edgefleet.trust import SigningStatement, TrustError, cross_sign, key_id, read_statement, sign_statement

log = logging.getLogger(__name__)

CURRENT, PREVIOUS, RETIRED = "current", "previous", "retired"
DEFAULT_SIGNING_OVERLAP_S = 24 * 3600.0
CA_COMMON_NAME = "edgefleet fleet CA"
CA_VALID_DAYS = 3650
SERVER_CERT_DAYS = 365


class RotationError(DataDirError):
    """A rotation that cannot be done in the trust's present state, or trust files that disagree."""


# --- signing keys ------------------------------------------------------------------


@dataclass(frozen=True)
class SigningKeyInfo:
    key_id: str
    public_key_pem: str
    created_at: float
    valid_until: float | None  # None for the current key
    state: str  # as written: CURRENT, PREVIOUS (in its overlap) or RETIRED

    def state_at(self, now: float) -> str:
        """The state as nodes see it: a previous key whose overlap ended is retired, finished or not."""
        if self.state == PREVIOUS and self.valid_until is not None and self.valid_until <= now:
            return RETIRED
        return self.state


@dataclass(frozen=True)
class SigningHistory:
    keys: tuple[SigningKeyInfo, ...]  # oldest first, exactly one CURRENT (the last)
    statements: tuple[tuple[bytes, str], ...]  # (body, signature), oldest first

    @property
    def current(self) -> SigningKeyInfo:
        return self.keys[-1]

    def previous(self) -> SigningKeyInfo | None:
        """The key in its overlap (by the file; see SigningKeyInfo.state_at for the clock's view)."""
        return next((key for key in self.keys if key.state == PREVIOUS), None)

    def public_keys(self) -> list[str]:
        """Every key ever used, newest first: an audit anchor signed by any of them is central's."""
        return [key.public_key_pem for key in reversed(self.keys)]

    def to_json(self) -> bytes:
        data = {
            "keys": [
                {
                    "key_id": k.key_id,
                    "public_key_pem": k.public_key_pem,
                    "created_at": k.created_at,
                    "valid_until": k.valid_until,
                    "state": k.state,
                }
                for k in self.keys
            ],
            "statements": [{"body": body.decode(), "signature": signature} for body, signature in self.statements],
        }
        return json.dumps(data, indent=1).encode() + b"\n"


def parse_history(raw: bytes, where: str = "signing-history.json") -> SigningHistory:
    """The history in raw, checked: known states, one current key (the last), each statement well formed."""
    try:
        data = json.loads(raw)
        keys = tuple(
            SigningKeyInfo(
                str(k["key_id"]),
                str(k["public_key_pem"]),
                float(k["created_at"]),
                None if k["valid_until"] is None else float(k["valid_until"]),
                str(k["state"]),
            )
            for k in data["keys"]
        )
        statements = tuple((str(s["body"]).encode(), str(s["signature"])) for s in data["statements"])
    except (ValueError, TypeError, KeyError) as exc:
        raise RotationError(f"{where} is malformed: {exc!r}") from None
    if not keys or keys[-1].state != CURRENT or any(k.state == CURRENT for k in keys[:-1]):
        raise RotationError(f"{where} must list its keys oldest first, the last (only) one current")
    for k in keys:
        if k.state not in (CURRENT, PREVIOUS, RETIRED):
            raise RotationError(f"{where}: key {k.key_id} has unknown state {k.state!r}")
        try:
            if key_id(k.public_key_pem.encode()) != k.key_id:
                raise RotationError(f"{where}: key {k.key_id}'s public key has another id")
        except TrustError as exc:
            raise RotationError(f"{where}: key {k.key_id}: {exc}") from None
    try:
        for body, _ in statements:
            read_statement(body)
    except TrustError as exc:
        raise RotationError(f"{where}: {exc}") from None
    return SigningHistory(keys, statements)


def load_history(paths: CentralPaths) -> SigningHistory:
    """signing-history.json, or, for a data dir from before rotation, the one key signing.key holds."""
    try:
        return parse_history(paths.signing_history.read_bytes(), str(paths.signing_history))
    except FileNotFoundError:
        pass
    pem = _public_pem(pki.load_private_key(paths.signing_key.read_bytes()))
    created = paths.signing_key.stat().st_mtime
    return SigningHistory((SigningKeyInfo(key_id(pem), pem.decode(), created, None, CURRENT),), ())


def rotated_history(
    history: SigningHistory,
    current_key: ed25519.Ed25519PrivateKey,
    new_public_pem: bytes,
    now: float,
    overlap_s: float,
) -> SigningHistory:
    """The history after a rotation to new_public_pem: the current key becomes previous until now + overlap_s,
    announced by a statement it signs. Refused while another key is still in its overlap."""
    if overlap_s <= 0:
        raise RotationError(f"the overlap must be positive, got {overlap_s:g} s")
    keys = [replace(k, state=RETIRED) if k.state_at(now) == RETIRED else k for k in history.keys]
    pending = next((k for k in keys if k.state == PREVIOUS), None)
    if pending is not None:
        raise RotationError(
            f"signing key {pending.key_id} is still in its overlap (until {iso_time(pending.valid_until)}): finish that"
            " rotation first (`edgefleet keys finish-signing`)"
        )
    current = keys[-1]
    statement = SigningStatement(
        kind="rotate",
        key_id=key_id(new_public_pem),
        previous_key_id=current.key_id,
        issued_at=now,
        previous_valid_until=now + overlap_s,
        public_key_pem=new_public_pem.decode(),
    )
    signed = sign_statement(statement, current_key)
    keys[-1] = replace(current, state=PREVIOUS, valid_until=now + overlap_s)
    keys.append(SigningKeyInfo(statement.key_id, new_public_pem.decode(), now, None, CURRENT))
    return SigningHistory(tuple(keys), (*history.statements, signed))


def finished_history(
    history: SigningHistory, current_key: ed25519.Ed25519PrivateKey, now: float
) -> tuple[SigningHistory, SigningKeyInfo]:
    """The history with the previous key retired now, by a statement the current key signs; and that key."""
    previous = history.previous()
    if previous is None:
        raise RotationError("no signing key rotation to finish: no key is in its overlap")
    until = now if previous.valid_until is None else min(now, previous.valid_until)
    statement = SigningStatement(
        kind="retire",
        key_id=history.current.key_id,
        previous_key_id=previous.key_id,
        issued_at=now,
        previous_valid_until=until,
    )
    signed = sign_statement(statement, current_key)
    retired = replace(previous, state=RETIRED, valid_until=until)
    keys = tuple(retired if k.key_id == previous.key_id else k for k in history.keys)
    return SigningHistory(keys, (*history.statements, signed)), retired


# --- what central serves -------------------------------------------------------------


@dataclass(frozen=True)
class TrustState:
    """Everything central serves about trust, loaded from one data dir at one moment."""

    paths: CentralPaths
    authority: Authority  # the current CA
    previous_ca: x509.Certificate | None  # while a CA rotation overlaps
    cross: x509.Certificate | None  # the current CA signed by previous_ca
    server_key_pem: bytes
    server_cert_pem: bytes
    signing_key: ed25519.Ed25519PrivateKey
    history: SigningHistory
    version: int
    renew_now: bool

    @property
    def signing_public_key_pem(self) -> str:
        return self.history.current.public_key_pem

    @property
    def cas(self) -> list[x509.Certificate]:
        """The CAs whose certificates central accepts now, newest first."""
        return [self.authority.certificate] + ([self.previous_ca] if self.previous_ca is not None else [])

    @property
    def ca_bundle_pem(self) -> str:
        """What a renewed node or operator is told to trust: the current CA and, while overlapping, the previous."""
        return "".join(pki.certificate_pem(ca).decode() for ca in self.cas)

    @property
    def cross_pems(self) -> list[str]:
        return [pki.certificate_pem(self.cross).decode()] if self.cross is not None else []

    @property
    def fleet_chain_pem(self) -> bytes:
        """The fleet port's chain. The cross certificate comes before the new CA's root: BoringSSL follows the
        first certificate naming the issuer, and a client trusting only the previous CA must meet the cross
        certificate there (tests/integration/test_key_rotation.py shows [leaf, root, cross] fails for it)."""
        cross = pki.certificate_pem(self.cross) if self.cross is not None else b""
        return self.server_cert_pem + cross + pki.certificate_pem(self.authority.certificate)

    @property
    def enroll_chain_pem(self) -> bytes:
        """The enrollment port's chain: the fleet's, then the previous CA, so `edge-agent enroll` pinning either
        CA's fingerprint (a token printed before the rotation) finds it (edgefleet.channels.discover_ca)."""
        previous = pki.certificate_pem(self.previous_ca) if self.previous_ca is not None else b""
        return self.fleet_chain_pem + previous

    @property
    def client_roots_pem(self) -> bytes:
        return self.ca_bundle_pem.encode()

    @property
    def accepted_issuers(self) -> frozenset[bytes]:
        """The subjects (DER) of the CAs whose client certificates central accepts now."""
        return frozenset(ca.subject.public_bytes() for ca in self.cas)

    @property
    def tls_identity(self) -> tuple[str, ...]:
        """Changes exactly when the served TLS configuration must."""
        return (
            *(pki.fingerprint(ca) for ca in self.cas),
            pki.fingerprint(self.cross) if self.cross is not None else "",
            hashlib.sha256(self.server_cert_pem).hexdigest(),
        )

    def trusted_signing_keys(self, now: float) -> list[SigningKeyInfo]:
        """The keys nodes accept manifests from now: the current one and a previous one in its overlap."""
        return [k for k in reversed(self.history.keys) if k.state_at(now) != RETIRED]


def load_trust(paths: CentralPaths, renew_now: bool | None = None) -> TrustState:
    """The data dir's trust, after finishing (or dropping) a step a crash interrupted; trust.json's version is
    raised when what it describes (or renew_now, when given) changed since it was written. Raises RotationError
    for files that disagree."""
    for note in complete_pending(paths):
        log.warning("%s", note)
    authority = Authority.load(paths)
    if _public_pem(authority.key) != _public_pem_of_cert(authority.certificate):
        raise RotationError(f"{paths.ca_key} is not the key of {paths.ca_cert}: the data dir's CA files disagree")
    previous = _optional_certificate(paths.ca_previous_cert)
    cross = _optional_certificate(paths.ca_cross_cert)
    if previous is not None:
        if cross is None:
            raise RotationError(f"{paths.ca_previous_cert} is there without {paths.ca_cross_cert}")
        if cross.subject != authority.certificate.subject or _public_pem_of_cert(cross) != _public_pem_of_cert(
            authority.certificate
        ):
            raise RotationError(f"{paths.ca_cross_cert} is not {paths.ca_cert} cross-signed")
        try:
            cross.verify_directly_issued_by(previous)
        except Exception as exc:  # noqa: BLE001 - ValueError, TypeError or InvalidSignature, said the same way
            raise RotationError(f"{paths.ca_cross_cert} is not signed by {paths.ca_previous_cert}: {exc!r}") from None
    else:
        cross = None
    signing_key = pki.load_private_key(paths.signing_key.read_bytes())
    if not isinstance(signing_key, ed25519.Ed25519PrivateKey):
        raise RotationError(f"{paths.signing_key} is not an Ed25519 key")
    history = load_history(paths)
    public = _public_pem(signing_key)
    if key_id(public) != history.current.key_id:
        raise RotationError(
            f"{paths.signing_key} is {key_id(public)}, but {paths.signing_history} names {history.current.key_id}"
            " as current: the data dir's signing files disagree"
        )
    if not paths.signing_public_key.exists() or paths.signing_public_key.read_bytes() != public:
        write_public(paths.signing_public_key, public)
    server_cert_pem = paths.server_cert.read_bytes()
    version, renew = _reconcile_trust_file(paths, authority.certificate, previous, cross, history, renew_now)
    return TrustState(
        paths,
        authority,
        previous,
        cross,
        paths.server_key.read_bytes(),
        server_cert_pem,
        signing_key,
        history,
        version,
        renew,
    )


def trust_digest(
    current: x509.Certificate,
    previous: x509.Certificate | None,
    cross: x509.Certificate | None,
    history: SigningHistory,
) -> str:
    """What the TrustBundle describes, hashed: when it changes the bundle's version must."""
    described = {
        "cas": [pki.fingerprint(current), pki.fingerprint(previous) if previous is not None else ""],
        "cross": pki.fingerprint(cross) if cross is not None else "",
        "keys": [[k.key_id, k.state, k.valid_until] for k in history.keys],
        "statements": [hashlib.sha256(body).hexdigest() for body, _ in history.statements],
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()


def _reconcile_trust_file(
    paths: CentralPaths,
    current: x509.Certificate,
    previous: x509.Certificate | None,
    cross: x509.Certificate | None,
    history: SigningHistory,
    renew_now: bool | None,
) -> tuple[int, bool]:
    """(version, renew_now) of trust.json, raised and rewritten when the digest or renew_now changed."""
    try:
        data = json.loads(paths.trust_file.read_bytes())
        version, held_renew, held_digest = int(data["version"]), bool(data["renew_now"]), str(data["digest"])
    except FileNotFoundError:
        version, held_renew, held_digest = 0, False, ""
    except (ValueError, TypeError, KeyError) as exc:
        raise RotationError(
            f"{paths.trust_file} is malformed ({exc!r}); remove it to start again at a new version"
        ) from None
    wanted_renew = held_renew if renew_now is None else renew_now
    if previous is None:
        wanted_renew = False  # nothing to renew onto
    digest = trust_digest(current, previous, cross, history)
    if (digest, wanted_renew) == (held_digest, held_renew) and version > 0:
        return version, held_renew
    version += 1
    body = {"version": version, "renew_now": wanted_renew, "digest": digest}
    write_public(paths.trust_file, json.dumps(body, indent=1).encode() + b"\n")
    return version, wanted_renew


def complete_pending(paths: CentralPaths) -> list[str]:
    """Finish a rotation step whose commit file was written, drop one whose was not; what was done, for the log."""
    notes: list[str] = []
    if paths.ca_next_key.exists():
        for staged, target in ((paths.ca_next_cert, paths.ca_cert), (paths.server_next_cert, paths.server_cert)):
            if staged.exists():
                os.replace(staged, target)
        os.replace(paths.ca_next_key, paths.ca_key)
        notes.append(f"finished the CA rotation a stop interrupted ({paths.ca_cert} is the new CA)")
    else:
        # Not committed: whatever it staged goes, and a ca-previous.crt that is still the current CA was its.
        dropped = False
        for staged in (paths.ca_next_cert, paths.server_next_cert):
            if staged.exists():
                staged.unlink()
                dropped = True
        if paths.ca_previous_cert.exists() and paths.ca_previous_cert.read_bytes() == paths.ca_cert.read_bytes():
            paths.ca_previous_cert.unlink()
            paths.ca_cross_cert.unlink(missing_ok=True)
            dropped = True
        if dropped:
            notes.append("dropped a CA rotation a stop interrupted before it was committed; the CA is unchanged")
    if paths.ca_cross_cert.exists() and not paths.ca_previous_cert.exists():
        _retire_file(paths, paths.ca_cross_cert, "ca-cross")  # a `ca finish` the stop interrupted
        notes.append("finished the `ca finish` a stop interrupted")
    if paths.signing_next_key.exists():
        staged = pki.load_private_key(paths.signing_next_key.read_bytes())
        if key_id(_public_pem(staged)) == load_history(paths).current.key_id:
            os.replace(paths.signing_next_key, paths.signing_key)
            write_public(paths.signing_public_key, _public_pem(staged))
            notes.append("finished the signing key rotation a stop interrupted")
        else:
            paths.signing_next_key.unlink()
            notes.append("dropped a signing key rotation a stop interrupted before it was committed")
    return notes


def files_signature(paths: CentralPaths) -> tuple:
    """What changes when any trust file does (mtime and size): a replica reloads its trust when files are copied in."""
    signature = []
    for path in (
        paths.ca_key,
        paths.ca_cert,
        paths.ca_previous_cert,
        paths.ca_cross_cert,
        paths.server_cert,
        paths.signing_key,
        paths.signing_history,
        paths.trust_file,
    ):
        try:
            st = path.stat()
            signature.append((path.name, st.st_mtime_ns, st.st_size))
        except FileNotFoundError:
            signature.append((path.name, 0, -1))
    return tuple(signature)


# --- the steps ---------------------------------------------------------------------


def rotate_signing_key(paths: CentralPaths, now: float, overlap_s: float = DEFAULT_SIGNING_OVERLAP_S) -> TrustState:
    """A new signing key, announced by a statement the current one signs; the current key stays trusted by nodes
    for overlap_s. The old private key is kept in retired/."""
    state = load_trust(paths)
    new_key = pki.generate_signing_key()
    history = rotated_history(state.history, state.signing_key, _public_pem(new_key), now, overlap_s)
    old = state.history.current
    _keep_retired(paths, f"signing-{_short(old.key_id)}.key", pki.private_key_pem(state.signing_key), private=True)
    write_private(paths.signing_next_key, pki.private_key_pem(new_key))
    write_public(paths.signing_history, history.to_json())  # the commit
    complete_pending(paths)
    return load_trust(paths)


def finish_signing_rotation(paths: CentralPaths, now: float) -> tuple[TrustState, SigningKeyInfo]:
    """Retire the previous signing key now: nodes accept manifests from the current key only."""
    state = load_trust(paths)
    history, retired = finished_history(state.history, state.signing_key, now)
    write_public(paths.signing_history, history.to_json())
    return load_trust(paths), retired


def ca_common_name(now: float, taken: Sequence[x509.Certificate] = ()) -> str:
    """A subject no CA in `taken` has: chains are built by subject, so two CAs of one name cannot both be trusted."""
    stamp = pki.utc(now).strftime("%Y-%m-%dT%H:%M:%SZ")
    names = {ca.subject.rfc4514_string() for ca in taken}
    name, n = f"{CA_COMMON_NAME} {stamp}", 1
    while f"CN={name}" in names:
        n += 1
        name = f"{CA_COMMON_NAME} {stamp} {n}"
    return name


def rotate_ca(paths: CentralPaths, now: float, renew_now: bool = False) -> TrustState:
    """A new CA, cross-signed by the current one, which stays trusted until `ca finish`; central's server
    certificate is issued again from the new CA. The old CA's key and certificate are kept in retired/."""
    state = load_trust(paths)
    if state.previous_ca is not None:
        raise RotationError(
            f"a CA rotation is in progress (the previous CA {pki.fingerprint(state.previous_ca)} is still trusted):"
            " finish it first (`edgefleet ca finish`)"
        )
    old = state.authority
    when = pki.utc(now)
    new_key, new_cert = pki.create_ca(ca_common_name(now, [old.certificate]), now=when, valid_days=CA_VALID_DAYS)
    cross = cross_sign(old.key, old.certificate, new_cert)
    server = pki.issue_server_certificate(
        new_key,
        new_cert,
        pki.load_private_key(state.server_key_pem).public_key(),
        now=when,
        valid_days=SERVER_CERT_DAYS,
        extra_names=server_names(pki.load_certificate(state.server_cert_pem)),
    )
    short = _short(old.fingerprint)
    _keep_retired(paths, f"ca-{short}.key", pki.private_key_pem(old.key), private=True)
    _keep_retired(paths, f"ca-{short}.crt", pki.certificate_pem(old.certificate))
    write_public(paths.ca_previous_cert, pki.certificate_pem(old.certificate))
    write_public(paths.ca_cross_cert, pki.certificate_pem(cross))
    write_public(paths.ca_next_cert, pki.certificate_pem(new_cert))
    write_public(paths.server_next_cert, pki.certificate_pem(server))
    write_private(paths.ca_next_key, pki.private_key_pem(new_key))  # the commit
    complete_pending(paths)
    return load_trust(paths, renew_now=renew_now)


def finish_ca_rotation(paths: CentralPaths) -> tuple[TrustState, x509.Certificate]:
    """Stop trusting the previous CA: its certificate and the cross certificate move to retired/."""
    state = load_trust(paths)
    previous = state.previous_ca
    if previous is None:
        raise RotationError("no CA rotation to finish: only the current CA is trusted")
    _keep_retired(paths, f"ca-{_short(pki.fingerprint(previous))}.crt", pki.certificate_pem(previous))
    paths.ca_previous_cert.unlink()  # from here the overlap is over; the cross certificate follows
    _retire_file(paths, paths.ca_cross_cert, "ca-cross")
    return load_trust(paths), previous


def server_names(cert: x509.Certificate) -> list[str]:
    """The DNS names and IP addresses in a server certificate's SAN, to issue its successor with."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    names = [str(n) for n in san.get_values_for_type(x509.DNSName)]
    return names + [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]


# --- helpers -------------------------------------------------------------------------


def _keep_retired(paths: CentralPaths, name: str, data: bytes, private: bool = False) -> None:
    make_private_dir(paths.retired)
    target = paths.retired / name
    if target.exists() and target.read_bytes() == data:
        return
    (write_private if private else write_public)(target, data)


def _retire_file(paths: CentralPaths, path: Path, prefix: str) -> None:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return
    digest = hashlib.sha256(data).hexdigest()[:16]
    _keep_retired(paths, f"{prefix}-{digest}{path.suffix}", data)
    path.unlink()


def _optional_certificate(path: Path) -> x509.Certificate | None:
    try:
        return pki.load_certificate(path.read_bytes())
    except FileNotFoundError:
        return None


def _public_pem(private_key) -> bytes:
    return pki.public_key_pem(private_key)


def _public_pem_of_cert(cert: x509.Certificate) -> bytes:
    return cert.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def _short(identifier: str) -> str:
    """16 hex digits of a fingerprint or key id, for file names in retired/."""
    return identifier.rsplit(":", 1)[-1][:16]


def iso_time(timestamp: float | None) -> str:
    if timestamp is None:
        return "never"
    return dt.datetime.fromtimestamp(timestamp, tz=dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
