"""AdminService on service level objectives: set (admins), list with each one's status now (viewers), delete.

The arithmetic is :mod:`central.slo`'s; this module reads what it needs from the store: the objectives, the
nodes an objective's selector matches (only when its selector needs their own rollups, see
:func:`central.slo.label_scopes`), and the rollup sums of each window. Setting and deleting are written to the
audit log like every other change.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from central import audit, slo
from central.errors import InvalidArgument, NotFound
from central.services.base import Caller, Central, record_audit, require_admin, require_viewer
from central.store import ObjectiveRecord


@dataclass(frozen=True)
class ObjectiveView:
    record: ObjectiveRecord
    status: slo.Status


def objective_of(record: ObjectiveRecord) -> slo.Objective:
    return slo.Objective(
        record.name,
        dict(record.selector),
        record.availability_percent,
        record.latency_threshold_ms,
        record.latency_percent,
        float(record.window_s),
    )


def describe(o: slo.Objective) -> str:
    """One line for the audit log and the CLI: what the objective asks."""
    parts = []
    if o.has_availability:
        parts.append(f"availability {o.availability_percent:g}%")
    if o.has_latency:
        parts.append(f"{o.latency_percent:g}% within {o.latency_threshold_ms:g} ms")
    selector = ",".join(f"{k}={v}" for k, v in sorted(o.selector.items())) or "all nodes"
    return f"{selector}: {', '.join(parts)} over {o.window_s:g} s"


def set_objective(central: Central, caller: Caller, objective: slo.Objective) -> ObjectiveRecord:
    action = "objective.set"
    require_admin(central, caller, action, objective.name)
    try:
        o = slo.validated(objective)
    except slo.ObjectiveError as exc:
        raise InvalidArgument(str(exc)) from None
    existed = any(r.name == o.name for r in central.store.list_objectives())
    record = ObjectiveRecord(
        name=o.name,
        selector=dict(o.selector),
        availability_percent=o.availability_percent,
        latency_threshold_ms=o.latency_threshold_ms,
        latency_percent=o.latency_percent,
        window_s=int(o.window_s),
        updated_at=central.clock(),
        updated_by=caller.actor,
    )
    central.store.set_objective(record)
    record_audit(
        central, caller, action, o.name, audit.ALLOWED, f"{'replaced' if existed else 'created'}: {describe(o)}"
    )
    return record


def list_objectives(central: Central, caller: Caller) -> list[ObjectiveView]:
    """Every objective by name, each with its status at central's clock."""
    require_viewer(central, caller, "objective.list")
    central.beats.flush(history=True)  # the minute in progress counts too
    now = central.clock()
    return [ObjectiveView(r, status(central, objective_of(r), now)) for r in central.store.list_objectives()]


def delete_objective(central: Central, caller: Caller, name: str) -> None:
    action = "objective.delete"
    require_admin(central, caller, action, name)
    if not central.store.delete_objective(name):
        raise NotFound(f"no objective {name[:80]!r}; `edgefleet slo list` shows the objectives")
    record_audit(central, caller, action, name, audit.ALLOWED, "deleted")


# -- reading the rollups -------------------------------------------------------------------------------------------


def scopes(central: Central, objective: slo.Objective) -> list[str]:
    """The rollup scopes that sum to the objective's nodes (central.slo explains the choice)."""
    found = slo.label_scopes(objective.selector, central.settings.rollup_labels)
    if found is not None:
        return found
    return slo.node_scopes(n.node_id for n in central.store.list_nodes(dict(objective.selector)))


def status(central: Central, objective: slo.Objective, now: float) -> slo.Status:
    names = scopes(central, objective)

    def read(r: slo.ReadRange) -> slo.Totals:
        return totals(central, names, r)

    return slo.evaluate(objective, read, now)


def totals(central: Central, names: Sequence[str], r: slo.ReadRange) -> slo.Totals:
    if not names:  # a selector no node matches
        return slo.Totals()
    row = central.store.rollup_sums(names, r.period_s, r.start, r.end)
    return slo.Totals(row.requests, row.errors, row.latency_buckets)
