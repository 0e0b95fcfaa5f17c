"""The one module the `edgefleet` CLI uses to call AdminService, and the one place that turns gRPC
errors into messages a person can act on."""

from __future__ import annotations

import grpc

from central.credential import Credential
from central.errors import CentralError
from edgefleet.channels import mtls_channel
from edgefleet.v1 import admin_pb2_grpc

RPC_TIMEOUT_S = 15.0


class AdminCallError(CentralError):
    """An AdminService call failed; `exit_code` is what the CLI exits with."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def explain(error: grpc.RpcError, address: str) -> AdminCallError:
    code, details = error.code(), error.details() or ""
    if code == grpc.StatusCode.UNAVAILABLE:
        if "handshake" in details.lower() or "ssl" in details.lower() or "socket closed" in details.lower():
            return AdminCallError(
                f"central at {address} refused our TLS handshake ({details}): is the credential's "
                "certificate from this fleet's CA and still valid?",
                3,
            )
        return AdminCallError(f"cannot reach central at {address}: {details}", 3)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return AdminCallError(f"central at {address} did not answer within {RPC_TIMEOUT_S:.0f} s", 3)
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        return AdminCallError(f"refused by central: {details}", 4)
    if code == grpc.StatusCode.NOT_FOUND:
        return AdminCallError(details, 5)
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return AdminCallError(details, 2)
    if code in (grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.FAILED_PRECONDITION):
        return AdminCallError(details, 6)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return AdminCallError(f"central could not store it: {details}", 1)
    return AdminCallError(f"central failed: {code.name}: {details}", 1)


class AdminClient:
    def __init__(self, credential: Credential, address: str | None = None):
        self.address = address or credential.central
        self._channel = mtls_channel(self.address, credential.ca_pem, credential.certificate_pem, credential.key_pem)
        self._stub = admin_pb2_grpc.AdminServiceStub(self._channel)

    def call(self, method: str, request):
        try:
            return getattr(self._stub, method)(request, timeout=RPC_TIMEOUT_S)
        except grpc.RpcError as exc:
            raise explain(exc, self.address) from None

    def stream(self, method: str, requests, timeout_s: float | None = None):
        """A client-streaming call (PushModel); no deadline by default, since a large file takes its time."""
        try:
            return getattr(self._stub, method)(requests, timeout=timeout_s)
        except grpc.RpcError as exc:
            raise explain(exc, self.address) from None

    def close(self) -> None:
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
