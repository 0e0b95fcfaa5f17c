"""The rollout controller, as pure functions: specs, canary order, promotion, rollback, pause, abort.

No gRPC, no store, no sleeps: time is the `now` each test passes in."""

import hashlib
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from central import rollout as ro
from central.errors import CentralError, ServiceError
from central.rollout import ModelRef, NodeObservation, RolloutError, RolloutSpec, RolloutState

OLD = ModelRef("gemma", "1.0.0", "a" * 64)
OTHER = ModelRef("smollm2", "0.1.2", "c" * 64)
NEW = ModelRef("gemma", "1.1.0", "b" * 64)
T0 = 1_000_000.0
BAKE = 600.0


def make_spec(n=10, previous=None, steps=(10, 50, 100), rollout_id="r1", **overrides):
    if previous is None:
        previous = {f"node-{i:02d}": OLD for i in range(n)}
    fields = dict(
        rollout_id=rollout_id,
        model=NEW,
        selector={"region": "eu"},
        steps=steps,
        bake_s=BAKE,
        max_error_rate=0.02,
        max_p99_ms=2000.0,
        created_at=T0,
        previous=previous,
    )
    fields.update(overrides)
    return RolloutSpec(**fields)


def on_new(node_id, since, **kw):
    """A node serving the new model, ACTIVE since `since`, within thresholds unless kw says otherwise."""
    fields = dict(
        online=True,
        active_sha256=NEW.sha256,
        activation_state=ro.ACTIVE,
        active_since=since,
        error_rate=0.0,
        p99_ms=120.0,
        requests=50,
    )
    fields.update(kw)
    return NodeObservation(node_id, **fields)


def on_old(node_id, **kw):
    fields = dict(
        online=True,
        active_sha256=OLD.sha256,
        activation_state=ro.ACTIVE,
        active_since=T0 - 86400,
        error_rate=0.0,
        p99_ms=100.0,
        requests=50,
    )
    fields.update(kw)
    return NodeObservation(node_id, **fields)


def fleet(spec, state, since, **changed):
    """Every node of the current step healthy on the new model since `since`, the rest on the old one;
    `changed` replaces single nodes' observations (None removes the node)."""
    step = set(ro.nodes_for_step(spec, spec.previous, state.step_index))
    nodes = {n: on_new(n, since) if n in step else on_old(n) for n in spec.previous}
    for node_id, obs in changed.items():
        node_id = node_id.replace("_", "-")
        if obs is None:
            nodes.pop(node_id)
        else:
            nodes[node_id] = obs
    return nodes


def canary(spec, step_index=0):
    return ro.nodes_for_step(spec, spec.previous, step_index)


# --- specs and steps -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "canary_pct, steps, expected",
    [
        (10, [50, 100], (10, 50, 100)),
        (10, [10, 50, 100], (10, 50, 100)),  # the documented example does not double the canary
        (5, [10, 50, 100], (5, 10, 50, 100)),
        (100, [], (100,)),
        (100, [100], (100,)),
        (1, [100], (1, 100)),
    ],
)
def test_build_steps_valid(canary_pct, steps, expected):
    assert ro.build_steps(canary_pct, steps) == expected


@pytest.mark.parametrize(
    "canary_pct, steps, message",
    [
        (0, [50, 100], "from 1 to 100"),
        (10, [50, 101], "from 1 to 100"),
        (10, [50, 50, 100], "strictly increasing"),
        (50, [10, 100], "strictly increasing"),
        (10, [50], "last step must be 100"),
        (10, [], "last step must be 100"),
        (10.5, [100], "whole percentage"),
        (True, [100], "whole percentage"),
    ],
)
def test_build_steps_invalid(canary_pct, steps, message):
    with pytest.raises(RolloutError, match=message):
        ro.build_steps(canary_pct, steps)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(max_error_rate=1.5), "between 0 and 1"),
        (dict(max_error_rate=-0.1), "between 0 and 1"),
        (dict(max_error_rate=math.nan), "between 0 and 1"),
        (dict(bake_s=-1.0), "0 s or more"),
        (dict(max_p99_ms=0.0), "more than 0 ms"),
        (dict(previous={}), "matches no node"),
        (dict(steps=(10, 50)), "last step must be 100"),
        (dict(steps=()), "must not be empty"),
        (dict(rollout_id=""), "rollout_id"),
    ],
)
def test_spec_validation(overrides, message):
    with pytest.raises(RolloutError, match=message):
        make_spec(**overrides)


