"""bench/heartbeats.py's "rollups off" central: put on PYTHONPATH of a central process only, it turns the
heartbeat's history (central.rollups.figures and HeartbeatBuffer.record_history) into no-ops, so the bench
measures central's CPU per heartbeat with and without rollups in the same run. Nothing else imports it."""

import central.heartbeats
import central.rollups

central.rollups.figures = lambda status: None
central.heartbeats.HeartbeatBuffer.record_history = lambda self, *args, **kwargs: None
