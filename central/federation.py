"""Federated learning at central: the supervised SuperLink, node keys, runs and their outcomes.

Central runs Flower's SuperLink beside the coordinator (federated.superlink,
TLS with a certificate from the fleet CA, SuperNode auth on) and is the only
client of its Control API: the SuperLink serves Control only to the client
certificate central makes for itself at start (federated.superlink_credentials,
key in `flower/`), and runs sandboxed in `superlink/`, its own directory, unable
to read the CA key, the signing key or the store (federated.sandbox). What the operator asks for arrives through
AdminService; this module turns it into Flower calls:

- the Flower key an agent sends at enrollment is registered with the
  SuperLink, and unregistered when the node is revoked (a reconcile pass every
  few seconds, so neither is lost while the SuperLink restarts);
- `fl start` becomes a Flower run of the code-free FAB (federated.fab);
- a finished run's outcome (the ServerApp writes it to `superlink/results/`) is
  imported: a sensitivity classifier becomes a registry version.
"""

from __future__ import annotations

import json
import logging
import socket
import sys
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from central.datadir import Authority, CentralPaths
from central.errors import InvalidArgument
from central.store import FlowerKeyRecord
from edgefleet import pki

log = logging.getLogger(__name__)

CLASSIFIER_MODEL = "sensitivity-classifier"
MAX_ROUNDS = 1000
RECONCILE_INTERVAL_S = 2.0
SUPERLINK_CERT_DAYS = 365


def flower_available() -> str | None:
    """None when flwr imports; otherwise why federated learning is off on this install."""
    if sys.version_info < (3, 11):
        major, minor = sys.version_info[:2]
        return f"federated learning needs Python 3.11 or later (flwr 1.42); this is Python {major}.{minor}"
    import importlib.util

    if importlib.util.find_spec("flwr") is None:
        return "flwr is not installed"
    return None


@dataclass(frozen=True)
class RunRequest:
    task: str
    rounds: int
    min_nodes: int
    secagg: bool = True
    secagg_shares: int = 0
    secagg_threshold: int = 0
    clip: float = 0.0
    noise: float = 0.0
    stage_timeout_s: float = 0.0
    wait_nodes_s: float = 0.0
    record_received: bool = False


def run_config(request: RunRequest, results_dir: Path) -> dict:
    """The Flower run config for a request; InvalidArgument naming the first bad field."""
    from federated.tasks import task_names

    if request.task not in task_names():
        raise InvalidArgument(f"unknown task {request.task!r}; known tasks: {', '.join(task_names())}")
    if not 1 <= request.rounds <= MAX_ROUNDS:
        raise InvalidArgument(f"--rounds must be between 1 and {MAX_ROUNDS}, got {request.rounds}")
    if request.min_nodes < 2:
        raise InvalidArgument(
            f"--min-nodes must be at least 2 (one node's update is its own data), got {request.min_nodes}"
        )
    if request.secagg:
        if request.secagg_shares and not 3 <= request.secagg_shares <= request.min_nodes:
            raise InvalidArgument(
                f"--secagg-shares must be between 3 and --min-nodes ({request.min_nodes}), got {request.secagg_shares}"
            )
        if request.min_nodes < 3 and not request.secagg_shares:
            raise InvalidArgument("SecAgg+ needs at least 3 nodes (--min-nodes 3), or --no-secagg")
        shares = request.secagg_shares or request.min_nodes
        if request.secagg_threshold and not 2 <= request.secagg_threshold < shares:
            raise InvalidArgument(
                f"--secagg-threshold must be at least 2 and below the shares ({shares}), got {request.secagg_threshold}"
            )
    elif request.secagg_shares or request.secagg_threshold:
        raise InvalidArgument("--secagg-shares and --secagg-threshold need SecAgg+ (drop --no-secagg)")
    if request.clip < 0 or request.noise < 0:
        raise InvalidArgument("--clip and --noise cannot be negative")
    if request.noise and not request.clip:
        raise InvalidArgument("--noise needs --clip (the noise is scaled to the clipping norm)")
    if request.stage_timeout_s < 0 or request.wait_nodes_s < 0:
        raise InvalidArgument("timeouts cannot be negative")
    config = {
        "task": request.task,
        "rounds": request.rounds,
        "min-nodes": request.min_nodes,
        "secagg": request.secagg,
        "secagg-shares": request.secagg_shares,
        "secagg-threshold": request.secagg_threshold,
        "clip": float(request.clip),
        "noise": float(request.noise),
        "results-dir": str(results_dir),
        "record-received": request.record_received,
    }
    if request.stage_timeout_s:
        config["timeout-s"] = float(request.stage_timeout_s)
    if request.wait_nodes_s:
        config["wait-nodes-s"] = float(request.wait_nodes_s)
    return config


