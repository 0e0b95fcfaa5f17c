"""Central's data dir: the CA, the artifact-signing key, the TLS server key, the store.

The store is central.db in the data dir (SQLite, the default), or the
PostgreSQL database named in the data dir's `store` file (`central init
--store postgresql://...`). Replicas of one central each have a copy of the
same data dir: the keys are the fleet's, the state is the database's.

Private keys are written 0600 here and never leave this directory; clients
receive certificates, never keys (the admin credential is the one exception:
`central init` writes it here for the operator to take).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from central.credential import Credential, CredentialError
from central.credential import load as load_credential
from central.credential import save as save_credential
from central.errors import CentralError
from central.store import FleetStore, OperatorRecord, StoreError, display_store, open_store
from edgefleet import pki
from edgefleet.privatedir import exposure, make_private_dir

ADMIN_CERT_DAYS = 365


class DataDirError(CentralError):
    """The data dir is missing, incomplete or already initialized."""


@dataclass(frozen=True)
class CentralPaths:
    root: Path

    @property
    def ca_key(self) -> Path:
        return self.root / "ca.key"

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca.crt"

    @property
    def signing_key(self) -> Path:
        return self.root / "signing.key"

    @property
    def signing_public_key(self) -> Path:
        return self.root / "signing.pub"

    @property
    def server_key(self) -> Path:
        return self.root / "server.key"

    @property
    def server_cert(self) -> Path:
        return self.root / "server.crt"

    @property
    def store(self) -> Path:
        return self.root / "central.db"

    @property
    def store_spec_file(self) -> Path:
        """Names a PostgreSQL store (a postgresql:// URL, which may hold a password: 0600); absent for SQLite."""
        return self.root / "store"

    @property
    def admin_credential(self) -> Path:
        return self.root / "admin.credential"

    @property
    def blobs(self) -> Path:
        return self.root / "blobs"

    # -- rotation (central.rotation): ca.key/ca.crt and signing.key/signing.pub are always the CURRENT ones --

    @property
    def ca_previous_cert(self) -> Path:
        """The CA before the current one, still trusted while a CA rotation overlaps (until `ca finish`)."""
        return self.root / "ca-previous.crt"

    @property
    def ca_cross_cert(self) -> Path:
        """The current CA signed by the previous one: how nodes that trust only the previous CA accept it."""
        return self.root / "ca-cross.crt"

    @property
    def ca_next_key(self) -> Path:
        """Written last while a CA rotation is prepared: its presence means the rotation committed."""
        return self.root / "ca-next.key"

    @property
    def ca_next_cert(self) -> Path:
        return self.root / "ca-next.crt"

    @property
    def server_next_cert(self) -> Path:
        return self.root / "server-next.crt"

    @property
    def signing_next_key(self) -> Path:
        """The new signing key while a rotation is written; committed once signing-history.json names it."""
        return self.root / "signing-next.key"

    @property
    def signing_history(self) -> Path:
        """Every signing key's public half, state and validity, and the statements chaining them, oldest first."""
        return self.root / "signing-history.json"

    @property
    def trust_file(self) -> Path:
        """trust.json: the trust bundle's version and renew_now (and a digest of what the version describes)."""
        return self.root / "trust.json"

    @property
    def retired(self) -> Path:
        """Retired CAs and signing keys, moved here at rotation and never deleted."""
        return self.root / "retired"

    @property
    def fleet_address_file(self) -> Path:
        return self.root / "fleet-address"

    @property
    def enroll_address_file(self) -> Path:
        return self.root / "enroll-address"


@dataclass(frozen=True)
class Authority:
    """The fleet CA, loaded once at start: issues node and admin certificates."""

    key: object
    certificate: x509.Certificate

    @classmethod
    def load(cls, paths: CentralPaths) -> Authority:
        require_initialized(paths)
        return cls(pki.load_private_key(paths.ca_key.read_bytes()), pki.load_certificate(paths.ca_cert.read_bytes()))

    @property
    def certificate_pem(self) -> str:
        return pki.certificate_pem(self.certificate).decode()

    @property
    def fingerprint(self) -> str:
        return pki.fingerprint(self.certificate)

    def issue(self, public_key, identity: pki.Identity, lifetime: dt.timedelta, now: dt.datetime):
        # Backdated (a minute, or a tenth of a short lifetime) so a node whose clock is slightly behind can use it.
        backdate = min(dt.timedelta(minutes=1), lifetime / 10)
        return pki.issue_certificate(
            self.key, self.certificate, public_key, identity, not_before=now - backdate, not_after=now + lifetime
        )


def store_spec(paths: CentralPaths, override: str = "") -> str:
    """What the store is: `override` (serve's --store), else the data dir's `store` file, else central.db."""
    if override:
        return override
    try:
        return paths.store_spec_file.read_text().strip()
    except FileNotFoundError:
        return str(paths.store)


def require_initialized(paths: CentralPaths) -> None:
    store = () if paths.store_spec_file.exists() else (paths.store,)
    missing = [
        p.name
        for p in (paths.ca_key, paths.ca_cert, paths.signing_key, paths.server_key, paths.server_cert, *store)
        if not p.exists()
    ]
    if missing:
        raise DataDirError(
            f"{paths.root} is not an initialized central data dir (missing {', '.join(missing)}):"
            f" run `edgefleet central init --data-dir {paths.root}`"
        )
    require_private(paths)


def initialize(root: Path, central_address: str, admin_name: str = "admin", store: str = "") -> CentralPaths:
    """Create the CA, signing key, server certificate, store and a first admin credential. `store`: a
    postgresql:// URL for a store replicas share ("" for central.db in the data dir)."""
    paths = CentralPaths(root)
    if paths.ca_key.exists():
        raise DataDirError(
            f"{root} is already initialized (found {paths.ca_key}); "
            "refusing to replace the fleet CA: every enrolled node trusts it"
        )
    if store:
        _require_empty_store(store)
    make_private_dir(root)  # it and any missing parent 0700, whatever the umask
    root.chmod(0o700)  # and a data dir that existed already
    now = pki.utcnow()
    ca_key, ca_cert = pki.create_ca(now=now)
    signing_key = pki.generate_signing_key()
    server_key = pki.generate_key()
    server_cert = pki.issue_server_certificate(ca_key, ca_cert, server_key.public_key(), now=now)
    pki.write_private(paths.signing_key, pki.private_key_pem(signing_key))
    pki.write_public(paths.signing_public_key, pki.public_key_pem(signing_key))
    pki.write_private(paths.server_key, pki.private_key_pem(server_key))
    pki.write_public(paths.server_cert, pki.certificate_pem(server_cert))
    if store:
        pki.write_private(paths.store_spec_file, store.encode() + b"\n")
    admin_key = pki.generate_key()
    authority = Authority(ca_key, ca_cert)
    admin_cert = authority.issue(
        admin_key.public_key(), pki.Identity("admin", admin_name), dt.timedelta(days=ADMIN_CERT_DAYS), now
    )
    fleet = open_store(store_spec(paths))
    try:
        require_fleet_ca(fleet, pki.fingerprint(ca_cert), paths.root)
        # The first admin is an operator like any other: revocable, renewable, one live certificate.
        fleet.add_operator(init_operator(admin_cert, now.timestamp()))
    finally:
        fleet.close()
    save_credential(
        paths.admin_credential,
        Credential(
            central=central_address,
            ca_pem=authority.certificate_pem,
            certificate_pem=pki.certificate_pem(admin_cert).decode(),
            key_pem=pki.private_key_pem(admin_key).decode(),
        ),
    )
    # The CA key last: its presence marks the data dir as initialized.
    pki.write_public(paths.ca_cert, pki.certificate_pem(ca_cert))
    pki.write_private(paths.ca_key, pki.private_key_pem(ca_key))
    return paths


def require_fleet_ca(fleet: FleetStore, fingerprint: str, root: Path) -> None:
    """The store belongs to the fleet of this data dir's CA (the first data dir to use it binds it)."""
    bound = fleet.bind_ca(fingerprint)
    if bound != fingerprint:
        raise DataDirError(
            f"the store belongs to the fleet whose CA is {bound}, but the data dir {root} holds CA {fingerprint}:"
            " give this replica a copy of that fleet's data dir (serving with another CA would issue certificates"
            " the fleet's nodes do not trust)"
        )


# -- who may read the data dir ----------------------------------------------------------


def require_private(paths: CentralPaths) -> None:
    """Refuse a data dir whose private keys (or store URL, or admin credential) others may read: the CA key read by
    another local user is every node's and operator's identity, and serving on would hide that. A data dir others
    may enter, with its keys still 0600, is logged as a warning (`init` makes it 0700; a copy or restore may not)."""
    private = (
        paths.ca_key,
        paths.signing_key,
        paths.server_key,
        paths.store_spec_file,
        paths.admin_credential,
        paths.ca_next_key,
        paths.signing_next_key,
        *sorted(paths.retired.glob("*.key")),
    )
    for path in private:
        try:
            mode = path.stat().st_mode & 0o777
        except FileNotFoundError:
            continue
        if mode & 0o077:
            raise DataDirError(
                f"{path} holds a secret but others may read it (mode {mode:04o}); "
                f"make it owner-only (chmod 600 {path}) and consider it exposed"
            )
    exposed = exposure(paths.root)
    if exposed:
        logging.getLogger(__name__).warning("central's data dir holds the fleet's keys, but %s", exposed)


# -- the first operator ------------------------------------------------------------------


INIT_CREATOR = "central:init"


def init_operator(certificate: x509.Certificate, now: float) -> OperatorRecord:
    """The operators-table record of the admin credential `central init` writes."""
    identity = pki.identity_of(certificate)
    if identity is None or identity.role not in pki.OPERATOR_ROLES:
        raise DataDirError(f"the certificate {pki.serial_hex(certificate)} is not an operator's")
    return OperatorRecord(
        name=identity.name,
        role=identity.role,
        serial=pki.serial_hex(certificate),
        expires_at=certificate.not_valid_after_utc.timestamp(),
        created_at=now,
        created_by=INIT_CREATOR,
    )


def adopt_init_admin(fleet: FleetStore, paths: CentralPaths, authority: Authority, now: float) -> str:
    """At `central serve` start, for a fleet made before operators were kept: when the store has no operator yet,
    the data dir's admin credential (the one `central init` wrote) becomes the first, so its holder keeps working.
    What happened, for the log ("" when the store had operators already)."""
    if fleet.list_operators():
        return ""
    try:
        cert = pki.load_certificate(load_credential(paths.admin_credential).certificate_pem)
    except CredentialError as exc:
        return (
            f"the store has no operator and the data dir's admin credential cannot be read ({exc}): every"
            f" AdminService call is refused until {paths.admin_credential} is put back and central restarted"
        )
    if cert.issuer != authority.certificate.subject:
        return f"the store has no operator and {paths.admin_credential} is not from this fleet's CA: none adopted"
    record = init_operator(cert, now)
    if fleet.add_first_operator(record):
        return f"registered the data dir's admin credential as operator {record.name} (serial {record.serial})"
    return ""


def _require_empty_store(spec: str) -> None:
    """A database that already holds a fleet belongs to that fleet's CA: a second `init` on it would make
    a CA its nodes do not trust. Its replicas are made by copying that fleet's data dir instead."""
    try:
        fleet: FleetStore = open_store(spec)
    except StoreError as exc:
        raise DataDirError(str(exc)) from None
    try:
        held = bool(
            fleet.list_tokens() or fleet.list_nodes(limit=1) or fleet.list_audit(limit=1) or fleet.list_replicas()
        )
    finally:
        fleet.close()
    if held:
        raise DataDirError(
            f"{display_store(spec)} already holds a fleet; to add a replica, copy that fleet's data dir"
            " (it holds the CA) instead of running init"
        )
