"""``edgefleet``: the operator's CLI. Each command makes one AdminService call through
:mod:`central.client`; `central init|serve` act on the data dir directly."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

from central import (
    backup_commands,
    dashboard_command,
    operator_commands,
    restore_commands,
    slo_commands,
    trust_commands,
    usage_commands,
)
from central import credential as credential_file
from central.cli_output import Progress, iso, iso_seconds, print_json, print_table, relative, to_dict
from central.labels import LabelError, format_labels, parse_labels
from central.store import display_store
from edgefleet import __version__, logs
from edgefleet.durations import parse_duration
from edgefleet.terminal import exits_quietly_when_the_reader_leaves

# Every line this CLI prints goes through safe_print: node- and operator-controlled strings (hostnames, labels,
# status fields, events, audit details, relayed errors) reach the terminal with their control and bidi characters
# shown as escapes (edgefleet/terminal.py), and a newline inside a value cannot forge a line. So one print() call
# prints ONE line; multi-line JSON goes through print_json, which writes ASCII-only JSON as it is.
from edgefleet.terminal import safe_print as print


def _duration_arg(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _bake_arg(text: str) -> float:
    """A bake time; 0 is allowed (promote as soon as the step's nodes are ACTIVE and healthy)."""
    if text.strip() in ("0", "0s"):
        return 0.0
    return _duration_arg(text)


def _percent(text: str) -> int:
    value = _positive_int(text)
    if value > 100:
        raise argparse.ArgumentTypeError(f"a percentage is at most 100, got {value}")
    return value


def _steps(text: str) -> list[int]:
    return [_percent(part.strip()) for part in text.split(",") if part.strip()]


def _fleet_addresses_arg(text: str) -> tuple[str, ...]:
    from central.services.enrollment import parse_fleet_addresses

    try:
        return parse_fleet_addresses(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _labels_arg(text: str) -> dict[str, str]:
    try:
        return parse_labels(text)
    except LabelError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


_STORE_HELP = (
    "postgresql://USER[:PASSWORD]@HOST[:PORT]/DB for a store several replicas share"
    " (default: central.db in the data dir, SQLite)"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgefleet", description="operate an edgefleet fleet through its coordinator")
    parser.add_argument("--version", action="version", version=f"edgefleet {__version__}")
    parser.add_argument(
        "--credential", help="credential file (default $EDGEFLEET_CREDENTIAL, else ~/.config/edgefleet/credential)"
    )
    parser.add_argument("--central", help="HOST:PORT of central, overriding the credential's")
    sub = parser.add_subparsers(dest="group", required=True)

    central = sub.add_parser("central", help="create or run the coordinator").add_subparsers(
        dest="command", required=True
    )
    init = central.add_parser("init", help="create the CA, signing key, store and first admin credential")
    init.add_argument("--data-dir", required=True, help="central's data dir (created 0700)")
    init.add_argument(
        "--central-address",
        default="127.0.0.1:7443",
        help="HOST:PORT written into the admin credential (default 127.0.0.1:7443)",
    )
    init.add_argument("--store", default="", help=_STORE_HELP)
    serve = central.add_parser("serve", help="run the coordinator (one replica of it)")
    serve.add_argument("--data-dir", required=True, help="a data dir made by `central init`")
    serve.add_argument(
        "--listen", default="0.0.0.0:7443", help="FleetService/AdminService, mTLS (default 0.0.0.0:7443)"
    )
    serve.add_argument("--enroll-listen", default="0.0.0.0:7444", help="EnrollmentService, TLS (default 0.0.0.0:7444)")
    serve.add_argument(
        "--advertise", default="", help="host name agents use to reach central (default: the bound host)"
    )
    serve.add_argument(
        "--superlink-listen",
        default="",
        help="Flower SuperLink for federated learning, TLS (default: the --listen host, port 7445)",
    )
    serve.add_argument("--no-superlink", action="store_true", help="run without federated learning")
    serve.add_argument(
        "--heartbeat-interval", type=_duration_arg, default=15.0, help="agents' heartbeat interval (15s)"
    )
    serve.add_argument(
        "--cert-lifetime", type=_duration_arg, default=30 * 86400.0, help="node certificates' lifetime (30d)"
    )
    serve.add_argument("--store", default="", help="override the data dir's store: " + _STORE_HELP)
    serve.add_argument(
        "--fleet-addresses",
        type=_fleet_addresses_arg,
        default=(),
        help="HOST:PORT,... enrollment and each heartbeat stream hand agents, e.g. a load balancer (default: every"
        " live replica's)",
    )
    serve.add_argument(
        "--blobs",
        default="",
        help="model blobs: s3://BUCKET/PREFIX (S3-compatible; endpoint from AWS_ENDPOINT_URL) or a directory"
        " every replica mounts (default: <data-dir>/blobs)",
    )
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.add_argument(
        "--rollup-labels",
        type=usage_commands.rollup_labels_arg,
        default="region,site",
        help="node label keys central keeps history and per-label metrics for, comma-separated; '' for none"
        " (default region,site)",
    )
    serve.add_argument(
        "--metrics-listen",
        default="127.0.0.1:9470",
        help="Prometheus /metrics: HOST:PORT, plain HTTP on loopback, else mTLS with an operator's certificate"
        " (https://HOST:PORT: mTLS on loopback too); 'off' disables it (default 127.0.0.1:9470)",
    )
    # The enrollment port's limits (issue 16): see docs/fleet.md, "The enrollment port under load".
    serve.add_argument(
        "--enroll-rate", type=_positive_float, default=5.0, help="enrollment calls a second per client IP (5)"
    )
    serve.add_argument(
        "--enroll-burst", type=_positive_int, default=20, help="enrollment calls at once per client IP (20)"
    )
    serve.add_argument(
        "--enroll-max-concurrent", type=_positive_int, default=64, help="enrollment calls in flight in all (64)"
    )
    backup_commands.add_parsers(central)  # edgefleet central backup [verify|keygen], edgefleet central restore
    restore_commands.add_parsers(central)  # edgefleet central restore-report
    cstatus = central.add_parser("status", help="the store, its replicas and which one leads")
    cstatus.add_argument("--data-dir", required=True, help="a data dir made by `central init`")
    cstatus.add_argument("--store", default="", help="override the data dir's store: " + _STORE_HELP)
    cstatus.add_argument("--json", action="store_true", help="print JSON for scripts")

    token = sub.add_parser("token", help="bootstrap tokens").add_subparsers(dest="command", required=True)
    create = token.add_parser("create", help="make a one-time bootstrap token and print the enroll command")
    create.add_argument("--labels", type=_labels_arg, default={}, help="labels for the node, e.g. region=eu,site=fra")
    create.add_argument("--ttl", type=_duration_arg, default=3600.0, help="lifetime (default 1h)")
    create.add_argument("--uses", type=_positive_int, default=1, help="enrollments allowed (default 1)")
    create.add_argument("--json", action="store_true", help="print token, ca_fingerprint, enroll_address as JSON")
    tlist = token.add_parser("list", help="list tokens (never their secrets)")
    tlist.add_argument("--json", action="store_true", help="print JSON for scripts")
    trevoke = token.add_parser("revoke", help="make a token unusable")
    trevoke.add_argument("token_id", help="the token's id (the part before the dot)")

    nodes = sub.add_parser("nodes", help="enrolled nodes").add_subparsers(dest="command", required=True)
    nlist = nodes.add_parser("list", help="nodes with their status and latest figures")
    nlist.add_argument("--selector", type=_labels_arg, default={}, help="only nodes with these labels, k=v,...")
    nlist.add_argument("--json", action="store_true", help="print JSON for scripts")
    show = nodes.add_parser("show", help="one node in full, with its latest reports")
    show.add_argument("node")
    show.add_argument("--json", action="store_true", help="print JSON for scripts")
    label = nodes.add_parser("label", help="set labels (k=v) or remove them (k-)")
    label.add_argument("node")
    label.add_argument("changes", nargs="+", help="k=v to set, k- to remove")
    assign = nodes.add_parser("assign", help="set the model version one node should run")
    assign.add_argument("node")
    assign.add_argument("ref", metavar="NAME@VERSION")
    revoke = nodes.add_parser("revoke", help="refuse the node from its next call on")
    revoke.add_argument("node")
    revoke.add_argument("--reason", default="", help="why, for the audit log")

    models = sub.add_parser("models", help="the model registry").add_subparsers(dest="command", required=True)
    push = models.add_parser("push", help="store a model version (content-addressed, signed manifest)")
    push.add_argument("file", help="the model file (GGUF or ONNX)")
    push.add_argument("--name", required=True, help="model name, e.g. gemma-3-270m")
    push.add_argument("--version", required=True, help="version; name@version is immutable once pushed")
    push.add_argument("--format", choices=["gguf", "onnx"], default=None, help="default: from the file's extension")
    push.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="runtime parameter, e.g. n_ctx=4096 (repeatable)",
    )
    push.add_argument("--json", action="store_true", help="print JSON for scripts")
    mlist = models.add_parser("list", help="model versions in the registry")
    mlist.add_argument("--name", default="", help="only this model")
    mlist.add_argument("--json", action="store_true", help="print JSON for scripts")
    mshow = models.add_parser("show", help="one version, its manifest and the nodes assigned to it")
    mshow.add_argument("ref", metavar="NAME@VERSION")
    mshow.add_argument("--json", action="store_true", help="print JSON for scripts")
    mdelete = models.add_parser("delete", help="delete a version no node is assigned to")
    mdelete.add_argument("ref", metavar="NAME@VERSION")

    rollout = sub.add_parser("rollout", help="canary rollouts of model versions").add_subparsers(
        dest="command", required=True
    )
    rstart = rollout.add_parser("start", help="roll a version out to the nodes matching a selector, canary first")
    rstart.add_argument("ref", metavar="NAME@VERSION")
    rstart.add_argument("--selector", type=_labels_arg, default={}, help="nodes with these labels, k=v,... (all)")
    rstart.add_argument("--canary", type=_percent, default=10, help="percent of nodes in the canary step (10)")
    rstart.add_argument("--steps", type=_steps, default=[100], help="later steps in percent, e.g. 50,100 (100)")
    rstart.add_argument("--bake", type=_bake_arg, default=600.0, help="time each step must run healthy (10m)")
    rstart.add_argument("--max-error-rate", type=float, default=0.02, help="highest error rate, 0..1 (0.02)")
    rstart.add_argument("--max-p99-ms", type=float, default=2000.0, help="highest p99 latency in ms (2000)")
    rstart.add_argument("--json", action="store_true", help="print JSON for scripts")
    rstatus = rollout.add_parser("status", help="a rollout's phase, nodes and what it waits on")
    rstatus.add_argument("rollout_id")
    rstatus.add_argument("--json", action="store_true", help="print JSON for scripts")
    rlist = rollout.add_parser("list", help="rollouts, newest first")
    rlist.add_argument("--json", action="store_true", help="print JSON for scripts")
    for verb, text in (
        ("pause", "stop promotions (a breach still rolls back)"),
        ("resume", "continue; the current step bakes again"),
    ):
        rollout.add_parser(verb, help=text).add_argument("rollout_id")
    rabort = rollout.add_parser("abort", help="stop and give every node its previous version")
    rabort.add_argument("rollout_id")
    rabort.add_argument("--reason", default="", help="why, for the audit log")

    fl = sub.add_parser("fl", help="federated learning runs (Flower, SecAgg+)").add_subparsers(
        dest="command", required=True
    )
    fstart = fl.add_parser("start", help="start a run on central's SuperLink")
    fstart.add_argument("--task", required=True, help="sensitivity or usage-stats")
    fstart.add_argument("--rounds", type=_positive_int, default=3, help="rounds (3)")
    fstart.add_argument("--min-nodes", type=_positive_int, required=True, help="nodes needed before round 1")
    fstart.add_argument("--secagg-shares", type=_positive_int, default=0, help="SecAgg+ shares per node (every node)")
    fstart.add_argument(
        "--secagg-threshold",
        type=_positive_int,
        default=0,
        help="SecAgg+ reconstruction threshold (two thirds of the nodes)",
    )
    fstart.add_argument(
        "--no-secagg", action="store_true", help="plain FedAvg: central sees every node's update (for comparison only)"
    )
    fstart.add_argument("--clip", type=float, default=0.0, help="DP: client-side clipping norm (off)")
    fstart.add_argument("--noise", type=float, default=0.0, help="DP: noise multiplier (needs --clip)")
    fstart.add_argument(
        "--stage-timeout",
        type=_duration_arg,
        default=0.0,
        help="how long to wait for nodes' replies in each stage (60s)",
    )
    fstart.add_argument(
        "--wait-nodes", type=_duration_arg, default=0.0, help="how long to wait for --min-nodes to connect (2m)"
    )
    fstart.add_argument(
        "--record-received",
        action="store_true",
        help="keep what central received from each node (masked vectors) to audit it",
    )
    fstart.add_argument("--json", action="store_true", help="print JSON for scripts")
    fstatus = fl.add_parser("status", help="one run: status, rounds, outcome")
    fstatus.add_argument("run_id", type=int)
    fstatus.add_argument("--json", action="store_true", help="print JSON for scripts")
    flist = fl.add_parser("list", help="runs, newest first")
    flist.add_argument("--json", action="store_true", help="print JSON for scripts")

    audit = sub.add_parser("audit", help="the audit log").add_subparsers(dest="command", required=True)
    alist = audit.add_parser("list", help="audit entries, oldest first")
    alist.add_argument("--after", type=int, default=0, help="only entries after this sequence")
    alist.add_argument("--limit", type=_positive_int, default=100, help="at most this many (default 100)")
    alist.add_argument("--json", action="store_true", help="print JSON for scripts")
    verify = audit.add_parser("verify", help="check the audit log's hash chain")
    verify.add_argument("--json", action="store_true", help="print JSON for scripts")
    verify.add_argument(
        "--archive", type=Path, default=None, help="check FILE, written by `audit archive`, offline instead"
    )
    verify.add_argument(
        "--signing-key",
        type=Path,
        default=None,
        help="with --archive: central's signing.pub (or signing-history.json, every key it had), to check the anchor",
    )
    aarchive = audit.add_parser("archive", help="save old entries to a file, then prune them behind a signed anchor")
    older = aarchive.add_mutually_exclusive_group(required=True)
    older.add_argument("--before-sequence", type=_positive_int, help="archive the entries before this one")
    older.add_argument("--older-than", type=_duration_arg, help="archive the entries older than this, e.g. 90d")
    aarchive.add_argument("--out", type=Path, required=True, help="the archive file to write (JSON lines)")
    arouting = audit.add_parser("routing", help="requests per node, data class and route, from the nodes' heartbeats")
    arouting.add_argument("--node", default="", help="only this node (its id)")
    arouting.add_argument("--json", action="store_true", help="print JSON for scripts")

    operator_commands.add_parsers(sub, _duration_arg)  # edgefleet admin create|list|revoke|renew
    dashboard_command.add_parsers(sub)  # edgefleet dashboard
    slo_commands.add_parsers(sub, _duration_arg, _labels_arg)  # edgefleet slo set|list|status|delete|rules
    usage_commands.add_parsers(sub, nodes, _duration_arg)  # edgefleet usage, edgefleet nodes history
    trust_commands.add_parsers(sub, _duration_arg)  # edgefleet keys ..., edgefleet ca rotate|finish|status
    return parser


@exits_quietly_when_the_reader_leaves
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.group == "central" and args.command == "serve":
        logs.configure(args.log_level)  # before anything imports gRPC, which reads its settings at import
    from central.blobs import BlobError
    from central.client import AdminCallError
    from central.datadir import DataDirError
    from central.store import StoreError

    try:
        if args.group == "central":
            return _central(args)
        if (args.group, args.command) == ("audit", "verify") and args.archive:
            return _audit_verify_archive(args)  # offline: no credential needed
        return _admin_command(args)
    except (credential_file.CredentialError, DataDirError, StoreError, BlobError) as exc:
        print(f"edgefleet: {exc}", file=sys.stderr)
        return 2
    except AdminCallError as exc:
        print(f"edgefleet: {exc}", file=sys.stderr)
        return exc.exit_code


# -- central init / serve ------------------------------------------------------


def _central(args) -> int:
    from central import datadir

    if args.command in restore_commands.COMMANDS:  # an AdminService call, not the data dir
        return _admin_command(args)
    if args.command in backup_commands.COMMANDS:  # on the data dir and the archive, with or without a central
        return backup_commands.run(args)
    root = Path(args.data_dir).expanduser().resolve()
    if args.command == "init":
        paths = datadir.initialize(root, args.central_address, store=args.store)
        authority = datadir.Authority.load(paths)
        print(f"initialized central in {root}")
        print(f"store: {display_store(datadir.store_spec(paths))}")
        print(f"CA fingerprint: {authority.fingerprint}")
        print("admin credential (holds a private key; keep it 0600):")
        print(f"  export EDGEFLEET_CREDENTIAL={paths.admin_credential}")
        return 0
    paths = datadir.CentralPaths(root)
    datadir.require_initialized(paths)
    if args.command == "status":
        return _central_status(datadir.store_spec(paths, args.store), args.json)
    from central.server import ListenError, serve
    from central.services.base import CentralSettings

    settings = CentralSettings(
        heartbeat_interval_s=args.heartbeat_interval,
        certificate_lifetime_s=args.cert_lifetime,
        rollup_labels=args.rollup_labels,
    )
    settings = _with_enroll_limits(settings, args)
    _use_uvloop()
    _steady_malloc()
    try:
        superlink = None if args.no_superlink else (args.superlink_listen or f"{args.listen.rsplit(':', 1)[0]}:7445")
        return asyncio.run(
            serve(
                paths,
                settings,
                args.listen,
                args.enroll_listen,
                args.advertise,
                superlink_listen=superlink,
                store_spec=args.store,
                blobs_spec=args.blobs,
                fleet_addresses=args.fleet_addresses,
                metrics_listen=args.metrics_listen,
            )
        )
    except ListenError as exc:
        print(f"edgefleet: {exc}", file=sys.stderr)
        return 1


def _with_enroll_limits(settings, args):
    """The enrollment port's limits from `central serve`'s flags (issue 16)."""
    from dataclasses import replace

    return replace(
        settings,
        enroll_rate_per_s=args.enroll_rate,
        enroll_burst=args.enroll_burst,
        enroll_max_concurrent=args.enroll_max_concurrent,
    )


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number above 0")
    return value


def _central_status(spec: str, as_json: bool) -> int:
    """Read straight from the store, so it answers with every replica down too."""
    from central.leadership import live_replicas
    from central.store import open_store

    store = open_store(spec)
    try:
        replicas, leader = store.list_replicas(), store.leadership()
    finally:
        store.close()
    now = time.time()
    live = {r.replica_id for r in live_replicas(replicas, now)}
    leader_id = leader.replica_id if leader and leader.replica_id in live else ""
    states = {
        r.replica_id: "gone" if r.replica_id not in live else ("leader" if r.replica_id == leader_id else "follower")
        for r in replicas
    }
    if as_json:
        rows = [dict(asdict(r), replica=r.replica_id, state=states[r.replica_id]) for r in replicas]
        for row in rows:
            del row["replica_id"]
        leading = {"replica": leader.replica_id, "term": leader.term, "since": leader.since} if leader else None
        print_json({"store": display_store(spec), "leader": leading, "replicas": rows})
        return 0
    print(f"store: {display_store(spec)}")
    if leader is None:
        print("leader: none yet (no replica has served)")
    else:
        stale = "" if leader_id else " (not seen lately: a follower takes over within seconds of its death)"
        print(f"leader: {leader.replica_id}, term {leader.term}, since {iso_seconds(leader.since)}{stale}")
    print_table(
        ["REPLICA", "ENROLLMENT", "STATE", "STARTED", "LAST SEEN"],
        [
            [
                r.replica_id,
                r.enroll_address,
                states[r.replica_id],
                iso_seconds(r.started_at),
                relative(r.last_seen_at - now),
            ]
            for r in replicas
        ],
    )
    return 0


def _steady_malloc() -> None:
    """Keep glibc from trimming and re-faulting its heap around the 1 MiB chunks of pushes and fetches:
    measured, central's CPU per GiB served swung between about 2 s and 4.7 s with the defaults and stayed
    at 1.8-2.4 s with these (the same as MALLOC_MMAP_THRESHOLD_/MALLOC_TRIM_THRESHOLD_). Not glibc: no-op."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        mallopt = libc.mallopt if libc else None
    except (OSError, AttributeError):
        return
    if mallopt:
        m_trim_threshold, m_mmap_threshold = -1, -3
        mallopt(m_mmap_threshold, 32 << 20)
        mallopt(m_trim_threshold, 128 << 20)


def _use_uvloop() -> None:
    """uvloop (from uvicorn[standard]) cuts central's CPU per heartbeat by about a tenth."""
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


# -- AdminService commands -------------------------------------------------------


def _admin_command(args) -> int:
    from central.client import AdminClient

    cred = credential_file.load(credential_file.resolve_path(args.credential))
    with AdminClient(cred, args.central) as client:
        handler = _HANDLERS[(args.group, args.command)]
        return handler(client, args)


def _token_create(client, args) -> int:
    from central.convert import duration
    from edgefleet.v1 import admin_pb2

    r = client.call(
        "CreateToken", admin_pb2.CreateTokenRequest(labels=args.labels, ttl=duration(args.ttl), uses=args.uses)
    )
    if args.json:
        print_json(
            {
                "token": r.token,
                "token_id": r.info.token_id,
                "ca_fingerprint": r.ca_fingerprint,
                "enroll_address": r.enroll_address,
                "labels": dict(r.info.labels),
                "expires_at": iso(r.info.expires_at),
                "uses": r.info.uses_total,
            }
        )
    else:
        print(join_command(r.token, r.enroll_address, r.ca_fingerprint))
        expires = relative(r.info.expires_at.ToSeconds() - time.time())
        print(
            f"(the token rides in the environment, not in argv where `ps` shows it to every local user; it enrolls"
            f" {r.info.uses_total} node{'s' if r.info.uses_total != 1 else ''} and expires {expires}. To keep it out"
            " of the box's shell history as well, write it to a file (chmod 600) and pass --token-file FILE)",
            file=sys.stderr,
        )
    return 0


def join_command(token: str, enroll_address: str, ca_fingerprint: str) -> str:
    """The line `token create` prints to paste on the box: the token in $EDGEFLEET_TOKEN, which only the box's user
    and root can read of the running process, never as --token, which `ps` shows to everyone."""
    return f"EDGEFLEET_TOKEN={token} edge-agent enroll --central {enroll_address} --ca-fingerprint {ca_fingerprint}"


def _token_list(client, args) -> int:
    from edgefleet.v1 import admin_pb2

    tokens = client.call("ListTokens", admin_pb2.ListTokensRequest()).tokens
    rows = [
        {
            "token_id": t.token_id,
            "labels": dict(t.labels),
            "uses_left": t.uses_left,
            "uses_total": t.uses_total,
            "expires_at": iso(t.expires_at),
            "revoked": t.revoked,
            "created_by": t.created_by,
        }
        for t in tokens
    ]
    if args.json:
        print_json(rows)
        return 0
    now = time.time()
    print_table(
        ["TOKEN", "LABELS", "USES LEFT", "EXPIRES", "STATE"],
        [
            [
                t.token_id,
                format_labels(dict(t.labels)) or "-",
                f"{t.uses_left}/{t.uses_total}",
                relative(t.expires_at.ToSeconds() - now),
                "revoked"
                if t.revoked
                else "expired"
                if t.expires_at.ToSeconds() <= now
                else "used"
                if t.uses_left == 0
                else "usable",
            ]
            for t in tokens
        ],
    )
    return 0


def _token_revoke(client, args) -> int:
    from edgefleet.v1 import admin_pb2

    client.call("RevokeToken", admin_pb2.RevokeTokenRequest(token_id=args.token_id))
    print(f"revoked token {args.token_id}")
    return 0


def node_row(node) -> dict:
    """The figures `nodes list` shows, flat, for people and scripts alike."""
    from edgefleet.v1 import admin_pb2

    inf = node.status.inference
    model = node.status.active_model
    return {
        "node": node.node_id,
        "labels": dict(node.labels),
        "status": admin_pb2.NodeState.Name(node.state).removeprefix("NODE_STATE_").lower(),
        "last_seen": iso(node.last_seen_at) if node.HasField("last_seen_at") else None,
        "model": f"{model.name}@{model.version}" if model.name else None,
        "agent_version": node.status.agent_version or None,
        "tokens_per_second": round(inf.tokens_per_second, 1),
        "p99_ms": round(inf.latency_p99_ms, 1),
        "cache_hit_rate": round(inf.cache_hits / inf.cache_lookups, 3) if inf.cache_lookups else None,
        "requests": inf.requests,
        "errors": inf.errors,
    }


def _nodes_list(client, args) -> int:
    from edgefleet.v1 import admin_pb2

    nodes, token = [], ""
    while True:
        page = client.call("ListNodes", admin_pb2.ListNodesRequest(selector=args.selector, page_token=token))
        nodes.extend(page.nodes)
        token = page.next_page_token
        if not token:
            break
    rows = [node_row(n) for n in nodes]
    if args.json:
        print_json(rows)
        return 0
    now = time.time()
    print_table(
        ["NODE", "LABELS", "STATUS", "LAST SEEN", "MODEL", "TOK/S", "P99 MS", "CACHE HIT"],
        [
            [
                r["node"],
                format_labels(r["labels"]) or "-",
                r["status"],
                relative(n.last_seen_at.ToSeconds() - now) if r["last_seen"] else "never",
                r["model"] or "-",
                f"{r['tokens_per_second']:.1f}",
                f"{r['p99_ms']:.0f}",
                "-" if r["cache_hit_rate"] is None else f"{r['cache_hit_rate']:.0%}",
            ]
            for r, n in zip(rows, nodes, strict=True)
        ],
    )
    return 0


def _nodes_show(client, args) -> int:
    from edgefleet.v1 import admin_pb2

    r = client.call("GetNode", admin_pb2.GetNodeRequest(node_id=args.node))
    if args.json:
        print_json({"node": to_dict(r.node), "summary": node_row(r.node), "reports": [to_dict(x) for x in r.reports]})
        return 0
    row = node_row(r.node)
    for key, value in row.items():
        print(f"{key + ':':<20}{format_labels(value) if key == 'labels' else value}")
    print(f"{'hostname:':<20}{r.node.hostname}")
    print(f"{'certificate:':<20}{r.node.certificate_serial} (expires {iso(r.node.certificate_expires_at)})")
    print(f"{'dropped reports:':<20}{r.node.dropped_reports}")
    system = r.node.status.system
    if r.node.HasField("status"):
        print(f"{'cpu:':<20}{system.cpu_percent:.0f}% of {system.cpu_count}")
        print(f"{'memory:':<20}{system.memory_used_bytes / 2**30:.1f} / {system.memory_total_bytes / 2**30:.1f} GiB")
        print(f"{'disk:':<20}{system.disk_used_bytes / 2**30:.1f} / {system.disk_total_bytes / 2**30:.1f} GiB")
        for gpu in system.gpus:
            print(f"{'gpu:':<20}{gpu.name} {gpu.utilization_percent:.0f}% ({gpu.source})")
    if r.reports:
        print("latest reports:")
        for report in r.reports:
            body = report.WhichOneof("body")
            text = report.event.kind + ": " + report.event.message if body == "event" else "status report"
            print(f"  #{report.sequence} {iso(report.observed_at)} {text}")
    return 0


def _nodes_label(client, args) -> int:
    from central.client import AdminCallError
    from edgefleet.v1 import admin_pb2

    set_labels, remove = {}, []
    for change in args.changes:
        if change.endswith("-") and "=" not in change:
            remove.append(change[:-1])
        else:
            try:
                set_labels.update(parse_labels(change))
            except LabelError as exc:
                raise AdminCallError(str(exc), 2) from None
    r = client.call(
        "LabelNode", admin_pb2.LabelNodeRequest(node_id=args.node, set_labels=set_labels, remove_labels=remove)
    )
    print(f"{args.node}: {format_labels(dict(r.node.labels)) or 'no labels'}")
    return 0


def _nodes_revoke(client, args) -> int:
    from edgefleet.v1 import admin_pb2

    client.call("RevokeNode", admin_pb2.RevokeNodeRequest(node_id=args.node, reason=args.reason))
    print(f"revoked {args.node}: it is refused from its next call on")
    return 0


def _ref(text: str) -> tuple[str, str]:
    from central.client import AdminCallError
    from edgefleet.manifest import ManifestError, parse_ref

    try:
        return parse_ref(text)
    except ManifestError as exc:
        raise AdminCallError(str(exc), 2) from None


def _nodes_assign(client, args) -> int:
    from edgefleet.v1 import admin_pb2

    name, version = _ref(args.ref)
    client.call("AssignModel", admin_pb2.AssignModelRequest(node_id=args.node, name=name, version=version))
    print(f"{args.node} will run {name}@{version} (it learns at its next heartbeat)")
    return 0


PUSH_CHUNK_BYTES = 1 << 20


def _push_requests(path: Path, upload, progress):
    from edgefleet.v1 import admin_pb2

    yield admin_pb2.PushModelRequest(upload=upload)
    with open(path, "rb") as f:
        while chunk := f.read(PUSH_CHUNK_BYTES):
            progress.advance(len(chunk))
            yield admin_pb2.PushModelRequest(chunk=chunk)
    progress.done()


def _hash_file(path: Path, progress: Progress) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(PUSH_CHUNK_BYTES):
            digest.update(block)
            progress.advance(len(block))
    progress.done()
    return digest.hexdigest()


def _models_push(client, args) -> int:
    from central.client import AdminCallError
    from central.errors import InvalidArgument
    from central.services.registry import validate_params
    from edgefleet.v1 import admin_pb2

    path = Path(args.file)
    if not path.is_file():
        raise AdminCallError(f"{path} is not a file", 2)
    fmt = args.format or {".gguf": "gguf", ".onnx": "onnx"}.get(path.suffix.lower())
    if fmt is None:
        raise AdminCallError(f"cannot tell the format of {path.name}: pass --format gguf or --format onnx", 2)
    params = {}
    for item in args.param:
        key, sep, value = item.partition("=")
        if not sep:
            raise AdminCallError(f"--param {item!r} must be KEY=VALUE", 2)
        params[key.strip()] = value.strip()
    try:
        validate_params(params)
    except InvalidArgument as exc:
        raise AdminCallError(str(exc), 2) from None
    size = path.stat().st_size
    if size == 0:
        raise AdminCallError(f"{path} is empty", 2)
    sha256 = _hash_file(path, Progress(f"hashing {path.name}", size))
    upload = admin_pb2.ModelUpload(
        name=args.name, version=args.version, format=fmt, params=params, size=size, sha256=sha256
    )
    progress = Progress(f"pushing {args.name}@{args.version}", size)
    r = client.stream("PushModel", _push_requests(path, upload, progress))
    if args.json:
        print_json({**to_dict(r.model), "already_present": r.already_present})
    else:
        state = "already present" if r.already_present else "stored"
        print(
            f"{r.model.name}@{r.model.version} {state}: sha256 {r.model.sha256}, {r.model.size} bytes, signed manifest"
        )
    return 0


def _models_list(client, args) -> int:
    from edgefleet.v1 import admin_pb2

    models = client.call("ListModels", admin_pb2.ListModelsRequest(name=args.name)).models
    if args.json:
        print_json([to_dict(m) for m in models])
        return 0
    print_table(
        ["NAME", "VERSION", "FORMAT", "SIZE", "SHA256", "PUSHED", "BY"],
        [
            [m.name, m.version, m.format, f"{m.size / 2**20:,.1f} MiB", m.sha256[:12], iso(m.created_at), m.pushed_by]
            for m in models
        ],
    )
    return 0


def _models_show(client, args) -> int:
    from edgefleet.v1 import admin_pb2

    name, version = _ref(args.ref)
    r = client.call("GetModel", admin_pb2.GetModelRequest(name=name, version=version))
    if args.json:
        print_json({"model": to_dict(r.model), "manifest": r.manifest.body.decode(), "signature": r.manifest.signature})
        return 0
    m = r.model
    for key, value in [
        ("model", f"{m.name}@{m.version}"),
        ("format", m.format),
        ("sha256", m.sha256),
        ("size", f"{m.size} bytes"),
        ("params", format_labels(dict(m.params)) or "-"),
        ("pushed", f"{iso(m.created_at)} by {m.pushed_by}"),
        ("assigned to", ", ".join(m.assigned_nodes) or "no node"),
        ("signature", r.manifest.signature),
    ]:
        print(f"{key + ':':<14}{value}")
    return 0


def _models_delete(client, args) -> int:
    from edgefleet.v1 import admin_pb2

    name, version = _ref(args.ref)
    r = client.call("DeleteModel", admin_pb2.DeleteModelRequest(name=name, version=version))
    print(f"deleted {name}@{version}" + (" and its blob" if r.blob_removed else " (its blob is shared, kept)"))
    return 0


def _rollout_row(r) -> dict:
    return {
        "rollout": r.rollout_id,
        "model": f"{r.model.name}@{r.model.version}",
        "phase": r.phase,
        "step": f"{r.step_index + 1}/{len(r.steps)}" if r.phase != "COMPLETED" else "done",
        "steps": list(r.steps),
        "selector": dict(r.selector),
        "reason": r.reason,
        "nodes": [
            {
                "node": n.node_id,
                "desired": n.desired_version,
                "active": n.active_version,
                "activation": n.activation_state,
                "in_step": n.in_step,
            }
            for n in r.nodes
        ],
        "waiting_on": list(r.waiting_on),
    }


def _print_rollout(r) -> None:
    row = _rollout_row(r)
    print(
        f"rollout {row['rollout']}: {row['model']} {row['phase']} (step {row['step']} of "
        f"{'/'.join(map(str, row['steps']))} %) on {format_labels(row['selector']) or 'every node'}"
    )
    print(f"reason: {row['reason']}")
    for wait in row["waiting_on"]:
        print(f"waiting: {wait}")
    print_table(
        ["NODE", "IN STEP", "DESIRED", "ACTIVE", "ACTIVATION"],
        [
            [n["node"], "yes" if n["in_step"] else "", n["desired"] or "-", n["active"] or "-", n["activation"] or "-"]
            for n in row["nodes"]
        ],
    )


def _rollout_start(client, args) -> int:
    from central.convert import duration
    from edgefleet.v1 import admin_pb2

    name, version = _ref(args.ref)
    r = client.call(
        "StartRollout",
        admin_pb2.StartRolloutRequest(
            name=name,
            version=version,
            selector=args.selector,
            canary=args.canary,
            steps=args.steps,
            bake=duration(args.bake),
            max_error_rate=args.max_error_rate,
            max_p99_ms=args.max_p99_ms,
        ),
    ).rollout
    if args.json:
        print_json(_rollout_row(r))
    else:
        _print_rollout(r)
    return 0


def _rollout_status(client, args) -> int:
    from edgefleet.v1 import admin_pb2

    r = client.call("GetRollout", admin_pb2.GetRolloutRequest(rollout_id=args.rollout_id)).rollout
    if args.json:
        print_json(_rollout_row(r))
    else:
        _print_rollout(r)
    return 0


def _rollout_list(client, args) -> int:
    from edgefleet.v1 import admin_pb2

    rows = [_rollout_row(r) for r in client.call("ListRollouts", admin_pb2.ListRolloutsRequest()).rollouts]
    if args.json:
        print_json(rows)
        return 0
    print_table(
        ["ROLLOUT", "MODEL", "PHASE", "STEP", "NODES", "REASON"],
        [[r["rollout"], r["model"], r["phase"], r["step"], str(len(r["nodes"])), r["reason"][:60]] for r in rows],
    )
    return 0


def _rollout_change(method: str, request_type: str):
    def handler(client, args) -> int:
        from edgefleet.v1 import admin_pb2

        fields = {"rollout_id": args.rollout_id}
        if getattr(args, "reason", None) is not None:
            fields["reason"] = args.reason
        r = client.call(method, getattr(admin_pb2, request_type)(**fields)).rollout
        print(f"rollout {r.rollout_id}: {r.phase} ({r.reason})")
        return 0

    return handler


def _audit_list(client, args) -> int:
    from edgefleet.v1 import admin_pb2

    entries = client.call(
        "ListAuditEntries", admin_pb2.ListAuditEntriesRequest(after_sequence=args.after, limit=args.limit)
    ).entries
    if args.json:
        print_json([to_dict(e) for e in entries])
        return 0
    print_table(
        ["SEQ", "AT", "ACTOR", "ACTION", "TARGET", "OUTCOME", "DETAIL"],
        [
            [
                str(e.sequence),
                iso(e.at),
                e.actor,
                e.action,
                e.target or "-",
                admin_pb2.AuditOutcome.Name(e.outcome).removeprefix("AUDIT_OUTCOME_").lower(),
                e.detail,
            ]
            for e in entries
        ],
    )
    return 0


# -- audit retention (issue 16) -------------------------------------------------


def _audit_archive(client, args) -> int:
    """Save the entries to archive (checking their chain) to --out, then have central prune them behind a signed
    anchor, which ends the file. The file is complete and checked before anything is pruned."""
    import json
    import time

    from central import audit
    from edgefleet.hashchain import GENESIS_HASH
    from edgefleet.v1 import admin_pb2

    out: Path = args.out
    if out.exists():
        print(f"edgefleet: {out} exists; choose another --out", file=sys.stderr)
        return 2
    check = client.call("VerifyAudit", admin_pb2.VerifyAuditRequest())
    if not check.intact:
        print(f"edgefleet: audit log BROKEN at entry {check.first_bad_sequence}: {check.problem}", file=sys.stderr)
        return 1
    start = (check.anchor.sequence, check.anchor.hash) if check.HasField("anchor") else (0, GENESIS_HASH)
    cutoff = time.time() - args.older_than if args.older_than is not None else None
    entries: list[audit.AuditEntry] = []
    after = start[0]
    while True:
        page = client.call("ListAuditEntries", admin_pb2.ListAuditEntriesRequest(after_sequence=after, limit=10_000))
        for m in page.entries:
            if (args.before_sequence and m.sequence >= args.before_sequence) or (cutoff and m.at_seconds >= cutoff):
                break
            entries.append(_audit_entry(m))
        else:
            if len(page.entries) == 10_000:
                after = page.entries[-1].sequence
                continue
        break
    if not entries:
        print("nothing to archive: no entry is that old", file=sys.stderr)
        return 0
    chain = audit.verify_from(start[0], start[1], entries)
    if not chain.intact:
        print(f"edgefleet: entry {chain.first_bad_sequence} does not check: {chain.problem}", file=sys.stderr)
        return 1
    tmp = out.with_name(out.name + ".partial")
    with open(tmp, "w") as f:
        f.write(json.dumps({"edgefleet_audit_archive": 1, "after_sequence": start[0], "after_hash": start[1]}) + "\n")
        for e in entries:
            f.write(json.dumps(asdict(e), ensure_ascii=True) + "\n")
    try:
        r = client.call(
            "ArchiveAudit",
            admin_pb2.ArchiveAuditRequest(before_sequence=entries[-1].sequence + 1, last_hash=entries[-1].hash),
        )
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    a = r.anchor
    with open(tmp, "a") as f:
        anchor = {"sequence": a.sequence, "hash": a.hash, "at": a.at_seconds, "signature": a.signature}
        f.write(json.dumps({"anchor": anchor}) + "\n")
    tmp.replace(out)
    print(f"archived entries {entries[0].sequence}..{entries[-1].sequence} to {out}; central pruned {r.entries_pruned}")
    return 0


def _audit_entry(m):
    from central import audit
    from edgefleet.v1 import admin_pb2

    outcome = admin_pb2.AuditOutcome.Name(m.outcome).removeprefix("AUDIT_OUTCOME_").lower()
    return audit.AuditEntry(
        m.sequence, m.at_seconds, m.actor, m.action, m.target, outcome, m.detail, m.peer, m.previous_hash, m.hash
    )


def _archive_keys(raw: bytes) -> bytes | list[str]:
    """A signing.pub PEM as it is; a signing-history.json as every key it lists (an anchor may predate a rotation)."""
    if raw.lstrip().startswith(b"{"):
        from central.rotation import RotationError, parse_history

        try:
            return parse_history(raw).public_keys()
        except RotationError as exc:
            raise ValueError(str(exc)) from None
    return raw


def _audit_verify_archive(args) -> int:
    import json

    from central import audit

    try:
        lines = [json.loads(line) for line in args.archive.read_text().splitlines() if line.strip()]
        header = lines[0]
        if header.get("edgefleet_audit_archive") != 1:
            raise ValueError("not an edgefleet audit archive")
        anchor = audit.AuditAnchor(**lines[-1]["anchor"]) if "anchor" in lines[-1] else None
        entries = [audit.AuditEntry(**line) for line in lines[1:] if "anchor" not in line]
        key = _archive_keys(args.signing_key.read_bytes()) if args.signing_key else b""
    except (OSError, ValueError, TypeError, KeyError, IndexError) as exc:
        print(f"edgefleet: {args.archive} cannot be read as an audit archive: {exc}", file=sys.stderr)
        return 2
    r = audit.verify_archive(header["after_sequence"], header["after_hash"], entries, anchor, key)
    if args.json:
        print_json({"intact": r.intact, "entries_checked": r.entries_checked, "problem": r.problem})
    elif r.intact:
        signed = "anchor signature checked" if key else "anchor signature not checked (pass --signing-key)"
        print(f"audit archive intact: {r.entries_checked} entries chained; {signed}")
    else:
        print(f"audit archive BROKEN at entry {r.first_bad_sequence}: {r.problem}")
    return 0 if r.intact else 1


def _audit_verify(client, args) -> int:
    from edgefleet.v1 import admin_pb2

    r = client.call("VerifyAudit", admin_pb2.VerifyAuditRequest())
    if args.json:
        print_json(
            {
                "intact": r.intact,
                "entries_checked": r.entries_checked,
                "first_bad_sequence": r.first_bad_sequence,
                "problem": r.problem,
                "anchor_sequence": r.anchor.sequence if r.HasField("anchor") else 0,
            }
        )
    elif r.intact and r.HasField("anchor"):
        print(
            f"audit log intact: {r.entries_checked} entries chained from the signed anchor at entry {r.anchor.sequence}"
            " (older entries archived)"
        )
    elif r.intact:
        print(f"audit log intact: {r.entries_checked} entries chained")
    else:
        print(f"audit log BROKEN at entry {r.first_bad_sequence}: {r.problem}")
    return 0 if r.intact else 1


def _audit_routing(client, args) -> int:
    from edgefleet.v1 import admin_pb2

    nodes, token = [], ""
    while True:  # page by page (100 nodes each), as central sends them
        request = admin_pb2.ListRoutingTotalsRequest(node_id=args.node, page_token=token)
        page = client.call("ListRoutingTotals", request)
        nodes.extend(page.nodes)
        token = page.next_page_token
        if not token:
            break
    rows = [
        {
            "node_id": n.node_id,
            "hostname": n.hostname,
            "counts": [{"data_class": c.data_class, "route": c.route, "requests": c.count} for c in n.counts],
            "audit_sequence": n.audit_sequence,
            "audit_head_hash": n.audit_head_hash,
            "updated_at": iso(n.updated_at),
        }
        for n in nodes
    ]
    if args.json:
        print_json(rows)
        return 0
    if not rows:
        print(f"no routing reported by {args.node or 'any node'} yet")
        return 0
    print_table(
        ["NODE", "DATA CLASS", "ROUTE", "REQUESTS"],
        [[r["node_id"], c["data_class"], c["route"], str(c["requests"])] for r in rows for c in r["counts"]],
    )
    print()
    for r in rows:
        host = f" ({r['hostname']})" if r["hostname"] else ""
        print(
            f"{r['node_id']}{host}: routing audit at entry {r['audit_sequence']}, "
            f"hash {r['audit_head_hash'][:16] or '-'}, last report {r['updated_at']}"
        )
    return 0


def _fl_row(r) -> dict:
    from central.convert import RUN_STATUS_NAMES

    return {
        "run": str(r.run_id),
        "task": r.task,
        "status": RUN_STATUS_NAMES.get(r.status, "unknown"),
        "rounds_done": len(r.round_seconds),
        "rounds": r.rounds,
        "round_seconds": [round(x, 2) for x in r.round_seconds],
        "nodes": r.nodes,
        "secagg": r.secagg,
        "error": r.error,
        "node_errors": list(r.node_errors),
        "model": r.model,
        "outcome": json.loads(r.outcome_json) if r.outcome_json else None,
        "started_at": iso(r.started_at),
        "finished_at": iso(r.finished_at) if r.HasField("finished_at") else None,
        "started_by": r.started_by,
    }


def _print_fl_run(r) -> None:
    row = _fl_row(r)
    print(
        f"run {row['run']}: {row['task']} {row['status']} (round {row['rounds_done']} of {row['rounds']}, "
        f"{row['nodes'] or '?'} nodes, SecAgg+ {'on' if row['secagg'] else 'OFF'})"
    )
    if row["round_seconds"]:
        print("round seconds: " + ", ".join(f"{s:.1f}" for s in row["round_seconds"]))
    if row["error"]:
        print(f"error: {row['error']}")
    for node_error in row["node_errors"]:
        print(f"node error: {node_error}")
    if row["model"]:
        print(f"model: {row['model']} (roll it out with `edgefleet rollout start {row['model']} ...`)")
    if row["outcome"] and row["task"] == "usage-stats":
        print("fleet-wide usage: " + json.dumps(row["outcome"], sort_keys=True))


def _fl_start(client, args) -> int:
    from edgefleet.v1 import admin_pb2

    r = client.call(
        "StartFederatedRun",
        admin_pb2.StartFederatedRunRequest(
            task=args.task,
            rounds=args.rounds,
            min_nodes=args.min_nodes,
            no_secagg=args.no_secagg,
            secagg_shares=args.secagg_shares,
            secagg_threshold=args.secagg_threshold,
            clip=args.clip,
            noise=args.noise,
            stage_timeout_s=args.stage_timeout,
            wait_nodes_s=args.wait_nodes,
            record_received=args.record_received,
        ),
    ).run
    if args.json:
        print_json(_fl_row(r))
    else:
        print(f"started run {r.run_id}: {r.task}, {r.rounds} rounds; follow it with `edgefleet fl status {r.run_id}`")
    return 0


def _fl_status(client, args) -> int:
    from edgefleet.v1 import admin_pb2

    r = client.call("GetFederatedRun", admin_pb2.GetFederatedRunRequest(run_id=args.run_id)).run
    if args.json:
        print_json(_fl_row(r))
    else:
        _print_fl_run(r)
    return 0


def _fl_list(client, args) -> int:
    from edgefleet.v1 import admin_pb2

    rows = [_fl_row(r) for r in client.call("ListFederatedRuns", admin_pb2.ListFederatedRunsRequest()).runs]
    if args.json:
        print_json(rows)
        return 0
    print_table(
        ["RUN", "TASK", "STATUS", "ROUNDS", "NODES", "SECAGG", "MODEL", "ERROR"],
        [
            [
                r["run"],
                r["task"],
                r["status"],
                f"{r['rounds_done']}/{r['rounds']}",
                str(r["nodes"] or "-"),
                "on" if r["secagg"] else "OFF",
                r["model"] or "-",
                r["error"][:60],
            ]
            for r in rows
        ],
    )
    return 0


_HANDLERS = {
    ("token", "create"): _token_create,
    ("token", "list"): _token_list,
    ("token", "revoke"): _token_revoke,
    ("nodes", "list"): _nodes_list,
    ("nodes", "show"): _nodes_show,
    ("nodes", "label"): _nodes_label,
    ("nodes", "revoke"): _nodes_revoke,
    ("nodes", "assign"): _nodes_assign,
    ("models", "push"): _models_push,
    ("models", "list"): _models_list,
    ("models", "show"): _models_show,
    ("models", "delete"): _models_delete,
    ("rollout", "start"): _rollout_start,
    ("rollout", "status"): _rollout_status,
    ("rollout", "list"): _rollout_list,
    ("rollout", "pause"): _rollout_change("PauseRollout", "PauseRolloutRequest"),
    ("rollout", "resume"): _rollout_change("ResumeRollout", "ResumeRolloutRequest"),
    ("rollout", "abort"): _rollout_change("AbortRollout", "AbortRolloutRequest"),
    ("audit", "list"): _audit_list,
    ("audit", "verify"): _audit_verify,
    ("audit", "routing"): _audit_routing,
    ("audit", "archive"): _audit_archive,
    ("fl", "start"): _fl_start,
    ("fl", "status"): _fl_status,
    ("fl", "list"): _fl_list,
    **operator_commands.HANDLERS,
    **dashboard_command.HANDLERS,
    **slo_commands.HANDLERS,
    **restore_commands.HANDLERS,
    **usage_commands.HANDLERS,
    **trust_commands.HANDLERS,
}


if __name__ == "__main__":
    sys.exit(main())
