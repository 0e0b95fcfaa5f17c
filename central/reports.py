"""Agents' spooled reports, as pure functions: how an agent's sequence numbers map to the ones central keeps,
across the agent's spool epochs, and which of a node's stored reports to prune.

An agent numbers its reports 1, 2, 3... in its spool (edge_agent.control.spool). A spool rebuilt after
corruption starts at 1 again, under a new random epoch. Central stores each report under `base + sequence`,
where `base` is fixed per epoch: 0 for a node's first epoch, and the highest sequence central held when a
new epoch arrived. So a restarted spool's reports are stored after everything central holds (kept, not
ignored as duplicates of old ones), a retried flush within an epoch still lands on the same numbers
(idempotent), and the acknowledgement sent back, `top - base`, is in the agent's own numbering.

Agents from before epochs send none (""): their epoch and base never change, which is how central behaved
before epochs.
"""

from __future__ import annotations

from collections.abc import Sequence

# Agent sequences stay below this (spool sequences are SQLite rowids, far from it): with a base added they
# still fit a signed 64-bit column.
MAX_AGENT_SEQUENCE = 2**53
# What central keeps per node (the newest go last): 1,000 reports, 4 MiB of payload. A GetNode reply of the
# most reports (1,000) fits gRPC's 8 MiB message limit whatever the reports hold.
KEEP_REPORTS = 1000
KEEP_REPORT_BYTES = 4 * 1024 * 1024


def next_base(held_epoch: str, held_base: int, held_top: int, epoch: str, lowest_new: int) -> tuple[int, bool]:
    """The base for a batch of reports from spool `epoch` whose lowest sequence is `lowest_new`, given the
    node's stored epoch and base and the highest sequence central holds for it (0: none); and whether the
    agent's spool restarted (a new epoch, numbering from the start again).

    - no epoch (an older agent), or the held one: nothing changes;
    - the node's first epoch, continuing the numbering central holds (an agent upgraded in place: its spool
      got an epoch but kept its sequences): the epoch is adopted as it is, no restart;
    - any other new epoch: a restart; the base moves to the highest sequence held.
    """
    if not epoch or epoch == held_epoch:
        return held_base, False
    if not held_epoch and lowest_new > held_top - held_base:
        return held_base, False
    return held_top, True


def restart_detail(node_id: str, held_epoch: str, epoch: str) -> str:
    """The audit entry (and log line) for a node whose spool restarted."""
    was = f", was {held_epoch}" if held_epoch else ""
    return f"node {node_id}'s spool restarted (epoch {epoch}{was}): its reports are numbered after those held"


def prune_through(sizes_newest_first: Sequence[tuple[int, int]], keep: int, keep_bytes: int) -> int | None:
    """The highest sequence to delete so that at most `keep` reports of at most `keep_bytes` payload bytes
    remain (the newest always stays), given (sequence, payload bytes) newest first; None when nothing goes."""
    total = 0
    for index, (sequence, size) in enumerate(sizes_newest_first):
        total += size
        if index >= keep or (index > 0 and total > keep_bytes):
            return sequence
    return None
