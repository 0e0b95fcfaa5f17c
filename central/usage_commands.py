"""``edgefleet usage`` and ``edgefleet nodes history``: the fleet's history as central keeps it (AdminService
ListBurstUsage and GetMetricsHistory), one call each, as a table or JSON. :mod:`central.cli` registers them."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from central.cli_output import iso, iso_seconds, print_json, print_table
from edgefleet.terminal import safe_print as print

# `nodes history --hours N`: minute points up to this many hours, hour points past it.
MINUTE_POINTS_UP_TO_HOURS = 2
MAX_HISTORY_HOURS = 30 * 24


def rollup_labels_arg(text: str) -> tuple[str, ...]:
    """`central serve --rollup-labels`: comma-separated label keys, "" for none."""
    from central.rollups import RollupError, parse_label_keys

    try:
        return parse_label_keys(text)
    except RollupError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _group_by_arg(text: str) -> list[str]:
    return [k.strip() for k in text.split(",") if k.strip()]


def _hours_arg(text: str) -> int:
    try:
        hours = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of hours, got {text!r}") from None
    if not 1 <= hours <= MAX_HISTORY_HOURS:
        raise argparse.ArgumentTypeError(f"hours must be 1 to {MAX_HISTORY_HOURS} (central keeps 30 days), not {hours}")
    return hours


def add_parsers(sub, nodes, duration_arg: Callable[[str], float]) -> None:
    """`edgefleet usage` on the CLI's top-level subparsers, `history` on the `nodes` group's."""
    usage = sub.add_parser("usage", help="what bursting to upstreams sent and cost, per upstream and group")
    usage.add_argument(
        "--by",
        type=_group_by_arg,
        default=[],
        help="group also by these, comma-separated: tenant, data_class, label:KEY (default: per upstream only)",
    )
    usage.add_argument(
        "--since", type=duration_arg, default=None, help="only the last DURATION, e.g. 24h (default: all, 30 days)"
    )
    usage.add_argument("--json", action="store_true", help="print JSON for scripts")
    usage.set_defaults(command="")
    nhistory = nodes.add_parser("history", help="a node's requests, latency, tokens and queue over time")
    nhistory.add_argument("node_id")
    nhistory.add_argument(
        "--hours",
        type=_hours_arg,
        default=1,
        help=f"how far back (default 1); minute points up to {MINUTE_POINTS_UP_TO_HOURS} hours, hour points past",
    )
    nhistory.add_argument("--json", action="store_true", help="print JSON for scripts")


def _usage(client, args) -> int:
    from central.convert import timestamp
    from edgefleet.v1 import admin_pb2

    request = admin_pb2.ListBurstUsageRequest(group_by=args.by)
    if args.since is not None:
        request.since.CopyFrom(timestamp(time.time() - args.since))
    r = client.call("ListBurstUsage", request)
    rows = [
        {
            "upstream": u.upstream,
            "group": dict(sorted(u.group.items())),
            "requests": u.requests,
            "prompt_tokens": u.prompt_tokens,
            "completion_tokens": u.completion_tokens,
            "cost": u.cost,
            "currency": u.currency,
            "last_at": iso(u.last_at),
        }
        for u in r.rows
    ]
    if args.json:
        print_json(rows)
        return 0
    keys = [k for k in dict.fromkeys(args.by) if k != "upstream"]
    print_table(
        ["UPSTREAM", *(k.upper() for k in keys), "REQUESTS", "PROMPT", "COMPLETION", "COST", "LAST"],
        [
            [
                row["upstream"],
                *(row["group"].get(k, "") or "-" for k in keys),
                str(row["requests"]),
                str(row["prompt_tokens"]),
                str(row["completion_tokens"]),
                f"{row['cost']:.4f} {row['currency']}".rstrip() if row["currency"] else "-",
                row["last_at"],
            ]
            for row in rows
        ],
    )
    return 0


def _nodes_history(client, args) -> int:
    from central.convert import timestamp
    from edgefleet.v1 import admin_pb2

    now = time.time()
    hourly = args.hours > MINUTE_POINTS_UP_TO_HOURS
    r = client.call(
        "GetMetricsHistory",
        admin_pb2.GetMetricsHistoryRequest(
            scopes=[f"node:{args.node_id}"],
            resolution=admin_pb2.ROLLUP_RESOLUTION_HOUR if hourly else admin_pb2.ROLLUP_RESOLUTION_MINUTE,
            start=timestamp(now - args.hours * 3600),
            end=timestamp(now),
        ),
    )
    points = [
        {
            "start": iso(p.start),
            "period_seconds": p.period_seconds,
            "heartbeats": p.heartbeats,
            "requests": p.requests,
            "errors": p.errors,
            "generated_tokens": p.generated_tokens,
            "prompt_tokens": p.prompt_tokens,
            "cached_prompt_tokens": p.cached_prompt_tokens,
            "tokens_per_second": p.tokens_per_second,
            "latency_p50_ms": p.latency_p50_ms,
            "latency_p99_ms": p.latency_p99_ms,
            "ttft_p50_ms": p.ttft_p50_ms,
            "ttft_p99_ms": p.ttft_p99_ms,
            "cache_hits": p.cache_hits,
            "cache_lookups": p.cache_lookups,
            "queue_depth_mean": p.queue_depth_mean,
            "queue_depth_max": p.queue_depth_max,
            "upstream_requests": p.upstream_requests,
            "upstream_cost": p.upstream_cost,
        }
        for series in r.series
        for p in series.points
    ]
    if args.json:
        print_json({"node_id": args.node_id, "points": points})
        return 0
    if not points:
        print(f"no heartbeats from {args.node_id} since {iso_seconds(now - args.hours * 3600)}")
        return 0
    print_table(
        ["START", "REQ", "ERR", "TOK/S", "P50 MS", "P99 MS", "TTFT P50", "QUEUE MAX", "BURST"],
        [
            [
                p["start"],
                str(p["requests"]),
                str(p["errors"]),
                f"{p['tokens_per_second']:.1f}",
                f"{p['latency_p50_ms']:.0f}",
                f"{p['latency_p99_ms']:.0f}",
                f"{p['ttft_p50_ms']:.0f}",
                str(p["queue_depth_max"]),
                str(p["upstream_requests"]),
            ]
            for p in points
        ],
    )
    return 0


HANDLERS = {
    ("usage", ""): _usage,
    ("nodes", "history"): _nodes_history,
}
