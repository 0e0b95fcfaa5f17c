"""Retry delays shared by every program that reconnects (the agent's control loop, supervised children)."""

from __future__ import annotations


def backoff_delay(failures: int, base_s: float, cap_s: float, rand: float) -> float:
    """Exponential backoff with equal jitter: half the step fixed, half random, never above cap_s.

    `failures` counts consecutive failed attempts (1 for the first); `rand` is uniform in [0, 1).
    """
    step = min(cap_s, base_s * 2.0 ** min(max(failures - 1, 0), 30))
    return step / 2 + rand * step / 2