# Statuses as `edgefleet fl status` shows them.
PENDING, WAITING, RUNNING, COMPLETED, FAILED = "pending", "waiting-for-nodes", "running", "completed", "failed"


def run_status(
    flower_status: str, flower_sub_status: str, flower_details: str, report: dict | None, lost: bool = False
) -> tuple[str, str]:
    """(status, error) from Flower's view of the run and the ServerApp's own report.

    The report knows more (waiting for nodes, round errors); Flower knows when the
    ServerApp died before it could write one. `lost`: the SuperLink answered and does
    not know the run (it keeps its state in memory and was restarted).
    """
    report = report or {}
    report_status = report.get("status")
    if report_status == "completed":
        return COMPLETED, ""
    if report_status == "failed":
        return FAILED, report.get("error") or "the run failed"
    if lost:
        return FAILED, "central's SuperLink restarted during the run and lost it; start the run again"
    if flower_status == "finished":
        if flower_sub_status == "completed":
            return FAILED, "the ServerApp finished without writing its outcome"
        return FAILED, flower_details or f"the run {flower_sub_status or 'stopped'}"
    if report_status == "waiting-for-nodes":
        return WAITING, ""
    if report_status == "running":
        return RUNNING, ""
    return PENDING, ""


def last_line(reason: str) -> str:
    """A node's error as Flower relays it ends with the exception's own message; keep that line."""
    lines = [line.strip() for line in reason.strip().splitlines() if line.strip()]
    return lines[-1][:500] if lines else "unknown error"


REGISTER, UNREGISTER = "register", "unregister"


def key_actions(keys: Iterable[FlowerKeyRecord], registered: dict[int, str]) -> list[tuple[str, FlowerKeyRecord]]:
    """What to ask of the SuperLink so it knows exactly the enrolled, unrevoked nodes' keys.

    `keys` are central's records (store.FlowerKeyRecord), `registered` the SuperLink's nodes
    (Flower id -> status). The SuperLink keeps its state in memory, so after it restarts every
    key is registered again (under a new Flower id).
    """
    actions: list[tuple[str, FlowerKeyRecord]] = []
    for key in keys:
        known = registered.get(key.flower_node_id, "unregistered") != "unregistered" if key.flower_node_id else False
        if not key.revoked and not known:
            actions.append((REGISTER, key))
        elif key.revoked and key.flower_node_id and not key.unregistered:
            actions.append((UNREGISTER, key))
    return actions


def superlink_names(listen_host: str, advertise_host: str) -> list[str]:
    """What the SuperLink's certificate must name: every host an agent or central may dial."""
    names = [pki.CENTRAL_SERVER_NAME, "localhost", "127.0.0.1", "::1"]
    for host in (advertise_host, listen_host):
        if host and host not in ("0.0.0.0", "::") and host not in names:
            names.append(host)
    if listen_host in ("0.0.0.0", "::", "") and socket.getfqdn() not in names:
        names.append(socket.getfqdn())
    return names


