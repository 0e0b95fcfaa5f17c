"""Prometheus rules for objectives: recording rules per burn window and multi-window burn-rate alerts.

Pure text from :class:`central.slo.Objective` values; ``edgefleet slo rules`` prints it for the stored
objectives and packaging/prometheus/edgefleet-slo-example.yml is its output for one example.

The rules read central's fleet metrics (docs/fleet.md, "Central's metrics"), summed over central's replicas
(each counts the heartbeats it received) and over every label but the objective's selector, which becomes
label matchers:

- ``edgefleet:slo_error_ratio:rateW{slo="NAME"}``: failed / all requests over W;
- ``edgefleet:slo_slow_ratio:rateW{slo="NAME"}``: 1 - requests within the threshold / all bucketed requests over
  W, from ``edgefleet_fleet_request_duration_seconds_bucket{le="T"}`` and its ``_count``.

W is each of :data:`central.slo.BURN_WINDOWS_S`. The alerts ``EdgefleetSLOBurnFast`` (severity page) and
``EdgefleetSLOBurnSlow`` (severity ticket) use the same window pairs and factors as :func:`central.slo.alert`,
one alert rule per objective part (label ``sli``: availability or latency).

PromQL reads the histogram's buckets exactly, so the latency threshold must be one of the shared bounds
(:data:`edgefleet.histogram_buckets.BOUNDS_MS`); central interpolates inside a bucket, Prometheus cannot without
``histogram_quantile``'s approximation. A threshold between bounds is refused (:class:`RulesError` names the
bounds either side) rather than rounded: rounding up to the next bound would quietly make the objective laxer
than the one the operator set, rounding down stricter; the operator chooses by setting the objective again.
A selector can only name central's rollup labels (``--rollup-labels``): no other label is on the metrics.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

from prometheus_client.utils import floatToGoString

from central.errors import CentralError
from central.fleet_metrics import label_names
from central.slo import ALERT_RULES, BURN_WINDOWS_S, PAGE, Objective, budget_ratio
from edgefleet import histogram_buckets

REQUESTS = "edgefleet_fleet_requests_total"
ERRORS = "edgefleet_fleet_request_errors_total"
DURATION = "edgefleet_fleet_request_duration_seconds"
ERROR_RATIO = "edgefleet:slo_error_ratio"
SLOW_RATIO = "edgefleet:slo_slow_ratio"
ALERT_NAMES = {PAGE: "EdgefleetSLOBurnFast", "ticket": "EdgefleetSLOBurnSlow"}
DEFAULT_ROLLUP_LABELS = ("region", "site")


class RulesError(CentralError, ValueError):
    """Objectives that Prometheus cannot judge exactly from central's metrics; the message lists each one."""


def window_name(seconds: int) -> str:
    """5m, 30m, 1h, 2h, 6h, 1d, 3d: Prometheus's duration, and the recording rule's suffix."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def le_label(threshold_ms: float) -> str:
    """The ``le`` label of a bound as central's exporter writes it (central.fleet_metrics.LE, prometheus_client's
    float formatting): 2000 ms → "2.0", 500 ms → "0.5"."""
    return floatToGoString(threshold_ms / 1000)


def problems(objective: Objective, rollup_labels: Iterable[str]) -> list[str]:
    """Why Prometheus cannot judge the objective exactly; empty when it can."""
    found = []
    labels = set(rollup_labels)
    missing = sorted(set(objective.selector) - labels)
    if missing:
        found.append(
            f"objective {objective.name} selects on {', '.join(missing)}, which central's metrics do not carry"
            f" (its --rollup-labels are {','.join(sorted(labels)) or 'none'}): add the key there and pass the same"
            " --rollup-labels here"
        )
    if objective.has_latency and objective.latency_threshold_ms not in histogram_buckets.BOUNDS_MS:
        t = objective.latency_threshold_ms
        below = max((b for b in histogram_buckets.BOUNDS_MS if b < t), default=None)
        above = min((b for b in histogram_buckets.BOUNDS_MS if b > t), default=None)
        either = " or ".join(f"{b:g}" for b in (below, above) if b is not None)
        found.append(
            f"objective {objective.name}'s latency threshold {t:g} ms is not a bucket bound, so PromQL cannot"
            f" count requests within it exactly: set it to {either} ms (`edgefleet slo set {objective.name}"
            " --p99-ms ...`)"
        )
    return found


def rules_yaml(objectives: Sequence[Objective], rollup_labels: Iterable[str] = DEFAULT_ROLLUP_LABELS) -> str:
    """The rules file for the objectives, one group each, by name; RulesError listing every problem when any
    objective cannot be written exactly (nothing is written then)."""
    labels = tuple(rollup_labels)
    found = [p for o in objectives for p in problems(o, labels)]
    try:
        names = dict(zip(labels, label_names(labels), strict=True))
    except ValueError as exc:
        found.append(str(exc))
    if found:
        raise RulesError("; ".join(found))
    lines = [
        "# Generated by `edgefleet slo rules`: recording rules and multi-window burn-rate alerts per objective",
        "# (Google SRE workbook, chapter 5), over central's fleet metrics summed across replicas. Regenerate it",
        "# after `edgefleet slo set` or `slo delete`; do not edit by hand.",
        "groups:",
    ]
    if not objectives:
        lines[-1] = "groups: []"
    for o in sorted(objectives, key=lambda o: o.name):
        lines += _group(o, names)
    return "\n".join(lines) + "\n"


def _q(text: str) -> str:
    """A YAML (and PromQL) double-quoted string: JSON's escapes are valid in both."""
    return json.dumps(text)


