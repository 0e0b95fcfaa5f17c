"""The operator's credential: central's address, the fleet CA, an admin certificate and key, in one file.

Like a kubeconfig: ``--credential FILE``, else ``$EDGEFLEET_CREDENTIAL``, else
``~/.config/edgefleet/credential``. The file holds a private key, so it is
written 0600.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
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
    pki.write_private(path, credential.dumps().encode())