def test_rollout_errors_are_value_errors_under_central_but_outside_service_errors():
    """The servicers map exact ServiceError classes, so the rollouts handler wraps these at its boundary."""
    assert issubclass(RolloutError, ValueError) and not issubclass(RolloutError, ServiceError)
    assert issubclass(RolloutError, CentralError), "central's one root (issue 14)"
    assert issubclass(ro.PhaseError, RolloutError)


def test_unknown_activation_state_is_refused():
    with pytest.raises(RolloutError, match="unknown activation state"):
        NodeObservation("node-a", True, NEW.sha256, "Active")


# --- canary order ----------------------------------------------------------------------------


def test_canary_order_is_deterministic_stable_and_differs_per_rollout():
    ids = [f"node-{i}" for i in range(20)]
    first = ro.canary_order("r1", ids)
    assert sorted(first) == sorted(ids)
    assert ro.canary_order("r1", list(reversed(ids))) == first  # input order does not matter
    assert ro.canary_order("r1", set(ids)) == first
    assert first == sorted(ids, key=lambda n: hashlib.sha256(f"r1/{n}".encode()).hexdigest())
    assert ro.canary_order("r2", ids) != first


@pytest.mark.parametrize(
    "n, sizes",
    [
        (1, {10: 1, 50: 1, 100: 1}),
        (3, {10: 1, 34: 2, 50: 2, 67: 3, 100: 3}),
        (10, {10: 1, 15: 2, 50: 5, 100: 10}),
        (100, {1: 1, 10: 10, 33: 33, 50: 50, 100: 100}),
    ],
)
def test_nodes_for_step_takes_the_ceiling_and_at_least_one(n, sizes):
    steps = tuple(sorted(sizes))
    spec = make_spec(n=n, steps=steps)
    order = ro.canary_order(spec.rollout_id, spec.previous)
    for index, pct in enumerate(steps):
        chosen = ro.nodes_for_step(spec, spec.previous, index)
        assert len(chosen) == sizes[pct] == max(1, math.ceil(pct * n / 100))
        assert chosen == order[: len(chosen)]  # nested: a later step always contains the earlier ones
    assert ro.nodes_for_step(spec, [], 0) == []


# --- start and promotion ---------------------------------------------------------------------


def test_start_assigns_only_the_canary():
    spec = make_spec(n=10)
    decision = ro.start(spec, T0)
    assert decision.state == RolloutState(ro.RUNNING, 0, T0, "started")
    new_nodes = {n for n, m in decision.assignments.items() if m == NEW}
    assert new_nodes == set(canary(spec)) and len(new_nodes) == 1
    assert all(m == OLD for n, m in decision.assignments.items() if n not in new_nodes)
    assert set(decision.assignments) == set(spec.previous)
    assert "r1" in decision.events[0] and canary(spec)[0] in decision.events[0]
    assert "gemma@1.1.0" in decision.events[0] and "region=eu" in decision.events[0]


def test_no_promotion_before_the_nodes_have_baked():
    spec = make_spec()
    state = ro.start(spec, T0).state
    now = T0 + 10 * BAKE  # the step is old enough, but the node only just became active
    decision = ro.decide(spec, state, fleet(spec, state, since=now - BAKE + 1), now)
    assert decision.state == state and decision.events == ()
    assert ro.waiting_on(spec, state, fleet(spec, state, since=now - BAKE + 1), now)[0].endswith("baking 599 of 600 s")


