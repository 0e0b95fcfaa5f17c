"""The agent's side of the fleet: enrollment, heartbeats, spool, telemetry."""
