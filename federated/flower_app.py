"""The Flower ServerApp and ClientApp that run every edgefleet task.

Central's SuperLink starts the ServerApp for a run; each agent's SuperNode runs
the ClientApp. Both only move arrays: the task (federated.tasks) decides what a
node contributes and what central keeps. With SecAgg+ on (the default) the
ServerApp only ever holds masked vectors and their sum.

Run config (set by `edgefleet fl start`, defaults in federated.fab):
task, rounds, min-nodes, secagg, secagg-shares, secagg-threshold, clip, noise,
timeout-s, wait-nodes-s, results-dir, record-received.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import TypeGuard

import flwr.compat.common.recorddict_compat as common_compat
from flwr.app import MessageType
from flwr.client import ClientApp, NumPyClient
from flwr.client.mod import fixedclipping_mod, secaggplus_mod
from flwr.common import Context, Message, bytes_to_ndarray, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key
from flwr.server import Grid, LegacyContext, ServerApp, ServerConfig
from flwr.server.strategy import DifferentialPrivacyClientSideFixedClipping, FedAvg, Strategy
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_PARAMS_RECORD
from flwr.server.workflow.default_workflows import default_fit_workflow

from federated import results
from federated.tasks import TaskError, get_task

# --- the node side ---------------------------------------------------------------------------


class TaskClient(NumPyClient):
    def __init__(self, data_dir: Path, run_config: dict):
        self.data_dir = data_dir
        self.run_config = run_config

    def fit(self, parameters, config):
        task = get_task(str(self.run_config["task"]))
        update = task.local_update(self.data_dir, list(parameters), self.run_config)
        # Only the weight travels unmasked beside the arrays: no local metrics are sent.
        return update.arrays, update.weight, {}


def _client_fn(context: Context):
    data_dir = context.node_config.get("data-dir")
    if not data_dir:
        raise TaskError("this SuperNode has no data-dir in its node config")
    return TaskClient(Path(str(data_dir)), dict(context.run_config)).to_client()


def _clipping_when_asked(message: Message, context: Context, call_next):
    """fixedclipping_mod, for runs started with --clip (it insists on a clipping norm)."""
    if message.metadata.message_type == MessageType.TRAIN:
        configs = message.content.config_records.get("fitins.config")
        if configs is not None and "clipping_norm" in configs:
            return fixedclipping_mod(message, context, call_next)
    return call_next(message, context)


def _secagg_when_asked(message: Message, context: Context, call_next):
    """secaggplus_mod, for the messages of a SecAgg+ run (it refuses a plain FedAvg train message)."""
    if RECORD_KEY_CONFIGS in message.content.config_records:
        return secaggplus_mod(message, context, call_next)
    return call_next(message, context)


# SecAgg+ outermost, so clipping (when asked) happens before masking.
client_app = ClientApp(client_fn=_client_fn, mods=[_secagg_when_asked, _clipping_when_asked])


# --- the central side ------------------------------------------------------------------------

# How often the ServerApp asks the SuperLink (same host, loopback) for replies it is waiting on.
REPLY_POLL_S = 0.1


class RecordingGrid(Grid):
    """The run's Grid, timing every exchange and keeping each node's error message.

    With `record-received` on it also keeps every masked vector as received:
    the proof that the ServerApp never holds an unmasked update.
    """

    def __init__(self, grid: Grid, record: bool, report: results.RunReport):
        self._grid = grid
        self.report = report
        self.record = record
        self.exchanges: list[dict] = []
        self.node_errors: dict[int, str] = {}
        self.received_masked: list[dict] = []

    def set_run(self, run):
        self._grid.set_run(run)

    @property
    def run(self):
        return self._grid.run

    def create_message(self, *args, **kwargs):
        return self._grid.create_message(*args, **kwargs)

    def get_node_ids(self):
        return self._grid.get_node_ids()

    def push_messages(self, messages):
        return self._grid.push_messages(messages)

    def pull_messages(self, message_ids):
        return self._grid.pull_messages(message_ids)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None):
        messages = list(messages)
        stage = _stage_of(messages)
        started = time.monotonic()
        replies, destinations = self._push_and_collect(messages, timeout)
        self.exchanges.append(
            {
                "stage": stage,
                "sent": len(messages),
                "replies": len(replies),
                "seconds": round(time.monotonic() - started, 3),
            }
        )
        answered = {r.metadata.reply_to_message_id for r in replies}
        for message_id, node in destinations.items():
            if message_id not in answered:
                self.node_errors[node] = f"no reply within {timeout:.0f}s in stage {stage}"
        for reply in replies:
            # By destination: when a node is gone the SuperLink answers in its place, from its own id.
            node = destinations.get(reply.metadata.reply_to_message_id, reply.metadata.src_node_id)
            if reply.has_error():
                self.node_errors[node] = reply.error.reason
            elif self.record:
                masked = _masked_parameters(reply)
                if masked is not None:
                    self.received_masked.append({"exchange": len(self.exchanges), "node": node, "arrays": masked})
        # Written after every exchange, so `fl status` (and a test) can follow the stages live.
        self.report.update(exchanges=self.exchanges, node_errors={str(k): v for k, v in self.node_errors.items()})
        return replies

    def _push_and_collect(self, messages: list[Message], timeout: float | None):
        """Flower's Grid.send_and_receive, polling for replies every REPLY_POLL_S instead of every 3 s.

        SecAgg+ makes four exchanges a round; Flower's fixed 3 s wait after each poll that finds
        a reply missing cost most of a round (bench/federated.py). Same calls, same timeout.
        """
        ids = list(self._grid.push_messages(messages))
        # Not strict: Flower's grid returns no ids at all when the push was too large for the SuperLink.
        destinations = {mid: m.metadata.dst_node_id for mid, m in zip(ids, messages, strict=False) if mid}
        pending = set(destinations)
        deadline = None if timeout is None else time.monotonic() + timeout
        replies: list[Message] = []
        while pending:
            arrived = list(self._grid.pull_messages(pending))
            replies.extend(arrived)
            pending.difference_update(m.metadata.reply_to_message_id for m in arrived)
            if not pending or (deadline is not None and time.monotonic() >= deadline):
                break
            time.sleep(REPLY_POLL_S)
        return replies, destinations


def _stage_of(messages: list[Message]) -> str:
    for message in messages[:1]:
        configs = message.content.config_records.get(RECORD_KEY_CONFIGS)
        if configs is not None and Key.STAGE in configs:
            return f"secagg:{configs[Key.STAGE]!s}"
        return message.metadata.message_type
    return "none"


def _masked_parameters(reply: Message):
    configs = reply.content.config_records.get(RECORD_KEY_CONFIGS)
    if configs is None or Key.MASKED_PARAMETERS not in configs:
        return None
    masked = configs[Key.MASKED_PARAMETERS]
    if not _is_list_of_bytes(masked):
        raise TypeError(f"a reply's {Key.MASKED_PARAMETERS} is {type(masked).__name__}, not a list of bytes")
    return [bytes_to_ndarray(b) for b in masked]


def _is_list_of_bytes(value: object) -> TypeGuard[list[bytes]]:
    return isinstance(value, list) and all(isinstance(b, bytes) for b in value)


server_app = ServerApp()


@server_app.main()
def main(grid: Grid, context: Context) -> None:
    config = dict(context.run_config)
    run_id = grid.run.run_id
    report = results.RunReport(Path(str(config["results-dir"])), run_id, config)
    recording = RecordingGrid(grid, bool(config.get("record-received", False)), report)
    try:
        _run(recording, context, config, report)
    except Exception as exc:  # every failure must reach `edgefleet fl status`
        report.fail(_explain(exc))
        raise
    finally:
        if recording.record:
            report.save_received(recording.received_masked)


def _run(grid: RecordingGrid, context: Context, config: dict, report: results.RunReport) -> None:
    task = get_task(str(config["task"]))
    rounds, min_nodes = int(config["rounds"]), int(config["min-nodes"])
    nodes = _wait_for_nodes(grid, min_nodes, float(config["wait-nodes-s"]), report)
    strategy: Strategy = FedAvg(
        fraction_fit=1.0,
        fraction_evaluate=0.0,
        min_fit_clients=min_nodes,
        min_evaluate_clients=0,
        min_available_clients=min_nodes,
        initial_parameters=ndarrays_to_parameters(task.initial_arrays(config)),
    )
    if float(config["clip"]) > 0:
        strategy = DifferentialPrivacyClientSideFixedClipping(
            strategy,
            noise_multiplier=float(config["noise"]),
            clipping_norm=float(config["clip"]),
            num_sampled_clients=nodes,
        )
    fit_workflow = None
    if bool(config["secagg"]):
        fit_workflow = SecAggPlusWorkflow(
            num_shares=int(config["secagg-shares"]) or nodes,
            reconstruction_threshold=int(config["secagg-threshold"]) or max(2, (2 * nodes + 2) // 3),
            max_weight=1.0,
            clipping_range=task.clipping_range,
            quantization_range=task.quantization_range,
            modulus_range=task.modulus_range,
            timeout=float(config["timeout-s"]),
        )
    legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=rounds), strategy=strategy)
    report.update(status="running", nodes=nodes)
    DefaultWorkflow(fit_workflow=CheckedFit(fit_workflow or default_fit_workflow, report))(grid, legacy)
    arrays = parameters_to_ndarrays(
        common_compat.arrayrecord_to_parameters(context.state.array_records[MAIN_PARAMS_RECORD], keep_input=True)
    )
    report.complete(task.finish(arrays, config, nodes), arrays, rounds=rounds, node_errors=grid.node_errors)


class CheckedFit:
    """A fit workflow that fails the run when a round produced no new global parameters.

    Flower's workflows log "halted" and carry on with the old parameters when too
    few nodes answer; a run must instead stop with a status saying so.
    """

    def __init__(self, inner, report: results.RunReport):
        self.inner, self.report = inner, report

    # Typed as Flower's Workflow; the inner workflow checks for a LegacyContext itself.
    def __call__(self, grid: Grid, context: Context) -> None:
        before = context.state.array_records[MAIN_PARAMS_RECORD]
        round_number = len(self.report.rounds) + 1
        started = time.monotonic()
        self.inner(grid, context)
        if context.state.array_records[MAIN_PARAMS_RECORD] is before:
            raise TaskError(f"round {round_number} failed: too few nodes returned an update")
        self.report.round_done(round_number, time.monotonic() - started)


def _wait_for_nodes(grid: Grid, min_nodes: int, wait_s: float, report) -> int:
    deadline = time.monotonic() + wait_s
    report.update(status="waiting-for-nodes")
    while True:
        connected = len(list(grid.get_node_ids()))
        if connected >= min_nodes:
            return connected
        if time.monotonic() > deadline:
            raise TaskError(f"only {connected} of the {min_nodes} nodes needed connected within {wait_s:.0f}s")
        time.sleep(0.5)


def _explain(exc: Exception) -> str:
    # Each node's own error is in the report's node_errors; central shows them by node id.
    return str(exc) or type(exc).__name__