def test_no_promotion_before_the_step_has_baked():
    spec = make_spec()
    state = ro.start(spec, T0).state
    now = T0 + BAKE - 1  # the node has served the new model for long (say, since before the rollout)
    decision = ro.decide(spec, state, fleet(spec, state, since=T0 - 10 * BAKE), now)
    assert decision.state == state and decision.events == ()
    assert "step baking" in ro.waiting_on(spec, state, fleet(spec, state, since=T0 - 10 * BAKE), now)[0]


def test_promotion_after_the_bake_and_through_every_step_to_completed():
    spec = make_spec(n=10)
    decision = ro.start(spec, T0)
    now, sizes = T0, []
    while decision.state.phase == ro.RUNNING:
        state = decision.state
        sizes.append(sum(m == NEW for m in decision.assignments.values()))
        since = now + 30  # the step's nodes took 30 s to download, verify and warm up
        now = since + BAKE
        decision = ro.decide(spec, state, fleet(spec, state, since=since), now)
        assert decision.state.step_index >= state.step_index
        promoted = decision.events[0]
        step_text = f"step {state.step_index + 1} ({spec.steps[state.step_index]}%)"
        assert promoted.startswith(f"{step_text} promoted after 600 s bake: ")
        assert all(n in promoted for n in canary(spec, state.step_index)) and "within thresholds" in promoted
    assert sizes == [1, 5, 10]
    assert decision.state.phase == ro.COMPLETED and decision.state.step_index == 2
    assert decision.assignments == {n: NEW for n in spec.previous}
    assert "completed" in decision.events[-1] and "10 node(s)" in decision.events[-1]


def test_promotion_event_names_the_nodes_it_adds():
    spec = make_spec(n=10)
    state = ro.start(spec, T0).state
    decision = ro.decide(spec, state, fleet(spec, state, since=T0), T0 + BAKE)
    assert decision.state == RolloutState(ro.RUNNING, 1, T0 + BAKE, "step 2 (50%) started")
    added = [n for n in canary(spec, 1) if n not in canary(spec, 0)]
    assert len(added) == 4 and all(n in decision.events[1] for n in added)
    assert decision.events[1].startswith("step 2 (50%) started: gemma@1.1.0 assigned to")


def test_offline_or_missing_node_blocks_promotion_without_rollback():
    spec = make_spec(n=10, steps=(50, 100))
    state = ro.start(spec, T0).state
    first, second = canary(spec)[:2]
    now = T0 + 2 * BAKE
    offline = on_new(first, T0, online=False)
    decision = ro.decide(spec, state, fleet(spec, state, T0, **{first: offline}), now)
    assert decision.state == state and decision.events == ()
    assert f"{first}: offline" in ro.waiting_on(spec, state, fleet(spec, state, T0, **{first: offline}), now)
    decision = ro.decide(spec, state, fleet(spec, state, T0, **{second: None}), now)
    assert decision.state == state and decision.events == ()
    assert decision.assignments[second] == NEW


@pytest.mark.parametrize(
    "make_obs",
    [
        lambda n: on_old(n),  # still serving the old version
        lambda n: on_old(n, activation_state=ro.DOWNLOADING),
        lambda n: on_old(n, activation_state=ro.WARMING),
        lambda n: on_new(n, T0, activation_state=ro.VERIFYING),
        lambda n: on_new(n, None),  # active, but no start time reported
    ],
)
def test_nodes_not_active_on_the_new_version_do_not_count_as_healthy(make_obs):
    spec = make_spec()
    state = ro.start(spec, T0).state
    node = canary(spec)[0]
    decision = ro.decide(spec, state, fleet(spec, state, T0, **{node: make_obs(node)}), T0 + 2 * BAKE)
    assert decision.state == state and decision.events == ()


