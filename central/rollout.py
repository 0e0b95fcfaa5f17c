"""The canary rollout controller: (spec, node observations, clock) → desired assignments and next state.

Nothing here reads a clock, the network, the store or a random source. The caller loads a
rollout's spec and state, passes the nodes' latest heartbeats and `now`, stores what comes back
and writes each event to the audit log. So every decision is reproducible in a unit test, and a
restarted central carries on where it stopped: the whole rollout is a spec and four fields.

    RolloutError               an invalid spec or flag (the rollouts handler raises InvalidArgument from it)
    └── PhaseError             a transition the rollout's phase forbids, e.g. pausing a finished
                               rollout (the rollouts handler raises FailedPrecondition from it)

These are not ServiceErrors on purpose: the servicers map exact classes to status codes, so the
rollouts handler wraps them at its boundary (`raise InvalidArgument(str(exc)) from None`).
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from central.errors import CentralError

RUNNING, PAUSED, COMPLETED, ROLLED_BACK, ABORTED = "RUNNING", "PAUSED", "COMPLETED", "ROLLED_BACK", "ABORTED"
PHASES = (RUNNING, PAUSED, COMPLETED, ROLLED_BACK, ABORTED)
TERMINAL = frozenset({COMPLETED, ROLLED_BACK, ABORTED})
LIVE = tuple(p for p in PHASES if p not in TERMINAL)  # the phases a controller's tick still drives
# Activation states an agent reports (ROLLED_BACK is shared with the phase of the same name).
DOWNLOADING, VERIFYING, WARMING, ACTIVE, FAILED = "DOWNLOADING", "VERIFYING", "WARMING", "ACTIVE", "FAILED"
ACTIVATION_STATES = ("", DOWNLOADING, VERIFYING, WARMING, ACTIVE, FAILED, ROLLED_BACK)


class RolloutError(CentralError, ValueError):
    """A rollout spec or request that cannot be carried out; the message says what to change."""


class PhaseError(RolloutError):
    """The rollout is in a phase that does not allow this transition."""


@dataclass(frozen=True)
class ModelRef:
    """A model version; the sha256 is what nodes report and compare, name@version is for people."""

    name: str
    version: str
    sha256: str

    def __str__(self) -> str:
        return f"{self.name}@{self.version}"


@dataclass(frozen=True)
class RolloutSpec:
    """What the operator asked for, plus `previous`: each targeted node's assignment when the rollout
    started. Membership is fixed at start, so a node labelled later never joins a half-done rollout,
    and `previous` is exactly what a rollback or an abort restores (None: the node had no model).
    Holds dicts, so it is immutable by convention but not hashable."""

    rollout_id: str
    model: ModelRef
    selector: Mapping[str, str]
    steps: tuple[int, ...]
    bake_s: float
    max_error_rate: float
    max_p99_ms: float
    created_at: float
    previous: Mapping[str, ModelRef | None]

    def __post_init__(self) -> None:
        if not self.rollout_id:
            raise RolloutError("rollout_id must not be empty")
        object.__setattr__(self, "steps", _checked_steps(self.steps))
        object.__setattr__(self, "selector", dict(self.selector))
        object.__setattr__(self, "previous", dict(self.previous))
        if not self.bake_s >= 0:
            raise RolloutError(f"bake time must be 0 s or more, got {self.bake_s!r}")
        if not 0 <= self.max_error_rate <= 1:
            raise RolloutError(f"max error rate must be between 0 and 1 (a fraction), got {self.max_error_rate!r}")
        if not self.max_p99_ms > 0:
            raise RolloutError(f"max p99 must be more than 0 ms, got {self.max_p99_ms!r}")
        if not self.previous:
            raise RolloutError(f"selector {_selector_text(self.selector)} matches no node: nothing to roll out")


@dataclass(frozen=True)
class NodeObservation:
    """A node as its latest heartbeat shows it. `active_since` is when it began serving `active_sha256`;
    error_rate/p99_ms cover its latest heartbeat window of `requests` requests."""

    node_id: str
    online: bool
    active_sha256: str
    activation_state: str
    activation_reason: str = ""
    active_since: float | None = None
    error_rate: float = 0.0
    p99_ms: float = 0.0
    requests: int = 0

    def __post_init__(self) -> None:
        if self.activation_state not in ACTIVATION_STATES:
            raise RolloutError(f"node {self.node_id}: unknown activation state {self.activation_state!r}")


@dataclass(frozen=True)
class RolloutState:
    """Where a rollout stands: all central needs to store to carry on after a restart.
    `step_started_at` is when the current step began (its bake clock) or, in a terminal phase,
    when the rollout got there."""

    phase: str
    step_index: int
    step_started_at: float
    reason: str


@dataclass(frozen=True)
class Decision:
    """The rollout's next state, the desired model of every targeted node, and one event per change
    made (empty when nothing changed); the caller writes each event to the audit log."""

    state: RolloutState
    assignments: dict[str, ModelRef | None]
    events: tuple[str, ...]


def build_steps(canary: int, steps: Iterable[int]) -> tuple[int, ...]:
    """`--canary 10 --steps 50,100` → (10, 50, 100). The canary is the first step; a step list that
    already starts with it (the documented `--canary 10 --steps 10,50,100`) is not doubled.
    A missing 100 is an error rather than appended: a rollout that silently goes further than
    the operator wrote is worse than one refused with a message."""
    rest = list(steps)
    if rest and rest[0] == canary:
        rest = rest[1:]
    return _checked_steps((canary, *rest))


def _checked_steps(steps: Iterable[int]) -> tuple[int, ...]:
    steps = tuple(steps)
    if not steps:
        raise RolloutError("steps must not be empty; the last step must be 100")
    for pct in steps:
        if isinstance(pct, bool) or not isinstance(pct, int) or not 1 <= pct <= 100:
            raise RolloutError(f"each step is a whole percentage from 1 to 100, got {pct!r}")
    for before, after in itertools.pairwise(steps):
        if after <= before:
            raise RolloutError(f"steps must be strictly increasing, got {before} then {after} in {list(steps)}")
    if steps[-1] != 100:
        raise RolloutError(f"the last step must be 100 so the rollout reaches every node, got {list(steps)}")
    return steps


def canary_order(rollout_id: str, node_ids: Iterable[str]) -> list[str]:
    """Nodes ordered by sha256(rollout_id/node_id): the same after a restart (no stored order needed),
    a different canary set for each rollout (no node is always the guinea pig)."""
    return sorted(node_ids, key=lambda n: (hashlib.sha256(f"{rollout_id}/{n}".encode()).hexdigest(), n))


def nodes_for_step(spec: RolloutSpec, node_ids: Iterable[str], step_index: int) -> list[str]:
    """The first ceil(pct% of N) nodes of the canary order, at least one. Each step's set contains the
    previous step's, so a promoted node never moves back to the old version."""
    order = canary_order(spec.rollout_id, node_ids)
    if not order:
        return []
    count = -(-spec.steps[step_index] * len(order) // 100)  # ceil in integers, no float rounding
    return order[: max(1, count)]


def desired_assignments(spec: RolloutSpec, state: RolloutState) -> dict[str, ModelRef | None]:
    """What every targeted node should run in this state (used by decide and by `rollout status`)."""
    if state.phase == COMPLETED:
        return {n: spec.model for n in spec.previous}
    assignments = dict(spec.previous)
    if state.phase in (RUNNING, PAUSED):
        for n in nodes_for_step(spec, spec.previous, state.step_index):
            assignments[n] = spec.model
    return assignments


def start(spec: RolloutSpec, now: float) -> Decision:
    state = RolloutState(RUNNING, 0, now, "started")
    canary = nodes_for_step(spec, spec.previous, 0)
    event = (
        f"started rollout {spec.rollout_id} of {spec.model} on {len(spec.previous)} node(s) "
        f"(selector {_selector_text(spec.selector)}, steps {'/'.join(map(str, spec.steps))} %, "
        f"bake {spec.bake_s:g} s): {_step(spec, 0)} assigns {_names(canary)}"
    )
    return Decision(state, desired_assignments(spec, state), (event,))


def decide(spec: RolloutSpec, state: RolloutState, nodes: Mapping[str, NodeObservation], now: float) -> Decision:
    """One tick. Safety first and in every live phase (a breach rolls back even while PAUSED), then
    promotion (RUNNING only). Only the current step's nodes are judged: they are the ones this
    rollout put on the new version."""
    if state.phase in TERMINAL:
        return Decision(state, desired_assignments(spec, state), ())
    _check_live(spec, state)
    step_nodes = nodes_for_step(spec, spec.previous, state.step_index)
    problems = _problems(spec, step_nodes, nodes)
    if problems:
        reason = "rolled back: " + "; ".join(problems)
        return _back_to_previous(spec, state, RolloutState(ROLLED_BACK, state.step_index, now, reason))
    if state.phase == PAUSED or waiting_on(spec, state, nodes, now):
        return Decision(state, desired_assignments(spec, state), ())
    started = [state.step_started_at] + [nodes[n].active_since or now for n in step_nodes]
    events = [
        f"{_step(spec, state.step_index)} promoted after {now - max(started):g} s bake: "
        f"{_names(step_nodes)} within thresholds"
    ]
    if state.step_index == len(spec.steps) - 1:
        new_state = RolloutState(COMPLETED, state.step_index, now, f"completed: every node runs {spec.model}")
        events.append(f"rollout {spec.rollout_id} completed: {len(spec.previous)} node(s) run {spec.model}")
    else:
        nxt = state.step_index + 1
        added = [n for n in nodes_for_step(spec, spec.previous, nxt) if n not in set(step_nodes)]
        new_state = RolloutState(RUNNING, nxt, now, f"{_step(spec, nxt)} started")
        events.append(f"{_step(spec, nxt)} started: {spec.model} assigned to {_names(added, 'no new node')}")
    return Decision(new_state, desired_assignments(spec, new_state), tuple(events))


def waiting_on(spec: RolloutSpec, state: RolloutState, nodes: Mapping[str, NodeObservation], now: float) -> list[str]:
    """Why the current step is not promoted yet (empty: it may be). For `rollout status` and decide."""
    waits = []
    if now - state.step_started_at < spec.bake_s:
        waits.append(f"step baking: {now - state.step_started_at:g} of {spec.bake_s:g} s")
    for n in nodes_for_step(spec, spec.previous, state.step_index):
        obs = nodes.get(n)
        if obs is None:
            waits.append(f"{n}: no heartbeat")
        elif not obs.online:
            waits.append(f"{n}: offline")
        elif obs.active_sha256 != spec.model.sha256 or obs.activation_state != ACTIVE:
            waits.append(f"{n}: not active on {spec.model} yet ({obs.activation_state or 'no activation'})")
        elif obs.active_since is None or now - obs.active_since < spec.bake_s:
            since = 0.0 if obs.active_since is None else now - obs.active_since
            waits.append(f"{n}: baking {since:g} of {spec.bake_s:g} s")
    return waits


def pause(state: RolloutState, now: float, reason: str) -> RolloutState:
    """Stop promoting; safety checks go on. `now` is unused (resume restarts the bake clock) but kept
    so every transition has the same shape. Pausing a paused rollout changes nothing."""
    if state.phase == PAUSED:
        return state
    if state.phase != RUNNING:
        raise PhaseError(f"cannot pause a rollout that is {state.phase}")
    return replace(state, phase=PAUSED, reason=f"paused: {reason}" if reason else "paused")


def resume(state: RolloutState, now: float) -> RolloutState:
    """Restart the current step's bake clock: time spent paused (perhaps while something was being
    investigated) does not count as observed-healthy time."""
    if state.phase == RUNNING:
        return state
    if state.phase != PAUSED:
        raise PhaseError(f"cannot resume a rollout that is {state.phase}")
    return replace(state, phase=RUNNING, step_started_at=now, reason="resumed")


def abort(spec: RolloutSpec, state: RolloutState, now: float, reason: str) -> Decision:
    """Every live rollout can be aborted: every targeted node goes back to its previous model.
    Aborting an aborted rollout changes nothing (a retried CLI call); a finished one is refused."""
    if state.phase == ABORTED:
        return Decision(state, desired_assignments(spec, state), ())
    if state.phase in TERMINAL:
        raise PhaseError(f"rollout {spec.rollout_id} is already {state.phase}; nothing to abort")
    text = f"aborted: {reason}" if reason else "aborted"
    return _back_to_previous(spec, state, RolloutState(ABORTED, state.step_index, now, text))


def conflicts(active_rollouts_targets: Mapping[str, set[str]], new_targets: set[str]) -> dict[str, set[str]]:
    """Nodes a new rollout shares with each live one (the caller passes only RUNNING/PAUSED rollouts).
    The caller refuses a start with any conflict, so two rollouts never fight over a node while
    rollouts over disjoint nodes go on independently of each other."""
    shared = {rid: set(targets) & set(new_targets) for rid, targets in active_rollouts_targets.items()}
    return {rid: nodes for rid, nodes in shared.items() if nodes}


def _problems(spec: RolloutSpec, step_nodes: list[str], nodes: Mapping[str, NodeObservation]) -> list[str]:
    problems = []
    for n in sorted(step_nodes):
        obs = nodes.get(n)
        if obs is None:
            continue
        if obs.activation_state == FAILED:
            problems.append(f"{n} reported FAILED: {obs.activation_reason or 'no reason given'}")
        elif obs.activation_state == ROLLED_BACK:
            problems.append(f"{n} rolled back by itself: {obs.activation_reason or 'no reason given'}")
        elif obs.active_sha256 == spec.model.sha256 and obs.activation_state == ACTIVE and obs.requests > 0:
            if obs.error_rate > spec.max_error_rate:
                problems.append(f"{n} error rate {obs.error_rate:.4g} > {spec.max_error_rate:g}")
            if obs.p99_ms > spec.max_p99_ms:
                problems.append(f"{n} p99 {obs.p99_ms:g} ms > {spec.max_p99_ms:g} ms")
    return problems


def _back_to_previous(spec: RolloutSpec, state: RolloutState, new_state: RolloutState) -> Decision:
    moved = [n for n in nodes_for_step(spec, spec.previous, state.step_index) if spec.previous[n] != spec.model]
    event = f"{new_state.reason} (at {_step(spec, state.step_index)}; previous version reassigned to {_names(moved)})"
    return Decision(new_state, desired_assignments(spec, new_state), (event,))


def _step(spec: RolloutSpec, index: int) -> str:
    return f"step {index + 1} ({spec.steps[index]}%)"


def _check_live(spec: RolloutSpec, state: RolloutState) -> None:
    if state.phase not in PHASES:
        raise RolloutError(f"unknown rollout phase {state.phase!r}")
    if not 0 <= state.step_index < len(spec.steps):
        raise RolloutError(
            f"step index {state.step_index} is outside the {len(spec.steps)} steps of rollout {spec.rollout_id}"
        )


def _names(ids: list[str], empty: str = "no node", limit: int = 10) -> str:
    if not ids:
        return empty
    shown = ", ".join(ids[:limit])
    return shown if len(ids) <= limit else f"{shown} and {len(ids) - limit} more"


def _selector_text(selector: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(selector.items())) or "(all nodes)"
