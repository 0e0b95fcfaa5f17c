"""Free TCP ports, for a child process that must be told its port before it starts."""

from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A port free on `host` now (for a child that must be told its port up front)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        s.bind((host or "0.0.0.0", 0))
        port: int = s.getsockname()[1]
        return port
