"""What the agent trusts of central: the fleet CAs and the manifest signing keys, and how a TrustBundle changes them.

Kept in <data_dir>/fleet/ beside the node's identity:

    ca.crt       every CA certificate the node trusts, PEM, newest first: the roots of its TLS connections to
                 central (gRPC, and Flower's SuperNode, take a bundle). Enrollment writes the one CA pinned then.
    signing.pub  the signing key pinned at enrollment; never rewritten, so it stays what the node first trusted.
    trust.json   {version, bundle_sha256, renew_now, signing_keys: [{key_id, public_key_pem, valid_until}],
                 history: [{at, change}]}; absent until the first bundle changes anything, and until then the
                 node trusts ca.crt and signing.pub alone.

Nothing central offers is taken on its word (edgefleet.trust): a new CA is trusted only through a cross
certificate signed by a CA trusted already, and a new signing key only through a statement signed by a key
trusted already. A bundle that fails any of that is refused whole and changes nothing. The decisions here are
pure (:func:`apply_bundle`, :func:`renewal_wanted`, :func:`renewal_problem`); :class:`TrustFiles` reads and writes.

The bundle's version is recorded and logged but not used to skip a bundle: a central restored from a backup
may offer a lower version than one applied before, and what it offers is verified either way. A bundle whose
content is the one applied last (its sha256) is skipped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from edgefleet import pki, trust
from edgefleet.atomicfile import write_public
from edgefleet.trust import TrustedKey, TrustError

log = logging.getLogger(__name__)

PEM, SPKI = Encoding.PEM, PublicFormat.SubjectPublicKeyInfo
HISTORY_LIMIT = 100  # trust.json keeps the latest changes only: a node lives through few rotations


@dataclass(frozen=True)
class OfferedTrust:
    """A TrustBundle as central sent it (edgefleet.v1.TrustBundle, converted in client.py)."""

    version: int
    ca_certificates_pem: tuple[str, ...]
    cross_certificates_pem: tuple[str, ...]
    # (body, base64 signature) of each signing-key statement, oldest first.
    statements: tuple[tuple[bytes, str], ...]
    renew_now: bool = False

    @property
    def sha256(self) -> str:
        """A digest of the whole content, to skip a bundle applied already (central resends it on every stream)."""
        parts = [
            str(self.version),
            *self.ca_certificates_pem,
            "|",
            *self.cross_certificates_pem,
            "|",
            *(f"{body.hex()}.{signature}" for body, signature in self.statements),
            str(self.renew_now),
        ]
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()


@dataclass(frozen=True)
class AgentTrust:
    """What the node trusts now."""

    ca_certificates: tuple[x509.Certificate, ...]  # newest first
    signing_keys: tuple[TrustedKey, ...]
    version: int = 0  # of the last bundle applied; 0: none yet
    bundle_sha256: str = ""
    renew_now: bool = False  # the last bundle asked for a renewal onto its newest CA
    history: tuple[dict, ...] = field(default=(), repr=False)

    @property
    def newest_ca(self) -> x509.Certificate:
        return self.ca_certificates[0]

    def ca_fingerprints(self) -> list[str]:
        return [pki.fingerprint(ca) for ca in self.ca_certificates]

    def ca_bundle_pem(self) -> bytes:
        return b"".join(pki.certificate_pem(ca) for ca in self.ca_certificates)

    def signing_key_pems(self, now: float) -> list[bytes]:
        """The keys a manifest may be signed by at `now`: a key past the end of its overlap is not one, even
        before a bundle drops it (the node may not reach central for days)."""
        live = [k.public_key_pem for k in self.signing_keys if k.valid_until is None or k.valid_until > now]
        if live or not self.signing_keys:
            return live
        # Never none (as edgefleet.trust.walk_signing_keys): the key trusted longest stays.
        return [max(self.signing_keys, key=lambda k: k.valid_until or 0.0).public_key_pem]


def issued_by(certificate: x509.Certificate, ca: x509.Certificate) -> bool:
    """Whether ca signed certificate (names and signature, not only names)."""
    if certificate.issuer != ca.subject:
        return False
    try:
        certificate.verify_directly_issued_by(ca)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def renewal_wanted(current: AgentTrust, certificate: x509.Certificate) -> bool:
    """Renew at once, not at two thirds of the certificate's life: central asked (`ca rotate --now`) and the
    certificate is not from the newest CA yet. Once it is, nothing more is asked, however often the bundle
    comes back."""
    return current.renew_now and not issued_by(certificate, current.newest_ca)


def trusted_issuer(current: AgentTrust, certificate: x509.Certificate) -> x509.Certificate | None:
    """The trusted CA that issued certificate, or None (a renewal answered from a CA the node does not trust)."""
    return next((ca for ca in current.ca_certificates if issued_by(certificate, ca)), None)


def renewal_problem(current: AgentTrust, certificate: x509.Certificate, key, node_id: str, now: float) -> str | None:
    """Why the certificate central answered a renewal (asked with `key`, the new private key) with must not replace
    the node's, or None. Saved, a
    certificate for another key or node, or one already expired, would leave the node a key and certificate that
    TLS refuses together: it could neither beat nor renew again (central's word is checked, as for a bundle)."""
    if trusted_issuer(current, certificate) is None:
        return f"it is from {certificate.issuer.rfc4514_string()}, a CA this node does not trust"
    if certificate.public_key().public_bytes(PEM, SPKI) != pki.public_key_pem(key):
        return "it is not for the key this node asked with"
    identity = pki.identity_of(certificate)
    if identity is None or (identity.role, identity.name) != ("node", node_id):
        return f"it names {identity or 'no identity'}, not this node (node:{node_id})"
    # Only expiry is judged on this clock: a start in this node's future is central's clock ahead of it (central,
    # whose clock decides, backdates what it issues), and refusing it would strand a node whose clock runs slow.
    if now >= certificate.not_valid_after_utc.timestamp():
        return f"it has expired (at {certificate.not_valid_after_utc.isoformat()})"
    return None


def _certificates(pems: tuple[str, ...], what: str) -> list[x509.Certificate]:
    try:
        return [pki.load_certificate(pem) for pem in pems]
    except (pki.PkiError, ValueError) as exc:
        raise TrustError(f"the bundle's {what} cannot be read: {exc}") from None


def apply_bundle(
    current: AgentTrust, offered: OfferedTrust, own_certificate: x509.Certificate, now: float
) -> AgentTrust:
    """What the node trusts after `offered`, or TrustError naming why the bundle is refused (nothing changes)."""
    offered_cas = _certificates(offered.ca_certificates_pem, "CA certificates")
    if not offered_cas:
        raise TrustError("the bundle lists no CA certificate")
    cross = _certificates(offered.cross_certificates_pem, "cross certificates")
    cas = trust.accept_ca_bundle(list(current.ca_certificates), offered_cas, cross, own_certificate)
    keys = trust.walk_signing_keys(list(current.signing_keys), list(offered.statements), now)
    return replace(
        current,
        ca_certificates=tuple(cas),  # newest first, as accept_ca_bundle orders them
        signing_keys=tuple(keys),
        version=offered.version,
        bundle_sha256=offered.sha256,
        renew_now=offered.renew_now,
    )


def changes(before: AgentTrust, after: AgentTrust) -> list[str]:
    """What a bundle changed, one sentence each, for the log and the history."""
    said = []
    old_cas = {pki.fingerprint(ca): ca for ca in before.ca_certificates}
    new_cas = {pki.fingerprint(ca): ca for ca in after.ca_certificates}
    for fp, ca in new_cas.items():
        if fp not in old_cas:
            said.append(f"trusts CA {fp} ({ca.subject.rfc4514_string()})")
    for fp, ca in old_cas.items():
        if fp not in new_cas:
            said.append(f"no longer trusts CA {fp} ({ca.subject.rfc4514_string()})")
    old_keys = {k.key_id: k for k in before.signing_keys}
    new_keys = {k.key_id: k for k in after.signing_keys}
    for key_id, key in new_keys.items():
        if key_id not in old_keys:
            said.append(f"trusts signing key {key_id}")
        elif key.valid_until != old_keys[key_id].valid_until and key.valid_until is not None:
            said.append(f"trusts signing key {key_id} until {_when(key.valid_until)}")
    for key_id in old_keys:
        if key_id not in new_keys:
            said.append(f"no longer trusts signing key {key_id}")
    if after.renew_now and not before.renew_now:
        said.append("central asks for a certificate from its newest CA now")
    return said


def _when(timestamp: float) -> str:
    return pki.utc(timestamp).isoformat(timespec="seconds")


@dataclass(frozen=True)
class TrustUpdate:
    """What became of one bundle: the trust now, the changes made (none: applied before, or nothing new), and
    why it was refused ("" when it was not)."""

    trust: AgentTrust
    said: tuple[str, ...] = ()
    refused: str = ""
    ca_changed: bool = False


class TrustFiles:
    """trust.json and ca.crt in the fleet directory; read whole and replaced whole (edgefleet.atomicfile)."""

    def __init__(self, fleet_dir: Path):
        self.root = Path(fleet_dir)
        self.ca = self.root / "ca.crt"
        self.signing_public_key = self.root / "signing.pub"
        self.state = self.root / "trust.json"

    def load(self) -> AgentTrust:
        cas = tuple(_load_bundle(self.ca.read_bytes()))
        try:
            data = json.loads(self.state.read_text())
        except FileNotFoundError:
            return AgentTrust(cas, self._pinned_key())
        keys = tuple(
            TrustedKey(k["key_id"], k["public_key_pem"].encode(), k.get("valid_until")) for k in data["signing_keys"]
        )
        return AgentTrust(
            cas,
            keys,
            int(data.get("version", 0)),
            data.get("bundle_sha256", ""),
            bool(data.get("renew_now", False)),
            tuple(data.get("history", ())),
        )

    def _pinned_key(self) -> tuple[TrustedKey, ...]:
        """signing.pub as the one trusted key; none when it is not an Ed25519 key (then every manifest and every
        signing-key statement is refused, which is what a node that cannot check them must do)."""
        pinned = self.signing_public_key.read_bytes()
        try:
            return (TrustedKey(trust.key_id(pinned), pinned, None),)
        except TrustError as exc:
            log.warning("%s: %s; no manifest verifies until the node enrolls again", self.signing_public_key, exc)
            return ()

    def save(self, state: AgentTrust, said: list[str], now: float) -> AgentTrust:
        """Write state, with said appended to its history; returns what was written. ca.crt first, trust.json
        last: trust.json records the bundle as applied, so a crash between the two has the next stream apply it
        again (applying is idempotent) instead of leaving ca.crt behind."""
        history = (*state.history, *({"at": now, "change": s} for s in said))[-HISTORY_LIMIT:]
        state = replace(state, history=history)
        write_public(self.ca, state.ca_bundle_pem())
        record = {
            "version": state.version,
            "bundle_sha256": state.bundle_sha256,
            "renew_now": state.renew_now,
            "signing_keys": [
                {"key_id": k.key_id, "public_key_pem": k.public_key_pem.decode(), "valid_until": k.valid_until}
                for k in state.signing_keys
            ],
            "history": list(history),
        }
        write_public(self.state, json.dumps(record, indent=2).encode())
        return state

    def update(
        self, current: AgentTrust, offered: OfferedTrust, own_certificate: x509.Certificate, now: float
    ) -> TrustUpdate:
        """Apply offered to current and write the result, logging each change; a refused bundle writes nothing.
        OSError when the files cannot be written (then nothing counts as applied: the next stream's bundle is
        applied again)."""
        if offered.sha256 == current.bundle_sha256:
            return TrustUpdate(current)  # central resends the bundle on every stream; this one is applied already
        if offered.version < current.version:
            log.warning(
                "central's trust bundle is version %d, below the %d applied before (was central restored from a "
                "backup?); verifying it as any other",
                offered.version,
                current.version,
            )
        try:
            after = apply_bundle(current, offered, own_certificate, now)
        except TrustError as exc:
            log.warning("refused central's trust bundle version %d: %s; trust unchanged", offered.version, exc)
            return TrustUpdate(current, refused=str(exc))
        said = changes(current, after)
        after = self.save(after, said, now)
        for change in said:
            log.info("trust bundle version %d: %s", offered.version, change)
        return TrustUpdate(after, tuple(said), ca_changed=after.ca_fingerprints() != current.ca_fingerprints())

    def signing_keys(self) -> list[bytes]:
        """The signing keys a manifest may be signed by now (ModelSlots asks at each verification)."""
        return self.load().signing_key_pems(time.time())


def _load_bundle(data: bytes) -> list[x509.Certificate]:
    try:
        cas = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise pki.PkiError(f"the fleet CA bundle cannot be read: {exc}") from None
    if not cas:
        raise pki.PkiError("the fleet CA bundle holds no certificate")
    return cas
