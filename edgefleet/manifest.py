"""Signed model manifests: what a model version is, signed by central's Ed25519 key.

The signature covers the manifest's canonical JSON bytes exactly as sent; the
agent verifies those bytes against the key it pinned at enrollment before it
parses them, so nothing unsigned ever reaches its decisions.
"""

from __future__ import annotations

import base64
import json
import re
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
    try:
        key = serialization.load_pem_public_key(public_key_pem)
        if not isinstance(key, ed25519.Ed25519PublicKey):
            raise ManifestError("the pinned signing key is not an Ed25519 key")
        key.verify(base64.b64decode(signature_b64, validate=True), body)
    except InvalidSignature:
        raise ManifestError("the manifest's signature does not verify against central's signing key") from None
    except (ValueError, TypeError) as exc:
        raise ManifestError(f"the manifest's signature cannot be checked: {exc}") from None
    try:
        data = json.loads(body)
        manifest = Manifest(**data)
    except (ValueError, TypeError) as exc:
        raise ManifestError(f"the signed manifest is malformed: {exc}") from None
    if manifest.format not in FORMATS or len(manifest.sha256) != 64 or manifest.size < 0:
        raise ManifestError("the signed manifest has an unknown format, a bad sha256 or a negative size")
    return manifest
