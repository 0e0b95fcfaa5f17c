"""Agents' routing summaries, as pure functions: what one report says, whether to take it, and two merged.

An agent's heartbeat (or a status report it spooled while central was away) carries the requests it
routed since its previous report, per (data class, route), and the head of its local routing audit
(edge_agent.routing_audit). Each report is ingested once, so central adds its counts to the node's
totals and keeps the head with the highest sequence (spooled reports arrive after newer beats).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

# Far above any real report (a beat covers seconds); a node's bad numbers must not poison a batch
# that writes other nodes' beats too.
MAX_PAIRS = 1024
MAX_COUNT = 10**12
MAX_TEXT = 256
MAX_SEQUENCE = 2**63 - 1  # SQLite integers are signed 64-bit
# What central keeps per node: at most this many (data class, route) pairs, the overflow pair included. A real
# node has a handful (its data classes times its routes); the bound keeps a node that invents pairs from growing
# its totals (and every ListRoutingTotals page) without end, while every request it reports is still counted.
MAX_PAIRS_PER_NODE = 64
OVERFLOW = ("(other)", "(other)")


@dataclass(frozen=True)
class RoutingReport:
    """Requests per (data class, route) since the node's previous report, and its audit head then."""

    counts: dict[tuple[str, str], int] = field(default_factory=dict)
    audit_sequence: int = 0
    audit_head_hash: str = ""


def problem(report: RoutingReport) -> str:
    """Why central will not take this report's routing ("" when it will)."""
    if len(report.counts) > MAX_PAIRS:
        return f"{len(report.counts)} (data class, route) pairs; at most {MAX_PAIRS}"
    for (data_class, route), count in report.counts.items():
        if not data_class or not route or len(data_class) > MAX_TEXT or len(route) > MAX_TEXT:
            return f"data class {data_class[:40]!r} / route {route[:40]!r}: each must be 1 to {MAX_TEXT} characters"
        if not 0 <= count <= MAX_COUNT:
            return f"{data_class}/{route}: count {count} is beyond {MAX_COUNT}"
    if report.audit_sequence > MAX_SEQUENCE or len(report.audit_head_hash) > MAX_TEXT:
        return "the audit head is malformed"
    return ""


def merge(earlier: RoutingReport, later: RoutingReport) -> RoutingReport:
    """The counts of both, and the head with the higher sequence (the later one's on a tie)."""
    counts = dict(earlier.counts)
    for key, count in later.counts.items():
        counts[key] = counts.get(key, 0) + count
    head = later if later.audit_sequence >= earlier.audit_sequence else earlier
    return RoutingReport(counts, head.audit_sequence, head.audit_head_hash)


def fold(
    held: Collection[tuple[str, str]], counts: dict[tuple[str, str], int], cap: int = MAX_PAIRS_PER_NODE
) -> dict[tuple[str, str], int]:
    """The counts to add to the totals of a node that holds the pairs `held`: a pair it holds, or a new one while
    it has room (cap - 1 pairs besides the overflow pair), is added as it is; the counts of every further new
    pair are added to OVERFLOW. New pairs take the room in sorted order, so replicas fold alike."""
    kept = {p for p in held if p != OVERFLOW}
    out: dict[tuple[str, str], int] = {}
    for pair in sorted(counts):
        count = counts[pair]
        if pair == OVERFLOW or (pair not in kept and len(kept) >= cap - 1):
            out[OVERFLOW] = out.get(OVERFLOW, 0) + count
            continue
        kept.add(pair)
        out[pair] = out.get(pair, 0) + count
    return out
