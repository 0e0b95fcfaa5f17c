"""``edgefleet dashboard``: a local web view of the fleet, run beside the CLI with the operator's credential.

Like `kubectl proxy`, it opens no login surface on central: the browser talks to this process on loopback, and
this process calls AdminService's read RPCs with the credential the CLI uses (a viewer's is enough). Anyone who
reaches its port reads the fleet as that operator, so a non-loopback --listen needs --allow-remote.
:mod:`central.cli` registers the command; the app is :mod:`central.dashboard`.
"""

from __future__ import annotations

import argparse
import socket
import sys

from central import credential as credential_file
from edgefleet.terminal import safe_print as print

DEFAULT_LISTEN = "127.0.0.1:8700"


def add_parsers(sub) -> None:
    """The `dashboard` command, on the CLI's top-level subparsers."""
    dashboard = sub.add_parser(
        "dashboard", help="a local web view of the fleet, read through AdminService with your credential"
    )
    dashboard.add_argument(
        "--listen", default=DEFAULT_LISTEN, help=f"HOST:PORT the web view listens on (default {DEFAULT_LISTEN})"
    )
    dashboard.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a --listen address other than loopback: anyone who reaches it reads the fleet as you",
    )
    dashboard.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="also answer requests whose Host header names NAME (repeatable; needed with a wildcard --listen)",
    )
    # The CLI's own --credential and --central, also accepted after the command word.
    dashboard.add_argument("--credential", default=argparse.SUPPRESS, help="credential file, as for every command")
    dashboard.add_argument(
        "--central", default=argparse.SUPPRESS, help="HOST:PORT of central, overriding the credential's"
    )
    dashboard.set_defaults(command="")


def _serve(client, args) -> int:
    import uvicorn

    from central.client import AdminCallError
    from central.dashboard import security
    from central.dashboard.app import create_app
    from central.dashboard.pages import Pages
    from central.dashboard.source import FleetSource
    from edgefleet.v1 import admin_pb2

    try:
        host, port = security.parse_listen(args.listen)
    except ValueError as exc:
        raise AdminCallError(str(exc), 2) from None
    problem = security.listen_problem(host, args.allow_remote, args.allow_host)
    if problem:
        raise AdminCallError(problem, 2)
    client.call("ListNodes", admin_pb2.ListNodesRequest(page_size=1))  # the credential works, before we listen
    try:
        sock = socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET)
    except OSError as exc:
        raise AdminCallError(f"cannot listen on {args.listen}: {exc.strerror or exc}", 1) from None
    port = sock.getsockname()[1]
    allowed = security.allowed_hosts(host, port, args.allow_host)
    if not security.is_loopback(host):
        print(
            f"edgefleet dashboard: WARNING: listening on {host}:{port}, not loopback. Anyone who can reach this"
            " port reads the whole fleet with YOUR credential, with no login. Prefer an SSH tunnel to 127.0.0.1.",
            file=sys.stderr,
        )
    credential = credential_file.load(credential_file.resolve_path(args.credential))
    source = FleetSource(credential, client.address)
    shown = f"[{host}]" if ":" in host else host
    print(f"edgefleet dashboard on http://{shown}:{port}/ reading central at {client.address}; Ctrl-C stops it")
    sys.stdout.flush()
    config = uvicorn.Config(create_app(Pages(source), allowed), log_level="warning", access_log=False, lifespan="off")
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        source.close()
        sock.close()
    return 0


HANDLERS = {("dashboard", ""): _serve}
