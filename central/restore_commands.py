"""``edgefleet central restore-report``: what the last restore from a backup lost, as central has learned it from the
nodes since (AdminService GetRestoreReport), as a table or JSON. :mod:`central.cli` registers it."""

from __future__ import annotations

from collections import Counter

from central.cli_output import iso, print_json, print_table
from edgefleet.durations import format_duration
from edgefleet.terminal import safe_print as print

# `central` group commands that are AdminService calls (the rest of the group works on a data dir).
COMMANDS = ("restore-report",)


def add_parsers(central) -> None:
    """`restore-report` on the `central` group's subparsers."""
    report = central.add_parser(
        "restore-report",
        help="what the last restore from a backup lost: nodes adopted, assignments and reports lost (as nodes report)",
    )
    report.add_argument("--json", action="store_true", help="print JSON for scripts")


def _restore_report(client, args) -> int:
    from edgefleet.v1 import admin_pb2

    r = client.call("GetRestoreReport", admin_pb2.GetRestoreReportRequest())
    findings = [
        {
            "kind": f.kind,
            "node_id": f.node_id,
            "action": f.action,
            "found_at": iso(f.found_at),
            "detail": f.detail,
        }
        for f in r.findings
    ]
    counts = dict(Counter(f["kind"] for f in findings))
    if args.json:
        if not r.restored:
            print_json({"restored": False})
            return 0
        print_json(
            {
                "restored": True,
                "backup_id": r.backup_id,
                "backup_at": iso(r.backup_at),
                "restored_at": iso(r.restored_at),
                "audit_head_sequence": r.audit_head_sequence,
                "counts": counts,
                "findings": findings,
            }
        )
        return 0
    if not r.restored:
        print("this fleet's store was never restored from a backup")
        return 0
    age = format_duration(r.restored_at.ToSeconds() - r.backup_at.ToSeconds())
    print(
        f"restored {iso(r.restored_at)} from backup {r.backup_id[:16]} taken {iso(r.backup_at)} ({age} before),"
        f" audit log continued after entry {r.audit_head_sequence}"
    )
    print("found: " + ", ".join(f"{n} {kind}" for kind, n in counts.items()))
    print()
    print_table(
        ["FOUND", "KIND", "NODE", "ACTION", "DETAIL"],
        [[f["found_at"], f["kind"], f["node_id"] or "(fleet)", f["action"], f["detail"]] for f in findings],
    )
    return 0


HANDLERS = {("central", "restore-report"): _restore_report}
