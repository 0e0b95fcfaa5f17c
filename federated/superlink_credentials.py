"""The certificates that open the SuperLink's Control and Runtime APIs (federated.superlink_guard).

A CA made for one SuperLink, kept in memory by whoever starts it (central) and never written:
its certificate goes to the SuperLink (`--client-ca`), and it signs two client certificates,
central's for the Control API (key in central's directory only) and the SuperLink's own for the
Runtime API (key in the SuperLink's directory). The fleet CA signs neither, so no node or
operator certificate opens these APIs, and a stolen fleet CA key does not either.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from edgefleet import pki
from federated.superlink_guard import CONTROL_IDENTITY, RUNTIME_IDENTITY

CLIENT_CERT_DAYS = 365


def _identity(uri: str) -> pki.Identity:
    role, _, name = uri.removeprefix("spiffe://edgefleet/").partition("/")
    return pki.Identity(role, name)


@dataclass(frozen=True)
class ClientAuthority:
    key: object
    certificate: object

    @classmethod
    def create(cls) -> ClientAuthority:
        key, cert = pki.create_ca("edgefleet SuperLink client CA", valid_days=CLIENT_CERT_DAYS)
        return cls(key, cert)

    def write_certificate(self, path: Path) -> Path:
        pki.write_public(path, pki.certificate_pem(self.certificate))  # type: ignore[arg-type]
        return path

    def issue(self, identity_uri: str, directory: Path, stem: str) -> tuple[Path, Path]:
        """`<stem>.crt` and `<stem>.key` (0600) in directory, for identity_uri."""
        key = pki.generate_key()
        now = pki.utcnow()
        cert = pki.issue_certificate(
            self.key,
            self.certificate,  # type: ignore[arg-type]
            key.public_key(),
            _identity(identity_uri),
            not_before=now - dt.timedelta(minutes=5),
            not_after=now + dt.timedelta(days=CLIENT_CERT_DAYS),
        )
        cert_path, key_path = directory / f"{stem}.crt", directory / f"{stem}.key"
        pki.write_private(key_path, pki.private_key_pem(key))
        pki.write_public(cert_path, pki.certificate_pem(cert))
        return cert_path, key_path

    def issue_control(self, directory: Path) -> tuple[Path, Path]:
        return self.issue(CONTROL_IDENTITY, directory, "control")

    def issue_runtime(self, directory: Path) -> tuple[Path, Path]:
        return self.issue(RUNTIME_IDENTITY, directory, "runtime")
