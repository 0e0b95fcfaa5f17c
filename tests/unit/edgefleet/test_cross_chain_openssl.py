"""A client that verifies with OpenSSL (Python's ssl; Go's crypto/x509 checks the same) and trusts only the
previous CA accepts central's chain during a CA rotation: server leaf from the new CA, then the cross certificate.
OpenSSL enforces the previous CA's path length, so a CA `pki.create_ca` makes must allow that one intermediate
(path length 1); with 0 the handshake fails with "path length constraint exceeded"."""

from __future__ import annotations

import socket
import ssl
import threading

import pytest
from cryptography import x509

from edgefleet import pki, trust


def _handshake(tmp_path, server_chain: list[x509.Certificate], server_key, roots: list[x509.Certificate]) -> str:
    """ "ok", or OpenSSL's reason, for a client trusting `roots` against a server presenting `server_chain`."""
    chain, key, cafile = tmp_path / "chain.pem", tmp_path / "key.pem", tmp_path / "roots.pem"
    chain.write_bytes(b"".join(pki.certificate_pem(c) for c in server_chain))
    key.write_bytes(pki.private_key_pem(server_key))
    cafile.write_bytes(b"".join(pki.certificate_pem(c) for c in roots))
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(chain, key)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.load_verify_locations(cafile)
    ours, theirs = socket.socketpair()

    def serve() -> None:
        try:
            with server.wrap_socket(ours, server_side=True) as tls:
                tls.recv(1)
        except (ssl.SSLError, OSError):
            pass  # the client's refusal ends the handshake here too

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with client.wrap_socket(theirs, server_hostname=pki.CENTRAL_SERVER_NAME) as tls:
            tls.send(b"x")
        return "ok"
    except ssl.SSLError as exc:
        ours.close()
        return exc.reason or str(exc)
    finally:
        thread.join(10)


@pytest.fixture()
def rotation():
    old_key, old = pki.create_ca("edgefleet fleet CA")
    new_key, new = pki.create_ca("edgefleet fleet CA 2")
    server_key = pki.generate_key()
    server = pki.issue_server_certificate(new_key, new, server_key.public_key())
    return old, new, trust.cross_sign(old_key, old, new), server, server_key


def test_a_client_trusting_only_the_previous_ca_follows_the_cross_certificate(tmp_path, rotation):
    old, _, cross, server, server_key = rotation
    assert old.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 1
    assert _handshake(tmp_path, [server, cross], server_key, [old]) == "ok"


def test_clients_trusting_the_new_ca_or_both_verify_too(tmp_path, rotation):
    old, new, cross, server, server_key = rotation
    assert _handshake(tmp_path, [server, cross], server_key, [new]) == "ok"
    assert _handshake(tmp_path, [server, cross], server_key, [old, new]) == "ok"


def test_without_the_cross_certificate_the_previous_ca_alone_does_not_verify(tmp_path, rotation):
    old, _, _, server, server_key = rotation
    assert _handshake(tmp_path, [server], server_key, [old]) != "ok"