# --- rollback --------------------------------------------------------------------------------


def test_failed_canary_rolls_every_node_back_to_its_previous_version():
    previous = {"node-a": OLD, "node-b": None, "node-c": OTHER, "node-d": None}
    spec = make_spec(previous=previous, steps=(50, 100))
    state = ro.start(spec, T0).state
    bad = canary(spec)[0]
    failed = on_old(bad, activation_state=ro.FAILED, activation_reason="load error: bad magic")
    decision = ro.decide(spec, state, fleet(spec, state, T0, **{bad: failed}), T0 + 5)
    assert decision.state.phase == ro.ROLLED_BACK
    assert decision.assignments == previous  # None stays None: the node had no model before
    assert decision.state.reason == f"rolled back: {bad} reported FAILED: load error: bad magic"
    (event,) = decision.events
    assert event.startswith(decision.state.reason) and "step 1 (50%)" in event
    assert all(n in event for n in canary(spec))


def test_node_rolling_back_by_itself_rolls_the_rollout_back():
    spec = make_spec()
    state = ro.start(spec, T0).state
    node = canary(spec)[0]
    obs = on_old(node, activation_state=ro.ROLLED_BACK, activation_reason="probation: p99 above limit")
    decision = ro.decide(spec, state, fleet(spec, state, T0, **{node: obs}), T0 + 5)
    assert decision.state.phase == ro.ROLLED_BACK
    assert f"{node} rolled back by itself: probation: p99 above limit" in decision.events[0]


@pytest.mark.parametrize(
    "kw, text",
    [
        (dict(error_rate=0.05), "error rate 0.05 > 0.02"),
        (dict(p99_ms=2300.0), "p99 2300 ms > 2000 ms"),
    ],
)
def test_threshold_breach_rolls_back(kw, text):
    spec = make_spec(n=10, steps=(50, 100))
    state = ro.start(spec, T0).state
    node = canary(spec)[2]
    decision = ro.decide(spec, state, fleet(spec, state, T0, **{node: on_new(node, T0, **kw)}), T0 + 60)
    assert decision.state.phase == ro.ROLLED_BACK
    assert decision.assignments == spec.previous
    assert f"rolled back: {node} {text}" in decision.events[0]


@pytest.mark.parametrize(
    "kw",
    [
        dict(error_rate=0.9, p99_ms=9000.0, requests=0),  # no requests: nothing to judge
        dict(error_rate=0.02, p99_ms=2000.0),  # at the limit is within it
    ],
)
def test_no_rollback_without_requests_or_at_the_limit(kw):
    spec = make_spec()
    state = ro.start(spec, T0).state
    node = canary(spec)[0]
    decision = ro.decide(spec, state, fleet(spec, state, T0, **{node: on_new(node, T0, **kw)}), T0 + BAKE)
    assert decision.state.phase == ro.RUNNING and decision.state.step_index == 1


def test_old_version_metrics_and_nodes_outside_the_step_are_not_judged():
    spec = make_spec(n=10)
    state = ro.start(spec, T0).state
    node = canary(spec)[0]
    outside = canary(spec, 2)[-1]
    changed = {
        node: on_old(node, error_rate=0.5, activation_state=ro.DOWNLOADING),
        outside: on_old(outside, activation_state=ro.FAILED, activation_reason="disk full"),
    }
    decision = ro.decide(spec, state, fleet(spec, state, T0, **changed), T0 + BAKE)
    assert decision.state == state and decision.events == ()


# --- pause, resume, abort, terminal states ---------------------------------------------------


