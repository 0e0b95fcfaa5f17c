"""Hash chains for append-only logs, as pure functions: central's audit log and the agent's routing audit.

Each entry's hash is the sha256 of a canonical JSON array of its fields ending with the previous
entry's hash, so editing, deleting or reordering any entry breaks every hash after it. The first
entry links to :data:`GENESIS_HASH`; a log that drops its oldest entries keeps the hash the first
kept entry links to (its anchor) and is checked from there.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol, TypeVar

GENESIS_HASH = "0" * 64
# json.dumps(fields, ensure_ascii=False, separators=(",", ":")) without building an encoder per call.
_CANONICAL = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def chain_hash(*fields: object) -> str:
    """sha256 hex of the fields as compact JSON (non-ASCII kept as is); the last field is the previous hash.
    Floats are passed as repr() strings by callers, so the bytes hashed never depend on JSON's float format."""
    return hashlib.sha256(_CANONICAL.encode(fields).encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class ChainCheck:
    intact: bool
    entries_checked: int
    first_bad_sequence: int = 0
    problem: str = ""


class Linked(Protocol):
    # Read-only properties, so frozen dataclasses (central's AuditEntry) satisfy it too.
    @property
    def sequence(self) -> int: ...
    @property
    def previous_hash(self) -> str: ...
    @property
    def hash(self) -> str: ...


E = TypeVar("E", bound=Linked)


def verify_links(
    entries: Iterable[E], recompute: Callable[[E], str], *, after_sequence: int = 0, after_hash: str = GENESIS_HASH
) -> ChainCheck:
    """Check that entries (oldest first) are numbered after_sequence + 1, + 2, ..., that the first links to
    after_hash and each other to the hash before it, and that recompute(entry) gives each stored hash."""
    previous_sequence, previous = after_sequence, after_hash
    checked = 0
    for entry in entries:
        if entry.sequence != previous_sequence + 1:
            return ChainCheck(
                False,
                checked,
                entry.sequence,
                f"entry {entry.sequence} follows entry {previous_sequence}: entries are missing or reordered",
            )
        if entry.previous_hash != previous:
            return ChainCheck(
                False,
                checked,
                entry.sequence,
                f"entry {entry.sequence} does not link to entry {previous_sequence}'s hash",
            )
        if recompute(entry) != entry.hash:
            return ChainCheck(
                False, checked, entry.sequence, f"entry {entry.sequence} was altered after it was written"
            )
        previous_sequence, previous = entry.sequence, entry.hash
        checked += 1
    return ChainCheck(True, checked)
