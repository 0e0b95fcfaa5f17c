"""An edge box's Flower SuperNode with the waits taken out: `python -m federated.fast_supernode`.

Flags (those of `flower-supernode` that edgefleet uses, plus one):
    --superlink HOST:PORT --root-certificates CA.pem --auth-supernode-private-key KEY
    --node-config "data-dir='...'" [--poll-interval 0.2] [--idle-poll-interval 3] [--active-window 60]

What it changes relative to stock `flower-supernode` (flwr 1.42), and why. A SecAgg+ round is
four exchanges (setup, share keys, collect masked vectors, unmask), each a message to every
node, and stock loses seconds on each one:
- after a poll that finds no message stock sleeps a fixed 3 s; here, while a run is under way
  (a message handled in the last --active-window, 60 s), the next poll comes after --poll-interval
  (0.2 s), and at once after a message was handled; an idle node polls every --idle-poll-interval
  (3 s, as stock), so a fleet at rest costs the SuperLink no more than stock nodes do;
- stock stores the message for a separate SuperExec process that polls its Runtime API (up to
  1 s), which starts a fresh `flwr-clientapp` Python process per message (importing flwr and
  numpy, installing the FAB: seconds on a small box); here `federated.flower_app:client_app`
  is imported once and called in this process, with one Context per run kept in memory, so
  secaggplus_mod's state survives from one stage to the next as it does in stock's stored context;
- a message can be pulled before all its objects are uploaded; stock retries a missing object after
  1 s, 2 s, 4 s ...; here after 0.05 s, doubling up to 1 s;
- there is no Runtime API server and no SuperExec: no local port, nothing else on the box can
  pull this node's messages.
Unchanged: the wire protocol and its client are Flower's own (flwr.supernode.fleet_http_connection:
register/activate with the node's key over TLS, heartbeats, pull and push of messages and
objects), and the ClientApp is called as flwr-clientapp calls it, `client_app(message, context)`.

Refused: a FAB (as received through GetFab) that carries any file besides pyproject.toml and
.info/CONTENT, or whose components are not federated.fab's. The code a run executes is the code
installed on the box, never code a run brings; every message of a refused run gets an INVALID_FAB
error reply. Stock would install the FAB and import whatever it names.

It logs one line per message handled to stderr, and exits cleanly (deactivating the node) on
SIGTERM or SIGINT: at once when idle, after the message in hand otherwise; a second signal stops
it at once.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import logging
import signal
import sys
import threading
import time
import zipfile
from collections import OrderedDict
from functools import partial
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_ssh_private_key
from flwr.app import Context, Error, Message, RecordDict
from flwr.common.config import get_fused_config_from_fab, parse_config_args
from flwr.common.constant import ErrorCode
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects, get_object_tree, no_object_id_recompute
from flwr.supercore.inflatable.inflatable_utils import pull_and_inflate_object_from_tree, push_objects
from flwr.supercore.run import RunNotRunningException
from flwr.supernode.fleet_http_connection import http_request_response

from edgefleet import logs
from federated import fab as fab_spec
from federated.errors import FederatedError

# flwr, and so this module, runs on 3.11+; the fallback is for mypy, which checks the tree as 3.10.
if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

log = logging.getLogger("edgefleet.fast_supernode")

FAB_FILES = {"pyproject.toml", ".info/CONTENT"}
KEEP_RUNS = 8  # contexts kept for the most recent runs
# A message can be pulled before the ServerApp has uploaded all its objects; Flower then retries each missing
# object after 1 s, 2 s, 4 s ... (up to 10 s). Retry sooner: these are small objects on their way.
PULL_BACKOFF_S, PULL_BACKOFF_CAP_S = 0.05, 1.0


class FabRefused(FederatedError):
    """The run's FAB is not the code-free edgefleet FAB (the message says why)."""


class _Stop(BaseException):
    """Raised by the signal handler to leave the loop (a BaseException: Flower's handlers pass it on)."""


