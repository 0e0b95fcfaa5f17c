"""The heartbeat's status is cut to central's bounds (edgefleet.report_limits) before it is sent: an activation
reason of 5,000 characters or a box with a hundred sensors costs detail, never the heartbeat."""

import time

from edge_agent.control.activation import ActivationStatus
from edge_agent.control.client import ModelInfo, encode_status
from edge_agent.control.interval_stats import InferenceWindow
from edge_agent.control.telemetry import SystemSample, Temperature
from edgefleet import report_limits
from edgefleet.v1 import common_pb2


def test_a_status_past_the_bounds_is_clipped_to_what_central_takes():
    model = ModelInfo("m" * 1000, "1", "0" * 64)
    sensors = tuple(Temperature(f"sensor-{i}", 40.0) for i in range(100))
    system = SystemSample(0.0, 2, 0.0, 0, 0, 0, 0, sensors, ())
    window = InferenceWindow(15.0, 0, 0, 0, 0.0, 0.0, 0.0, 0, 0)
    activation = ActivationStatus(model=model, state="FAILED", reason="x" * 5000, since=time.time())
    raw = encode_status("test", model, system, window, 0, 0, 1.0, time.time(), activation)
    status = common_pb2.NodeStatus.FromString(raw)
    assert report_limits.problem(status) == ""
    assert status.activation.reason == "x" * report_limits.STRING_BOUNDS["edgefleet.v1.Activation.reason"]
    assert len(status.system.temperatures) == report_limits.REPEATED_BOUNDS["edgefleet.v1.SystemMetrics.temperatures"]
    assert status.system.temperatures[0].sensor == "sensor-0"  # the first entries are kept
