"""The SuperLink's own Runtime API clients (SuperExec, ServerApp), with the SuperLink's client certificate.

federated.superlink_guard refuses the Runtime API to any connection without RUNTIME_IDENTITY's
certificate. Flower starts `flower-superexec` (which starts `flwr-serverapp` per run) with only
the server's CA, so the launcher (federated.superlink) starts them through this module instead:

    python -m federated.superlink_runtime superexec|serverapp [Flower's flags]

which makes every Flower HTTP client of the process present the certificate named by
$EDGEFLEET_RUNTIME_CERT / $EDGEFLEET_RUNTIME_KEY (files in the SuperLink's own directory), then
runs Flower's unchanged entry point. The SuperExec also starts the ServerApp through here.
"""

from __future__ import annotations

import os
import ssl
import subprocess
import sys

CERT_ENV, KEY_ENV = "EDGEFLEET_RUNTIME_CERT", "EDGEFLEET_RUNTIME_KEY"
ENTRY_POINTS = ("superexec", "serverapp")


def client_tls_context(verify, cert_path: str, key_path: str) -> ssl.SSLContext:
    """`verify` as Flower's ProtobufClient takes it (an SSLContext, a CA file path or True), plus a
    client certificate. An SSLContext is changed in place."""
    if isinstance(verify, ssl.SSLContext):
        context = verify
    elif isinstance(verify, str):
        context = ssl.create_default_context(cafile=verify)
    elif verify is True:
        context = ssl.create_default_context()
    else:
        raise ValueError(
            "the SuperLink's Runtime API is served over TLS only; an insecure client cannot present a certificate"
        )
    context.load_cert_chain(cert_path, key_path)
    return context


def present_client_certificate(cert_path: str, key_path: str) -> None:
    """Every Flower ProtobufClient made in this process from now on presents this certificate."""
    from flwr.supercore.protobuf import client as protobuf_client

    original = protobuf_client.ProtobufClient.__init__

    def __init__(self, base_url, *args, verify=True, **kwargs):
        original(self, base_url, *args, verify=client_tls_context(verify, cert_path, key_path), **kwargs)

    protobuf_client.ProtobufClient.__init__ = __init__  # type: ignore[method-assign]


def serverapp_command(args: list[str]) -> list[str]:
    """The SuperExec's command for a task, with `flwr-serverapp` started through this module."""
    if args and os.path.basename(str(args[0])) == "flwr-serverapp":
        return [sys.executable, "-m", "federated.superlink_runtime", "serverapp", *map(str, args[1:])]
    return list(args)


class _Subprocess:
    """Stands in for the subprocess module inside Flower's SubprocessExecutor."""

    DEVNULL = subprocess.DEVNULL
    PIPE = subprocess.PIPE

    @staticmethod
    def Popen(args, **kwargs):
        return subprocess.Popen(serverapp_command(list(args)), **kwargs)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in ENTRY_POINTS:
        sys.exit(f"usage: python -m federated.superlink_runtime {{{','.join(ENTRY_POINTS)}}} [Flower's flags]")
    try:
        cert_path, key_path = os.environ[CERT_ENV], os.environ[KEY_ENV]
    except KeyError as exc:
        sys.exit(f"{exc.args[0]} is not set: the SuperLink's Runtime API needs its client certificate")
    present_client_certificate(cert_path, key_path)
    which, sys.argv = argv[0], [f"flower-{argv[0]}" if argv[0] == "superexec" else "flwr-serverapp", *argv[1:]]
    if which == "superexec":
        from flwr.supercore.cli import flower_superexec
        from flwr.supercore.superexec.executor import subprocess_executor

        subprocess_executor.subprocess = _Subprocess  # type: ignore[assignment]
        flower_superexec()
        return
    from flwr.superlink.cli import flwr_serverapp

    flwr_serverapp()


if __name__ == "__main__":
    main()