def test_pause_stops_promotion_but_a_breach_still_rolls_back():
    spec = make_spec()
    state = ro.pause(ro.start(spec, T0).state, T0 + 1, "investigating latency")
    assert state.phase == ro.PAUSED and state.reason == "paused: investigating latency"
    assert ro.pause(state, T0 + 2, "again") == state
    decision = ro.decide(spec, state, fleet(spec, state, T0), T0 + 10 * BAKE)
    assert decision.state == state and decision.events == ()
    assert decision.assignments == ro.desired_assignments(spec, state)
    node = canary(spec)[0]
    breach = fleet(spec, state, T0, **{node: on_new(node, T0, p99_ms=5000.0)})
    decision = ro.decide(spec, state, breach, T0 + 10 * BAKE)
    assert decision.state.phase == ro.ROLLED_BACK and decision.assignments == spec.previous


def test_resume_restarts_the_bake_clock():
    spec = make_spec()
    paused = ro.pause(ro.start(spec, T0).state, T0 + 100, "")
    resumed = ro.resume(paused, T0 + 1000)
    assert resumed == RolloutState(ro.RUNNING, 0, T0 + 1000, "resumed")
    assert ro.resume(resumed, T0 + 2000) == resumed
    nodes = fleet(spec, resumed, since=T0)
    assert ro.decide(spec, resumed, nodes, T0 + 1000 + BAKE - 1).state == resumed
    assert ro.decide(spec, resumed, nodes, T0 + 1000 + BAKE).state.step_index == 1


@pytest.mark.parametrize("pause_first", [False, True])
def test_abort_from_running_or_paused_restores_every_previous(pause_first):
    previous = {f"node-{i}": (None if i % 2 else OLD) for i in range(6)}
    spec = make_spec(previous=previous)
    started = ro.start(spec, T0).state
    state = ro.decide(spec, started, fleet(spec, started, T0), T0 + BAKE).state
    assert state.step_index == 1
    if pause_first:
        state = ro.pause(state, T0 + BAKE + 1, "hold")
    decision = ro.abort(spec, state, T0 + BAKE + 2, "operator changed their mind")
    assert decision.state == RolloutState(ro.ABORTED, 1, T0 + BAKE + 2, "aborted: operator changed their mind")
    assert decision.assignments == previous
    assert decision.events[0].startswith("aborted: operator changed their mind (at step 2 (50%)")
    assert all(n in decision.events[0] for n in canary(spec, 1))
    again = ro.abort(spec, decision.state, T0 + BAKE + 3, "retry")
    assert again == ro.Decision(decision.state, previous, ())


@pytest.mark.parametrize("phase", [ro.COMPLETED, ro.ROLLED_BACK, ro.ABORTED])
def test_terminal_states_are_stable(phase):
    spec = make_spec(previous={"node-a": OLD, "node-b": None, "node-c": OTHER})
    state = RolloutState(phase, 1, T0, "done")
    broken = {n: on_new(n, T0, activation_state=ro.FAILED, error_rate=1.0, requests=9) for n in spec.previous}
    decision = ro.decide(spec, state, broken, T0 + 10 * BAKE)
    assert decision.state is state and decision.events == ()
    expected = {n: NEW for n in spec.previous} if phase == ro.COMPLETED else spec.previous
    assert decision.assignments == expected
    with pytest.raises(ro.PhaseError, match=phase):
        ro.pause(state, T0, "x")
    with pytest.raises(ro.PhaseError, match=phase):
        ro.resume(state, T0)
    if phase != ro.ABORTED:
        with pytest.raises(ro.PhaseError, match="nothing to abort"):
            ro.abort(spec, state, T0, "x")


def test_a_state_that_does_not_fit_the_spec_is_refused():
    spec = make_spec()
    with pytest.raises(RolloutError, match="step index 3"):
        ro.decide(spec, RolloutState(ro.RUNNING, 3, T0, ""), {}, T0)
    with pytest.raises(RolloutError, match="unknown rollout phase"):
        ro.decide(spec, RolloutState("WAITING", 0, T0, ""), {}, T0)


