"""The control loop's decisions, pure: when to beat next, which central address to dial, and what state the
agent is in."""

from __future__ import annotations

from collections.abc import Sequence

from edgefleet.addresses import dialable_host

CONNECTING, CONNECTED, OFFLINE, REFUSED = "connecting", "connected", "offline", "refused"


def heartbeat_delay(interval_s: float, rand: float) -> float:
    """The interval ±10 %, so a fleet restarted together does not beat in lockstep."""
    return interval_s * (0.9 + 0.2 * rand)


# How long `edge-agent enroll` waits out central's enrollment rate limit (many boxes behind one NAT, say).
ENROLL_PUSHBACK_BUDGET_S = 60.0


def enroll_pushback_s(trailing_metadata: Sequence[tuple[str, str | bytes]], waited_s: float) -> float | None:
    """How long to wait before enrolling again after central answered RESOURCE_EXHAUSTED, from its
    `grpc-retry-pushback-ms` trailer; None to give up (no trailer, a bad one, or the budget spent)."""
    for key, value in trailing_metadata:
        if key != "grpc-retry-pushback-ms":
            continue
        try:
            delay_s = int(value) / 1000
        except ValueError:
            return None
        if delay_s < 0 or waited_s + delay_s > ENROLL_PUSHBACK_BUDGET_S:
            return None
        return delay_s
    return None


def central_addresses(configured: Sequence[str], enrolled: Sequence[str], enrolled_central: str) -> tuple[str, ...]:
    """The FleetService addresses to try in turn: the config's `central.addresses` when set, else those central
    sent at enrollment, else the one address of an enrollment from before central sent a list. Duplicates go,
    order stays (round-robin over a list with a repeat would favour that replica)."""
    for chosen in (configured, enrolled, (enrolled_central,)):
        addresses = tuple(dict.fromkeys(a.strip() for a in chosen if a.strip()))
        if addresses:
            return addresses
    raise ValueError("no central address: the enrollment names none and central.addresses is empty")


# Bounds on a list of central addresses from central or an operator: a replica set, not a phone book.
MAX_FLEET_ADDRESSES = 64
MAX_ADDRESS_CHARS = 261  # a 253-character DNS name, ':' and a port, or a bracketed IPv6 address


def check_fleet_addresses(entries: Sequence[str]) -> tuple[str, ...]:
    """FleetService addresses to keep in fleet.json (from a heartbeat, or `edge-agent central-addresses set`):
    each HOST:PORT with a port 1..65535 and a host gRPC can dial (edgefleet.addresses.dialable_host); blanks
    skipped, repeats dropped, order kept. Raises ValueError naming the first entry that is not an address, or when
    none is left."""
    addresses = []
    for entry in entries:
        entry = entry.strip()
        if not entry:
            continue
        host, sep, port = entry.rpartition(":")
        if (
            len(entry) > MAX_ADDRESS_CHARS
            or not sep
            or not dialable_host(host)
            or not (port.isascii() and port.isdigit() and 0 < int(port) < 65536)
        ):
            raise ValueError(
                f"{entry[:80]!r} is not HOST:PORT with a port 1..65535 (HOST a name or an IPv4 address, or an IPv6"
                " address in brackets: [2001:db8::5]:7443)"
            )
        addresses.append(entry)
    addresses = list(dict.fromkeys(addresses))
    if not addresses:
        raise ValueError("no address given: name at least one HOST:PORT of central's FleetService")
    if len(addresses) > MAX_FLEET_ADDRESSES:
        raise ValueError(f"{len(addresses)} addresses; at most {MAX_FLEET_ADDRESSES}")
    return tuple(addresses)


def first_address(count: int, rand: float) -> int:
    """Where in the list a starting agent begins: spread at random, so a fleet that restarts together does not
    all land on the first replica. `rand` is uniform in [0, 1)."""
    return min(int(rand * count), count - 1) if count > 0 else 0


def next_address(count: int, current: int) -> int:
    """The address after `current`, round-robin: where the next attempt goes once `current` failed to answer."""
    return (current + 1) % count if count > 0 else 0


def control_state(ever_connected: bool, consecutive_failures: int, refused: bool) -> str:
    if refused:
        return REFUSED
    if consecutive_failures == 0 and ever_connected:
        return CONNECTED
    return OFFLINE if ever_connected or consecutive_failures else CONNECTING


PROBATION_MIN_REQUESTS = 10


def probation_breach(
    requests: int,
    errors: int,
    p99_ms: float,
    max_error_rate: float,
    max_p99_ms: float,
    min_requests: int = PROBATION_MIN_REQUESTS,
) -> str | None:
    """Why a heartbeat window of a version on probation breaches its limits, or None. Windows with fewer
    than min_requests requests are not judged: two errors out of three requests prove nothing."""
    if requests < min_requests:
        return None
    rate = errors / requests
    if rate > max_error_rate:
        return f"error rate {rate:.1%} over {requests} requests > {max_error_rate:.1%}"
    if p99_ms > max_p99_ms:
        return f"p99 {p99_ms:.0f} ms over {requests} requests > {max_p99_ms:.0f} ms"
    return None


LOAD_MARGIN_BYTES = 256 << 20


def memory_shortfall(available_bytes: int, model_bytes: int) -> int:
    """Bytes missing to load a model beside the one serving (weights plus a margin for its contexts and
    KV cache); 0 when it fits."""
    need = int(model_bytes * 1.3) + LOAD_MARGIN_BYTES
    return max(0, need - available_bytes)
