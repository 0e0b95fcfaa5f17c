"""AdminService on federated learning: start a run, its status, the list; and the reconcile pass that keeps
the SuperLink's node keys in step with enrollment and imports finished runs' outcomes."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from central import audit, federation
from central.errors import FailedPrecondition, InvalidArgument, NotFound
from central.services import registry
from central.services.base import (
    Caller,
    Central,
    SystemCaller,
    blob_store,
    record_audit,
    refuse,
    require_admin,
    require_viewer,
)
from central.store import FederatedRunRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FederatedRunView:
    record: FederatedRunRecord
    status: str
    error: str
    report: dict
    node_errors: dict[str, str]


def _federation(central: Central, caller: Caller, action: str, target: str = "") -> federation.Federation:
    if central.federation is None:
        reason = federation.flower_available() or "central was started with --no-superlink"
        raise refuse(
            central, FailedPrecondition, caller, action, target, f"federated learning is off on this central: {reason}"
        )
    return central.federation


def start_run(central: Central, caller: Caller, request: federation.RunRequest) -> FederatedRunView:
    action = "fl.start"
    require_admin(central, caller, action, request.task)
    fed = _federation(central, caller, action, request.task)
    try:
        config = federation.run_config(request, fed.results_dir)
    except InvalidArgument as exc:
        raise refuse(central, InvalidArgument, caller, action, request.task, str(exc)) from None
    from federated import fab
    from federated.control import FlowerControlError

    fab_bytes, fab_hash = fab.build()
    try:
        run_id = fed.require_control().start_run(fab_bytes, fab_hash, config)
    except FlowerControlError as exc:
        raise refuse(central, FailedPrecondition, caller, action, request.task, str(exc)) from None
    record = FederatedRunRecord(run_id, request.task, config, caller.actor, central.clock(), "", None)
    central.store.add_federated_run(record)
    record_audit(
        central,
        caller,
        action,
        str(run_id),
        audit.ALLOWED,
        f"{request.task}: {request.rounds} rounds, at least {request.min_nodes} nodes, "
        f"secagg {'on' if request.secagg else 'OFF'}"
        + (f", clip {request.clip} noise {request.noise}" if request.clip else ""),
    )
    return _run_view(central, record, None)


def get_run(central: Central, caller: Caller, run_id: int) -> FederatedRunView:
    require_viewer(central, caller, "fl.status", str(run_id))
    record = central.store.get_federated_run(run_id)
    if record is None:
        raise NotFound(f"no federated run {run_id}")
    return _imported_view(central, record, _flower_runs(central))


def list_runs(central: Central, caller: Caller) -> list[FederatedRunView]:
    require_viewer(central, caller, "fl.list")
    flower = _flower_runs(central)
    return [_imported_view(central, r, flower) for r in central.store.list_federated_runs()]


def _imported_view(central: Central, record: FederatedRunRecord, flower: dict | None) -> FederatedRunView:
    """A finished run's view only once its outcome is imported, so `completed` always comes with its model."""
    view = _run_view(central, record, flower)
    if record.imported_at is None and view.status in (federation.COMPLETED, federation.FAILED):
        _import_outcome(central, SystemCaller("federated-learning"), record, view)
        imported = central.store.get_federated_run(record.run_id)
        if imported is not None:  # else removed meanwhile: keep the view already made
            view = _run_view(central, imported, flower)
    return view


def _flower_runs(central: Central) -> dict | None:
    """Every run the SuperLink knows, by id; None when it cannot be asked (then a missing run is not lost).

    All of them, not one by id: the SuperLink answers 404 for a run it does not know, which must
    read as "lost", not as "unreachable". Its state is in memory, so the list is short.
    """
    if central.federation is None:
        return None
    from federated.control import FlowerControlError

    try:
        return {r.run_id: r for r in central.federation.control.runs()}
    except FlowerControlError as exc:
        log.warning("cannot read run status from the SuperLink: %s", exc)
        return None


