"""``edgefleet slo set|list|status|delete|rules``: service level objectives, each command one AdminService call.

Central keeps the objectives and judges them from its rollups (:mod:`central.slo`); ``slo rules`` writes the
same objectives as Prometheus recording and burn-rate alert rules (:mod:`central.slo_rules`) for a Prometheus
that scrapes central. :mod:`central.cli` registers these commands.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from pathlib import Path

from central.cli_output import iso, print_json, print_table
from central.labels import format_labels
from edgefleet import histogram_buckets
from edgefleet.durations import format_duration
from edgefleet.terminal import safe_print as print

DEFAULT_WINDOW_S = 30 * 86400.0
# The burn-rate windows the status table shows (JSON and `slo status NAME` show all of them).
TABLE_WINDOWS_S = (300, 3600, 21600, 86400, 259200)


def _float_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def _keys_arg(text: str) -> tuple[str, ...]:
    return tuple(k.strip() for k in text.split(",") if k.strip())


def add_parsers(sub, duration_arg: Callable[[str], float], labels_arg: Callable[[str], dict[str, str]]) -> None:
    """The `slo` command group, on the CLI's top-level subparsers."""
    slo = sub.add_parser("slo", help="service level objectives: availability and latency per set of nodes")
    cmds = slo.add_subparsers(dest="command", required=True)
    sset = cmds.add_parser("set", help="create or replace an objective")
    sset.add_argument("name", help="the objective's name: letters, digits, '.', '_', '-' (at most 64)")
    sset.add_argument(
        "--selector", type=labels_arg, default={}, help="the nodes it covers: every node with these labels, k=v,..."
    )
    sset.add_argument(
        "--availability", type=_float_arg, default=0.0, help="percent of requests that must not fail, e.g. 99.9"
    )
    sset.add_argument(
        "--p99-ms",
        type=_float_arg,
        default=0.0,
        help="latency bound in ms that --latency-percent of requests must finish within, e.g. 2000",
    )
    sset.add_argument(
        "--latency-percent",
        type=_float_arg,
        default=99.0,
        help="the share of requests the latency bound is for (default 99)",
    )
    sset.add_argument(
        "--window", type=duration_arg, default=DEFAULT_WINDOW_S, help="the rolling window, 1h to 90d (default 30d)"
    )
    slist = cmds.add_parser("list", help="the objectives as set")
    slist.add_argument("--json", action="store_true", help="print JSON for scripts")
    status = cmds.add_parser("status", help="compliance, error budget left, burn rates and alert per objective")
    status.add_argument("name", nargs="?", default="", help="only this objective, in full")
    status.add_argument("--json", action="store_true", help="print JSON for scripts")
    delete = cmds.add_parser("delete", help="remove an objective")
    delete.add_argument("name")
    rules = cmds.add_parser("rules", help="print Prometheus recording and burn-rate alert rules for the objectives")
    rules.add_argument("--out", type=Path, default=None, help="write them to FILE instead of printing them")
    rules.add_argument(
        "--rollup-labels",
        type=_keys_arg,
        default=("region", "site"),
        help="central's --rollup-labels: the labels its metrics carry (default region,site)",
    )


def _usage_error(message: str):
    from central.client import AdminCallError

    return AdminCallError(message, 2)


def _set(client, args) -> int:
    from central import slo
    from central.convert import duration
    from edgefleet.v1 import admin_pb2

    objective = slo.Objective(
        args.name, args.selector, args.availability, args.p99_ms, args.latency_percent, args.window
    )
    try:
        slo.validated(objective)
    except slo.ObjectiveError as exc:
        raise _usage_error(str(exc)) from None
    r = client.call(
        "SetObjective",
        admin_pb2.SetObjectiveRequest(
            objective=admin_pb2.Objective(
                name=args.name,
                selector=args.selector,
                availability_percent=args.availability,
                latency_threshold_ms=args.p99_ms,
                latency_percent=args.latency_percent,
                window=duration(args.window),
            )
        ),
    ).objective
    print(f"objective {r.name} set: {_summary(r)}")
    note = bound_note(args.p99_ms)
    if note:
        print(f"note: {note}", file=sys.stderr)
    return 0


def bound_note(threshold_ms: float) -> str:
    """What to know when a latency bound is not one of the shared bucket bounds; "" when it is (or is unset)."""
    bounds = histogram_buckets.BOUNDS_MS
    if not threshold_ms or threshold_ms in bounds:
        return ""
    below = max((b for b in bounds if b < threshold_ms), default=0)
    above = min((b for b in bounds if b > threshold_ms), default=None)
    nearest = " or ".join(f"{b:g}" for b in (below, above) if b)
    return (
        f"{threshold_ms:g} ms is not a latency bucket bound, so central interpolates inside its bucket"
        f" and `edgefleet slo rules` refuses the objective; {nearest} ms would be exact"
    )


def _summary(o) -> str:
    parts = []
    if o.availability_percent:
        parts.append(f"availability {o.availability_percent:g}%")
    if o.latency_threshold_ms:
        parts.append(f"{o.latency_percent:g}% within {o.latency_threshold_ms:g} ms")
    selector = format_labels(dict(o.selector)) or "all nodes"
    return f"{selector}; {', '.join(parts)}; over {_window(o)}"


def _window(o) -> str:
    return format_duration(o.window.ToNanoseconds() / 1e9)


def objective_row(o) -> dict:
    return {
        "name": o.name,
        "selector": dict(o.selector),
        "availability_percent": o.availability_percent or None,
        "latency_threshold_ms": o.latency_threshold_ms or None,
        "latency_percent": o.latency_percent if o.latency_threshold_ms else None,
        "window_seconds": o.window.ToNanoseconds() / 1e9,
        "updated_at": iso(o.updated_at),
        "updated_by": o.updated_by,
    }


