"""Service level objectives: (objective, rollup totals, clock) → compliance, error budget, burn rates, alert.

Nothing here reads a clock, the network or the store. The objectives handler
(:mod:`central.services.objectives`) asks :func:`read_range` which rollup rows a window covers, sums them from
the store, and passes a reader to :func:`evaluate` together with `now`; so a unit test moves the clock and
feeds the totals it wants.

An objective has up to two parts, each judged on its own and each with its own error budget:

- availability: ``availability_percent`` of requests must not fail (5xx or 429);
- latency: ``latency_percent`` of requests must finish within ``latency_threshold_ms``. A request's latency is
  read from the shared latency buckets (:mod:`edgefleet.histogram_buckets`): slow = bucketed requests -
  ``count_at_most(buckets, threshold)``, exact when the threshold is one of ``BOUNDS_MS`` and interpolated
  inside a bucket otherwise. Requests from agents that send no buckets (older than issue 17) are left out of
  the latency part instead of being counted slow; with every agent current, bucketed requests = requests.

The error budget of a part over the window is ``1 - bad_ratio / (1 - target)``: 1.0 untouched, 0 spent,
negative overspent; the objective's is the smaller of its parts', and 1.0 with no requests. A burn rate over
a shorter window is ``bad_ratio_in_that_window / (1 - target)``: 1.0 spends exactly the budget over the
objective's window. The alert follows the multi-window, multi-burn-rate rules of Google's SRE workbook
(chapter 5), the same windows and thresholds as the Prometheus rules ``edgefleet slo rules`` writes
(:mod:`central.slo_rules`): a part pages when both windows of a page pair burn faster than its factor, tickets
likewise; the thresholds are the workbook's, tuned for a 30-day window (14.4 over 1 h spends 2 % of a
30-day budget) and kept as they are for other windows, as the workbook does.

Which rollup rows a window reads (:func:`read_range`): per-minute rows for windows up to 24 h (central keeps
24 h of them), per-hour rows beyond (30 days kept). A window is whole rows ending with the current, still
filling one: ``ceil(window / row)`` rows, so it covers between ``window - row`` and ``window`` seconds of
history; a 5-minute burn rate reads 4 to 5 minutes, a 30-day objective 719 to 720 hours.

Which scopes an objective reads (:func:`label_scopes`, :func:`node_scopes`): an empty selector reads the
"fleet" rollup; a selector of one pair whose key is one of central's rollup labels (``--rollup-labels``)
reads that label group's rollup ("label:region=eu"); any other selector (two pairs, or a key central does not
roll up by) reads the per-node rollups of the nodes that match it now, summed. So the label group counts a
node's traffic under the labels it had when it reported, while node scopes count a relabelled node's whole
history under its labels of now.

    ObjectiveError    an objective that cannot be kept: a bad name, selector, percentage, threshold or window
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from central.errors import CentralError
from central.labels import LabelError, validate_labels
from edgefleet import histogram_buckets

MINUTE_S = 60
HOUR_S = 3600
# The longest window read from per-minute rows; longer ones read per-hour rows.
MINUTE_ROWS_UP_TO_S = 86400
MIN_WINDOW_S = 3600.0
MAX_WINDOW_S = 90 * 86400.0
DEFAULT_WINDOW_S = 30 * 86400.0
DEFAULT_LATENCY_PERCENT = 99.0

# The burn-rate windows, seconds: 5m, 30m, 1h, 2h, 6h, 1d, 3d.
BURN_WINDOWS_S: tuple[int, ...] = (300, 1800, 3600, 7200, 21600, 86400, 259200)
PAGE, TICKET = "page", "ticket"
# (severity, ((long window s, short window s, burn factor), ...)): a severity fires when, for one of its pairs,
# both windows burn faster than the factor. Google's SRE workbook, "Alerting on SLOs", multiwindow table.
ALERT_RULES: tuple[tuple[str, tuple[tuple[int, int, float], ...]], ...] = (
    (PAGE, ((3600, 300, 14.4), (21600, 1800, 6.0))),
    (TICKET, ((86400, 7200, 3.0), (259200, 21600, 1.0))),
)

FLEET_SCOPE = "fleet"
_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")


class ObjectiveError(CentralError, ValueError):
    """An objective that cannot be kept; the message names the field and what it allows."""


@dataclass(frozen=True)
class Objective:
    """An objective as operators set it. A part is off when its figure is 0 (availability_percent, or
    latency_threshold_ms). Holds a dict, so immutable by convention but not hashable."""

    name: str
    selector: Mapping[str, str] = field(default_factory=dict)
    availability_percent: float = 0.0
    latency_threshold_ms: float = 0.0
    latency_percent: float = DEFAULT_LATENCY_PERCENT
    window_s: float = DEFAULT_WINDOW_S

    @property
    def has_availability(self) -> bool:
        return self.availability_percent > 0

    @property
    def has_latency(self) -> bool:
        return self.latency_threshold_ms > 0


@dataclass(frozen=True)
class Totals:
    """What a set of scopes did over a span: requests, failed ones, and per-bucket latency counts (the shared
    buckets, not cumulative; empty when none were reported)."""

    requests: int = 0
    errors: int = 0
    latency_buckets: Sequence[int] = ()

    @property
    def bucketed(self) -> int:
        """Requests with a latency in the buckets."""
        return sum(histogram_buckets.normalized(self.latency_buckets))

    def slow(self, threshold_ms: float) -> float:
        """Bucketed requests slower than threshold_ms (fractional when it falls inside a bucket)."""
        return max(0.0, self.bucketed - histogram_buckets.count_at_most(self.latency_buckets, threshold_ms))


@dataclass(frozen=True)
class ReadRange:
    """Rollup rows of period_s seconds whose start is in [start, end)."""

    period_s: int
    start: float
    end: float


@dataclass(frozen=True)
class BurnRate:
    window_s: int
    availability: float  # 0 where the objective has no availability part
    latency: float  # 0 where it has no latency part


@dataclass(frozen=True)
class Status:
    """How an objective stands over its window, now."""

    requests: int
    errors: int
    slow_requests: int
    availability_percent: float  # 100 with no requests
    latency_good_percent: float  # 100 with no bucketed requests
    compliant: bool
    error_budget_remaining: float
    burn_rates: tuple[BurnRate, ...]
    alert: str  # PAGE, TICKET or ""


# -- validation ------------------------------------------------------------------------------------------------------


def validated(objective: Objective) -> Objective:
    """The objective with its defaults filled in (latency_percent 0 → 99); ObjectiveError naming the first
    field that is wrong."""
    if not _NAME.fullmatch(objective.name):
        raise ObjectiveError(f"objective name {objective.name[:80]!r} must be 1 to 64 letters, digits, '.', '_' or '-'")
    try:
        selector = validate_labels(dict(objective.selector))
    except LabelError as exc:
        raise ObjectiveError(f"objective {objective.name}: selector: {exc}") from None
    availability = _percent(objective, "availability percent", objective.availability_percent, allow_zero=True)
    threshold = objective.latency_threshold_ms
    if not (math.isfinite(threshold) and threshold >= 0):
        raise ObjectiveError(
            f"objective {objective.name}: the latency threshold must be a number of milliseconds above 0, got"
            f" {threshold}"
        )
    latency_percent = objective.latency_percent or DEFAULT_LATENCY_PERCENT
    _percent(objective, "latency percent", latency_percent, allow_zero=False)
    if not availability and not threshold:
        raise ObjectiveError(
            f"objective {objective.name} has neither part: give an availability percent (e.g. 99.9), a latency"
            " threshold in milliseconds (e.g. 2000), or both"
        )
    window = objective.window_s
    if not (math.isfinite(window) and MIN_WINDOW_S <= window <= MAX_WINDOW_S):
        raise ObjectiveError(
            f"objective {objective.name}: the window must be from 1h to 90d (central keeps 30 days of hourly"
            f" rollups; a window past them reads what is kept), got {window:g} s"
        )
    return Objective(objective.name, selector, availability, threshold, latency_percent, window)


def _percent(objective: Objective, what: str, value: float, allow_zero: bool) -> float:
    if allow_zero and value == 0:
        return 0.0
    if not (math.isfinite(value) and 0 < value < 100):
        raise ObjectiveError(
            f"objective {objective.name}: the {what} must be above 0 and below 100 (e.g. 99.9), got {value}"
        )
    return value


# -- what to read ----------------------------------------------------------------------------------------------------


def read_range(window_s: float, now: float) -> ReadRange:
    """The rollup rows that stand for the `window_s` seconds before `now` (see the module's docstring)."""
    period = MINUTE_S if window_s <= MINUTE_ROWS_UP_TO_S else HOUR_S
    rows = max(1, math.ceil(window_s / period))
    end = math.floor(now / period) * period + period
    return ReadRange(period, float(end - rows * period), float(end))


def label_scopes(selector: Mapping[str, str], rollup_labels: Iterable[str]) -> list[str] | None:
    """The rollup scopes that answer for `selector` by themselves, or None when it needs the matching nodes'
    own scopes (:func:`node_scopes`)."""
    if not selector:
        return [FLEET_SCOPE]
    if len(selector) == 1:
        ((key, value),) = selector.items()
        if key in set(rollup_labels):
            return [f"label:{key}={value}"]
    return None


def node_scopes(node_ids: Iterable[str]) -> list[str]:
    return [f"node:{node_id}" for node_id in sorted(node_ids)]


# -- arithmetic ------------------------------------------------------------------------------------------------------


def error_ratio(totals: Totals) -> float:
    return totals.errors / totals.requests if totals.requests else 0.0


def slow_ratio(totals: Totals, threshold_ms: float) -> float:
    bucketed = totals.bucketed
    return totals.slow(threshold_ms) / bucketed if bucketed else 0.0


def budget_ratio(target_percent: float) -> float:
    """The share of requests that may be bad: 1 - target, rounded to 12 decimals so that 99.9 gives 0.001 and
    not 0.00099999999999989 (float's 0.999), which would put a window exactly on budget at burn 1.0000000000001."""
    return round(1 - target_percent / 100, 12)


def burn_rate(bad_ratio: float, target_percent: float) -> float:
    """How many times faster than the budget allows: bad_ratio / (1 - target)."""
    return bad_ratio / budget_ratio(target_percent)


def burn_rates(objective: Objective, totals: Totals) -> tuple[float, float]:
    """(availability, latency) burn rates of one window's totals; 0 for a part the objective lacks."""
    availability = burn_rate(error_ratio(totals), objective.availability_percent) if objective.has_availability else 0.0
    latency = (
        burn_rate(slow_ratio(totals, objective.latency_threshold_ms), objective.latency_percent)
        if objective.has_latency
        else 0.0
    )
    return availability, latency


def alert(rates: Mapping[int, tuple[float, float]]) -> str:
    """PAGE, TICKET or "" from (availability, latency) burn rates by window; each part is judged on its own, so
    one part's long window never pairs with the other's short one."""
    for severity, pairs in ALERT_RULES:
        for part in (0, 1):
            for long_s, short_s, factor in pairs:
                if rates[long_s][part] > factor and rates[short_s][part] > factor:
                    return severity
    return ""


def status(objective: Objective, window_totals: Totals, burn_totals: Mapping[int, Totals]) -> Status:
    """The status from the objective window's totals and each burn window's (keys: BURN_WINDOWS_S)."""
    t = window_totals
    rates = {w: burn_rates(objective, burn_totals[w]) for w in BURN_WINDOWS_S}
    budgets = []
    compliant = True
    if objective.has_availability:
        budget = 1 - burn_rate(error_ratio(t), objective.availability_percent)
        budgets.append(budget)
        compliant = compliant and _within(budget)
    if objective.has_latency:
        budget = 1 - burn_rate(slow_ratio(t, objective.latency_threshold_ms), objective.latency_percent)
        budgets.append(budget)
        compliant = compliant and _within(budget)
    return Status(
        requests=t.requests,
        errors=t.errors,
        slow_requests=round(t.slow(objective.latency_threshold_ms)) if objective.has_latency else 0,
        availability_percent=100 * (1 - error_ratio(t)),
        latency_good_percent=100 * (1 - slow_ratio(t, objective.latency_threshold_ms))
        if objective.has_latency
        else 100.0,
        compliant=compliant,
        error_budget_remaining=min(budgets) if budgets else 1.0,
        burn_rates=tuple(BurnRate(w, *rates[w]) for w in BURN_WINDOWS_S),
        alert=alert(rates),
    )


def _within(budget_remaining: float) -> bool:
    """Met when no more than the whole budget is spent; a rounding error's worth of overspend still counts as
    met (99.9 % of 1000 requests is exactly 1 failure allowed, which float arithmetic may overshoot by 1e-16)."""
    return budget_remaining >= -1e-9


def evaluate(objective: Objective, read: Callable[[ReadRange], Totals], now: float) -> Status:
    """The objective's status at `now`, reading each window's totals through `read` (the store's sums over the
    objective's scopes, in the handler; a test's own series in unit tests)."""
    windows = {w: read(read_range(w, now)) for w in BURN_WINDOWS_S}
    return status(objective, read(read_range(objective.window_s, now)), windows)
