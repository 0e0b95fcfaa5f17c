"""`edge-agent status`: what the data dir says about enrollment, the link to central, and serving.

It reads files the daemon keeps (fleet/fleet.json, fleet/state.json,
http-address) and asks the local /readyz, so it works whether or not the
daemon runs, and needs no privileges beyond reading the data dir.

Whether the daemon runs is judged by its listen address, not by a pid: the
daemon writes ``http-address`` once its socket is bound and removes it on
every orderly exit, so no file means stopped; after a crash the file stays,
but nothing accepts a connection there. A pid would need a pid file the daemon
does not keep, could be reused by another program, and cannot be signalled by
a user other than the daemon's (systemd runs it as its own user), whereas a
TCP connect to the recorded address works for anyone who can read the data dir.
The last heartbeat's state (fleet/state.json) is what the daemon wrote while it
ran; with the daemon stopped it is history, and said so.
"""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edge_agent.config import HTTP_ADDRESS_FILE as ADDRESS_FILE
from edge_agent.config import ConfigError, parse_listen
from edge_agent.control.identity import FleetFiles
from edge_agent.control.trust_state import AgentTrust, TrustFiles
from edgefleet import pki
from edgefleet.errors import EdgefleetError
from federated.supernode_runtime import read_participation

CONNECT_TIMEOUT_S = 1.0
READY_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class DaemonProbe:
    """What was found of the daemon: its recorded address (None: no http-address file) and whether anything
    accepted a TCP connection there."""

    address: str | None
    listening: bool
    detail: str = ""

    @property
    def running(self) -> bool:
        return self.address is not None and self.listening


def heartbeat_age_s(last_heartbeat_at: float | None, now: float) -> float | None:
    """Seconds since the last heartbeat central answered; None when there was none (a clock set back: 0)."""
    if not last_heartbeat_at:
        return None
    return max(0.0, now - last_heartbeat_at)


def link_line(control: dict, daemon_running: bool, now: float) -> str:
    """The "link:" line. The daemon's state is current only while it runs; stopped, it says when the last
    heartbeat was and that the daemon is not running, never "connected"."""
    age = heartbeat_age_s(control.get("last_heartbeat_at"), now)
    spooled = f"{control.get('spooled_reports', 0)} report(s) spooled"
    if daemon_running:
        ago = f"{age:.0f} s ago" if age is not None else "never"
        return f"{control.get('state', 'unknown')} (last heartbeat {ago}, {spooled})"
    last = f"last heartbeat {age:.0f} s ago" if age is not None else "no heartbeat"
    return f"{last} (daemon not running), {spooled}"


def probe_daemon(data_dir: Path, connect: Callable[[str, int], None] | None = None) -> DaemonProbe:
    """Read the daemon's recorded address and try a TCP connection to it."""
    try:
        address = (data_dir / ADDRESS_FILE).read_text().strip()
    except OSError:
        return DaemonProbe(None, False, f"no {ADDRESS_FILE} file in the data dir: stopped, or never started")
    try:
        host, port = parse_listen(address)
        (connect or _connect)(host, port)
    except ConfigError as exc:
        return DaemonProbe(address, False, f"{ADDRESS_FILE} holds no address ({exc})")
    except OSError as exc:
        return DaemonProbe(address, False, f"no answer at {address}: {exc}")
    return DaemonProbe(address, True)


def gather(data_dir: Path, now: Callable[[], float] = time.time) -> dict:
    files = FleetFiles(data_dir)
    probe = probe_daemon(data_dir)
    report: dict = {"data_dir": str(data_dir), "enrolled": files.enrolled(), "daemon_running": probe.running}
    if files.enrolled():
        identity = files.load()
        cert = identity.certificate
        report.update(
            node_id=identity.node_id,
            labels=identity.labels,
            central=identity.central,
            certificate_expires_at=cert.not_valid_after_utc.timestamp(),
            certificate_issuer=cert.issuer.rfc4514_string(),
        )
        state = files.read_state()
        if state:
            report["control"] = state
        try:
            trust = TrustFiles(files.root).load()
        except (OSError, ValueError, KeyError, TypeError, EdgefleetError) as exc:
            report["trust"] = {"error": f"{files.root}: {exc}"}
        else:
            report["trust"] = trust_report(trust, (state or {}).get("trust_updates_refused", 0))
        report["last_heartbeat_age_s"] = heartbeat_age_s((state or {}).get("last_heartbeat_at"), now())
    federated = read_participation(data_dir)
    if federated is not None:
        report["federated"] = federated
    report["serving"] = _serving(probe)
    return report


