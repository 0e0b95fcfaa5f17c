"""The agent's control decisions (edge_agent.control.policy): heartbeat delay and backoff
(edgefleet.backoff), the control state, probation and memory for loading a second model."""

from edge_agent.control import policy
from edgefleet.backoff import backoff_delay


def test_backoff_grows_with_jitter_and_is_capped():
    assert backoff_delay(1, 1.0, 60.0, 0.0) == 0.5
    assert backoff_delay(1, 1.0, 60.0, 0.999) < 1.0
    assert backoff_delay(4, 1.0, 60.0, 0.0) == 4.0
    assert backoff_delay(50, 1.0, 60.0, 0.999) <= 60.0
    assert backoff_delay(50, 1.0, 60.0, 0.0) == 30.0
    assert policy.heartbeat_delay(15.0, 0.0) >= 13.5 and policy.heartbeat_delay(15.0, 0.999) < 16.5


def test_control_state():
    assert policy.control_state(False, 0, False) == policy.CONNECTING
    assert policy.control_state(True, 0, False) == policy.CONNECTED
    assert policy.control_state(True, 2, False) == policy.OFFLINE
    assert policy.control_state(False, 2, False) == policy.OFFLINE
    assert policy.control_state(True, 1, True) == policy.REFUSED


def test_probation_breach_needs_enough_requests_and_names_the_limit():
    assert policy.probation_breach(9, 9, 0.0, 0.05, 1000) is None, "too few requests to judge"
    assert "error rate 20.0%" in policy.probation_breach(10, 2, 0.0, 0.05, 1000)
    assert policy.probation_breach(100, 5, 999.0, 0.05, 1000) is None, "at the limits is within them"
    assert "p99 1500 ms" in policy.probation_breach(100, 0, 1500.0, 0.05, 1000)


def test_memory_shortfall_for_loading_beside_the_current_model():
    gib = 1 << 30
    assert policy.memory_shortfall(4 * gib, gib) == 0
    assert policy.memory_shortfall(gib, gib) == int(gib * 1.3) + policy.LOAD_MARGIN_BYTES - gib
