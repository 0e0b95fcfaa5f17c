"""What a node trusts, and how that changes without taking central's word for it.

Two things rotate: central's Ed25519 signing key (manifests, audit anchors) and the fleet CA.

A signing key is introduced by a *statement* signed by the key before it, and the key before
it is retired by a statement signed by its successor. A node walks the chain of statements
(oldest first) from the keys it already trusts: a statement counts only when the key that signed
it is trusted and is the newest (the head), so a leaked old key cannot name a successor once the
chain has moved past it, and no key can have two successors (a fork is refused).

A new CA is introduced by a *cross certificate*: the new CA's subject and public key, signed by a
CA the node trusts. A CA the node trusts is dropped only once the node's own certificate comes
from one central still lists, so a node is never left unable to reach central.

Nothing here reads a clock, the network or a file: `now` and every key and certificate are
parameters, and the callers (central's data dir, the agent's trust state) do the I/O.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from edgefleet.errors import EdgefleetError

KINDS = ("rotate", "retire")
_KEY_ID = re.compile(r"^ed25519:[0-9a-f]{64}$")
# A statement body is a few hundred bytes; anything far larger is not one of ours.
_MAX_BODY_BYTES = 8192


class TrustError(EdgefleetError):
    """A signing-key statement or CA bundle that does not verify; the message says why."""


# --- signing keys ------------------------------------------------------------------


def load_signing_public_key(public_key_pem: bytes) -> ed25519.Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(public_key_pem)
    except (ValueError, TypeError) as exc:
        raise TrustError(f"not a PEM public key: {exc}") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise TrustError(f"a signing key must be Ed25519, not {type(key).__name__}")
    return key


def key_id(public_key_pem: bytes) -> str:
    """``ed25519:`` + sha256 hex of the key's SubjectPublicKeyInfo DER: the same key always has the same id."""
    key = load_signing_public_key(public_key_pem)
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "ed25519:" + hashlib.sha256(der).hexdigest()


@dataclass(frozen=True)
class SigningStatement:
    """One step of the signing key's history.

    rotate: `key_id` (with `public_key_pem`) succeeds `previous_key_id`, which signs the statement
    and stays valid until `previous_valid_until` (the end of the overlap).
    retire: `key_id` (the current key, which signs) says `previous_key_id` is no longer valid from
    `previous_valid_until` (= `issued_at`).
    """

    kind: str
    key_id: str
    previous_key_id: str
    issued_at: float
    previous_valid_until: float
    public_key_pem: str = ""

    @property
    def signer_key_id(self) -> str:
        return self.previous_key_id if self.kind == "rotate" else self.key_id

    def canonical(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":")).encode()


def sign_statement(statement: SigningStatement, signer_private_key: ed25519.Ed25519PrivateKey) -> tuple[bytes, str]:
    """(canonical body, base64 signature); the signer must be the statement's signer_key_id."""
    _check_fields(statement)
    signer_pem = signer_private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if key_id(signer_pem) != statement.signer_key_id:
        raise TrustError(
            f"a {statement.kind} statement is signed by {statement.signer_key_id}, not by {key_id(signer_pem)}"
        )
    body = statement.canonical()
    return body, base64.b64encode(signer_private_key.sign(body)).decode()


def read_statement(body: bytes) -> SigningStatement:
    """The statement in body, checked for shape only: the signature is NOT verified (parse_statement does)."""
    if len(body) > _MAX_BODY_BYTES:
        raise TrustError(f"a signing-key statement of {len(body)} bytes is over the {_MAX_BODY_BYTES} allowed")
    try:
        data = json.loads(body)
        statement = SigningStatement(**data)
    except (ValueError, TypeError) as exc:
        raise TrustError(f"a signing-key statement is malformed: {exc}") from None
    _check_fields(statement)
    if statement.canonical() != body:
        raise TrustError("a signing-key statement is not in canonical form")
    return statement


def parse_statement(body: bytes, signature_b64: str, signer_public_key_pem: bytes) -> SigningStatement:
    """The statement in body, if signature_b64 is the signer's signature over exactly these bytes."""
    statement = read_statement(body)
    if key_id(signer_public_key_pem) != statement.signer_key_id:
        raise TrustError(f"the {statement.kind} statement for {statement.key_id} names another signer")
    try:
        signature = base64.b64decode(signature_b64, validate=True)
        load_signing_public_key(signer_public_key_pem).verify(signature, body)
    except InvalidSignature:
        raise TrustError(
            f"the {statement.kind} statement for {statement.key_id} is not signed by {statement.signer_key_id}"
        ) from None
    except ValueError as exc:
        raise TrustError(f"the {statement.kind} statement's signature cannot be read: {exc}") from None
    return statement


