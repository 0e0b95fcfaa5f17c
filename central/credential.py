"""The operator's credential: central's address, the fleet CA, an operator's certificate and key, in one file.

Like a kubeconfig: ``--credential FILE``, else ``$EDGEFLEET_CREDENTIAL``, else
``~/.config/edgefleet/credential``. The file holds a private key, so it is
written 0600. `central init` writes the first admin's; `edgefleet admin create` writes
more (admins and viewers) and `edgefleet admin renew` replaces the certificate and key
in place.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass, replace
from pathlib import Path

from central.errors import CentralError
from edgefleet import pki

DEFAULT_PATH = Path("~/.config/edgefleet/credential")


class CredentialError(CentralError):
    """The credential file is missing or unusable; the message says which and what to do."""


@dataclass(frozen=True)
class Credential:
    central: str  # HOST:PORT of FleetService/AdminService
    ca_pem: str
    certificate_pem: str
    key_pem: str

    def dumps(self) -> str:
        return (
            json.dumps(
                {"central": self.central, "ca": self.ca_pem, "certificate": self.certificate_pem, "key": self.key_pem},
                indent=2,
            )
            + "\n"
        )


def resolve_path(flag: str | None) -> Path:
    if flag:
        return Path(flag).expanduser()
    env = os.environ.get("EDGEFLEET_CREDENTIAL")
    return Path(env).expanduser() if env else DEFAULT_PATH.expanduser()


def load(path: Path) -> Credential:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise CredentialError(
            f"no credential at {path}: run `edgefleet central init` and export the "
            f"EDGEFLEET_CREDENTIAL line it prints, or pass --credential FILE"
        ) from None
    except (OSError, ValueError) as exc:
        raise CredentialError(f"credential {path} is not readable JSON: {exc}") from exc
    missing = [k for k in ("central", "ca", "certificate", "key") if not isinstance(data.get(k), str)]
    if missing:
        raise CredentialError(f"credential {path} lacks {', '.join(missing)}")
    try:
        pki.load_certificate(data["ca"])
        pki.load_certificate(data["certificate"])
        pki.load_private_key(data["key"].encode())
    except pki.PkiError as exc:
        raise CredentialError(f"credential {path}: {exc}") from exc
    return Credential(data["central"], data["ca"], data["certificate"], data["key"])


def save(path: Path, credential: Credential) -> None:
    """Write (or replace, atomically: a reader sees the old credential or the new one) a credential, 0600."""
    pki.write_private(path, credential.dumps().encode())


def require_absent(path: Path) -> None:
    """CredentialError unless `path` is free to take a new credential (checked before asking central for one)."""
    if path.exists() or path.is_symlink():
        raise CredentialError(f"{path} already exists; refusing to overwrite a credential: pass another --out FILE")
    if not path.parent.is_dir():
        raise CredentialError(f"cannot write {path}: {path.parent} is not a directory")


def save_new(path: Path, credential: Credential) -> None:
    """Write a credential to a file that must not exist yet, 0600: whole (written beside it, then linked into
    place, which fails if the name was taken meanwhile) or not at all."""
    require_absent(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(credential.dumps().encode())
            f.flush()
            os.fsync(f.fileno())
        os.link(tmp, path)
    except FileExistsError:
        raise CredentialError(f"{path} already exists; refusing to overwrite a credential") from None
    finally:
        tmp.unlink(missing_ok=True)


def renewed(credential: Credential, certificate_pem: str, key_pem: str, ca_pem: str) -> Credential:
    """The credential with a renewed certificate and its new key (the address stays the file's own)."""
    return replace(credential, certificate_pem=certificate_pem, key_pem=key_pem, ca_pem=ca_pem)