def validate_flower_key(openssh_public: str) -> None:
    """InvalidArgument unless this is an OpenSSH ECDSA public key on a NIST curve."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        key = serialization.load_ssh_public_key(openssh_public.strip().encode())
    except (ValueError, TypeError, UnicodeError, UnsupportedAlgorithm) as exc:
        raise InvalidArgument(f"the Flower public key is not an OpenSSH public key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name not in ("secp256r1", "secp384r1", "secp521r1"):
        raise InvalidArgument("the Flower public key must be ECDSA on a NIST curve (edge-agent makes P-384)")


class Federation:
    """The SuperLink child and central's Control API client. Runs its reconcile pass on its own thread."""

    def __init__(self, paths: CentralPaths, authority: Authority, listen: str, advertise_host: str = ""):
        from edgefleet.ports import free_port
        from federated import superlink
        from federated.superlink_credentials import ClientAuthority
        from federated.supervisor import Supervisor, venv_env

        self.paths, self.authority = paths, authority
        self.host, port = listen.rsplit(":", 1)
        self.host = self.host.strip("[]")
        self.port = int(port) or free_port(self.host)
        self.advertise_host = advertise_host
        self.dir = paths.root / "flower"  # central's side: its Control certificate and key
        self.superlink_dir = paths.root / "superlink"  # the SuperLink's side: all it may read or write
        self.results_dir = self.superlink_dir / "results"
        self.client_authority = ClientAuthority.create()  # in memory only, for this process's SuperLink
        self.superlink = Supervisor(
            "superlink",
            self._superlink_command,
            self.dir / "superlink.log",
            cwd=self.superlink_dir,
            env=superlink.child_env(self.superlink_dir, venv_env()),
        )
        self._control = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.reconcile_hook = None  # set by `central serve`: called every pass

    @property
    def control_address(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else ("::1" if self.host == "::" else self.host)
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    def _issue_certificate(self) -> None:
        key = pki.generate_key()
        cert = pki.issue_server_certificate(
            self.authority.key,
            self.authority.certificate,
            key.public_key(),
            valid_days=SUPERLINK_CERT_DAYS,
            extra_names=superlink_names(self.host, self.advertise_host),
        )
        ca_pem = self.paths.ca_cert.read_bytes()
        # During a CA rotation the cross certificate first (as on the fleet port): nodes that trust only the
        # previous CA still verify the SuperLink (central.rotation.TrustState.fleet_chain_pem).
        cross = self.paths.ca_cross_cert.read_bytes() if self.paths.ca_cross_cert.exists() else b""
        pki.write_private(self.superlink_dir / "superlink.key", pki.private_key_pem(key))
        pki.write_public(self.superlink_dir / "superlink.crt", pki.certificate_pem(cert) + cross + ca_pem)
        pki.write_public(self.superlink_dir / "ca.crt", ca_pem)

    def protected_paths(self) -> list[Path]:
        """What the SuperLink must not be able to read (it checks, and logs the result)."""
        p = self.paths
        return [p.ca_key, p.signing_key, p.server_key, p.store, p.store_spec_file, p.admin_credential, self.control_key]

    @property
    def control_cert(self) -> Path:
        return self.dir / "control.crt"

    @property
    def control_key(self) -> Path:
        return self.dir / "control.key"

    def _superlink_command(self) -> list[str]:
        from federated import superlink

        self._issue_certificate()
        client_ca = self.client_authority.write_certificate(self.superlink_dir / "client-ca.crt")
        runtime_cert, runtime_key = self.client_authority.issue_runtime(self.superlink_dir)
        flower_args = superlink.flower_args(self.host, self.port, self.superlink_dir, self.superlink_dir / "ca.crt")
        return superlink.command(
            self.superlink_dir, client_ca, runtime_cert, runtime_key, flower_args, self.protected_paths()
        )

    def start(self) -> None:
        self.dir.mkdir(mode=0o700, exist_ok=True)
        for directory in (
            self.superlink_dir,
            self.results_dir,
            self.superlink_dir / "flwr",
            self.superlink_dir / "tmp",
        ):
            directory.mkdir(mode=0o700, exist_ok=True)
        # Left by versions that kept the SuperLink's key beside central's.
        for stale in ("superlink.key", "superlink.crt"):
            (self.dir / stale).unlink(missing_ok=True)
        self.client_authority.issue_control(self.dir)
        self.superlink.start()
        self._thread = threading.Thread(target=self._loop, name="federation", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(10)
        # Close our keep-alive connection first: the SuperLink's server waits for open connections to
        # close before it exits, and the supervisor would wait its full 10 s and then kill it.
        if self._control is not None:
            self._control.close()
        self.superlink.stop()

    @property
    def control(self):
        if self._control is None:
            from federated.control import FlowerControl

            self._control = FlowerControl(
                self.control_address, self.paths.ca_cert.read_bytes(), self.control_cert, self.control_key
            )
        return self._control

    def require_control(self):
        from federated.control import FlowerControlError

        try:
            self.control.registered_nodes()
        except FlowerControlError as exc:
            raise FlowerControlError(
                f"central's SuperLink is not answering ({exc}); see {self.superlink.log_path}"
            ) from None
        return self.control

    def _loop(self) -> None:
        while not self._stop.wait(RECONCILE_INTERVAL_S):
            if self.reconcile_hook is None:
                continue
            try:
                self.reconcile_hook()
            except Exception as exc:  # noqa: BLE001 - the SuperLink may be restarting; try again next pass
                log.warning("federated learning reconcile pass failed (retrying): %s", exc)


def read_report(results_dir: Path, run_id: int) -> dict | None:
    from federated.results import read_report as read

    try:
        return read(results_dir, run_id)
    except (OSError, json.JSONDecodeError):
        return None