def _matchers(selector, names: dict[str, str], *extra: str) -> str:
    """Label matchers for the selector, each key under the Prometheus label name central exports it as."""
    parts = [f"{names[k]}={_q(v)}" for k, v in sorted(selector.items())] + list(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _group(o: Objective, names: dict[str, str]) -> list[str]:
    slo = _q(o.name)
    parts_text = []
    if o.has_availability:
        parts_text.append(f"availability {o.availability_percent:g}%")
    if o.has_latency:
        parts_text.append(f"{o.latency_percent:g}% within {o.latency_threshold_ms:g} ms")
    selector = ",".join(f"{k}={v}" for k, v in sorted(o.selector.items())) or "all nodes"
    lines = [
        f"  # {o.name}: {selector}; {', '.join(parts_text)}; judged by central over {window_name(int(o.window_s))}",
        f"  - name: {_q('edgefleet-slo-' + o.name)}",
        "    rules:",
    ]
    sel = _matchers(o.selector, names)
    within = _matchers(o.selector, names, f'le="{le_label(o.latency_threshold_ms)}"')
    for w in BURN_WINDOWS_S:
        r = window_name(w)
        if o.has_availability:
            expr = [f"sum(rate({ERRORS}{sel}[{r}]))", "/", f"sum(rate({REQUESTS}{sel}[{r}]))"]
            lines += _record(f"{ERROR_RATIO}:rate{r}", expr, slo)
        if o.has_latency:
            expr = [
                "1 - (",
                f"  sum(rate({DURATION}_bucket{within}[{r}]))",
                "  /",
                f"  sum(rate({DURATION}_count{sel}[{r}]))",
                ")",
            ]
            lines += _record(f"{SLOW_RATIO}:rate{r}", expr, slo)
    parts = []
    if o.has_availability:
        parts.append(("availability", ERROR_RATIO, o.availability_percent, "failed requests"))
    if o.has_latency:
        what = f"requests slower than {o.latency_threshold_ms:g} ms"
        parts.append(("latency", SLOW_RATIO, o.latency_percent, what))
    for severity, pairs in ALERT_RULES:
        for sli, metric, target, what in parts:
            budget = _number(budget_ratio(target))
            expr = []
            for long_s, short_s, factor in pairs:
                if expr:
                    expr.append("or")
                expr += [
                    "(",
                    f"  {metric}:rate{window_name(long_s)}{{slo={slo}}} > ({_number(factor)} * {budget})",
                    "  and",
                    f"  {metric}:rate{window_name(short_s)}{{slo={slo}}} > ({_number(factor)} * {budget})",
                    ")",
                ]
            windows = ", ".join(f"{window_name(a)} and {window_name(b)} above {_number(f)}" for a, b, f in pairs)
            lines += [f"      - alert: {ALERT_NAMES[severity]}", "        expr: |-"]
            lines += [f"          {line}" for line in expr]
            lines += [
                "        labels:",
                f"          severity: {severity}",
                f"          slo: {slo}",
                f"          sli: {sli}",
                "        annotations:",
                f"          summary: {_q(f'SLO {o.name} ({sli} {target:g}%) is burning its error budget')}",
                "          description: "
                + _q(
                    f"{what} spend objective {o.name}'s error budget ({budget} of requests) too fast: burn rate"
                    f" over {windows}; `edgefleet slo status {o.name}` shows every window"
                ),
            ]
    return lines


def _record(name: str, expr: list[str], slo: str) -> list[str]:
    return [
        f"      - record: {name}",
        "        expr: |-",
        *(f"          {line}" for line in expr),
        "        labels:",
        f"          slo: {slo}",
    ]


def _number(x: float) -> str:
    """A short exact-enough decimal: 0.001 rather than 0.0009999999999999..."""
    return f"{x:.10g}"
