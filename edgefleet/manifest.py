"""Signed model manifests: what a model version is, signed by central's Ed25519 key.

The signature covers the manifest's canonical JSON bytes exactly as sent; the
agent verifies those bytes against the key it pinned at enrollment before it
parses them, so nothing unsigned ever reaches its decisions.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from edgefleet.errors import EdgefleetError

FORMATS = ("gguf", "onnx")
_NAME = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,62}[a-z0-9])?$")
_VERSION = re.compile(r"^[0-9A-Za-z]([0-9A-Za-z.+_-]{0,62}[0-9A-Za-z])?$")


class ManifestError(EdgefleetError):
    """A manifest that is malformed or whose signature does not verify."""


@dataclass(frozen=True)
class Manifest:
    name: str
    version: str
    format: str
    sha256: str
    size: int
    params: dict[str, str] = field(default_factory=dict)
    created_at: float = 0.0
    pushed_by: str = ""

    def canonical(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":")).encode()

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


def validate_name_version(name: str, version: str) -> None:
    if not _NAME.match(name):
        raise ManifestError(f"model name {name!r} must be 1-64 lowercase letters, digits, '.', '_', '-'")
    if not _VERSION.match(version):
        raise ManifestError(f"model version {version!r} must be 1-64 letters, digits, '.', '+', '_', '-'")


def parse_ref(text: str) -> tuple[str, str]:
    """``NAME@VERSION`` → (name, version)."""
    name, sep, version = text.partition("@")
    if not sep:
        raise ManifestError(f"{text!r} must be NAME@VERSION")
    validate_name_version(name, version)
    return name, version


def sign(manifest: Manifest, key: ed25519.Ed25519PrivateKey) -> tuple[bytes, str]:
    """(canonical bytes, base64 signature)."""
    body = manifest.canonical()
    return body, base64.b64encode(key.sign(body)).decode()


def verify(body: bytes, signature_b64: str, public_key_pem: bytes) -> Manifest:
    """The manifest in body, if signature_b64 is the signing key's signature over exactly these bytes."""
    return verify_any(body, signature_b64, [public_key_pem])


def verify_any(body: bytes, signature_b64: str, keys: Sequence[bytes]) -> Manifest:
    """The manifest in body, if signature_b64 is the signature over exactly these bytes of any of keys
    (PEM public keys: every signing key a node trusts, which is more than one while a rotation overlaps)."""
    if not keys:
        raise ManifestError("no signing key is trusted: the manifest cannot be checked")
    try:
        signature = base64.b64decode(signature_b64, validate=True)
        public_keys = [_load_signing_key(pem) for pem in keys]
    except (ValueError, TypeError) as exc:
        raise ManifestError(f"the manifest's signature cannot be checked: {exc}") from None
    if not any(_signed_by(key, signature, body) for key in public_keys):
        whose = "central's signing key" if len(keys) == 1 else f"any of central's {len(keys)} trusted signing keys"
        raise ManifestError(f"the manifest's signature does not verify against {whose}")
    try:
        data = json.loads(body)
        manifest = Manifest(**data)
    except (ValueError, TypeError) as exc:
        raise ManifestError(f"the signed manifest is malformed: {exc}") from None
    if manifest.format not in FORMATS or len(manifest.sha256) != 64 or manifest.size < 0:
        raise ManifestError("the signed manifest has an unknown format, a bad sha256 or a negative size")
    return manifest


def _load_signing_key(public_key_pem: bytes) -> ed25519.Ed25519PublicKey:
    key = serialization.load_pem_public_key(public_key_pem)
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise ManifestError("the pinned signing key is not an Ed25519 key")
    return key


def _signed_by(key: ed25519.Ed25519PublicKey, signature: bytes, body: bytes) -> bool:
    try:
        key.verify(signature, body)
    except InvalidSignature:
        return False
    return True
