import threading

import pytest

from edge_agent.control.interval_stats import IntervalStats, percentile, token_delta


def test_percentile_nearest_rank():
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile(values, 0) == 1.0
    assert percentile([7.0], 99) == 7.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0


def test_percentile_of_nothing_is_zero():
    assert percentile([], 50) == 0.0


def test_percentile_rejects_q_outside_0_100():
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_empty_window_gives_zeros():
    w = IntervalStats(now=10.0, generated_tokens_total=5).take(generated_tokens_total=5, now=40.0)
    assert w.interval_seconds == 30.0
    assert (w.requests, w.errors, w.generated_tokens, w.cache_hits, w.cache_lookups) == (0, 0, 0, 0, 0)
    assert (w.tokens_per_second, w.latency_p50_ms, w.latency_p99_ms) == (0.0, 0.0, 0.0)


def test_latency_percentiles_of_1_to_100_ms():
    stats = IntervalStats(now=0.0)
    for ms in reversed(range(1, 101)):
        stats.record_request(ms / 1000.0, error=False)
    w = stats.take(0, now=1.0)
    assert w.requests == 100
    assert w.latency_p50_ms == pytest.approx(50.0)
    assert w.latency_p99_ms == pytest.approx(99.0)


def test_errors_are_counted_with_requests():
    stats = IntervalStats(now=0.0)
    for i in range(10):
        stats.record_request(0.01, error=i % 3 == 0)
    w = stats.take(0, now=1.0)
    assert (w.requests, w.errors) == (10, 4)


def test_token_delta_from_construction_and_tokens_per_second():
    stats = IntervalStats(now=100.0, generated_tokens_total=1_000)
    w1 = stats.take(generated_tokens_total=1_600, now=130.0)
    assert w1.generated_tokens == 600
    assert w1.tokens_per_second == pytest.approx(20.0)
    w2 = stats.take(generated_tokens_total=1_700, now=140.0)
    assert w2.interval_seconds == pytest.approx(10.0)
    assert w2.generated_tokens == 100
    assert w2.tokens_per_second == pytest.approx(10.0)


def test_token_counter_reset_counts_the_new_total():
    assert token_delta(500, 520) == 20
    assert token_delta(500, 30) == 30  # engine restarted from zero
    stats = IntervalStats(now=0.0, generated_tokens_total=500)
    assert stats.take(generated_tokens_total=30, now=1.0).generated_tokens == 30


def test_zero_length_window_has_no_rate():
    stats = IntervalStats(now=5.0)
    assert stats.take(generated_tokens_total=10, now=5.0).tokens_per_second == 0.0


def test_cache_hits_and_lookups():
    stats = IntervalStats(now=0.0)
    for hit in (True, False, True, True, False):
        stats.record_cache(hit)
    w = stats.take(0, now=1.0)
    assert (w.cache_hits, w.cache_lookups) == (3, 5)


def test_window_resets_after_take():
    stats = IntervalStats(now=0.0)
    stats.record_request(0.5, error=True)
    stats.record_cache(True)
    first = stats.take(generated_tokens_total=10, now=1.0)
    assert (first.requests, first.errors, first.cache_hits, first.generated_tokens) == (1, 1, 1, 10)
    second = stats.take(generated_tokens_total=10, now=3.0)
    assert second.interval_seconds == pytest.approx(2.0)
    assert (second.requests, second.errors, second.cache_hits, second.cache_lookups) == (0, 0, 0, 0)
    assert (second.generated_tokens, second.latency_p50_ms, second.latency_p99_ms) == (0, 0.0, 0.0)


def test_latency_sample_is_bounded_and_counts_stay_exact():
    stats = IntervalStats(now=0.0, max_samples=100)
    for ms in range(1, 10_001):
        stats.record_request(ms / 1000.0, error=ms % 10 == 0)
    assert len(stats._latencies) == 100  # the memory bound itself
    w = stats.take(0, now=1.0)
    assert (w.requests, w.errors) == (10_000, 1_000)
    # A reservoir sample spans the whole window, not just its first 100 requests
    # (which would give p50 = 50 ms); these bounds are loose on purpose.
    assert 3_000 < w.latency_p50_ms < 7_000
    assert w.latency_p99_ms > 8_500


def test_max_samples_must_be_positive():
    with pytest.raises(ValueError):
        IntervalStats(now=0.0, max_samples=0)


def test_concurrent_records_lose_no_counts():
    stats = IntervalStats(now=0.0, max_samples=1_000)
    threads, per_thread = 8, 5_000
    start = threading.Barrier(threads)

    def feed(worker: int) -> None:
        start.wait()
        for i in range(per_thread):
            stats.record_request(0.001 * worker, error=i % 5 == 0)
            stats.record_cache(hit=i % 2 == 0)

    workers = [threading.Thread(target=feed, args=(n,)) for n in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    w = stats.take(0, now=1.0)
    assert w.requests == threads * per_thread
    assert w.errors == threads * per_thread // 5
    assert (w.cache_lookups, w.cache_hits) == (threads * per_thread, threads * per_thread // 2)