def test_conflicts_finds_shared_nodes_and_ignores_disjoint_rollouts():
    live = {"eu": {"node-a", "node-b"}, "us": {"node-x"}, "lab": set()}
    assert ro.conflicts(live, {"node-b", "node-c"}) == {"eu": {"node-b"}}
    assert ro.conflicts(live, {"node-y", "node-z"}) == {}
    assert ro.conflicts({}, {"node-a"}) == {}


def test_rollouts_over_disjoint_nodes_go_on_independently():
    """A stuck rollout (its canary offline) does not hold back another rollout's promotion."""
    eu = make_spec(n=4, rollout_id="eu", previous={f"eu-{i}": OLD for i in range(4)})
    us = make_spec(n=4, rollout_id="us", previous={f"us-{i}": OLD for i in range(4)})
    assert ro.conflicts({"eu": set(eu.previous)}, set(us.previous)) == {}
    eu_state, us_state = ro.start(eu, T0).state, ro.start(us, T0).state
    nodes = {**fleet(eu, eu_state, T0), **fleet(us, us_state, T0)}
    stuck = canary(eu)[0]
    nodes[stuck] = on_new(stuck, T0, online=False)
    assert ro.decide(eu, eu_state, nodes, T0 + BAKE).state == eu_state
    assert ro.decide(us, us_state, nodes, T0 + BAKE).state.step_index == 1


# --- properties ------------------------------------------------------------------------------

observations = st.builds(
    lambda online, sha, state, since, err, p99, req: dict(
        online=online,
        active_sha256=sha,
        activation_state=state,
        activation_reason="why",
        active_since=since,
        error_rate=err,
        p99_ms=p99,
        requests=req,
    ),
    st.booleans(),
    st.sampled_from([OLD.sha256, NEW.sha256, OTHER.sha256, ""]),
    st.sampled_from(ro.ACTIVATION_STATES),
    st.one_of(st.none(), st.floats(T0 - 5000, T0 + 50_000)),
    st.floats(0, 1),
    st.floats(0, 5000),
    st.integers(0, 100),
)


@settings(max_examples=200, deadline=None)
@given(
    previous=st.lists(st.sampled_from([None, OLD, OTHER]), min_size=1, max_size=12),
    steps=st.lists(st.integers(1, 99), max_size=3, unique=True),
    ticks=st.lists(
        st.tuples(
            st.floats(0, 2 * BAKE),
            st.dictionaries(st.integers(0, 11), observations),
            st.sampled_from(["tick", "tick", "tick", "pause", "resume"]),
        ),
        max_size=8,
    ),
)
def test_assignments_only_ever_hold_the_new_model_or_the_previous_one(previous, steps, ticks):
    spec = make_spec(previous={f"node-{i}": m for i, m in enumerate(previous)}, steps=(*sorted(steps), 100))
    decision, now = ro.start(spec, T0), T0
    for delta, raw, action in ticks:
        now += delta
        state = decision.state
        if action == "pause" and state.phase == ro.RUNNING:
            state = ro.pause(state, now, "")
        elif action == "resume" and state.phase == ro.PAUSED:
            state = ro.resume(state, now)
        nodes = {f"node-{i}": NodeObservation(f"node-{i}", **obs) for i, obs in raw.items() if i < len(previous)}
        decision = ro.decide(spec, state, nodes, now)
        assert set(decision.assignments) == set(spec.previous)
        for node_id, model in decision.assignments.items():
            assert model in (NEW, spec.previous[node_id])
        if decision.state.phase in (ro.RUNNING, ro.PAUSED):
            step = set(ro.nodes_for_step(spec, spec.previous, decision.state.step_index))
            assert all(decision.assignments[n] == spec.previous[n] for n in spec.previous if n not in step)
            assert all(decision.assignments[n] == NEW for n in step)
        if decision.state.phase in (ro.ROLLED_BACK, ro.ABORTED):
            assert decision.assignments == spec.previous
        assert decision.state.step_index >= state.step_index
        assert bool(decision.events) == (decision.state != state)
        if state.phase in ro.TERMINAL:
            assert decision.state == state