def _check_fields(statement: SigningStatement) -> None:
    if statement.kind not in KINDS:
        raise TrustError(f"a signing-key statement's kind {statement.kind!r} is not one of {', '.join(KINDS)}")
    for name in ("key_id", "previous_key_id"):
        value = getattr(statement, name)
        if not isinstance(value, str) or not _KEY_ID.match(value):
            raise TrustError(f"a signing-key statement's {name} {value!r} is not ed25519:<64 hex digits>")
    if statement.key_id == statement.previous_key_id:
        raise TrustError(f"a {statement.kind} statement names {statement.key_id} as its own predecessor")
    for name in ("issued_at", "previous_valid_until"):
        value = getattr(statement, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise TrustError(f"a signing-key statement's {name} {value!r} is not a time")
    if statement.kind == "rotate":
        if key_id(statement.public_key_pem.encode()) != statement.key_id:
            raise TrustError(f"a rotate statement's public key is not {statement.key_id}")
    elif statement.public_key_pem:
        raise TrustError("a retire statement carries no public key")


@dataclass(frozen=True)
class TrustedKey:
    """A signing key a node accepts signatures from; valid_until None for the current (newest) key."""

    key_id: str
    public_key_pem: bytes
    valid_until: float | None = None


def walk_signing_keys(
    trusted: Sequence[TrustedKey], statements: Sequence[tuple[bytes, str]], now: float
) -> list[TrustedKey]:
    """The keys to trust after applying statements (oldest first) to trusted.

    A statement whose signer is not trusted is skipped (history from before this node's keys, or
    about keys it has dropped). A statement whose signer is trusted must verify, come from the head
    key (the one without valid_until) unless it changes nothing, and not give a key a second
    successor: otherwise TrustError and nothing applies. Keys past valid_until are dropped at the
    end, but the newest key always stays, so the set is never empty.
    """
    if not trusted:
        raise TrustError("no signing key is trusted yet: there is nothing to verify statements with")
    keys: dict[str, TrustedKey] = {key.key_id: key for key in trusted}
    successors: dict[str, str] = {}
    for body, signature in statements:
        unverified = read_statement(body)
        signer = keys.get(unverified.signer_key_id)
        if signer is None:
            continue
        statement = parse_statement(body, signature, signer.public_key_pem)
        if statement.kind == "rotate":
            _apply_rotate(keys, successors, statement)
        else:
            _apply_retire(keys, statement)
    return _drop_expired(list(keys.values()), now)


def _apply_rotate(keys: dict[str, TrustedKey], successors: dict[str, str], statement: SigningStatement) -> None:
    signer = keys[statement.previous_key_id]
    known = successors.get(signer.key_id)
    if known is not None and known != statement.key_id:
        raise TrustError(
            f"signing key {signer.key_id} names two successors, {known} and {statement.key_id}: refusing the fork"
        )
    successors[signer.key_id] = statement.key_id
    if statement.key_id in keys:
        return  # seen before: the chain is sent whole on every update
    if signer.valid_until is not None:
        raise TrustError(f"signing key {signer.key_id} was already succeeded; it cannot introduce {statement.key_id}")
    keys[signer.key_id] = replace(signer, valid_until=statement.previous_valid_until)
    keys[statement.key_id] = TrustedKey(statement.key_id, statement.public_key_pem.encode(), None)


def _apply_retire(keys: dict[str, TrustedKey], statement: SigningStatement) -> None:
    retired = keys.get(statement.previous_key_id)
    if retired is None:
        return
    if keys[statement.key_id].valid_until is not None:
        raise TrustError(f"signing key {statement.key_id} is not the newest: it cannot retire {retired.key_id}")
    until = statement.previous_valid_until
    if retired.valid_until is None or until < retired.valid_until:
        keys[retired.key_id] = replace(retired, valid_until=until)


def _drop_expired(keys: list[TrustedKey], now: float) -> list[TrustedKey]:
    live = [key for key in keys if key.valid_until is None or key.valid_until > now]
    if live:
        return live
    newest = max(keys, key=lambda key: key.valid_until or 0.0)
    return [newest]


# --- certificate authorities ---------------------------------------------------------


def cross_sign(old_ca_key, old_ca_cert: x509.Certificate, new_ca_cert: x509.Certificate) -> x509.Certificate:
    """new_ca_cert's subject, public key and CA extensions, issued by old_ca_cert: a client that trusts
    only the old CA builds leaf → cross → old; one that trusts the new CA stops at the new CA."""
    if new_ca_cert.subject == old_ca_cert.subject:
        raise TrustError("the new CA must have a subject of its own: chains cannot tell two CAs of one name apart")
    now = dt.datetime.now(dt.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(new_ca_cert.subject)
        .issuer_name(old_ca_cert.subject)
        .public_key(new_ca_cert.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(max(new_ca_cert.not_valid_before_utc, old_ca_cert.not_valid_before_utc, now - _BACKDATE))
        .not_valid_after(min(new_ca_cert.not_valid_after_utc, old_ca_cert.not_valid_after_utc))
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(old_ca_key.public_key()), critical=False)
    )
    for extension in new_ca_cert.extensions:
        if isinstance(extension.value, (x509.BasicConstraints, x509.KeyUsage, x509.SubjectKeyIdentifier)):
            builder = builder.add_extension(extension.value, critical=extension.critical)
    return builder.sign(old_ca_key, hashes.SHA256())


_BACKDATE = dt.timedelta(minutes=5)


def _fingerprint(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def _public_der(cert: x509.Certificate) -> bytes:
    return cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _signs_certificates(cert: x509.Certificate) -> bool:
    """Whether cert may sign certificates: a CA by BasicConstraints whose KeyUsage has keyCertSign. A node's or
    operator's certificate (CA:FALSE) carries a trusted CA's signature over its own key and subject too, so it
    must never count as a cross certificate (its holder would self-sign a "CA" on that key)."""
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        key_cert_sign = cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    except x509.ExtensionNotFound:
        return False
    return bool(is_ca and key_cert_sign)


def accept_ca_bundle(
    trusted: Sequence[x509.Certificate],
    offered: Sequence[x509.Certificate],
    cross: Sequence[x509.Certificate],
    own_cert: x509.Certificate | None,
) -> list[x509.Certificate]:
    """The CAs to trust after central offers `offered` (newest first) with `cross` certificates.

    An offered CA not trusted yet is accepted only through a cross certificate (itself a CA certificate with
    keyCertSign, never a node's or operator's) with its subject and public key whose signature verifies with a
    CA already trusted (or accepted in this call, for a
    chain of rotations); an offered CA that cannot be accepted refuses the whole bundle (TrustError).
    Trusted CAs not offered are dropped only once own_cert was issued by an offered CA. Newest first.
    """
    if not trusted:
        raise TrustError("no CA is trusted yet: there is nothing to verify a cross certificate with")
    accepted = {_fingerprint(cert): cert for cert in trusted}
    pending = [cert for cert in offered if _fingerprint(cert) not in accepted]
    for cert in pending:
        if not _signs_certificates(cert) or not _issued_by(cert, cert):
            raise TrustError(f"the offered certificate {cert.subject.rfc4514_string()} is not a self-signed CA")
    while pending:
        progress = [cert for cert in pending if _vouched_for(cert, list(accepted.values()), cross)]
        if not progress:
            names = ", ".join(cert.subject.rfc4514_string() for cert in pending)
            raise TrustError(f"no cross certificate from a trusted CA vouches for the offered CA {names}")
        for cert in progress:
            accepted[_fingerprint(cert)] = cert
        pending = [cert for cert in pending if cert not in progress]
    offered_now = [accepted[_fingerprint(cert)] for cert in offered]
    if own_cert is not None and any(_issued_by(own_cert, ca) for ca in offered_now):
        return _unique(offered_now)
    return _unique([*offered_now, *trusted])


def _vouched_for(cert: x509.Certificate, trusted: list[x509.Certificate], cross: Sequence[x509.Certificate]) -> bool:
    key = _public_der(cert)
    for link in cross:
        if link.subject != cert.subject or _public_der(link) != key or not _signs_certificates(link):
            continue
        if any(_issued_by(link, ca) for ca in trusted):
            return True
    return False


def _unique(certs: list[x509.Certificate]) -> list[x509.Certificate]:
    seen: set[str] = set()
    out = []
    for cert in certs:
        fp = _fingerprint(cert)
        if fp not in seen:
            seen.add(fp)
            out.append(cert)
    return out
