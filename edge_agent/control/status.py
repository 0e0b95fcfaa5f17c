"""`edge-agent status`: what the data dir says about enrollment, the link to central, and serving.

It reads files the daemon keeps (fleet/fleet.json, fleet/state.json,
http-address) and asks the local /readyz, so it works whether or not the
daemon runs, and needs no privileges beyond reading the data dir.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from pathlib import Path

from edge_agent.config import HTTP_ADDRESS_FILE as ADDRESS_FILE
from edge_agent.control.identity import FleetFiles


def gather(data_dir: Path) -> dict:
    files = FleetFiles(data_dir)
    report: dict = {"data_dir": str(data_dir), "enrolled": files.enrolled()}
    if files.enrolled():
        identity = files.load()
        cert = identity.certificate
        report.update(
            node_id=identity.node_id,
            labels=identity.labels,
            central=identity.central,
            certificate_expires_at=cert.not_valid_after_utc.timestamp(),
        )
        state = files.read_state()
        if state:
            report["control"] = state
    report["serving"] = _serving(data_dir)
    return report


def _serving(data_dir: Path) -> dict:
    try:
        address = (data_dir / ADDRESS_FILE).read_text().strip()
    except OSError:
        return {"running": False}
    try:
        with urllib.request.urlopen(f"http://{address}/readyz", timeout=2) as response:
            return {"running": True, "address": address, "ready": response.status == 200}
    except urllib.error.HTTPError as exc:
        return {"running": True, "address": address, "ready": False, "detail": exc.read().decode(errors="replace")}
    except OSError as exc:
        return {"running": False, "address": address, "detail": f"no answer at {address}: {exc}"}


def describe(report: dict) -> str:
    lines = [f"data dir:    {report['data_dir']}"]
    if not report["enrolled"]:
        lines.append("fleet:       not enrolled (run `edge-agent enroll`)")
    else:
        labels = ",".join(f"{k}={v}" for k, v in sorted(report["labels"].items())) or "-"
        lines.append(f"node:        {report['node_id']} ({labels})")
        lines.append(f"central:     {report['central']}")
        control = report.get("control")
        if control:
            seen = control.get("last_heartbeat_at")
            ago = f"{time.time() - seen:.0f} s ago" if seen else "never"
            lines.append(
                f"link:        {control['state']} (last heartbeat {ago}, "
                f"{control['spooled_reports']} report(s) spooled)"
            )
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
        expires = report["certificate_expires_at"] - time.time()
        lines.append(f"certificate: expires in {expires / 86400:.1f} days")
    serving = report["serving"]
    if serving.get("running"):
        lines.append(f"serving:     http://{serving['address']} ({'ready' if serving['ready'] else 'not ready'})")
    else:
        lines.append("serving:     not running" + (f" ({serving['detail']})" if serving.get("detail") else ""))
    return "\n".join(lines)
