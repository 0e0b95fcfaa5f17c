"""Central's Flower SuperLink: `python -m federated.superlink [our flags] -- [flower-superlink flags]`.

Flower 1.42 serves its Fleet, Control and Runtime APIs on one HTTPS port, and without Flower's
enterprise account auth the Control API (start runs, register nodes) and the Runtime API (take
a run's ServerApp task) answer anyone who can connect, including every user and process on
central's own host. This launcher runs the unchanged flower-superlink with these changes:

- TLS asks every client for a certificate (optional, so SuperNodes connect as before) and
  verifies it against `--client-ca`, a CA central makes for this SuperLink alone;
  federated.superlink_guard then serves Control only to central's certificate, Runtime only to
  the SuperLink's own, Fleet and /health to all, and nothing else (no WebSocket, no docs);
- Flower's optional gRPC servers (Control, Fleet, health) stay off whatever the environment says,
  so the one port is the SuperLink's only listener;
- the SuperExec and ServerApp it starts present the Runtime certificate (federated.superlink_runtime);
- before Flower starts, the process sandboxes itself (federated.sandbox, Landlock): it and its
  children write only `--sandbox-dir` and cannot open central's keys or store, which it then
  checks (`--protect`) and logs.
"""

from __future__ import annotations

import argparse
import os
import ssl
import sys
from pathlib import Path
from typing import Any

from federated import sandbox, superlink_runtime
from federated.superlink_guard import CertificateGuard, make_peer_recording_protocol

REFUSED_FLOWER_FLAGS = ("--insecure", "--health-server-address", "--control-api-address", "--fleet-api-address")
GRPC_SWITCHES = ("FLWR_INTERNAL_GRPC_CONTROL_API", "FLWR_INTERNAL_GRPC_FLEET_API")


def flower_args(host: str, port: int, tls_dir: Path, ca_file: Path) -> list[str]:
    """Flower's own flags for central's SuperLink: TLS with `tls_dir`'s superlink.crt/key, SuperNode auth, and
    state in memory: central's store is the record (keys, runs, outcomes) and its reconcile pass registers every
    key again after a restart. Flower's SQLite state cost about twice the time of a SecAgg+ round in SQLAlchemy
    (bench/federated.py)."""
    return [
        "--host",
        host,
        "--port",
        str(port),
        "--ssl-certfile",
        str(tls_dir / "superlink.crt"),
        "--ssl-keyfile",
        str(tls_dir / "superlink.key"),
        "--ssl-ca-certfile",
        str(ca_file),
        "--enable-supernode-auth",
        "--database",
        ":flwr-in-memory:",
        "--disable-runtime-dependency-installation",
    ]


def command(
    sandbox_dir: Path,
    client_ca: Path,
    runtime_cert: Path,
    runtime_key: Path,
    flower_args: list[str],
    protect: list[Path] | tuple[Path, ...] = (),
) -> list[str]:
    """The launcher's argv; pure."""
    argv = [sys.executable, "-m", "federated.superlink", "--sandbox-dir", str(sandbox_dir)]
    argv += ["--client-ca", str(client_ca), "--runtime-cert", str(runtime_cert), "--runtime-key", str(runtime_key)]
    for path in protect:
        argv += ["--protect", str(path)]
    return [*argv, "--", *flower_args]


def child_env(sandbox_dir: Path, base: dict[str, str]) -> dict[str, str]:
    """The SuperLink's environment: Flower's home and temporary files inside its own directory."""
    return {**base, "FLWR_HOME": str(sandbox_dir / "flwr"), "TMPDIR": str(sandbox_dir / "tmp")}


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(prog="python -m federated.superlink", allow_abbrev=False)
    parser.add_argument("--client-ca", required=True, help="CA of the Control and Runtime client certificates")
    parser.add_argument("--runtime-cert", required=True)
    parser.add_argument("--runtime-key", required=True)
    parser.add_argument("--sandbox-dir", required=True, type=Path, help="the only directory the SuperLink may write")
    parser.add_argument("--protect", action="append", default=[], type=Path, help="a file it must not be able to read")
    parser.add_argument("--no-sandbox", action="store_true", help="run without Landlock (tests of the guard only)")
    ours, flower = parser.parse_known_args(argv)
    if flower and flower[0] == "--":
        flower = flower[1:]
    for flag in flower:
        if flag.split("=", 1)[0] in REFUSED_FLOWER_FLAGS:
            parser.error(f"{flag.split('=', 1)[0]} is refused: the SuperLink serves one TLS port, guarded")
    return ours, flower