def check_fab(content: bytes, fab_hash: str) -> None:
    """Accept only federated.fab's kind of FAB: pyproject.toml and its manifest, naming our components."""
    if hashlib.sha256(content).hexdigest() != fab_hash:
        raise FabRefused("the FAB's sha256 is not the run's fab_hash")
    try:
        with zipfile.ZipFile(io.BytesIO(content)) as archive:
            names = archive.namelist()
            if len(names) != len(set(names)) or set(names) - FAB_FILES:
                extra = sorted(set(names) - FAB_FILES) or ["a duplicate entry"]
                raise FabRefused(f"the FAB carries more than configuration: {', '.join(extra)}")
            pyproject = tomllib.loads(archive.read("pyproject.toml").decode("utf-8"))
    except (zipfile.BadZipFile, KeyError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise FabRefused(f"the FAB is not a readable zip with a pyproject.toml ({exc})") from None
    components = pyproject.get("tool", {}).get("flwr", {}).get("app", {}).get("components")
    expected = {"serverapp": fab_spec.SERVER_APP, "clientapp": fab_spec.CLIENT_APP}
    if components != expected:
        raise FabRefused(f"the FAB names components {components!r}, this node runs only {expected!r}")


def _describe(message: Message) -> str:
    configs = message.content.config_records.get(RECORD_KEY_CONFIGS) if message.has_content() else None
    if configs is not None and Key.STAGE in configs:
        return f"{message.metadata.message_type} secagg:{configs[Key.STAGE]!s}"
    return message.metadata.message_type


class FastSuperNode:
    def __init__(self, node_id: int, node_config: dict, connection):
        (
            _,
            self.receive,
            self.send,
            self.get_run,
            self.get_fab,
            self.pull_object,
            self.push_object,
            self.confirm_received,
        ) = connection
        self.node_id, self.node_config = node_id, node_config
        self.contexts: OrderedDict[int, Context] = OrderedDict()
        self.refused: dict[int, str] = {}
        from federated.flower_app import client_app  # imported once; the FAB only names it

        self.client_app = client_app

    def poll_once(self) -> bool:
        """Pull, run and answer one message; False when there was none."""
        received = self.receive()
        if received is None:
            return False
        message, tree = received
        run_id, started = message.metadata.run_id, time.monotonic()
        try:
            self._handle(message, tree, run_id, started)
        except RunNotRunningException:
            log.info("run %s: not running any more, message %s dropped", run_id, message.metadata.message_id)
        return True

    def _context(self, run_id: int) -> Context | None:
        if run_id in self.contexts:
            self.contexts.move_to_end(run_id)
            return self.contexts[run_id]
        if run_id in self.refused:
            return None
        run = self.get_run(run_id)
        fab = self.get_fab(run.fab_hash, run_id)
        try:
            check_fab(fab.content, run.fab_hash)
        except FabRefused as exc:
            self.refused[run_id] = str(exc)
            log.error("run %s: FAB %s refused: %s", run_id, run.fab_hash[:12], exc)
            return None
        context = Context(
            run_id=run_id,
            node_id=self.node_id,
            node_config=self.node_config,
            state=RecordDict(),
            run_config=get_fused_config_from_fab(fab.content, run),
            series_id=run.series_id,
        )
        self.contexts[run_id] = context
        while len(self.contexts) > KEEP_RUNS:
            self.contexts.popitem(last=False)
        log.info("run %s: joined (FAB %s, task %s)", run_id, run.fab_hash[:12], context.run_config.get("task"))
        return context

    def _handle(self, message: Message, tree, run_id: int, started: float) -> None:
        context = self._context(run_id)
        if context is None:  # refused FAB: answer without pulling the content
            reply = Message(Error(ErrorCode.INVALID_FAB, self.refused[run_id]), reply_to=message)
            what, outcome = message.metadata.message_type, "refused (FAB)"
            pulled = ran = time.monotonic()
        else:
            message = pull_and_inflate_object_from_tree(
                tree,
                partial(self.pull_object, run_id),
                partial(self.confirm_received, run_id),
                return_type=Message,
                initial_backoff=PULL_BACKOFF_S,
                backoff_cap=PULL_BACKOFF_CAP_S,
            )
            message.metadata.__dict__["_message_id"] = tree.object_id  # as flwr-clientapp does
            what, pulled = _describe(message), time.monotonic()
            try:
                reply, outcome = self.client_app(message=message, context=context), "ok"
            except Exception as exc:  # the SuperLink gets the error, as from flwr-clientapp
                log.exception("run %s: the ClientApp raised on %s", run_id, what)
                reply = Message(
                    Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, f"{type(exc)}:<'{exc}'>"), reply_to=message
                )
                outcome = f"error ({type(exc).__name__}: {exc})"
            ran = time.monotonic()
        self._push(reply, run_id, ran - pulled)
        done = time.monotonic()
        log.info(
            "run %s round %s: %s %s in %.3f s (pull %.3f, app %.3f, push %.3f)",
            run_id,
            message.metadata.group_id or "-",
            what,
            outcome,
            done - started,
            pulled - started,
            ran - pulled,
            done - ran,
        )

    def _push(self, reply: Message, run_id: int, app_seconds: float) -> None:
        reply.metadata.__dict__["_message_id"] = reply.object_id
        with no_object_id_recompute():
            tree = get_object_tree(reply)
            wanted, session_id = self.send(reply, tree, app_seconds)
            push_objects(
                get_all_nested_objects(reply), partial(self.push_object, run_id, session_id), object_ids_to_push=wanted
            )


