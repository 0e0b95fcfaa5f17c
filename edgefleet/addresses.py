"""HOST:PORT addresses as gRPC dials them: what central hands agents and what an operator points them at."""

from __future__ import annotations

import ipaddress
import re

# A DNS name or an IPv4 address, as gRPC's resolver takes it (an internationalised name in its xn-- form).
_HOST_NAME = re.compile(r"[A-Za-z0-9._-]+")


def dialable_host(host: str) -> bool:
    """A name, an IPv4 address, or an IPv6 address in brackets. gRPC reads an IPv6 address without brackets
    ("2001:db8::5:7443") as an address with no port, and "http://central" as a name to resolve: both would be
    dialled and fail at every reconnect."""
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return False
        return True
    return _HOST_NAME.fullmatch(host) is not None
