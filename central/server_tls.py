"""Central's TLS server credentials, following its trust as it rotates (central.rotation).

gRPC asks the fetcher for a configuration before each handshake; it returns one only when the trust's TLS side
changed (:attr:`central.rotation.TrustState.tls_identity`), so a rotation or `ca finish` takes effect at the next
connection without a restart. Connections made before keep going: central.servicers.retired_issuer refuses,
call by call, a client certificate whose CA was retired since.

- fleet port (mTLS): chain [server, cross, current CA] while a CA rotation overlaps, else [server, current CA];
  client certificates verified against the current CA and, while overlapping, the previous one.
- enrollment port (server TLS only): the same chain, then the previous CA, so an `edge-agent enroll` pinning
  either fingerprint finds its CA.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import grpc

from central.rotation import TrustState


class DynamicTls:
    """`source()` is the trust to serve now (central.trust, once central is built)."""

    def __init__(self, source: Callable[[], TrustState]):
        self.source = source

    def fleet_credentials(self) -> grpc.ServerCredentials:
        return self._credentials(_fleet_configuration, require_client_auth=True)

    def enroll_credentials(self) -> grpc.ServerCredentials:
        return self._credentials(_enroll_configuration, require_client_auth=False)

    def _credentials(
        self, configure: Callable[[TrustState], grpc.ServerCertificateConfiguration], require_client_auth: bool
    ) -> grpc.ServerCredentials:
        state = self.source()
        served = [state.tls_identity]
        lock = threading.Lock()

        def fetch() -> grpc.ServerCertificateConfiguration | None:
            # Called by gRPC's threads before each handshake: cheap when nothing changed.
            now = self.source()
            with lock:
                if now.tls_identity == served[0]:
                    return None
                served[0] = now.tls_identity
            return configure(now)

        return grpc.dynamic_ssl_server_credentials(configure(state), fetch, require_client_auth)


def _fleet_configuration(state: TrustState) -> grpc.ServerCertificateConfiguration:
    return grpc.ssl_server_certificate_configuration(
        [(state.server_key_pem, state.fleet_chain_pem)], root_certificates=state.client_roots_pem
    )


def _enroll_configuration(state: TrustState) -> grpc.ServerCertificateConfiguration:
    return grpc.ssl_server_certificate_configuration([(state.server_key_pem, state.enroll_chain_pem)])