def load_key(path: str) -> tuple[ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey]:
    try:
        key = load_ssh_private_key(Path(path).expanduser().read_bytes(), None)
    except (OSError, ValueError, UnsupportedAlgorithm) as exc:
        raise SystemExit(f"fast-supernode: cannot read the node key {path}: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise SystemExit(f"fast-supernode: {path} is not an EC private key")
    return key, key.public_key()


def poll_delay(
    since_message_s: float, poll_interval_s: float, idle_poll_interval_s: float, active_window_s: float
) -> float:
    """Seconds before the next poll, `since_message_s` after the last message was handled:
    short while a run is under way (its next message is seconds away), stock's 3 s at rest."""
    return poll_interval_s if since_message_s < active_window_s else idle_poll_interval_s


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m federated.fast_supernode",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--superlink", required=True, help="the SuperLink's Fleet API, HOST:PORT")
    parser.add_argument("--root-certificates", required=True, help="CA certificate (PEM) the SuperLink's TLS chains to")
    parser.add_argument("--auth-supernode-private-key", required=True, help="this node's key (OpenSSH, EC)")
    parser.add_argument("--node-config", default="", help="e.g. \"data-dir='/var/lib/edge-agent'\"")
    parser.add_argument(
        "--poll-interval",
        type=float,
        default=0.2,
        help="seconds between polls that find no message while a run is under way (0.2)",
    )
    parser.add_argument(
        "--idle-poll-interval",
        type=float,
        default=3.0,
        help="seconds between polls when no message came for --active-window (3, as stock)",
    )
    parser.add_argument(
        "--active-window",
        type=float,
        default=60.0,
        help="seconds after a message during which polls are --poll-interval apart (60)",
    )
    args = parser.parse_args(argv)
    for flag in ("poll_interval", "idle_poll_interval", "active_window"):
        if getattr(args, flag) <= 0:
            parser.error(f"--{flag.replace('_', '-')} must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logs.configure(logging.INFO, fmt="%(asctime)s %(levelname)s fast-supernode[%(process)d]: %(message)s")
    from flwr.supercore.logger import console_handler

    logging.getLogger("flwr").removeHandler(console_handler)  # Flower's lines: once, in this format
    keys = load_key(args.auth_supernode_private_key)
    node_config = parse_config_args([args.node_config] if args.node_config else None)
    ca_path = str(Path(args.root_certificates).expanduser())
    if not Path(ca_path).is_file():
        raise SystemExit(f"fast-supernode: no CA certificate at {ca_path}")

    idle, stopping = threading.Event(), threading.Event()
    idle.set()

    def on_signal(signum, _frame):
        name = signal.Signals(signum).name
        if stopping.is_set() or idle.is_set():
            log.info("%s: stopping", name)
            raise _Stop
        log.info("%s: stopping after the message in hand", name)
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)  # also how Flower's client reports a 401 (node unregistered)
    connected = False
    try:
        # Registration, activation with the node key, heartbeats and deactivation: Flower's own client.
        # A key the SuperLink does not know ends here, in flwr_exit, with the SuperLink's reason.
        with http_request_response(args.superlink, False, ca_path, keys) as connection:
            connected = True
            node = FastSuperNode(connection[0], node_config, connection)
            log.info(
                "node %s: connected to %s, polling every %.2f s during runs, %.1f s at rest",
                connection[0],
                args.superlink,
                args.poll_interval,
                args.idle_poll_interval,
            )
            last_message = -float("inf")
            while not stopping.is_set():
                idle.clear()
                try:
                    handled = node.poll_once()
                except Exception:  # as stock: log it and poll again; the SuperLink times the stage out
                    log.exception("handling a message failed; polling again in 1 s")
                    handled = False
                    stopping.wait(1.0)
                finally:
                    idle.set()
                if stopping.is_set():
                    break
                if handled:
                    last_message = time.monotonic()
                else:
                    stopping.wait(
                        poll_delay(
                            time.monotonic() - last_message,
                            args.poll_interval,
                            args.idle_poll_interval,
                            args.active_window,
                        )
                    )
    except _Stop:
        pass
    except SystemExit as exc:
        if not connected:
            log.error(
                "could not join the SuperLink at %s (exit code %s): is this node's public key registered "
                "there, and does its TLS certificate chain to %s?",
                args.superlink,
                exc.code,
                ca_path,
            )
        raise
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
