"""The audit log's hash chain, as pure functions.

Each entry's hash covers its fields and the previous entry's hash, so editing,
deleting or reordering any entry breaks every hash after it. The first
entry links to :data:`GENESIS_HASH`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Iterable

GENESIS_HASH = "0" * 64
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


def entry_hash(sequence: int, at: float, actor: str, action: str, target: str, outcome: str,
               detail: str, peer: str, previous_hash: str) -> str:
    canonical = json.dumps([sequence, repr(at), actor, action, target, outcome, detail, peer, previous_hash],
                           ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class ChainCheck:
    intact: bool
    entries_checked: int
    first_bad_sequence: int = 0
    problem: str = ""


def verify_chain(entries: Iterable[AuditEntry]) -> ChainCheck:
    """Check that entries (oldest first) are numbered 1, 2, ... and each hash links to the one before."""
    previous = GENESIS_HASH
    checked = 0
    for entry in entries:
        expected_sequence = checked + 1
        if entry.sequence != expected_sequence:
            return ChainCheck(False, checked, entry.sequence,
                              f"entry {entry.sequence} follows entry {checked}: entries are missing or reordered")
        if entry.previous_hash != previous:
            return ChainCheck(False, checked, entry.sequence,
                              f"entry {entry.sequence} does not link to entry {checked}'s hash")
        recomputed = entry_hash(entry.sequence, entry.at, entry.actor, entry.action, entry.target, entry.outcome,
                                entry.detail, entry.peer, entry.previous_hash)
        if recomputed != entry.hash:
            return ChainCheck(False, checked, entry.sequence, f"entry {entry.sequence} was altered after it was written")
        previous = entry.hash
        checked += 1
    return ChainCheck(True, checked)