def status_row(o, s) -> dict:
    return {
        "name": o.name,
        "requests": s.requests,
        "errors": s.errors,
        "slow_requests": s.slow_requests,
        "availability_percent": s.availability_percent,
        "latency_good_percent": s.latency_good_percent,
        "compliant": s.compliant,
        "error_budget_remaining": s.error_budget_remaining,
        "burn_rates": [
            {"window_seconds": b.window_seconds, "availability": b.availability, "latency": b.latency}
            for b in s.burn_rates
        ],
        "alert": s.alert,
    }


def _list_objectives(client):
    from edgefleet.v1 import admin_pb2

    r = client.call("ListObjectives", admin_pb2.ListObjectivesRequest())
    return list(zip(r.objectives, r.statuses, strict=True))


def _list(client, args) -> int:
    pairs = _list_objectives(client)
    if args.json:
        print_json([objective_row(o) for o, _ in pairs])
        return 0
    print_table(
        ["NAME", "SELECTOR", "AVAILABILITY", "LATENCY", "WINDOW", "UPDATED BY"],
        [
            [
                o.name,
                format_labels(dict(o.selector)) or "(all)",
                f"{o.availability_percent:g}%" if o.availability_percent else "-",
                f"{o.latency_percent:g}% < {o.latency_threshold_ms:g} ms" if o.latency_threshold_ms else "-",
                _window(o),
                o.updated_by,
            ]
            for o, _ in pairs
        ],
    )
    return 0


def _status(client, args) -> int:
    pairs = _list_objectives(client)
    if args.name:
        pairs = [(o, s) for o, s in pairs if o.name == args.name]
        if not pairs:
            from central.client import AdminCallError

            raise AdminCallError(f"no objective {args.name!r}; `edgefleet slo list` shows the objectives", 5)
    if args.json:
        rows = [status_row(o, s) for o, s in pairs]
        print_json(rows[0] if args.name else rows)
        return 0
    if args.name:
        _print_one(*pairs[0])
        return 0
    print_table(
        ["NAME", "REQUESTS", "AVAILABLE", "FAST ENOUGH", "MET", "BUDGET LEFT"]
        + [f"BURN {_window_name(w)}" for w in TABLE_WINDOWS_S]
        + ["ALERT"],
        [
            [
                o.name,
                str(s.requests),
                f"{s.availability_percent:.3f}%" if o.availability_percent else "-",
                f"{s.latency_good_percent:.3f}%" if o.latency_threshold_ms else "-",
                "yes" if s.compliant else "NO",
                f"{100 * s.error_budget_remaining:.1f}%",
            ]
            + [_burn(s, w) for w in TABLE_WINDOWS_S]
            + [s.alert.upper() or "-"]
            for o, s in pairs
        ],
    )
    return 0


def _window_name(seconds: int) -> str:
    from central.slo_rules import window_name

    return window_name(seconds)


def _burn(s, window_s: int) -> str:
    """The faster-burning part's rate in that window."""
    for b in s.burn_rates:
        if b.window_seconds == window_s:
            return f"{max(b.availability, b.latency):.2f}"
    return "-"


def _print_one(o, s) -> None:
    print(f"{'objective:':<22}{o.name}")
    print(f"{'asks:':<22}{_summary(o)}")
    print(f"{'requests:':<22}{s.requests} ({s.errors} failed, {s.slow_requests} slower than the bound)")
    if o.availability_percent:
        print(f"{'availability:':<22}{s.availability_percent:.4f}% (objective {o.availability_percent:g}%)")
    if o.latency_threshold_ms:
        print(
            f"{'within the bound:':<22}{s.latency_good_percent:.4f}% (objective {o.latency_percent:g}% within"
            f" {o.latency_threshold_ms:g} ms)"
        )
    print(f"{'compliant:':<22}{'yes' if s.compliant else 'NO'}")
    print(f"{'error budget left:':<22}{100 * s.error_budget_remaining:.1f}%")
    print(f"{'alert:':<22}{s.alert or 'none'}")
    print("burn rates (1.0 spends the budget exactly over the window):")
    print_table(
        ["WINDOW", "AVAILABILITY", "LATENCY"],
        [
            [
                _window_name(b.window_seconds),
                f"{b.availability:.2f}" if o.availability_percent else "-",
                f"{b.latency:.2f}" if o.latency_threshold_ms else "-",
            ]
            for b in s.burn_rates
        ],
    )


def _delete(client, args) -> int:
    from edgefleet.v1 import admin_pb2

    client.call("DeleteObjective", admin_pb2.DeleteObjectiveRequest(name=args.name))
    print(f"deleted objective {args.name}")
    return 0


def _rules(client, args) -> int:
    from central import slo_rules
    from central.convert import objective_of_message
    from edgefleet.atomicfile import write_public

    objectives = [objective_of_message(o) for o, _ in _list_objectives(client)]
    try:
        text = slo_rules.rules_yaml(objectives, args.rollup_labels)
    except slo_rules.RulesError as exc:
        raise _usage_error(f"no rules written: {exc}") from None
    if args.out is None:
        sys.stdout.write(text)
        return 0
    write_public(args.out.expanduser(), text.encode())
    print(f"wrote rules for {len(objectives)} objective(s) to {args.out}; list it under Prometheus's rule_files")
    return 0


HANDLERS = {
    ("slo", "set"): _set,
    ("slo", "list"): _list,
    ("slo", "status"): _status,
    ("slo", "delete"): _delete,
    ("slo", "rules"): _rules,
}