def apply_sandbox(args: argparse.Namespace) -> str:
    """Sandbox this process; a line for the log saying what it achieved."""
    if args.no_sandbox:
        return "sandbox: off (--no-sandbox)"
    import federated

    project = Path(federated.__file__).resolve().parents[1]
    try:
        abi = sandbox.restrict(sandbox.default_rules([args.sandbox_dir], [project]))
    except sandbox.SandboxUnavailable as exc:
        return f"sandbox: UNAVAILABLE ({exc}); the SuperLink can read whatever central's user can"
    still = sandbox.readable(args.protect)
    if still:
        return f"sandbox: Landlock ABI {abi}, but still readable: {', '.join(map(str, still))}"
    return (
        f"sandbox: Landlock ABI {abi}; writes only {args.sandbox_dir}; {len(args.protect)} protected paths unreadable"
    )


def main(argv: list[str] | None = None) -> None:
    args, flower_argv = parse_args(sys.argv[1:] if argv is None else argv)
    for switch in GRPC_SWITCHES:
        os.environ[switch] = "0"
    os.environ[superlink_runtime.CERT_ENV] = args.runtime_cert
    os.environ[superlink_runtime.KEY_ENV] = args.runtime_key
    print(apply_sandbox(args), file=sys.stderr, flush=True)

    import importlib

    import flwr.superlink.main as superlink_main
    import uvicorn
    import uvicorn.protocols.http.auto as uvicorn_http

    # The module, not the function of the same name that flwr.superlink.cli exports.
    flower_superlink: Any = importlib.import_module("flwr.superlink.cli.flower_superlink")

    create_app = superlink_main.create_app
    get_superexec_command = flower_superlink._get_superexec_command
    protocol = make_peer_recording_protocol(uvicorn_http.AutoHTTPProtocol)

    def create_guarded_app(*a, **kw):
        app = create_app(*a, **kw)
        app.add_middleware(CertificateGuard)  # outermost: before any of Flower's own layers
        return app

    def superexec_command(*a, **kw):
        command = get_superexec_command(*a, **kw)
        return [sys.executable, "-m", "federated.superlink_runtime", "superexec", *command[1:]]

    class GuardedUvicorn:
        """flower_superlink's `uvicorn`, whose run() also asks clients for a certificate."""

        def __getattr__(self, name):
            return getattr(uvicorn, name)

        @staticmethod
        def run(*a, **kw):
            if not kw.get("ssl_certfile"):
                sys.exit("the SuperLink must serve TLS (--ssl-certfile, --ssl-keyfile)")
            # proxy_headers off: uvicorn would otherwise take the client address (host:port) from a loopback
            # caller's X-Forwarded-For, and with it another connection's identity.
            kw.update(
                ssl_ca_certs=args.client_ca,
                ssl_cert_reqs=ssl.CERT_OPTIONAL,
                http=protocol,
                ws="none",
                proxy_headers=False,
                server_header=False,
            )
            return uvicorn.run(*a, **kw)

    # flower-superlink imports create_app from this module when it starts serving.
    superlink_main.create_app = create_guarded_app
    flower_superlink._get_superexec_command = superexec_command
    flower_superlink.uvicorn = GuardedUvicorn()
    sys.argv = ["flower-superlink", *flower_argv]
    flower_superlink.flower_superlink()


if __name__ == "__main__":
    main()