def federated_line(federated: dict, daemon_running: bool) -> str:
    """The "federated:" line: what the daemon found at its last start (written then; stale once it stopped)."""
    when = "" if daemon_running else " (at the daemon's last start)"
    if not federated.get("enabled"):
        return f"federated:   off (federated.enabled = false){when}"
    if federated.get("able") and not federated.get("detail"):
        where = f"Python {federated.get('python_version')} ({federated.get('python')})"
        return f"federated:   taking part, SuperNode on {where}{when}"
    return f"federated:   not taking part{when}: {federated.get('detail') or federated.get('reason')}"


def trust_report(trust: AgentTrust, refused: int) -> dict:
    """What the node trusts (newest first), for `edge-agent status`."""
    return {
        "version": trust.version,
        "ca_fingerprints": trust.ca_fingerprints(),
        "signing_keys": [{"key_id": k.key_id, "valid_until": k.valid_until} for k in trust.signing_keys],
        "renew_now": trust.renew_now,
        "updates_refused": refused,
    }


def trust_lines(trust: dict) -> list[str]:
    """The "trusted CA:" and "signing key:" lines, one CA or key each, newest first."""
    if "error" in trust:
        return [f"trust:       cannot be read ({trust['error']})"]
    lines = []
    for i, fingerprint in enumerate(trust["ca_fingerprints"]):
        lines.append(f"{'trusted CA:' if i == 0 else '':<13}{fingerprint}")
    keys = sorted(trust["signing_keys"], key=lambda k: -(k["valid_until"] or float("inf")))
    for i, key in enumerate(keys):
        until = f" (until {pki.utc(key['valid_until']).isoformat(timespec='seconds')})" if key["valid_until"] else ""
        lines.append(f"{'signing key:' if i == 0 else '':<13}{key['key_id']}{until}")
    if trust.get("updates_refused"):
        lines.append(f"trust:       {trust['updates_refused']} update(s) from central refused since the daemon started")
    return lines


def _connect(host: str, port: int) -> None:
    with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S):
        pass


def _found(probe: DaemonProbe) -> dict:
    return {"running": False, "address": probe.address}


def _serving(probe: DaemonProbe) -> dict:
    if not probe.running:
        # No address file: stopped cleanly or never started, nothing more to say (the daemon line says it).
        return {"running": False} if probe.address is None else {**_found(probe), "detail": probe.detail}
    address = probe.address
    try:
        with urllib.request.urlopen(f"http://{address}/readyz", timeout=READY_TIMEOUT_S) as response:
            return {"running": True, "address": address, "ready": response.status == 200}
    except urllib.error.HTTPError as exc:
        return {"running": True, "address": address, "ready": False, "detail": exc.read().decode(errors="replace")}
    except OSError as exc:
        # Something holds the port but gives no HTTP answer in time: the daemon, busy or stuck.
        return {"running": True, "address": address, "ready": False, "detail": f"no HTTP answer: {exc}"}


def describe(report: dict, now: float | None = None) -> str:
    now = time.time() if now is None else now
    running = report.get("daemon_running", report["serving"].get("running", False))
    lines = [f"data dir:    {report['data_dir']}"]
    serving = report["serving"]
    if running:
        lines.append(f"daemon:      running at http://{serving['address']}")
    else:
        detail = serving.get("detail") or ("" if serving.get("address") else f"no {ADDRESS_FILE} file in the data dir")
        lines.append("daemon:      not running" + (f" ({detail})" if detail else ""))
    if not report["enrolled"]:
        lines.append("fleet:       not enrolled (run `edge-agent enroll`)")
    else:
        labels = ",".join(f"{k}={v}" for k, v in sorted(report["labels"].items())) or "-"
        lines.append(f"node:        {report['node_id']} ({labels})")
        lines.append(f"central:     {report['central']}")
        control = report.get("control")
        if control:
            lines.append(f"link:        {link_line(control, running, now)}")
            if control.get("last_error"):
                lines.append(f"last error:  {control['last_error']}")
            activation = control.get("activation")
            if activation:
                progress = (
                    f" {activation['bytes_done'] >> 20}/{activation['bytes_total'] >> 20} MiB"
                    if activation["state"] == "DOWNLOADING"
                    else ""
                )
                reason = f": {activation['reason']}" if activation["reason"] else ""
                lines.append(f"activation:  {activation['model']} {activation['state']}{progress}{reason}")
        elif not running:
            lines.append("link:        no heartbeat (daemon not running)")
        expires = report["certificate_expires_at"] - now
        issuer = f" (from {report['certificate_issuer']})" if report.get("certificate_issuer") else ""
        lines.append(f"certificate: expires in {expires / 86400:.1f} days{issuer}")
        if report.get("trust"):
            lines.extend(trust_lines(report["trust"]))
    if report.get("federated"):
        lines.append(federated_line(report["federated"], running))
    if running:
        lines.append(f"serving:     http://{serving['address']} ({'ready' if serving['ready'] else 'not ready'})")
    return "\n".join(lines)
