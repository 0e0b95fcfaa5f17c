"""Enrollment's admission control and its refusal tally, as pure logic.

Nothing here reads a clock, the network or the store: callers pass `now`. The enrollment server
(central.enrollment_server) asks :class:`PeerBuckets` and :class:`ConcurrencyCap` before a call touches
anything else, and counts every refusal in a :class:`RefusalTally`, which it writes to the audit log as a
bounded number of entries per window whatever a caller sends.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from dataclasses import dataclass
from urllib.parse import unquote

# A peer that is not one address (a Unix socket, something gRPC did not name) is keyed as this.
OTHER_PEER = "*"


def peer_host(peer: str) -> str:
    """The rate-limit key of a gRPC peer string: its IP without the port ("ipv4:10.0.0.7:5123" → "10.0.0.7");
    an IPv6 address by its /64 ("ipv6:[2001:db8:1:2::9]:443" → "2001:db8:1:2::/64"), since one host may hold
    a whole /64; "::1" stays "::1". Anything else as itself, up to 64 characters."""
    kind, _, rest = peer.partition(":")
    rest = unquote(rest)
    if kind == "ipv4":
        return rest.rsplit(":", 1)[0]
    if kind == "ipv6":
        host = rest.rsplit(":", 1)[0].strip("[]").split("%", 1)[0]
        try:
            address = ipaddress.IPv6Address(host)
        except ValueError:
            return host[:64] or OTHER_PEER
        if address.is_loopback or address.ipv4_mapped:
            return str(address.ipv4_mapped or address)
        return str(ipaddress.IPv6Network(f"{address}/64", strict=False))
    return peer[:64] or OTHER_PEER


class PeerBuckets:
    """A token bucket per peer: `rate_per_s` calls a second, up to `burst` at once. At most `max_peers` are
    tracked; a full bucket is the same as none, so those go first when room is needed, then the least
    recently used (which then starts full again: the cap bounds memory, the rate bounds a peer)."""

    def __init__(self, rate_per_s: float, burst: int, max_peers: int = 10_000):
        if rate_per_s <= 0 or burst < 1 or max_peers < 1:
            raise ValueError(f"rate_per_s > 0, burst >= 1 and max_peers >= 1, not {rate_per_s}, {burst}, {max_peers}")
        self.rate_per_s, self.burst, self.max_peers = rate_per_s, burst, max_peers
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # peer → (tokens, at)

    def take(self, peer: str, now: float) -> float:
        """Spend one call of `peer`'s allowance at `now`: 0.0 when allowed, else the seconds until it would be."""
        tokens, at = self._buckets.pop(peer, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + max(0.0, now - at) * self.rate_per_s)
        if tokens >= 1.0:
            self._buckets[peer] = (tokens - 1.0, now)
            self._trim(now)
            return 0.0
        self._buckets[peer] = (tokens, now)
        return (1.0 - tokens) / self.rate_per_s

    def __len__(self) -> int:
        return len(self._buckets)

    def _trim(self, now: float) -> None:
        if len(self._buckets) <= self.max_peers:
            return
        full = [p for p, (t, at) in self._buckets.items() if t + (now - at) * self.rate_per_s >= self.burst]
        for peer in full:
            del self._buckets[peer]
        while len(self._buckets) > self.max_peers:
            self._buckets.popitem(last=False)


class ConcurrencyCap:
    """At most `limit` calls in flight at once; `enter` says whether one more may start, `leave` ends one."""

    def __init__(self, limit: int):
        if limit < 1:
            raise ValueError(f"the concurrency limit must be at least 1, not {limit}")
        self.limit = limit
        self.in_flight = 0

    def enter(self) -> bool:
        if self.in_flight >= self.limit:
            return False
        self.in_flight += 1
        return True

    def leave(self) -> None:
        self.in_flight = max(0, self.in_flight - 1)


@dataclass(frozen=True)
class RefusalCount:
    """Refusals of one kind from one peer in one window, as one audit entry."""

    peer: str
    reason: str  # one of a fixed set the caller chooses, never text a caller sent
    target: str  # a bootstrap token's id when the token exists (so bounded by the store), else ""
    count: int
    first_at: float
    last_at: float


class RefusalTally:
    """Counts refusals per (peer, reason, target) over windows of `window_s`.

    The first refusal of a key in a window is to be written at once (:meth:`add` returns True), so a single
    mistake shows in the audit log as it happens; the rest of the window's refusals of that key become one
    entry when the window is drained. A window tracks at most `max_keys` keys; refusals past that are counted
    under peer :data:`OTHER_PEER` (per reason) and never written at once. So a window adds at most
    2 * max_keys + 2 * (number of reasons) entries, whatever callers send.
    """

    def __init__(self, window_s: float = 60.0, max_keys: int = 100):
        if window_s <= 0 or max_keys < 1:
            raise ValueError(f"window_s > 0 and max_keys >= 1, not {window_s}, {max_keys}")
        self.window_s, self.max_keys = window_s, max_keys
        self._started_at: float | None = None
        self._counts: dict[tuple[str, str, str], list[float]] = {}  # key → [count after the first, first, last]
        self._seen: set[tuple[str, str, str]] = set()  # keys whose first refusal was reported at once

    def add(self, now: float, peer: str, reason: str, target: str = "") -> bool:
        """Count one refusal; True when it is the key's first in this window (write it now, on its own)."""
        if self._started_at is None:
            self._started_at = now
        key = (peer, reason, target)
        if key not in self._seen and key not in self._counts:
            if len(self._seen) < self.max_keys:
                self._seen.add(key)
                return True
            key = (OTHER_PEER, reason, "")
        entry = self._counts.get(key)
        if entry is None:
            self._counts[key] = [1, now, now]
        else:
            entry[0] += 1
            entry[2] = now
        return False

    def due(self, now: float) -> bool:
        """Whether the current window has ended (and has something to drain)."""
        return self._started_at is not None and now >= self._started_at + self.window_s

    def drain(self) -> list[RefusalCount]:
        """The window's counts beyond each key's first, sorted by count (largest first); a new window starts."""
        counts = [RefusalCount(p, r, t, int(c), f, last) for (p, r, t), (c, f, last) in self._counts.items()]
        self._started_at, self._counts, self._seen = None, {}, set()
        return sorted(counts, key=lambda c: (-c.count, c.peer, c.reason, c.target))
