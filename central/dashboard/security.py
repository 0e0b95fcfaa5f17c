"""Who may reach the dashboard, and what a browser may do with its pages: pure decisions, no sockets.

The dashboard acts with the operator's credential, like `kubectl proxy`: anyone who reaches its port reads the
fleet as that operator. So it listens on loopback unless told otherwise (--allow-remote), it answers only
requests whose Host header names the address it listens on (a page on another site that rebinds its DNS name to
127.0.0.1 sends its own name, and is refused), and its pages run only the scripts and styles it serves itself.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping

# Scripts, styles, images and fetches from the dashboard itself only: no inline script or style, no eval, no
# other origin. Pages may not be framed (clickjacking), forms go nowhere (it only reads).
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
HEADERS: Mapping[str, str] = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
}
LOOPBACK_NAMES = ("localhost",)
WILDCARDS = ("0.0.0.0", "::", "")


def parse_listen(text: str) -> tuple[str, int]:
    """`HOST:PORT` (`[V6]:PORT` for IPv6) as (host, port); ValueError saying what is wrong."""
    host, sep, port = text.strip().rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"--listen {text!r} is not HOST:PORT (e.g. 127.0.0.1:8700)")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    return host, int(port)


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def listen_problem(host: str, allow_remote: bool, extra_hosts: Iterable[str]) -> str | None:
    """Why the dashboard must not listen on `host`; None when it may."""
    if is_loopback(host):
        return None
    if not allow_remote:
        return (
            f"--listen {host} is not a loopback address: anyone who reaches it would read the fleet with your"
            " credential. Keep the default 127.0.0.1 (reach it through an SSH tunnel), or pass --allow-remote"
        )
    if host in WILDCARDS and not list(extra_hosts):
        return (
            f"--listen {host or '*'} binds every address, so no Host header can be checked against it: name the"
            " host names browsers will use with --allow-host NAME"
        )
    return None


def _authority(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def allowed_hosts(host: str, port: int, extra_hosts: Iterable[str] = ()) -> frozenset[str]:
    """The Host header values the dashboard answers (lowercase): its listen address, its loopback aliases, and
    the --allow-host names, each with the port (a browser sends it for any port but 80)."""
    names = set() if host in WILDCARDS else {host.lower()}
    if is_loopback(host):
        names |= {"localhost", "127.0.0.1", "::1"}
    names |= {h.strip().lower() for h in extra_hosts if h.strip()}
    allowed = {_authority(name, port) for name in names}
    if port == 80:
        allowed |= {f"[{n}]" if ":" in n else n for n in names}
    return frozenset(allowed)


def host_allowed(header: str | None, allowed: frozenset[str]) -> bool:
    return bool(header) and header.strip().lower() in allowed  # type: ignore[union-attr]
