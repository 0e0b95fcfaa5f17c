"""What `edge-agent enroll` leaves in <data_dir>/fleet/: the node's key (0600), its certificate, the fleet CA,
central's signing key, and fleet.json (node id, labels, central's addresses)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from edge_agent.control.policy import check_fleet_addresses
from edgefleet import pki
from edgefleet.atomicfile import write_private, write_public


@dataclass(frozen=True)
class FleetIdentity:
    node_id: str
    labels: dict[str, str]
    central: str  # HOST:PORT of FleetService: the first of fleet_addresses, or the enrollment host at fleet_port
    enroll_address: str
    enrolled_at: float
    ca_pem: bytes = field(repr=False)
    certificate_pem: bytes = field(repr=False)
    key_pem: bytes = field(repr=False)
    signing_public_key_pem: bytes = field(repr=False)
    # HOST:PORT of central's Flower SuperLink; '' when central runs none (federated learning off).
    superlink: str = ""
    # HOST:PORT of every central replica's FleetService, as central sent them at enrollment; () from a central
    # that sends none (then `central` is the only address).
    fleet_addresses: tuple[str, ...] = ()

    @property
    def certificate(self):
        return pki.load_certificate(self.certificate_pem)


class FleetFiles:
    def __init__(self, data_dir: Path):
        self.root = Path(data_dir) / "fleet"
        self.key = self.root / "node.key"
        self.certificate = self.root / "node.crt"
        self.ca = self.root / "ca.crt"
        self.signing_public_key = self.root / "signing.pub"
        self.meta = self.root / "fleet.json"
        self.state = self.root / "state.json"
        self.spool = self.root / "spool.db"
        # The SuperNode's auth key (OpenSSH ECDSA P-384), made at enrollment; its public half is at central.
        self.flower_key = self.root / "flower.key"

    def enrolled(self) -> bool:
        return self.meta.exists()

    def superlink_problem(self) -> str:
        """Why this enrollment gives no SuperNode to run ("" when it does): federated learning's side of it."""
        if not self.enrolled():
            return "this data dir is not enrolled: run `edge-agent enroll`"
        try:
            superlink = self.load().superlink
        except (OSError, ValueError, KeyError) as exc:
            return f"{self.meta} cannot be read: {exc}"
        if not superlink:
            return "central ran no SuperLink when this node enrolled (enroll again once it does)"
        if not self.flower_key.exists():
            return f"{self.flower_key} is missing: enroll again to make a Flower key"
        return ""

    def load(self) -> FleetIdentity:
        meta = json.loads(self.meta.read_text())
        return FleetIdentity(
            meta["node_id"],
            meta["labels"],
            meta["central"],
            meta["enroll_address"],
            meta["enrolled_at"],
            self.ca.read_bytes(),
            self.certificate.read_bytes(),
            self.key.read_bytes(),
            self.signing_public_key.read_bytes(),
            meta.get("superlink", ""),
            tuple(meta.get("fleet_addresses", ())),
        )

    def save(self, identity: FleetIdentity) -> None:
        write_public(self.ca, identity.ca_pem)
        write_public(self.signing_public_key, identity.signing_public_key_pem)
        self.save_certificate(identity.key_pem, identity.certificate_pem)
        # fleet.json last: its presence means the enrollment is complete.
        write_public(
            self.meta,
            json.dumps(
                {
                    "node_id": identity.node_id,
                    "labels": identity.labels,
                    "central": identity.central,
                    "enroll_address": identity.enroll_address,
                    "enrolled_at": identity.enrolled_at,
                    "superlink": identity.superlink,
                    "fleet_addresses": list(identity.fleet_addresses),
                },
                indent=2,
            ).encode(),
        )

    def load_addresses(self) -> tuple[str, tuple[str, ...]]:
        """fleet.json's `central` and `fleet_addresses`, read without the keys and certificates. fleet.json may have
        been edited by hand: raises ValueError naming what is wrong in it (OSError when it cannot be read)."""
        meta = self._read_meta()
        central, listed = meta.get("central"), meta.get("fleet_addresses", [])
        if not isinstance(central, str) or not isinstance(listed, list) or not all(isinstance(a, str) for a in listed):
            raise ValueError(f"{self.meta}: `central` must be a string and `fleet_addresses` a list of strings")
        try:
            check_fleet_addresses([central, *listed])
        except ValueError as exc:
            raise ValueError(f"{self.meta}: {exc}") from None
        return central, tuple(listed)

    def _read_meta(self) -> dict:
        try:
            meta = json.loads(self.meta.read_text())
        except ValueError as exc:  # UnicodeDecodeError included
            raise ValueError(f"{self.meta} is not JSON: {exc}") from None
        if not isinstance(meta, dict):
            raise ValueError(f"{self.meta} holds a JSON {type(meta).__name__}, not the object enrollment wrote")
        return meta

    def save_fleet_addresses(self, addresses: tuple[str, ...]) -> None:
        """Replace central's addresses in fleet.json (atomically; the rest of it as it is): from a heartbeat that
        brought a new list, or an operator's `edge-agent central-addresses set`."""
        if not addresses:
            raise ValueError("fleet.json needs at least one central address")
        meta = self._read_meta()
        meta["central"], meta["fleet_addresses"] = addresses[0], list(addresses)
        write_public(self.meta, json.dumps(meta, indent=2).encode())

    def meta_stamp(self) -> tuple[int, int, int] | None:
        """What changes when fleet.json is written (inode, size, mtime): compared before each reconnect, so an
        edit is picked up without reading the file every beat. None when it cannot be read."""
        try:
            st = self.meta.stat()
        except OSError:
            return None
        return st.st_ino, st.st_size, st.st_mtime_ns

    def save_certificate(self, key_pem: bytes, certificate_pem: bytes) -> None:
        # The key first: a crash in between leaves the old certificate with a new key, which fails the
        # TLS handshake loudly instead of silently using a stale identity; re-enroll fixes it.
        write_private(self.key, key_pem)
        write_public(self.certificate, certificate_pem)

    def write_state(self, state: dict) -> None:
        """The control loop's state for `edge-agent status`, replaced atomically."""
        write_public(self.state, json.dumps({**state, "written_at": time.time()}, indent=2).encode())

    def read_state(self) -> dict | None:
        try:
            return json.loads(self.state.read_text())
        except (OSError, ValueError):
            return None
