"""The audit log's hash chain, as pure functions.

Each entry's hash covers its fields and the previous entry's hash, so editing,
deleting or reordering any entry breaks every hash after it. The first
entry links to :data:`GENESIS_HASH`. The chain itself is
:mod:`edgefleet.hashchain`, shared with the agent's routing audit.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from edgefleet.hashchain import GENESIS_HASH, ChainCheck, chain_hash, verify_links

__all__ = ["ALLOWED", "GENESIS_HASH", "REFUSED", "AuditEntry", "ChainCheck", "entry_hash", "verify_chain"]

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


def verify_chain(entries: Iterable[AuditEntry]) -> ChainCheck:
    """Check that entries (oldest first) are numbered 1, 2, ... and each hash links to the one before."""
    return verify_links(
        entries,
        lambda e: entry_hash(
            e.sequence, e.at, e.actor, e.action, e.target, e.outcome, e.detail, e.peer, e.previous_hash
        ),
    )
