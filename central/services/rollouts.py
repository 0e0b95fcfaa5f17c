"""AdminService on rollouts, and the controller's tick: the pure controller (central.rollout) applied to the store.

Each tick (every second, on the leader replica only) reads every running or
paused rollout's spec and state (through the store's index on the phase: never
the ended ones), builds the nodes' observations from their latest heartbeats
and asks the controller what to do. A new state is written
only if the stored one is still the one decided on (compare-and-set), with its
events, in one transaction: a second replica, a deposed leader acting late or
an operator's pause racing the tick cannot promote a step twice or audit it
twice; the loser decides again next tick on what the winner wrote. The nodes'
assignments follow the stored state and are written on every tick until they
match, so a leader that dies between the two leaves nothing half done; the
assignments of an ending (completed, rolled back, aborted) are written before
its state as well, as no later tick drives an ended rollout. A failure in one rollout is logged
and does not stop the others. Every function takes central's parts
(:class:`central.services.base.Central`) as its first argument and reads nothing else.
"""

from __future__ import annotations

import functools
import json
import logging
import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass

from central import audit, liveness, restore_state, rollout
from central.errors import FailedPrecondition, InvalidArgument, NotFound
from central.rollout import ModelRef, NodeObservation, RolloutSpec, RolloutState
from central.services.base import Caller, Central, require_admin, require_viewer
from central.store import AuditEvent, NodeHealth

log = logging.getLogger(__name__)

CONTROLLER = "central:rollout-controller"
DEFAULT_BAKE_S = 600.0
DEFAULT_MAX_ERROR_RATE = 0.02
DEFAULT_MAX_P99_MS = 2000.0
DEFAULT_CANARY = 10
# An operator's pause, resume or abort racing the controller is retried this many times.
OPERATOR_ATTEMPTS = 3


@dataclass(frozen=True)
class RolloutView:
    spec: RolloutSpec
    state: RolloutState
    created_at: float
    nodes: list[tuple[str, ModelRef | None, NodeObservation | None]]  # (node, desired now, observation)
    waiting_on: list[str]


def spec_to_json(spec: RolloutSpec) -> str:
    data = asdict(spec)
    data["previous"] = {k: (asdict(v) if v else None) for k, v in spec.previous.items()}
    return json.dumps(data, sort_keys=True)


def spec_from_json(text: str) -> RolloutSpec:
    data = json.loads(text)
    data["model"] = ModelRef(**data["model"])
    data["steps"] = tuple(data["steps"])
    data["previous"] = {k: (ModelRef(**v) if v else None) for k, v in data["previous"].items()}
    return RolloutSpec(**data)


def state_to_json(state: RolloutState) -> str:
    return json.dumps(asdict(state), sort_keys=True)


def state_from_json(text: str) -> RolloutState:
    return RolloutState(**json.loads(text))


# -- operator actions --------------------------------------------------------------


def start(
    central: Central,
    caller: Caller,
    name: str,
    version: str,
    selector: dict[str, str],
    canary: int,
    steps: list[int],
    bake_s: float | None,
    max_error_rate: float | None,
    max_p99_ms: float,
) -> RolloutView:
    target = f"{name}@{version}"
    require_admin(central, caller, "rollout.start", target)
    model = central.store.get_model(name, version)
    if model is None:
        raise NotFound(f"no model {target}")
    nodes = [n for n in central.store.list_nodes(selector) if n.revoked_at is None]
    unassigned = [n.node_id for n in nodes if not n.desired_model]
    if unassigned:
        # A rollback restores each node's previous version; without one there is nothing to restore.
        raise FailedPrecondition(
            f"node(s) {', '.join(unassigned[:5])} have no assigned version to roll back "
            "to: assign one first (edgefleet nodes assign)"
        )
    previous = {
        n.node_id: ModelRef(n.desired_model["name"], n.desired_model["version"], n.desired_model["sha256"])
        for n in nodes
    }
    busy = rollout.conflicts({rid: set(s.previous) for rid, s, *_ in _live(central)}, set(previous))
    if busy:
        rid, shared = next(iter(busy.items()))
        raise FailedPrecondition(
            f"rollout {rid} is still running on {', '.join(sorted(shared)[:5])}: wait for it, or abort it"
        )
    try:
        spec = RolloutSpec(
            rollout_id="r-" + secrets.token_hex(4),
            model=ModelRef(name, version, model.sha256),
            selector=selector,
            steps=rollout.build_steps(canary or DEFAULT_CANARY, steps or [100]),
            bake_s=DEFAULT_BAKE_S if bake_s is None else bake_s,
            max_error_rate=DEFAULT_MAX_ERROR_RATE if max_error_rate is None else max_error_rate,
            max_p99_ms=max_p99_ms or DEFAULT_MAX_P99_MS,
            created_at=central.clock(),
            previous=previous,
        )
    except rollout.RolloutError as exc:
        raise InvalidArgument(str(exc)) from None
    decision = rollout.start(spec, spec.created_at)
    central.store.add_rollout(spec.rollout_id, spec_to_json(spec), state_to_json(decision.state), spec.created_at)
    _assign(central, spec, decision)
    for event in decision.events:
        central.store.append_audit(
            central.clock(), caller.actor, "rollout.decision", spec.rollout_id, audit.ALLOWED, event, caller.peer
        )
    return view(central, spec.rollout_id)


