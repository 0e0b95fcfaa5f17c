"""The heartbeat window's new figures (issue 17): exact latency and TTFT bucket counts, TTFT percentiles, prompt
and cached prompt tokens, upstream usage folded to central's bound, and the whole status under 7 KiB."""

import time

import pytest

from edge_agent.control.client import ModelInfo, encode_status
from edge_agent.control.interval_stats import (
    MAX_UPSTREAM_USAGE,
    OTHER_UPSTREAM,
    IntervalStats,
    UpstreamUsage,
    fold_usage,
)
from edge_agent.control.telemetry import SystemSample, Temperature
from edgefleet import histogram_buckets, report_limits
from edgefleet.v1 import common_pb2


def test_latency_buckets_count_every_request_exactly_past_the_sample_bound():
    stats = IntervalStats(now=0.0, max_samples=10)
    for ms in range(1, 1001):
        stats.record_request(ms / 1000.0, error=False)
    w = stats.take(0, now=1.0)
    assert len(w.latency_buckets) == histogram_buckets.BUCKETS
    assert sum(w.latency_buckets) == 1000  # every request, though only 10 were sampled
    assert list(w.latency_buckets) == histogram_buckets.counts(range(1, 1001))
    # 1..5 ms fall in the first bucket (<= 5 ms), 6..10 in the second.
    assert w.latency_buckets[0] == 5 and w.latency_buckets[1] == 5


def test_ttft_buckets_and_percentiles():
    stats = IntervalStats(now=0.0)
    for ms in range(1, 101):
        stats.record_ttft(ms / 1000.0)
    w = stats.take(0, now=1.0)
    assert sum(w.ttft_buckets) == 100
    assert w.ttft_p50_ms == pytest.approx(50.0) and w.ttft_p99_ms == pytest.approx(99.0)
    empty = stats.take(0, now=2.0)
    assert sum(empty.ttft_buckets) == 0 and (empty.ttft_p50_ms, empty.ttft_p99_ms) == (0.0, 0.0)


def test_prompt_and_cached_tokens_are_deltas_of_the_engine_counters():
    stats = IntervalStats(now=0.0, prompt_tokens_total=100, cached_prompt_tokens_total=40)
    w = stats.take(0, now=1.0, prompt_tokens_total=350, cached_prompt_tokens_total=140)
    assert (w.prompt_tokens, w.cached_prompt_tokens) == (250, 100)
    # A model switch resets the engine's counters: the new totals are what was counted since.
    w = stats.take(0, now=2.0, prompt_tokens_total=30, cached_prompt_tokens_total=10)
    assert (w.prompt_tokens, w.cached_prompt_tokens) == (30, 10)
    # Never more cached than given, whatever the readings.
    w = stats.take(0, now=3.0, prompt_tokens_total=31, cached_prompt_tokens_total=20)
    assert (w.prompt_tokens, w.cached_prompt_tokens) == (1, 1)


def _usage(upstream, tenant="acme", data_class="public", cost=0.0, currency="", tokens=10, local=0):
    return UpstreamUsage(upstream, tenant, data_class, 1, tokens, tokens, cost, currency, local)


def test_upstream_usage_adds_up_per_upstream_tenant_and_class():
    stats = IntervalStats(now=0.0)
    stats.record_upstream(_usage("cloud", cost=0.5, currency="EUR"))
    stats.record_upstream(_usage("cloud", cost=0.25, currency="EUR", local=1))
    stats.record_upstream(_usage("cloud", tenant="globex"))
    w = stats.take(0, now=1.0)
    by_tenant = {u.tenant: u for u in w.upstream_usage}
    acme = by_tenant["acme"]
    assert (acme.requests, acme.prompt_tokens, acme.completion_tokens) == (2, 20, 20)
    assert acme.cost == pytest.approx(0.75) and acme.currency == "EUR" and acme.locally_counted == 1
    assert by_tenant["globex"].requests == 1
    assert stats.take(0, now=2.0).upstream_usage == ()


def test_fold_keeps_the_costliest_and_adds_the_rest_into_other_per_currency():
    entries = [_usage(f"u{i}", cost=float(i), currency="USD") for i in range(30)]
    entries += [_usage("eu", cost=0.1, currency="EUR"), _usage("free", cost=0.0, currency="")]
    folded = fold_usage(entries)
    assert len(folded) <= MAX_UPSTREAM_USAGE
    others = [u for u in folded if u.upstream == OTHER_UPSTREAM]
    assert {u.currency for u in others} == {"USD", "EUR", ""}
    assert all(u.tenant == "" and u.data_class == "" for u in others)
    assert folded[0].upstream == "u29"  # the costliest kept as it is
    # Nothing is lost: requests, tokens and each currency's cost add up to the same.
    assert sum(u.requests for u in folded) == len(entries)
    assert sum(u.prompt_tokens for u in folded) == sum(u.prompt_tokens for u in entries)
    for currency in ("USD", "EUR", ""):
        assert sum(u.cost for u in folded if u.currency == currency) == pytest.approx(
            sum(u.cost for u in entries if u.currency == currency)
        )
    assert fold_usage(entries[:3]) == sorted(entries[:3], key=lambda u: -u.cost)


def test_fold_limit_must_be_positive():
    with pytest.raises(ValueError):
        fold_usage([], limit=0)


def _status(window, running=0):
    model = ModelInfo("smollm2", "1", "0" * 64)
    system = SystemSample(0.0, 2, 0.0, 0, 0, 0, 0, tuple(Temperature(f"s{i}", 40.0) for i in range(64)), ())
    raw = encode_status("test", model, system, window, 3, 0, 1.0, time.time(), running=running)
    return raw, common_pb2.NodeStatus.FromString(raw)


def test_the_status_carries_the_new_inference_fields():
    stats = IntervalStats(now=0.0)
    stats.record_request(0.2, error=False)
    stats.record_ttft(0.05)
    stats.record_upstream(_usage("cloud", cost=0.5, currency="EUR", local=1))
    window = stats.take(5, now=1.0, prompt_tokens_total=40, cached_prompt_tokens_total=12)
    _, status = _status(window, running=2)
    inference = status.inference
    assert (inference.prompt_tokens, inference.cached_prompt_tokens, inference.running) == (40, 12, 2)
    assert list(inference.latency_buckets) == histogram_buckets.counts([200.0])
    assert list(inference.ttft_buckets) == histogram_buckets.counts([50.0])
    assert inference.ttft_p50_ms == pytest.approx(50.0)
    (usage,) = inference.upstream_usage
    assert (usage.upstream, usage.tenant, usage.currency, usage.locally_counted) == ("cloud", "acme", "EUR", 1)


def test_the_status_stays_under_7_kib_with_every_bound_at_its_worst():
    stats = IntervalStats(now=0.0)
    for i in range(200):
        # Names at their bounds' lengths (and past them): the agent folds and clips, central never refuses.
        stats.record_upstream(
            UpstreamUsage(f"{i:03d}" + "u" * 80, "t" * 200, "c" * 300, 1, 10**9, 10**9, 1.5, "USD", 1)
        )
        stats.record_request(i / 10.0, error=False)
        stats.record_ttft(i / 100.0)
    window = stats.take(10**9, now=1.0, prompt_tokens_total=10**9)
    raw, status = _status(window)
    assert len(raw) <= report_limits.MAX_REPORT_BYTES
    assert report_limits.problem(status) == ""
    usage = status.inference.upstream_usage
    assert 1 <= len(usage) <= MAX_UPSTREAM_USAGE
    assert sum(u.requests for u in usage) == 200  # folded, not dropped
    assert sum(status.inference.latency_buckets) == 200
