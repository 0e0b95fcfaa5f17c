"""The audit log's hash chain, as pure functions.

Each entry's hash covers its fields and the previous entry's hash, so editing,
deleting or reordering any entry breaks every hash after it. The first
entry links to :data:`GENESIS_HASH`. The chain itself is
:mod:`edgefleet.hashchain`, shared with the agent's routing audit.

Old entries may be archived and pruned (`edgefleet audit archive`): central then keeps an
:class:`AuditAnchor`, the sequence and hash of the last entry pruned, signed with its Ed25519
signing key, and the chain is verified from the anchor instead of from genesis.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from edgefleet.hashchain import GENESIS_HASH, ChainCheck, chain_hash, verify_links

__all__ = [
    "ALLOWED",
    "GENESIS_HASH",
    "REFUSED",
    "AuditAnchor",
    "AuditEntry",
    "ChainCheck",
    "anchor_signature_valid",
    "anchor_signed_by_any",
    "entry_hash",
    "sign_anchor",
    "verify_archive",
    "verify_chain",
    "verify_from",
]

ALLOWED = "allowed"
REFUSED = "refused"


@dataclass(frozen=True)
class AuditEntry:
    sequence: int
    at: float
    actor: str
    action: str
    target: str
    outcome: str  # ALLOWED or REFUSED
    detail: str
    peer: str
    previous_hash: str
    hash: str


def entry_hash(
    sequence: int,
    at: float,
    actor: str,
    action: str,
    target: str,
    outcome: str,
    detail: str,
    peer: str,
    previous_hash: str,
) -> str:
    return chain_hash(sequence, repr(at), actor, action, target, outcome, detail, peer, previous_hash)


@dataclass(frozen=True)
class AuditAnchor:
    """Where the kept log starts after a prune: the last pruned entry's sequence and hash (the first kept entry
    links to it), when, and central's signature over the three (base64 Ed25519, :func:`anchor_body`)."""

    sequence: int
    hash: str
    at: float
    signature: str


def anchor_body(sequence: int, hash: str, at: float) -> bytes:
    """The bytes an anchor's signature covers."""
    return json.dumps(["edgefleet-audit-anchor", sequence, hash, repr(at)], separators=(",", ":")).encode()


def sign_anchor(sequence: int, hash: str, at: float, key: ed25519.Ed25519PrivateKey) -> AuditAnchor:
    return AuditAnchor(sequence, hash, at, base64.b64encode(key.sign(anchor_body(sequence, hash, at))).decode())


def anchor_signature_valid(anchor: AuditAnchor, public_key_pem: bytes | str) -> bool:
    """Whether the anchor carries central's signature (the signing key that also signs model manifests)."""
    pem = public_key_pem.encode() if isinstance(public_key_pem, str) else public_key_pem
    try:
        key = serialization.load_pem_public_key(pem)
        if not isinstance(key, ed25519.Ed25519PublicKey):
            return False
        key.verify(
            base64.b64decode(anchor.signature, validate=True), anchor_body(anchor.sequence, anchor.hash, anchor.at)
        )
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


# One PEM public key, or several: every signing key central has had (an anchor may predate a key rotation).
PublicKeys = bytes | str | Sequence[bytes | str]


def anchor_signed_by_any(anchor: AuditAnchor, public_keys: PublicKeys) -> bool:
    """Whether any of the keys signed the anchor (central.rotation keeps every signing key central ever had)."""
    keys = [public_keys] if isinstance(public_keys, (bytes, str)) else list(public_keys)
    return any(anchor_signature_valid(anchor, key) for key in keys)


def verify_chain(
    entries: Iterable[AuditEntry], anchor: AuditAnchor | None = None, public_key_pem: PublicKeys = b""
) -> ChainCheck:
    """Check that entries (oldest first) are numbered 1, 2, ... and each hash links to the one before; after a
    prune, that the anchor is signed by `public_key_pem` (or any of several keys) and the entries follow it
    (anchor.sequence + 1, ..., the first linking to anchor.hash)."""
    after_sequence, after_hash = 0, GENESIS_HASH
    if anchor is not None:
        if not anchor_signed_by_any(anchor, public_key_pem):
            return ChainCheck(
                False,
                0,
                anchor.sequence,
                f"the anchor at entry {anchor.sequence} (where pruning stopped) is not signed by central's signing key",
            )
        after_sequence, after_hash = anchor.sequence, anchor.hash
    return verify_from(after_sequence, after_hash, entries)


def verify_archive(
    after_sequence: int,
    after_hash: str,
    entries: Iterable[AuditEntry],
    anchor: AuditAnchor | None,
    public_key_pem: PublicKeys = b"",
) -> ChainCheck:
    """Check an archive written by `edgefleet audit archive`: its entries chain from where the log then started
    (after_sequence, after_hash), the anchor central signed at the prune names its last entry, and, when
    `public_key_pem` is given, the anchor's signature is central's."""
    kept = list(entries)
    check = verify_from(after_sequence, after_hash, kept)
    if not check.intact:
        return check
    if anchor is None:
        return ChainCheck(False, check.entries_checked, 0, "the archive has no anchor: the prune did not complete")
    last_sequence, last_hash = (kept[-1].sequence, kept[-1].hash) if kept else (after_sequence, after_hash)
    if (anchor.sequence, anchor.hash) != (last_sequence, last_hash):
        return ChainCheck(
            False, check.entries_checked, anchor.sequence, f"the anchor names entry {anchor.sequence}, not the last one"
        )
    if public_key_pem and not anchor_signed_by_any(anchor, public_key_pem):
        return ChainCheck(False, check.entries_checked, anchor.sequence, "the anchor is not signed by that key")
    return check


def verify_from(after_sequence: int, after_hash: str, entries: Iterable[AuditEntry]) -> ChainCheck:
    """Check that entries follow entry `after_sequence` (whose hash is `after_hash`), each linked and unaltered."""
    return verify_links(
        entries,
        lambda e: entry_hash(
            e.sequence, e.at, e.actor, e.action, e.target, e.outcome, e.detail, e.peer, e.previous_hash
        ),
        after_sequence=after_sequence,
        after_hash=after_hash,
    )