def pause(central: Central, caller: Caller, rollout_id: str) -> RolloutView:
    def change(spec: RolloutSpec, state: RolloutState) -> tuple[rollout.Decision, list[str]]:
        new = rollout.pause(state, central.clock(), f"paused by {caller.actor}")
        return rollout.Decision(new, rollout.desired_assignments(spec, new), ()), [new.reason]

    return _operator_change(central, caller, "rollout.pause", rollout_id, change)


def resume(central: Central, caller: Caller, rollout_id: str) -> RolloutView:
    def change(spec: RolloutSpec, state: RolloutState) -> tuple[rollout.Decision, list[str]]:
        new = rollout.resume(state, central.clock())
        return rollout.Decision(new, rollout.desired_assignments(spec, new), ()), [
            "resumed; the current step bakes again"
        ]

    return _operator_change(central, caller, "rollout.resume", rollout_id, change)


def abort(central: Central, caller: Caller, rollout_id: str, reason: str) -> RolloutView:
    def change(spec: RolloutSpec, state: RolloutState) -> tuple[rollout.Decision, list[str]]:
        decision = rollout.abort(spec, state, central.clock(), reason or f"aborted by {caller.actor}")
        return decision, list(decision.events)

    return _operator_change(central, caller, "rollout.abort", rollout_id, change, event_action="rollout.decision")


def _operator_change(central: Central, caller: Caller, action: str, rollout_id: str, change, event_action=""):
    """Apply an operator's phase change with compare-and-set, its audit entries in the same transaction;
    when the controller (on any replica) moved the rollout meanwhile, decide again on what it wrote."""
    for _ in range(OPERATOR_ATTEMPTS):
        spec, state, state_text = _load(central, caller, action, rollout_id)
        decision, details = _phase_change(functools.partial(change, spec, state))
        now = central.clock()
        events = [
            AuditEvent(now, caller.actor, event_action or action, rollout_id, audit.ALLOWED, d, caller.peer)
            for d in details
        ]
        if _advance(central, spec, state_text, decision, events):
            return view(central, rollout_id)
    raise FailedPrecondition(f"rollout {rollout_id} kept changing under {action}; try again")


def get(central: Central, caller: Caller, rollout_id: str) -> RolloutView:
    _load(central, caller, "rollout.get", rollout_id, require_viewer)
    return view(central, rollout_id)


def list_rollouts(central: Central, caller: Caller) -> list[RolloutView]:
    require_viewer(central, caller, "rollout.list")
    return [view(central, rid) for rid, *_ in central.store.list_rollouts()]


# -- the controller's tick ---------------------------------------------------------


def tick(central: Central) -> None:
    """One pass of the controller; `central serve` calls it on the leader replica only."""
    for rollout_id, spec, state, state_text in _live(central):
        try:
            observations = _observations(central, spec)
            if _restore_hold(central, spec):
                continue  # the nodes' reports first: the restored state may be behind them (restore_state)
            decision = rollout.decide(spec, state, observations, central.clock())
            if decision.state == state:
                _assign(central, spec, decision)
                continue
            now = central.clock()
            events = [
                AuditEvent(now, CONTROLLER, "rollout.decision", rollout_id, audit.ALLOWED, e, "")
                for e in decision.events
            ]
            if not _advance(central, spec, state_text, decision, events):
                log.info("rollout %s changed since this tick read it; deciding again next tick", rollout_id)
        except Exception:  # one broken rollout must not stop the others
            log.exception("rollout %s: tick failed; retrying next tick", rollout_id)


# -- helpers ---------------------------------------------------------------------


def _live(central: Central):
    """(rollout_id, spec, state, the state as stored) of every running or paused rollout: read through the
    store's phase index, so a tick costs the live rollouts, never every rollout ever made."""
    for rollout_id, spec, state_text, _created in central.store.list_rollouts_in_phases(rollout.LIVE):
        state = state_from_json(state_text)
        if state.phase not in rollout.TERMINAL:
            yield rollout_id, spec_from_json(spec), state, state_text


