"""central.slo: compliance, error budget, burn rates over windows and the alert, with a clock the test moves.

`Traffic` keeps per-minute and per-hour rows as central's rollups do (each request counted in both), and
answers central.slo's reads from them; the test records traffic at the clock's time and moves the clock.
"""

from __future__ import annotations

import math
from collections import defaultdict

import pytest

from central import slo
from edgefleet import histogram_buckets

DAY = 86400
T0 = 1_800_000_000.0  # a round minute and hour
OBJECTIVE = slo.Objective("eu", {"region": "eu"}, 99.9, 2000.0, 99.0, 30 * DAY)


class Traffic:
    """Rollup rows by (period, start), filled at the test's clock."""

    def __init__(self, now: float = T0):
        self.now = now
        self.rows: dict[tuple[int, int], list] = defaultdict(lambda: [0, 0, [0] * histogram_buckets.BUCKETS])
        self.reads: list[slo.ReadRange] = []

    def record(self, requests: int, errors: int = 0, latency_ms: float = 100.0) -> None:
        """`requests` requests now, `errors` of them failed, all taking latency_ms."""
        for period in (slo.MINUTE_S, slo.HOUR_S):
            row = self.rows[(period, int(self.now // period * period))]
            row[0] += requests
            row[1] += errors
            row[2][histogram_buckets.bucket_of(latency_ms)] += requests

    def steady(self, minutes: int, per_minute: int, errors: int = 0, latency_ms: float = 100.0) -> None:
        """That traffic every minute for `minutes` minutes, moving the clock along."""
        for _ in range(minutes):
            self.record(per_minute, errors, latency_ms)
            self.now += 60

    def read(self, r: slo.ReadRange) -> slo.Totals:
        self.reads.append(r)
        requests = errors = 0
        buckets = [0] * histogram_buckets.BUCKETS
        for (period, start), (n, e, b) in self.rows.items():
            if period == r.period_s and r.start <= start < r.end:
                requests += n
                errors += e
                buckets = histogram_buckets.merged(buckets, b)
        return slo.Totals(requests, errors, buckets)

    def status(self, objective: slo.Objective = OBJECTIVE) -> slo.Status:
        return slo.evaluate(objective, self.read, self.now)


def burn(status: slo.Status, window_s: int) -> slo.BurnRate:
    return next(b for b in status.burn_rates if b.window_s == window_s)


# -- the window's figures -----------------------------------------------------------------------------------------


def test_no_traffic_is_compliant_with_the_whole_budget():
    s = Traffic().status()
    assert (s.requests, s.errors, s.slow_requests) == (0, 0, 0)
    assert s.availability_percent == 100.0 and s.latency_good_percent == 100.0
    assert s.compliant and s.error_budget_remaining == 1.0 and s.alert == ""
    assert [b.window_s for b in s.burn_rates] == [300, 1800, 3600, 7200, 21600, 86400, 259200]
    assert all(b.availability == 0 and b.latency == 0 for b in s.burn_rates)


def test_compliance_and_budget_over_the_window():
    t = Traffic()
    t.steady(minutes=100, per_minute=1000, errors=0)  # 100,000 requests
    t.record(50, errors=50)  # 50 failures: half the 0.1% budget
    s = t.status()
    assert (s.requests, s.errors) == (100_050, 50)
    assert s.availability_percent == pytest.approx(100 * (1 - 50 / 100_050))
    assert s.compliant
    assert s.error_budget_remaining == pytest.approx(1 - (50 / 100_050) / 0.001)
    assert s.latency_good_percent == 100.0 and s.slow_requests == 0


def test_exactly_the_budget_spent_is_still_met():
    t = Traffic()
    t.record(1000, errors=1)  # 99.9% exactly
    s = t.status(slo.Objective("a", {}, 99.9, 0, 99, DAY))
    assert s.compliant
    assert s.error_budget_remaining == pytest.approx(0.0, abs=1e-9)


def test_all_errors_overspend_the_budget_far_below_zero():
    t = Traffic()
    t.steady(minutes=10, per_minute=100, errors=100)
    s = t.status()
    assert s.availability_percent == 0.0 and not s.compliant
    assert s.error_budget_remaining == pytest.approx(1 - 1 / 0.001)  # -999
    assert burn(s, 300).availability == pytest.approx(1000)
    assert s.alert == slo.PAGE


def test_latency_part_counts_requests_over_the_threshold():
    t = Traffic()
    t.steady(minutes=10, per_minute=97, latency_ms=1500)
    t.steady(minutes=10, per_minute=3, latency_ms=2500)  # 30 of 1000 slower than 2000 ms
    s = t.status()
    assert s.slow_requests == 30
    assert s.latency_good_percent == pytest.approx(97.0)
    assert not s.compliant  # 97% < 99%
    assert s.error_budget_remaining == pytest.approx(1 - 0.03 / 0.01)  # -2: the latency part, the smaller
    assert s.availability_percent == 100.0


def test_a_threshold_at_a_bound_is_exact_and_one_inside_a_bucket_interpolates():
    totals = slo.Totals(100, 0, histogram_buckets.counts([1000] * 50 + [1400] * 50))
    assert totals.slow(1000) == 50  # 1000 is a bound: the 1400 ms ones are over it
    assert totals.slow(1500) == 0
    assert totals.slow(1250) == pytest.approx(25)  # halfway through (1000, 1500]: half of its 50 assumed slower


def test_requests_without_buckets_are_left_out_of_the_latency_part():
    # An agent older than the buckets reports requests but no latency_buckets: not counted slow.
    totals = slo.Totals(requests=500, errors=0, latency_buckets=())
    s = slo.status(OBJECTIVE, totals, {w: totals for w in slo.BURN_WINDOWS_S})
    assert s.slow_requests == 0 and s.latency_good_percent == 100.0 and s.compliant


def test_an_objective_without_a_latency_part_reports_no_latency_burn():
    t = Traffic()
    t.steady(minutes=5, per_minute=10, latency_ms=100_000)
    s = t.status(slo.Objective("avail", {}, 99.0, 0.0, 99.0, DAY))
    assert s.compliant and s.slow_requests == 0 and s.latency_good_percent == 100.0
    assert all(b.latency == 0 for b in s.burn_rates)


# -- burn rates over the windows, as the clock moves -------------------------------------------------------------


def test_a_burst_of_errors_shows_in_the_short_windows_then_leaves_them():
    t = Traffic()
    t.steady(minutes=6 * 60, per_minute=1000)  # 6 h clean
    t.steady(minutes=5, per_minute=1000, errors=20)  # 2% errors for 5 minutes: burn 20
    s = t.status()
    assert burn(s, 300).availability == pytest.approx(20, rel=0.25)  # 4 to 5 minute rows, all of them bad
    assert burn(s, 3600).availability == pytest.approx(20 * 5 / 60, rel=0.1)
    assert burn(s, 21600).availability < burn(s, 3600).availability
    assert s.alert == ""  # the 1 h window burns at about 1.7, under 14.4: no page for a short blip
    t.steady(minutes=10, per_minute=1000)  # 10 clean minutes later
    s = t.status()
    assert burn(s, 300).availability == 0
    assert burn(s, 1800).availability > 0


def test_fast_burn_pages_and_only_when_both_windows_burn():
    t = Traffic()
    t.steady(minutes=6 * 60, per_minute=1000)  # 6 h clean
    t.steady(minutes=60, per_minute=1000, errors=20)  # then burn 20 for an hour
    assert t.status().alert == slo.PAGE
    t.steady(minutes=6, per_minute=1000, errors=0)  # the 5 m window recovers: 1 h still high
    s = t.status()
    assert burn(s, 3600).availability > 14.4 and burn(s, 300).availability == 0
    assert burn(s, 21600).availability < 6  # the 6 h / 30 m pair has not fired either
    assert s.alert != slo.PAGE


def test_slow_burn_tickets_without_paging():
    t = Traffic()
    # burn 2 (0.2% errors) for a day and a half: past 1 for 3 d and 6 h, under 3 for 1 d, never near 6 or 14.4.
    t.steady(minutes=36 * 60, per_minute=500, errors=1)
    s = t.status()
    assert burn(s, 259200).availability == pytest.approx(2, rel=0.01)
    assert s.alert == slo.TICKET


def test_latency_burn_alerts_on_its_own():
    t = Traffic()
    t.steady(minutes=60, per_minute=100, latency_ms=5000)  # every request slower than 2000 ms
    s = t.status()
    assert burn(s, 300).latency == pytest.approx(100)  # slow ratio 1 / budget 0.01
    assert burn(s, 300).availability == 0
    assert s.alert == slo.PAGE


def test_one_parts_long_window_never_pairs_with_the_others_short_one():
    rates = {w: (0.0, 0.0) for w in slo.BURN_WINDOWS_S}
    rates[3600] = (20.0, 0.0)  # availability burns over 1 h ...
    rates[300] = (0.0, 20.0)  # ... latency over 5 m
    assert slo.alert(rates) == ""
    rates[300] = (20.0, 20.0)
    assert slo.alert(rates) == slo.PAGE


@pytest.mark.parametrize(
    ("rates", "expected"),
    [
        ({3600: 14.5, 300: 14.5}, "page"),
        ({3600: 14.4, 300: 20}, ""),  # strictly above the factor
        ({21600: 6.1, 1800: 6.1}, "page"),
        ({86400: 3.1, 7200: 3.1}, "ticket"),
        ({259200: 1.1, 21600: 1.1}, "ticket"),
        ({259200: 1.1, 21600: 0.9}, ""),
        ({3600: 15, 300: 15, 86400: 4, 7200: 4}, "page"),  # page wins
    ],
)
def test_alert_rules_are_the_workbooks(rates, expected):
    full = {w: (rates.get(w, 0.0), 0.0) for w in slo.BURN_WINDOWS_S}
    assert slo.alert(full) == expected


# -- which rows and scopes ------------------------------------------------------------------------------------------


def test_windows_up_to_a_day_read_minutes_and_longer_ones_hours():
    now = T0 + 90.5  # 1 min 30.5 s into an hour
    five = slo.read_range(300, now)
    assert five == slo.ReadRange(60, T0 + 60 - 240, T0 + 120)  # the current minute and the 4 before it
    day = slo.read_range(DAY, now)
    assert day.period_s == 60 and day.end - day.start == DAY
    three = slo.read_range(3 * DAY, now)
    assert three == slo.ReadRange(3600, T0 + 3600 - 3 * DAY, T0 + 3600)
    odd = slo.read_range(5400, now)  # 1 h 30 m: whole minutes
    assert odd.end - odd.start == 5400
    assert slo.read_range(36 * 3600 + 1, now).end - slo.read_range(36 * 3600 + 1, now).start == 37 * 3600


def test_evaluate_reads_each_window_once_at_the_clock():
    t = Traffic(now=T0 + 30)
    t.status()
    assert [r.period_s for r in t.reads] == [60, 60, 60, 60, 60, 60, 3600, 3600]
    assert t.reads[-1].end == T0 + 3600 and t.reads[-1].end - t.reads[-1].start == 30 * DAY


def test_scopes_of_a_selector():
    assert slo.label_scopes({}, ("region", "site")) == ["fleet"]
    assert slo.label_scopes({"region": "eu"}, ("region", "site")) == ["label:region=eu"]
    assert slo.label_scopes({"rack": "r1"}, ("region", "site")) is None  # not rolled up by: the nodes' own
    assert slo.label_scopes({"region": "eu", "site": "fra"}, ("region", "site")) is None
    assert slo.node_scopes(["n2", "n1"]) == ["node:n1", "node:n2"]


# -- validation -------------------------------------------------------------------------------------------------------


def test_validated_fills_the_default_latency_percent():
    o = slo.validated(slo.Objective("eu-latency", {"region": "eu"}, 0, 2000, 0, DAY))
    assert o.latency_percent == 99.0


@pytest.mark.parametrize(
    ("objective", "message"),
    [
        (slo.Objective("", {}, 99.9), "name"),
        (slo.Objective("a b", {}, 99.9), "name"),
        (slo.Objective("x" * 65, {}, 99.9), "name"),
        (slo.Objective("a", {"Region": "eu"}, 99.9), "selector"),
        (slo.Objective("a", {"region": "e u"}, 99.9), "selector"),
        (slo.Objective("a", {}, 100.0), "availability percent must be above 0 and below 100"),
        (slo.Objective("a", {}, -1.0), "availability percent"),
        (slo.Objective("a", {}, math.nan), "availability percent"),
        (slo.Objective("a", {}, 0, 2000, 100.0), "latency percent"),
        (slo.Objective("a", {}, 0, -5), "latency threshold"),
        (slo.Objective("a", {}, 0, math.inf), "latency threshold"),
        (slo.Objective("a", {}, 0, 0), "neither part"),
        (slo.Objective("a", {}, 99.9, 0, 99, 3599), "window must be from 1h to 90d"),
        (slo.Objective("a", {}, 99.9, 0, 99, 91 * DAY), "window must be from 1h to 90d"),
    ],
)
def test_validated_refuses_with_the_field_named(objective, message):
    with pytest.raises(slo.ObjectiveError, match=message):
        slo.validated(objective)
