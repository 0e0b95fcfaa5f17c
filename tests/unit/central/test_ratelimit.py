"""Enrollment's admission control and refusal tally (central.ratelimit): pure logic, clock passed in."""

import pytest

from central.ratelimit import OTHER_PEER, ConcurrencyCap, PeerBuckets, RefusalTally, peer_host


@pytest.mark.parametrize(
    "peer, key",
    [
        ("ipv4:10.0.0.7:5123", "10.0.0.7"),
        ("ipv6:[::1]:443", "::1"),
        ("ipv6:%5B::1%5D:443", "::1"),
        ("ipv6:[2001:db8:1:2:aaaa:bbbb:cccc:dddd]:443", "2001:db8:1:2::/64"),
        ("ipv6:[2001:db8:1:2::9]:1", "2001:db8:1:2::/64"),
        ("ipv6:[::ffff:10.0.0.7]:1", "10.0.0.7"),
        ("unix:/run/edgefleet.sock", "unix:/run/edgefleet.sock"),
        ("", OTHER_PEER),
    ],
)
def test_peer_host_keys_by_address_not_port(peer, key):
    assert peer_host(peer) == key


def test_bucket_allows_a_burst_then_the_rate():
    buckets = PeerBuckets(rate_per_s=5.0, burst=20)
    assert all(buckets.take("a", 100.0) == 0.0 for _ in range(20))
    assert buckets.take("a", 100.0) == pytest.approx(0.2)
    assert buckets.take("a", 100.1) == pytest.approx(0.1)  # half a token back: half the wait
    assert buckets.take("a", 100.2) == 0.0  # one whole token refilled
    assert buckets.take("a", 100.2) > 0


def test_refused_calls_do_not_spend_and_peers_are_apart():
    buckets = PeerBuckets(rate_per_s=1.0, burst=1)
    assert buckets.take("a", 0.0) == 0.0
    for _ in range(1000):  # hammering while empty costs nothing more
        assert buckets.take("a", 0.5) > 0
    assert buckets.take("a", 1.0) == 0.0
    assert buckets.take("b", 0.5) == 0.0


def test_bucket_refills_to_the_burst_not_beyond():
    buckets = PeerBuckets(rate_per_s=10.0, burst=3)
    buckets.take("a", 0.0)
    assert [buckets.take("a", 1000.0) for _ in range(4)] == [0.0, 0.0, 0.0, pytest.approx(0.1)]


def test_buckets_tracked_are_bounded_dropping_full_ones_first():
    buckets = PeerBuckets(rate_per_s=1.0, burst=2, max_peers=3)
    buckets.take("busy", 0.0)
    buckets.take("busy", 0.0)  # empty: it must be kept, or it would start full again
    buckets.take("a", 0.0)
    buckets.take("b", 0.0)
    buckets.take("c", 1.0)  # one too many: a and b are full again by now, busy is not
    assert len(buckets) == 2
    assert buckets.take("busy", 1.0) == 0.0 and buckets.take("busy", 1.0) > 0
    for i in range(100):  # none full: the least recently used go, and the count stays bounded
        buckets.take(f"p{i}", 1.0)
    assert len(buckets) == 3


def test_bucket_rejects_nonsense_limits():
    with pytest.raises(ValueError):
        PeerBuckets(rate_per_s=0, burst=1)
    with pytest.raises(ValueError):
        ConcurrencyCap(0)


def test_concurrency_cap():
    cap = ConcurrencyCap(2)
    assert cap.enter() and cap.enter()
    assert not cap.enter()
    cap.leave()
    assert cap.enter()
    cap.leave(), cap.leave(), cap.leave()
    assert cap.in_flight == 0


def test_tally_reports_each_key_first_at_once_and_the_rest_per_window():
    tally = RefusalTally(window_s=60.0, max_keys=10)
    assert tally.add(0.0, "10.0.0.1", "unknown token") is True
    assert [tally.add(t, "10.0.0.1", "unknown token") for t in (1.0, 2.0, 3.0)] == [False, False, False]
    assert tally.add(4.0, "10.0.0.1", "rate limited") is True
    assert not tally.due(59.9)
    assert tally.due(60.0)
    (count,) = tally.drain()
    assert (count.peer, count.reason, count.count, count.first_at, count.last_at) == (
        "10.0.0.1",
        "unknown token",
        3,
        1.0,
        3.0,
    )
    # A new window: the key's first is reported at once again.
    assert not tally.due(1000.0)
    assert tally.add(1000.0, "10.0.0.1", "unknown token") is True


def test_tally_is_bounded_whatever_callers_send():
    tally = RefusalTally(window_s=60.0, max_keys=5)
    at_once = sum(tally.add(0.0, f"10.0.{i // 256}.{i % 256}", "rate limited") for i in range(50_000))
    counts = tally.drain()
    assert at_once == 5
    assert len(counts) == 1 and counts[0].peer == OTHER_PEER and counts[0].count == 50_000 - 5


def test_tally_sorts_the_largest_first_and_keeps_the_token_id_apart():
    tally = RefusalTally(window_s=1.0, max_keys=10)
    for _ in range(3):
        tally.add(0.0, "a", "expired token", "tok111")
    for _ in range(5):
        tally.add(0.0, "a", "expired token", "tok222")
    assert [(c.target, c.count) for c in tally.drain()] == [("tok222", 4), ("tok111", 2)]
    assert tally.drain() == []
