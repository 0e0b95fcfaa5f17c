"""``edgefleet keys rotate-signing|finish-signing|list`` and ``edgefleet ca rotate|finish|status``: rotating the
artifact-signing key and the fleet CA, each command one AdminService call (central.services.trust does the work).
:mod:`central.cli` registers these commands.
"""

from __future__ import annotations

from collections.abc import Callable

from central.cli_output import iso, print_json, print_table, to_dict
from central.services.trust import name_list
from edgefleet.terminal import safe_print as print

DEFAULT_OVERLAP_S = 24 * 3600.0


def add_parsers(sub, duration_arg: Callable[[str], float]) -> None:
    """The `keys` and `ca` command groups, on the CLI's top-level subparsers."""
    keys = sub.add_parser("keys", help="the artifact-signing key: rotate it, retire the previous one, list them")
    kcmds = keys.add_subparsers(dest="command", required=True)
    rotate = kcmds.add_parser(
        "rotate-signing", help="a new signing key, announced to nodes signed by the current one; manifests re-signed"
    )
    rotate.add_argument(
        "--overlap",
        type=duration_arg,
        default=DEFAULT_OVERLAP_S,
        help="how long nodes keep accepting the previous key (default 24h)",
    )
    rotate.add_argument("--json", action="store_true", help="print JSON for scripts")
    finish = kcmds.add_parser("finish-signing", help="retire the previous signing key now, before its overlap ends")
    finish.add_argument("--json", action="store_true", help="print JSON for scripts")
    klist = kcmds.add_parser("list", help="every signing key central has had, newest first, with its state")
    klist.add_argument("--json", action="store_true", help="print JSON for scripts")

    ca = sub.add_parser("ca", help="the fleet CA: rotate it, retire the previous one, see who still depends on it")
    ccmds = ca.add_subparsers(dest="command", required=True)
    crotate = ccmds.add_parser("rotate", help="a new fleet CA, cross-signed by the current one (trusted until finish)")
    crotate.add_argument(
        "--now", action="store_true", help="ask every node to renew onto the new CA at its next heartbeat"
    )
    crotate.add_argument("--json", action="store_true", help="print JSON for scripts")
    cfinish = ccmds.add_parser("finish", help="retire the previous CA: certificates it signed are refused")
    cfinish.add_argument(
        "--force", action="store_true", help="even while nodes or operators hold only a certificate it signed"
    )
    cfinish.add_argument("--json", action="store_true", help="print JSON for scripts")
    cstatus = ccmds.add_parser("status", help="the CAs, and who still holds a certificate from the previous one")
    cstatus.add_argument("--json", action="store_true", help="print JSON for scripts")


def _rotate_signing(client, args) -> int:
    from central.convert import duration
    from edgefleet.v1 import admin_pb2

    r = client.call("RotateSigningKey", admin_pb2.RotateSigningKeyRequest(overlap=duration(args.overlap)))
    if args.json:
        print_json(to_dict(r))
        return 0
    print(f"signing key rotated: {r.current.key_id} is current")
    print(f"previous key {r.previous.key_id} accepted by nodes until {iso(r.previous.valid_until)}")
    print(f"{r.manifests_resigned} manifests re-signed with the new key")
    print("with replicas: copy signing.key, signing.pub and signing-history.json to every other replica's data dir")
    return 0


def _finish_signing(client, args) -> int:
    from edgefleet.v1 import admin_pb2

    r = client.call("FinishSigningKeyRotation", admin_pb2.FinishSigningKeyRotationRequest())
    if args.json:
        print_json(to_dict(r))
        return 0
    print(f"signing key {r.retired.key_id} retired: nodes accept manifests from the current key only")
    return 0


def _get_trust(client):
    from edgefleet.v1 import admin_pb2

    return client.call("GetTrust", admin_pb2.GetTrustRequest())


def _list_keys(client, args) -> int:
    r = _get_trust(client)
    if args.json:
        print_json([to_dict(k) for k in r.signing_keys])
        return 0
    print_table(
        ["KEY ID", "STATE", "CREATED", "VALID UNTIL"],
        [
            [k.key_id, k.state, iso(k.created_at), iso(k.valid_until) if k.HasField("valid_until") else "-"]
            for k in r.signing_keys
        ],
    )
    return 0


def _rotate_ca(client, args) -> int:
    from edgefleet.v1 import admin_pb2

    r = client.call("RotateCa", admin_pb2.RotateCaRequest(now=args.now))
    if args.json:
        print_json(to_dict(r))
        return 0
    print(f"fleet CA rotated: {r.current.fingerprint} is current (valid until {iso(r.current.not_after)})")
    print(f"previous CA {r.previous.fingerprint} stays trusted until `edgefleet ca finish`")
    when = "at their next heartbeat" if args.now else "at their next renewal (two thirds of a certificate's life)"
    print(f"nodes renew onto the new CA {when}; operators: `edgefleet admin renew`")
    print("`edgefleet ca status` lists who still holds a certificate from the previous CA")
    print(
        "with replicas: copy ca.key, ca.crt, ca-previous.crt, ca-cross.crt, server.crt and trust.json to every"
        " other replica's data dir"
    )
    return 0


def _finish_ca(client, args) -> int:
    from edgefleet.v1 import admin_pb2

    r = client.call("FinishCaRotation", admin_pb2.FinishCaRotationRequest(force=args.force))
    if args.json:
        print_json(to_dict(r))
        return 0
    print(f"CA {r.retired.fingerprint} retired: certificates it signed are refused from now on")
    if r.stranded:
        print(f"stranded (must enroll again): {name_list(list(r.stranded))}")
    print("restart central where it runs the SuperLink (or serves /metrics off loopback): they keep their certificate")
    return 0


def _ca_status(client, args) -> int:
    r = _get_trust(client)
    if args.json:
        print_json(
            {
                "version": r.version,
                "cas": [{k: v for k, v in to_dict(ca).items() if k != "certificate_pem"} for ca in r.cas],
                "on_previous_ca": list(r.on_previous_ca),
            }
        )
        return 0
    print_table(["FINGERPRINT", "STATE", "NOT AFTER"], [[ca.fingerprint, ca.state, iso(ca.not_after)] for ca in r.cas])
    if len(r.cas) > 1:
        holders = list(r.on_previous_ca)
        if holders:
            print(f"{len(holders)} still on the previous CA: {name_list(holders)} (all of them: --json)")
        else:
            print("nobody is on the previous CA any more: `edgefleet ca finish` strands no one")
    return 0


HANDLERS = {
    ("keys", "rotate-signing"): _rotate_signing,
    ("keys", "finish-signing"): _finish_signing,
    ("keys", "list"): _list_keys,
    ("ca", "rotate"): _rotate_ca,
    ("ca", "finish"): _finish_ca,
    ("ca", "status"): _ca_status,
}