def _run_view(central: Central, record: FederatedRunRecord, flower: dict | None) -> FederatedRunView:
    results_dir = central.federation.results_dir if central.federation else None
    report = federation.read_report(results_dir, record.run_id) if results_dir else None
    flower_run = flower.get(record.run_id) if flower is not None else None
    if flower_run is None:
        status, error = federation.run_status("", "", "", report, lost=flower is not None)
    else:
        status, error = federation.run_status(flower_run.status, flower_run.sub_status, flower_run.details, report)
    names = {str(k.flower_node_id): k.node_id for k in central.store.flower_keys()}
    node_errors = {
        names.get(flower_id, f"flower-node-{flower_id}"): federation.last_line(reason)
        for flower_id, reason in (report or {}).get("node_errors", {}).items()
    }
    return FederatedRunView(record, status, error, report or {}, node_errors)


# A run's outcome is imported once: by the reconcile pass or by the first status call that sees it done.


def reconcile(central: Central) -> None:
    """One pass: register new nodes' Flower keys, unregister revoked ones, import finished runs."""
    fed = central.federation
    if fed is None:
        return
    system = SystemCaller("federated-learning")
    control = fed.control
    registered = control.registered_nodes()
    for action, key in federation.key_actions(central.store.flower_keys(), registered):
        if action == federation.REGISTER:
            flower_id = control.register_node(key.public_key, key.node_id)
            central.store.set_flower_registration(key.node_id, flower_id, False)
            record_audit(
                central,
                system,
                "fl.node.register",
                key.node_id,
                audit.ALLOWED,
                f"SuperLink node {flower_id}"
                + (f" (the SuperLink had lost node {key.flower_node_id})" if key.flower_node_id else ""),
            )
        else:
            if registered.get(key.flower_node_id, "unregistered") != "unregistered":
                control.unregister_node(key.flower_node_id)
            central.store.set_flower_registration(key.node_id, key.flower_node_id, True)
            record_audit(
                central,
                system,
                "fl.node.unregister",
                key.node_id,
                audit.ALLOWED,
                f"SuperLink node {key.flower_node_id}: the node was revoked",
            )
    flower = _flower_runs(central)
    for record in central.store.list_federated_runs():
        if record.imported_at is None:
            view = _run_view(central, record, flower)
            if view.status in (federation.COMPLETED, federation.FAILED):
                _import_outcome(central, system, record, view)


def _import_outcome(central: Central, system: Caller, record: FederatedRunRecord, view: FederatedRunView) -> None:
    # The reconcile thread and a status call may both get here: one imports, the other sees it done.
    with central.import_lock:
        current = central.store.get_federated_run(record.run_id)
        if current is None or current.imported_at is not None:
            return
        _import_locked(central, system, record, view)


def _import_locked(central: Central, system: Caller, record: FederatedRunRecord, view: FederatedRunView) -> None:
    model = ""
    if view.status == federation.COMPLETED and record.task == "sensitivity":
        from federated.results import onnx_path

        fed = _federation(central, system, "fl.finish", str(record.run_id))
        data = onnx_path(fed.results_dir, record.run_id).read_bytes()
        model = _register_classifier(central, system, record.run_id, data)
    central.store.set_federated_run_outcome(record.run_id, model, central.clock())
    record_audit(
        central,
        system,
        "fl.finish",
        str(record.run_id),
        audit.ALLOWED if view.status == federation.COMPLETED else audit.REFUSED,
        f"{record.task} {view.status}"
        + (f": {view.error}" if view.error else "")
        + (f"; registered {model}" if model else ""),
    )


def _register_classifier(central: Central, system: Caller, run_id: int, data: bytes) -> str:
    version = f"fl-{run_id}"
    writer = blob_store(central).writer()
    writer.write(data)
    sha256, size = writer.commit()
    registry.finish_push(
        central,
        system,
        federation.CLASSIFIER_MODEL,
        version,
        "onnx",
        {"kind": "sensitivity_classifier", "features": "hashed_ngrams_crc32_16384", "federated_run": str(run_id)},
        sha256,
        size,
    )
    return f"{federation.CLASSIFIER_MODEL}@{version}"
