"""Central's client for its own SuperLink's Control API: TLS, presenting central's Control certificate
(federated.superlink_credentials), without which the SuperLink refuses every Control call."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from federated.errors import FederatedError


class FlowerControlError(FederatedError):
    """The SuperLink refused or could not be reached (the message says which)."""


def public_key_bytes(openssh_public: bytes | str) -> bytes:
    """The key as the SuperLink's RegisterNode takes it (Flower's public_key_to_bytes: PEM);
    FlowerControlError when it is not a NIST-curve EC key."""
    data = openssh_public.encode() if isinstance(openssh_public, str) else openssh_public
    try:
        key = serialization.load_ssh_public_key(data.strip())
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise FlowerControlError(f"not an OpenSSH public key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name not in ("secp256r1", "secp384r1", "secp521r1"):
        raise FlowerControlError("a SuperNode key must be an ECDSA key on a NIST curve (P-384 is made at enrollment)")
    from flwr.supercore.primitives.asymmetric import public_key_to_bytes

    return public_key_to_bytes(key)


@dataclass(frozen=True)
class FlowerRun:
    run_id: int
    status: str  # pending | starting | running | finished
    sub_status: str  # completed | failed | stopped when finished
    details: str
    pending_at: str
    finished_at: str
    override_config: dict


class FlowerControl:
    def __init__(self, address: str, ca_pem: bytes, cert_path: Path, key_path: Path, timeout_s: float = 10.0):
        from flwr.supercore.control.control_http_client import ControlHttpClient
        from flwr.supercore.interceptors import RuntimeVersionHttpInterceptor

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.load_verify_locations(cadata=ca_pem.decode("ascii"))
        try:
            context.load_cert_chain(str(cert_path), str(key_path))
        except (OSError, ssl.SSLError) as exc:
            raise FlowerControlError(
                f"central's Control certificate cannot be loaded from {cert_path}: {exc}"
            ) from None
        self._client = ControlHttpClient(
            f"https://{address}",
            interceptors=[RuntimeVersionHttpInterceptor(component_name="flwr CLI")],
            verify=context,
            timeout=timeout_s,
        )

    def close(self) -> None:
        self._client.close()

    def _call(self, method: str, request):
        try:
            return getattr(self._client, method)(request)
        except Exception as exc:  # httpx and Flower errors alike
            raise FlowerControlError(f"SuperLink {method} failed: {exc}") from exc

    def register_node(self, openssh_public: bytes | str, name: str) -> int:
        from flwr.proto.control_pb2 import RegisterNodeRequest

        response = self._call(
            "RegisterNode", RegisterNodeRequest(public_key=public_key_bytes(openssh_public), name=name)
        )
        if not response.node_id:
            raise FlowerControlError("the SuperLink did not register the node")
        return int(response.node_id)

    def unregister_node(self, node_id: int) -> None:
        from flwr.proto.control_pb2 import UnregisterNodeRequest

        self._call("UnregisterNode", UnregisterNodeRequest(node_id=node_id))

    def registered_nodes(self) -> dict[int, str]:
        """Flower node id -> status (registered, online, offline, unregistered)."""
        from flwr.proto.control_pb2 import ListNodesRequest

        response = self._call("ListNodes", ListNodesRequest())
        return {int(n.node_id): n.status for n in response.nodes_info}

    def start_run(self, fab: bytes, fab_hash: str, run_config: dict) -> int:
        from flwr.common.serde import fab_to_proto, user_config_to_proto
        from flwr.proto.control_pb2 import StartRunRequest
        from flwr.supercore.fab import Fab

        request = StartRunRequest(
            fab=fab_to_proto(Fab(fab_hash, fab, {})), override_config=user_config_to_proto(run_config)
        )
        response = self._call("StartRun", request)
        if not response.HasField("run_id"):
            raise FlowerControlError(
                f"the SuperLink did not start the run{': ' + response.note if response.note else ''}"
            )
        return int(response.run_id)

    def stop_run(self, run_id: int) -> None:
        from flwr.proto.control_pb2 import StopRunRequest

        self._call("StopRun", StopRunRequest(run_id=run_id))

    def runs(self, run_id: int = 0) -> list[FlowerRun]:
        from flwr.common.serde import user_config_from_proto
        from flwr.proto.control_pb2 import ListRunsRequest

        response = self._call("ListRuns", ListRunsRequest(run_id=run_id) if run_id else ListRunsRequest())
        return [
            FlowerRun(
                int(r.run_id),
                r.status.status,
                r.status.sub_status,
                r.status.details,
                r.pending_at,
                r.finished_at,
                dict(user_config_from_proto(r.override_config)),
            )
            for r in response.run_dict.values()
        ]
