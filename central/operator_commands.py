"""``edgefleet admin create|list|revoke|renew``: operators' credentials, each command one AdminService call.

The key of a new or renewed credential is generated here and only its CSR goes to central, so the key never
crosses the wire. A new credential goes to a file that must not exist yet (0600); a renewed one replaces the
credential file in place, atomically. :mod:`central.cli` registers these commands.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from central import credential as credential_file
from central.cli_output import iso, print_json, print_table, relative
from edgefleet import pki
from edgefleet.terminal import safe_print as print

DEFAULT_TTL_S = 30 * 86400.0


def add_parsers(sub, duration_arg: Callable[[str], float]) -> None:
    """The `admin` command group, on the CLI's top-level subparsers."""
    admin = sub.add_parser("admin", help="operators: who may use this CLI, as admin or viewer").add_subparsers(
        dest="command", required=True
    )
    create = admin.add_parser("create", help="make an operator and write its credential (its key is made here)")
    create.add_argument("name", help="the operator's name: lowercase letters, digits, '.', '_', '-'")
    create.add_argument(
        "--role",
        choices=["admin", "viewer"],
        default="viewer",
        help="viewer reads (lists, shows, audit); admin also changes the fleet (default viewer)",
    )
    create.add_argument("--ttl", type=duration_arg, default=DEFAULT_TTL_S, help="certificate lifetime (default 30d)")
    create.add_argument("--out", default="", help="credential file to write, 0600, must not exist (NAME.credential)")
    alist = admin.add_parser("list", help="operators, their roles and certificates")
    alist.add_argument("--json", action="store_true", help="print JSON for scripts")
    revoke = admin.add_parser("revoke", help="refuse an operator from its next call on")
    revoke.add_argument("name")
    revoke.add_argument("--reason", default="", help="why, for the audit log")
    renew = admin.add_parser(
        "renew", help="a new certificate and key for your credential (in place), or for NAME (admins; --out)"
    )
    renew.add_argument("name", nargs="?", default="", help="another operator (default: the credential's own)")
    renew.add_argument("--ttl", type=duration_arg, default=DEFAULT_TTL_S, help="certificate lifetime (default 30d)")
    renew.add_argument("--out", default="", help="for NAME: the new credential file, 0600, must not exist")


def _usage_error(message: str):
    """Bad input, refused before any call: the CLI exits 2 with the message."""
    from central.client import AdminCallError

    return AdminCallError(message, 2)


def _check_name(name: str) -> None:
    from central.services.operators import name_problem

    problem = name_problem(name)
    if problem:
        raise _usage_error(problem)


def _create(client, args) -> int:
    from central.convert import duration
    from edgefleet.v1 import admin_pb2

    _check_name(args.name)
    out = Path(args.out or f"{args.name}.credential").expanduser()
    credential_file.require_absent(out)
    key = pki.generate_key()
    r = client.call(
        "CreateOperator",
        admin_pb2.CreateOperatorRequest(
            name=args.name,
            role=admin_pb2.OPERATOR_ROLE_ADMIN if args.role == "admin" else admin_pb2.OPERATOR_ROLE_VIEWER,
            ttl=duration(args.ttl),
            csr_pem=pki.make_csr(key, f"edgefleet-operator-{args.name}").decode(),
        ),
    )
    credential_file.save_new(
        out,
        credential_file.Credential(
            central=client.address,
            ca_pem=r.ca_certificate_pem,
            certificate_pem=r.certificate_pem,
            key_pem=pki.private_key_pem(key).decode(),
        ),
    )
    print(
        f"created {args.role} {r.operator.name}: certificate {r.operator.certificate_serial},"
        f" valid until {_iso(r.operator.expires_at)}"
    )
    print(f"credential written to {out} (0600; it holds the private key): give it to {r.operator.name}, who runs")
    print(f"  export EDGEFLEET_CREDENTIAL={out.resolve()}")
    return 0


def operator_row(o, now: float) -> dict:
    from central.convert import OPERATOR_ROLE_NAMES

    revoked = o.HasField("revoked_at")
    expired = o.expires_at.ToSeconds() <= now
    return {
        "name": o.name,
        "role": OPERATOR_ROLE_NAMES.get(o.role, "unknown"),
        "state": "revoked" if revoked else "expired" if expired else "active",
        "certificate_serial": o.certificate_serial,
        "expires_at": _iso(o.expires_at),
        "created_at": _iso(o.created_at),
        "created_by": o.created_by,
        "revoked_at": _iso(o.revoked_at) if revoked else None,
    }


def _list(client, args) -> int:
    from edgefleet.v1 import admin_pb2

    operators = client.call("ListOperators", admin_pb2.ListOperatorsRequest()).operators
    now = time.time()
    rows = [operator_row(o, now) for o in operators]
    if args.json:
        print_json(rows)
        return 0
    print_table(
        ["NAME", "ROLE", "STATE", "EXPIRES", "SERIAL", "CREATED BY"],
        [
            [
                r["name"],
                r["role"],
                r["state"],
                relative(o.expires_at.ToSeconds() - now),
                r["certificate_serial"][:16],
                r["created_by"],
            ]
            for r, o in zip(rows, operators, strict=True)
        ],
    )
    return 0


def _revoke(client, args) -> int:
    from edgefleet.v1 import admin_pb2

    client.call("RevokeOperator", admin_pb2.RevokeOperatorRequest(name=args.name, reason=args.reason))
    print(f"revoked operator {args.name}: central refuses its certificate from its next call on")
    return 0


def _renew(client, args) -> int:
    from central.convert import duration
    from edgefleet.v1 import admin_pb2

    path = credential_file.resolve_path(args.credential)
    own = credential_file.load(path)
    identity = pki.identity_of(pki.load_certificate(own.certificate_pem))
    own_name = identity.name if identity else ""
    target = args.name or own_name
    in_place = target == own_name
    if in_place:
        if args.out:
            raise _usage_error("--out is for renewing another operator's credential; yours is renewed in place")
        if not os.access(path.parent, os.W_OK) or not os.access(path, os.W_OK):
            raise _usage_error(f"cannot write {path}: the renewed credential replaces it in place")
    else:
        _check_name(target)
        if not args.out:
            raise _usage_error(
                f"renewing {target}'s credential makes a new key for them: pass --out FILE for the new credential"
            )
        credential_file.require_absent(Path(args.out).expanduser())
    key = pki.generate_key()
    r = client.call(
        "RenewOperator",
        admin_pb2.RenewOperatorRequest(
            name="" if in_place else target,
            ttl=duration(args.ttl),
            csr_pem=pki.make_csr(key, f"edgefleet-operator-{target}").decode(),
        ),
    )
    key_pem = pki.private_key_pem(key).decode()
    if in_place:
        written = path
        credential_file.save(path, credential_file.renewed(own, r.certificate_pem, key_pem, r.ca_certificate_pem))
    else:
        written = Path(args.out).expanduser()
        credential_file.save_new(
            written, credential_file.Credential(client.address, r.ca_certificate_pem, r.certificate_pem, key_pem)
        )
    print(
        f"renewed {target}: certificate {r.operator.certificate_serial}, valid until {_iso(r.operator.expires_at)};"
        f" central refuses the one it replaced ({r.replaced_serial}) from now on"
    )
    print(f"credential written to {written} (0600)")
    return 0


HANDLERS = {
    ("admin", "create"): _create,
    ("admin", "list"): _list,
    ("admin", "revoke"): _revoke,
    ("admin", "renew"): _renew,
}


def _iso(ts) -> str:

    return iso(ts)
