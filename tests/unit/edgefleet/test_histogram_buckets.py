"""The shared latency buckets: counting, merging, quantiles and shares under a bound."""

from __future__ import annotations

import pytest

from edgefleet import histogram_buckets as hb


def test_values_fall_in_the_bucket_whose_upper_bound_holds_them():
    assert hb.bucket_of(0) == 0
    assert hb.bucket_of(5) == 0  # bounds are inclusive, as Prometheus's le
    assert hb.bucket_of(5.01) == 1
    assert hb.bucket_of(2000) == hb.BOUNDS_MS.index(2000)
    assert hb.bucket_of(10**9) == len(hb.BOUNDS_MS)  # +Inf


def test_bounds_ascend_and_include_the_round_figures_objectives_use():
    assert list(hb.BOUNDS_MS) == sorted(set(hb.BOUNDS_MS))
    for bound in (100, 500, 1000, 2000, 5000):
        assert bound in hb.BOUNDS_MS


def test_counts_and_merge_add_up():
    a = hb.counts([1, 7, 7, 3000, 10**6])
    b = hb.counts([7])
    assert sum(a) == 5
    merged = hb.merged(a, b)
    assert merged[1] == 3 and merged[-1] == 1 and sum(merged) == 6


def test_older_and_newer_agents_bucket_lists_are_normalized():
    assert hb.normalized([]) == [0] * hb.BUCKETS
    longer = [1] * (hb.BUCKETS + 3)
    assert hb.normalized(longer)[-1] == 4 and len(hb.normalized(longer)) == hb.BUCKETS


def test_quantile_interpolates_inside_the_bucket():
    c = hb.counts([60] * 100)  # all in (50, 100]
    assert hb.quantile(c, 0.5) == pytest.approx(75.0)
    assert hb.quantile(c, 1.0) == pytest.approx(100.0)
    assert hb.quantile([0] * hb.BUCKETS, 0.99) == 0.0


def test_quantile_in_the_overflow_bucket_reads_as_the_last_bound():
    assert hb.quantile(hb.counts([10**7]), 0.99) == hb.BOUNDS_MS[-1]


def test_quantile_refuses_a_q_outside_0_1():
    with pytest.raises(ValueError, match=r"within 0\.\.1"):
        hb.quantile([1], 99)


def test_count_at_most_is_exact_at_a_bound_and_interpolated_between():
    c = hb.counts([40, 1500, 1900, 2500])
    assert hb.count_at_most(c, 2000) == 3
    assert hb.count_at_most(c, 10**9) == 4 - 0  # nothing lands in +Inf here
    assert hb.count_at_most(hb.counts([10**7]), 10**9) == 0  # +Inf never counts as fast
    assert hb.count_at_most(hb.counts([60]), 75) == pytest.approx(0.5)
    assert hb.count_at_most(c, 0) == 0
