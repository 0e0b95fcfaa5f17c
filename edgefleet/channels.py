"""gRPC channels to central, built in one place for the CLI, the agent and the benchmark.

Clients verify central's certificate against the fleet CA and the fixed name
:data:`edgefleet.pki.CENTRAL_SERVER_NAME`, whatever address they dial.
"""

from __future__ import annotations

import socket
import ssl

import grpc

from edgefleet import pki

# Ping idle connections every 30 s (central permits 20 s) so a dead link is noticed without waiting for TCP.
CLIENT_OPTIONS = [
    ("grpc.ssl_target_name_override", pki.CENTRAL_SERVER_NAME),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.max_receive_message_length", 8 * 1024 * 1024),
    # Callers retry with their own backoff; keep gRPC's reconnect backoff short so a retry after central
    # comes back is not refused by a channel still waiting out its own (default up to 120 s).
    ("grpc.initial_reconnect_backoff_ms", 500),
    ("grpc.max_reconnect_backoff_ms", 5_000),
]


def mtls_credentials(ca_pem: bytes | str, cert_pem: bytes | str, key_pem: bytes | str) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(_b(ca_pem), _b(key_pem), _b(cert_pem))


def mtls_channel(address: str, ca_pem, cert_pem, key_pem) -> grpc.Channel:
    """A channel to FleetService/AdminService that presents a client certificate."""
    return grpc.secure_channel(address, mtls_credentials(ca_pem, cert_pem, key_pem), options=CLIENT_OPTIONS)


def tls_channel(address: str, ca_pem) -> grpc.Channel:
    """A channel to EnrollmentService: server TLS only."""
    return grpc.secure_channel(address, grpc.ssl_channel_credentials(_b(ca_pem)), options=CLIENT_OPTIONS)


def discover_ca(address: str, fingerprint: str, timeout_s: float = 10.0) -> bytes:
    """Fetch the CA certificate from central's TLS chain and return it only if it has the pinned fingerprint.

    As `kubeadm join` does: the first contact is not verified, the pin is. The
    certificate found is then the only root the gRPC channel trusts.
    """
    wanted = pki.normalize_fingerprint(fingerprint)
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise pki.PkiError(f"central address {address!r} must be HOST:PORT")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    with (
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s) as raw,
        context.wrap_socket(raw, server_hostname=pki.CENTRAL_SERVER_NAME) as tls,
    ):
        # Private in 3.10-3.12, public as get_unverified_chain() from 3.13; typeshed names no private attribute.
        chain_fn = getattr(tls, "get_unverified_chain", None) or tls._sslobj.get_unverified_chain  # type: ignore[attr-defined]
        chain = [c.public_bytes() for c in chain_fn()]
    for pem in chain:
        pem_bytes = _b(pem)
        if pki.fingerprint(pki.load_certificate(pem_bytes)) == wanted:
            return pem_bytes
    raise pki.PkiError(
        f"central at {address} did not present a CA with fingerprint {wanted}; "
        "check the fingerprint from `edgefleet token create` (someone may be impersonating central)"
    )


def _b(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else value
