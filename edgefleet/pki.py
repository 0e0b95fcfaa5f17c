"""The fleet's PKI: one CA, certificates whose URI SAN says who holds them.

Identities are SPIFFE-style URIs in the certificate's subjectAltName:
``spiffe://edgefleet/node/<node-id>`` for agents,
``spiffe://edgefleet/admin/<name>`` for operators who may change the fleet and
``spiffe://edgefleet/viewer/<name>`` for operators who may only read it. The role
is the path's first segment, so a viewer's certificate says what it is on its own
(central also checks it against the operator's record, which decides revocation).
Central reads the caller's identity from its verified certificate only, never
from a request field.
Central's own server certificate carries the fixed DNS name
:data:`CENTRAL_SERVER_NAME`, which clients verify whatever address they dial.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# write_private/write_public are re-exported: central and the agent write keys and certificates through pki.
from edgefleet.atomicfile import write_private, write_public  # noqa: F401
from edgefleet.errors import EdgefleetError

CENTRAL_SERVER_NAME = "central.edgefleet"
_TRUST_DOMAIN = "edgefleet"
ROLES = ("node", "admin", "viewer")
# The roles of operators (AdminService callers), most powerful first.
OPERATOR_ROLES = ("admin", "viewer")


class PkiError(EdgefleetError):
    """A certificate, key or CSR that cannot be used; the message says why."""


@dataclass(frozen=True)
class Identity:
    role: str  # one of ROLES
    name: str

    @property
    def uri(self) -> str:
        return f"spiffe://{_TRUST_DOMAIN}/{self.role}/{self.name}"

    def __str__(self) -> str:
        return f"{self.role}:{self.name}"


def parse_identity_uri(uri: str) -> Identity | None:
    """The identity in a SAN URI, or None when it is not one of ours."""
    prefix = f"spiffe://{_TRUST_DOMAIN}/"
    if not uri.startswith(prefix):
        return None
    role, _, name = uri[len(prefix) :].partition("/")
    if role not in ROLES or not name or "/" in name:
        return None
    return Identity(role, name)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def utc(timestamp: float) -> dt.datetime:
    """A unix time as an aware UTC datetime, as certificates carry them."""
    return dt.datetime.fromtimestamp(timestamp, tz=dt.timezone.utc)


# --- keys -----------------------------------------------------------------


def generate_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def generate_signing_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


def private_key_pem(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def public_key_pem(key) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def load_private_key(data: bytes):
    try:
        return serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise PkiError(f"not a PEM private key: {exc}") from exc


# --- certificates -----------------------------------------------------------


def load_certificate(data: bytes | str) -> x509.Certificate:
    raw = data.encode() if isinstance(data, str) else data
    try:
        return x509.load_pem_x509_certificate(raw)
    except ValueError as exc:
        raise PkiError(f"not a PEM certificate: {exc}") from exc


def certificate_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def fingerprint(cert: x509.Certificate) -> str:
    """``sha256:HEX`` of the certificate's DER bytes (what `openssl x509 -fingerprint -sha256` shows)."""
    return "sha256:" + hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def normalize_fingerprint(text: str) -> str:
    """Accept ``sha256:HEX`` with or without colons between bytes, any case."""
    algo, sep, digest = text.strip().partition(":")
    if not sep or algo.lower() != "sha256":
        raise PkiError(f"CA fingerprint {text!r} must look like sha256:HEX")
    digest = digest.replace(":", "").lower()
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise PkiError(f"CA fingerprint {text!r} must have 64 hex digits after sha256:")
    return "sha256:" + digest


def serial_hex(cert: x509.Certificate) -> str:
    return format(cert.serial_number, "x")


def identity_of(cert: x509.Certificate) -> Identity | None:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    for uri in san.get_values_for_type(x509.UniformResourceIdentifier):
        identity = parse_identity_uri(uri)
        if identity:
            return identity
    return None


def create_ca(
    common_name: str = "edgefleet fleet CA", *, now: dt.datetime | None = None, valid_days: int = 3650
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = generate_key()
    now = now or utcnow()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=valid_days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def make_csr(key, common_name: str = "edgefleet-agent") -> bytes:
    """A PEM CSR for key; central ignores its subject and sets the identity itself."""
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def public_key_from_csr(csr_pem: str | bytes):
    """The CSR's public key, after checking the CSR is well formed, self-signed and uses a key TLS accepts."""
    raw = csr_pem.encode() if isinstance(csr_pem, str) else csr_pem
    if not raw.strip():
        raise PkiError("the certificate signing request is empty")
    try:
        csr = x509.load_pem_x509_csr(raw)
    except ValueError as exc:
        raise PkiError(f"the certificate signing request is not a PEM CSR: {exc}") from exc
    try:
        valid = csr.is_signature_valid
        public_key = csr.public_key()
    except (ValueError, InvalidSignature, x509.UnsupportedGeneralNameType) as exc:
        raise PkiError(f"the certificate signing request cannot be read: {exc}") from exc
    if not valid:
        raise PkiError("the certificate signing request's signature does not match its key")
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        if public_key.curve.name not in ("secp256r1", "secp384r1"):
            raise PkiError(f"EC curve {public_key.curve.name} is not accepted; use P-256 or P-384")
    elif isinstance(public_key, rsa.RSAPublicKey):
        if public_key.key_size < 2048:
            raise PkiError(f"an RSA key of {public_key.key_size} bits is too small; use 2048 or more")
    else:
        raise PkiError(f"{type(public_key).__name__} keys are not accepted; use ECDSA P-256")
    return public_key


def issue_certificate(
    ca_key,
    ca_cert: x509.Certificate,
    public_key,
    identity: Identity,
    *,
    not_before: dt.datetime,
    not_after: dt.datetime,
) -> x509.Certificate:
    """A client certificate for identity (a node or an admin), signed by the fleet CA."""
    return (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, identity.role),
                    x509.NameAttribute(NameOID.COMMON_NAME, identity.name),
                ]
            )
        )
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(identity.uri)]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )


def issue_server_certificate(
    ca_key,
    ca_cert: x509.Certificate,
    public_key,
    *,
    now: dt.datetime | None = None,
    valid_days: int = 365,
    extra_names: Sequence[str] = (),
) -> x509.Certificate:
    """Central's TLS server certificate, named :data:`CENTRAL_SERVER_NAME` and any `extra_names`
    (host names or IP addresses, for clients that verify the address they dial, as Flower's do)."""
    now = now or utcnow()
    names: list[x509.GeneralName] = [x509.DNSName(CENTRAL_SERVER_NAME)]
    for name in extra_names:
        if name == CENTRAL_SERVER_NAME:
            continue
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            names.append(x509.DNSName(name))
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CENTRAL_SERVER_NAME)]))
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=valid_days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )


def renewal_due(not_before: dt.datetime, not_after: dt.datetime, now: dt.datetime) -> bool:
    """True once two thirds of the certificate's lifetime have passed."""
    return now >= not_before + (not_after - not_before) * 2 / 3