def _advance(
    central: Central, spec: RolloutSpec, state_text: str, decision: rollout.Decision, events: list[AuditEvent]
) -> bool:
    """Store the decision's state if the rollout is still at `state_text`, with its audit entries, then write
    its assignments; False (nothing written) when another replica or an operator moved it first."""
    if decision.state.phase in rollout.TERMINAL:
        _assign(central, spec, decision)  # no later tick drives an ended rollout: assign first (idempotent)
    if not central.store.advance_rollout(spec.rollout_id, state_text, state_to_json(decision.state), events):
        return False
    _assign(central, spec, decision)
    return True


def _load(
    central: Central, caller: Caller, action: str, rollout_id: str, check: Callable[..., None] = require_admin
) -> tuple[RolloutSpec, RolloutState, str]:
    check(central, caller, action, rollout_id)
    row = central.store.get_rollout(rollout_id)
    if row is None:
        raise NotFound(f"no rollout {rollout_id!r}")
    return spec_from_json(row[0]), state_from_json(row[1]), row[1]


def _phase_change(change):
    try:
        return change()
    except rollout.PhaseError as exc:
        raise FailedPrecondition(str(exc)) from None


def _observations(central: Central, spec: RolloutSpec) -> dict[str, NodeObservation]:
    central.beats.flush()
    now = central.clock()
    observations = {}
    for node_id in spec.previous:
        node = central.store.get_node(node_id)
        if node is not None:
            online = liveness.node_state(node, central.settings.heartbeat_interval_s, now) == liveness.ONLINE
            observations[node_id] = observation_of(node.node_id, node.health or NodeHealth(), online, spec.model.sha256)
    return observations


def _restore_hold(central: Central, spec: RolloutSpec) -> list[str]:
    """restore_state.rollout_hold for this rollout's nodes (nothing read when no restore holds it)."""
    now = central.clock()
    if central.restore is None or now >= central.restore.restored_at + restore_state.ROLLOUT_HOLD_S:
        return []
    last_seen = {}
    for node_id in spec.previous:
        node = central.store.get_node(node_id)
        if node is not None and node.revoked_at is None:
            last_seen[node_id] = node.last_seen_at
    return restore_state.rollout_hold(central.restore, now, last_seen)


def _assign(central: Central, spec: RolloutSpec, decision: rollout.Decision) -> None:
    """Write each node's desired version where it differs (idempotent: a later tick repeats what is left)."""
    for node_id, ref in decision.assignments.items():
        node = central.store.get_node(node_id)
        if (
            ref is None
            or node is None
            or (node.desired_model.get("sha256"), node.desired_model.get("version")) == (ref.sha256, ref.version)
        ):
            continue
        model = central.store.get_model(ref.name, ref.version)
        if model is None:
            log.error("rollout %s: %s was deleted; cannot assign it to %s", spec.rollout_id, ref, node_id)
            continue
        central.store.assign_model(node_id, model)


def view(central: Central, rollout_id: str) -> RolloutView:
    row = central.store.get_rollout(rollout_id)
    if row is None:
        raise NotFound(f"no rollout {rollout_id!r}")
    spec_text, state_text, created = row
    spec, state = spec_from_json(spec_text), state_from_json(state_text)
    observations = _observations(central, spec)
    desired = rollout.desired_assignments(spec, state)
    nodes = [(n, desired.get(n), observations.get(n)) for n in sorted(spec.previous)]
    waiting = (
        []
        if state.phase in rollout.TERMINAL
        else _restore_hold(central, spec) + rollout.waiting_on(spec, state, observations, central.clock())
    )
    return RolloutView(spec, state, created, nodes, waiting)


def observation_of(node_id: str, health: NodeHealth, online: bool, rollout_sha256: str) -> NodeObservation:
    """What the rollout controller needs from a node's latest health. Activation states about another
    version than the rollout's are left out, so a stale FAILED cannot stop this rollout."""
    about_rollout = health.activation_sha256 == rollout_sha256
    state = health.activation_state if about_rollout else ""
    return NodeObservation(
        node_id=node_id,
        online=online,
        active_sha256=health.active_sha256,
        activation_state=state,
        activation_reason=health.activation_reason if about_rollout else "",
        active_since=health.activation_since if state == rollout.ACTIVE else None,
        error_rate=health.errors / health.requests if health.requests else 0.0,
        p99_ms=health.latency_p99_ms,
        requests=health.requests,
    )
