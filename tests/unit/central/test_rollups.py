"""central.rollups: what one heartbeat adds to its scopes' minute rows (the store derives the hours), the label cap,
scope checks, and the heartbeat buffer writing the deltas at its flush (keeping them across a failed write)."""

import pytest

from central import rollups
from central.heartbeats import HeartbeatBuffer
from central.store import NodeRecord, RollupRow, SqliteFleetStore, StoreError, TokenRecord
from edgefleet import histogram_buckets
from edgefleet.v1 import common_pb2

T0 = 1_900_000_800.0  # a round hour

B = histogram_buckets.BUCKETS


def _status(requests=0, errors=0, queue=0, latency=(), ttft=(), usage=(), **inference):
    s = common_pb2.NodeStatus()
    inf = s.inference
    inf.requests, inf.errors, inf.queue_depth = requests, errors, queue
    inf.latency_buckets.extend(latency)
    inf.ttft_buckets.extend(ttft)
    for name, value in inference.items():
        setattr(inf, name, value)
    for u in usage:
        inf.upstream_usage.add(**u)
    return s


def _rows(rows):
    return {(r.scope, r.period_s, r.start): r for r in rows}


def test_one_beat_counts_in_the_fleet_its_node_and_its_label_groups_for_its_minute():
    acc = rollups.Accumulator(("region", "site"))
    beat = rollups.figures(
        _status(
            requests=4,
            errors=1,
            queue=3,
            latency=[1, 0, 3],
            ttft=[4],
            generated_tokens=50,
            prompt_tokens=20,
            cached_prompt_tokens=5,
            cache_hits=1,
            cache_lookups=2,
        )
    )
    acc.add("n1", {"region": "eu", "zone": "a"}, beat, at=7265.5)  # 02:01:05.5
    rows, usage = acc.take()
    assert usage == []
    got = _rows(rows)
    assert set(got) == {
        (scope, period, start) for scope in ("fleet", "node:n1", "label:region=eu") for period, start in ((60, 7260),)
    }, "minute rows only: the store derives the hours from them"
    r = got[("label:region=eu", 60, 7260)]
    assert (r.requests, r.errors, r.heartbeats, r.queue_depth_sum, r.queue_depth_max) == (4, 1, 1, 3, 3)
    assert (r.generated_tokens, r.prompt_tokens, r.cached_prompt_tokens, r.cache_hits, r.cache_lookups) == (
        50,
        20,
        5,
        1,
        2,
    )
    assert r.latency_buckets == (1, 0, 3) + (0,) * (B - 3)
    assert r.ttft_buckets == (4,) + (0,) * (B - 1)
    assert got[("fleet", 60, 7260)] == RollupRow(**{**r.__dict__, "scope": "fleet"})
    assert len(acc) == 0 and acc.take() == ([], [])


def test_beats_coalesce_per_row():
    acc = rollups.Accumulator(())
    acc.add("a", {}, rollups.figures(_status(requests=1, queue=5)), at=0)
    acc.add("b", {}, rollups.figures(_status(requests=2, queue=1)), at=30)
    acc.add("a", {}, rollups.figures(_status(requests=4, queue=2)), at=61)
    got = _rows(acc.take()[0])
    assert got[("fleet", 60, 0)].requests == 3 and got[("fleet", 60, 0)].queue_depth_max == 5
    assert got[("fleet", 60, 60)].requests == 4
    assert got[("node:a", 60, 0)].requests == 1 and got[("node:b", 60, 0)].requests == 2
    assert {period for _, period, _ in got} == {60}


def test_many_beats_of_a_node_in_a_minute_add_up_whatever_their_number():
    acc = rollups.Accumulator(("region",))
    for i in range(1, 41):  # past the number of beats held before they are added up, twice
        beat = rollups.figures(_status(requests=i, queue=i % 7, latency=[1] * B, ttft=[0, i]))
        acc.add("a", {"region": "eu"}, beat, at=60 + i)
    got = _rows(acc.take()[0])
    for scope in ("node:a", "fleet", "label:region=eu"):
        r = got[(scope, 60, 60)]
        assert (r.requests, r.heartbeats, r.queue_depth_sum, r.queue_depth_max) == (
            820,
            40,
            sum(i % 7 for i in range(1, 41)),
            6,
        )
        assert r.latency_buckets == (40,) * B and r.ttft_buckets == (0, 820) + (0,) * (B - 2)


def test_burst_usage_is_summed_per_node_hour_upstream_tenant_class_and_currency():
    usage = [
        dict(
            upstream="cloud",
            tenant="acme",
            data_class="public",
            currency="USD",
            requests=2,
            prompt_tokens=100,
            completion_tokens=40,
            cost=0.5,
        ),
        dict(upstream="cloud", tenant="", data_class="public", requests=1, prompt_tokens=10, completion_tokens=4),
    ]
    acc = rollups.Accumulator(())
    beat = rollups.figures(_status(usage=usage))
    acc.add("n", {}, beat, at=3700)
    acc.add("n", {}, beat, at=3800)
    rows, burst = acc.take()
    fleet = _rows(rows)[("fleet", 60, 3660)]
    assert (fleet.upstream_requests, fleet.upstream_prompt_tokens, fleet.upstream_completion_tokens) == (3, 110, 44)
    assert fleet.upstream_cost == 0.5
    assert sorted((u.tenant, u.requests, u.prompt_tokens, u.cost, u.last_at, u.hour) for u in burst) == [
        ("", 2, 20, 0.0, 3800, 3600),
        ("acme", 4, 200, 1.0, 3800, 3600),
    ]


def test_figures_are_bounded_and_buckets_normalized():
    huge = 2**64 - 1
    beat = rollups.figures(_status(requests=huge, latency=[1] * (B + 3), usage=[dict(upstream="u", cost=float("nan"))]))
    row = rollups.row("fleet", 60, 0, beat.values, beat.queue_depth)
    assert row.requests == rollups.MAX_BEAT_COUNT
    assert row.latency_buckets == (1,) * (B - 1) + (4,)  # extra buckets fold into +Inf
    assert row.upstream_cost == 0.0
    assert row.ttft_buckets == (0,) * B  # an older agent sends none


def test_label_values_past_the_cap_roll_up_as_other():
    cap = rollups.LabelCap(max_values=2)
    assert [cap.value("site", v) for v in ("a", "b", "c", "a")] == ["a", "b", "(other)", "a"]
    assert cap.value("region", "x" * 65) == "(other)"
    assert cap.value("region", "x" * 64) == "x" * 64
    acc = rollups.Accumulator(("site",), cap)
    acc.add("n", {"site": "d"}, rollups.figures(_status(requests=1)), at=0)
    assert ("label:site=(other)", 60, 0) in _rows(acc.take()[0])


def test_scope_checks_and_label_keys():
    keys = ("region",)
    for good in ("fleet", "node:n-1", "label:region=eu", "label:region="):
        assert rollups.check_scope(good, keys) is None, good
    assert "label:KEY=VALUE" in rollups.check_scope("label:region", keys)
    assert "'site'" in rollups.check_scope("label:site=x", keys)
    assert "expected 'fleet'" in rollups.check_scope("nodes:x", keys)
    assert "expected 'fleet'" in rollups.check_scope("node:", keys)
    assert rollups.parse_label_keys(" region, site ,,region") == ("region", "site")
    assert rollups.parse_label_keys("") == ()
    with pytest.raises(rollups.RollupError, match="a=b"):
        rollups.parse_label_keys("a=b")


class _FailingOnce(SqliteFleetStore):
    fail = True

    def add_rollups(self, deltas):
        if self.fail:
            self.fail = False
            raise StoreError("database is locked")
        super().add_rollups(deltas)


def test_heartbeat_buffer_writes_rollups_at_flush_and_keeps_them_across_a_failed_write(tmp_path):
    store = _FailingOnce(tmp_path / "central.db")
    store.add_token(TokenRecord("t", "h", {}, 0.0, 1e12, 1, 1, False, "admin:a"))
    assert store.enroll("t", NodeRecord("n", {"region": "eu"}, "box", 1.0, "t", "ff", 2e12), now=2.0)
    buffer = HeartbeatBuffer(store, ("region",))
    usage = [dict(upstream="cloud", tenant="t", data_class="public", requests=1, prompt_tokens=3)]
    buffer.record_history("n", {"region": "eu"}, rollups.figures(_status(requests=2, usage=usage)), at=10)
    with pytest.raises(StoreError):
        buffer.flush()
    buffer.record_history("n", {"region": "eu"}, rollups.figures(_status(requests=5)), at=20)
    buffer.flush()
    for scope in ("fleet", "node:n", "label:region=eu"):
        for period in (60, 3600):  # the hour read from its minutes until it is derived
            assert store.rollup_sums([scope], period, 0, 3600).requests == 7, (scope, period)
    assert [(r.requests, r.prompt_tokens) for r, _ in store.burst_usage_rows()] == [(1, 3)]
    buffer.flush()  # nothing new: nothing written twice
    assert store.rollup_sums(["fleet"], 60, 0, 60).requests == 7
    store.close()


def test_a_minute_is_written_once_it_has_ended_or_when_history_is_read(tmp_path):
    store = SqliteFleetStore(tmp_path / "central.db")
    now = [125.0]
    buffer = HeartbeatBuffer(store, (), clock=lambda: now[0])
    for at in (120, 135, 150, 165):  # four beats of a node in the minute from 120
        buffer.record_history("n", {}, rollups.figures(_status(requests=1)), at=at)
    buffer.flush()
    assert store.rollup_sums(["node:n"], 60, 0, 3600).requests == 0, "the minute has not ended"
    now[0] = 180.0
    buffer.flush()
    assert store.rollup_series(["node:n"], 60, 0, 3600)["node:n"] == [
        RollupRow("node:n", 60, 120, requests=4, heartbeats=4)
    ]
    buffer.record_history("n", {}, rollups.figures(_status(requests=2)), at=185)
    buffer.flush(history=True)  # a read of the history: the minute in progress too
    assert store.rollup_sums(["fleet"], 3600, 0, 3600).requests == 6
    store.close()


def test_quantiles_read_the_same_figures_as_histogram_buckets_quantile():
    import random

    rng = random.Random(17)
    qs = (0.0, 0.01, 0.5, 0.9, 0.99, 0.999, 1.0)
    cases = [
        [0] * B,  # nothing counted: 0.0
        [0] * (B - 1) + [5],  # all above the last bound: the last bound
        [3],  # an older agent's short list
        [1] * (B + 4),  # a newer agent's longer list (folded into +Inf)
        [0, 0, 7] + [0] * (B - 3),  # one bucket: q = 0 is its lower bound
    ]
    cases += [[rng.choice((0, 0, 0, 1, 2, 9, 100, 10**9)) for _ in range(B)] for _ in range(2000)]
    for counts in cases:
        expected = [histogram_buckets.quantile(counts, q) for q in qs]
        got = rollups.quantiles(tuple(counts), qs)
        assert got == expected, counts  # the very same floats, not only close ones
    with pytest.raises(ValueError, match=r"within 0\.\.1"):
        rollups.quantiles([1] * B, (1.5,))


def test_a_nodes_distinct_burst_usage_keys_per_hour_are_capped_and_the_rest_counted_as_other():
    """A node that sends new upstream, tenant or data class names every beat adds at most
    MAX_USAGE_KEYS_PER_NODE_HOUR rows an hour; nothing it sent is lost, the rest is under (other)."""
    acc = rollups.Accumulator(("region",))
    cap = rollups.MAX_USAGE_KEYS_PER_NODE_HOUR
    sent = 3 * cap
    for i in range(sent):
        status = common_pb2.NodeStatus()
        status.inference.upstream_usage.add(
            upstream=f"u{i}", tenant="t", data_class="public", requests=1, prompt_tokens=2, currency="USD"
        )
        acc.add("n1", {}, rollups.figures(status), T0 + i)
    status = common_pb2.NodeStatus()
    status.inference.upstream_usage.add(upstream="u0", tenant="t", data_class="public", requests=1, currency="USD")
    acc.add("n1", {}, rollups.figures(status), T0 + sent)  # a key kept this hour stays its own
    _, usage = acc.take()
    assert len(usage) == cap
    other = [u for u in usage if u.upstream == rollups.OTHER]
    assert len(other) == 1 and other[0].requests == sent - (cap - 1)
    assert sum(u.requests for u in usage) == sent + 1 and sum(u.prompt_tokens for u in usage) == 2 * sent
    assert next(u for u in usage if u.upstream == "u0").requests == 2
    # The next hour starts afresh.
    status = common_pb2.NodeStatus()
    status.inference.upstream_usage.add(upstream="fresh", tenant="t", data_class="public", requests=1)
    acc.add("n1", {}, rollups.figures(status), T0 + 3600)
    _, usage = acc.take()
    assert [u.upstream for u in usage] == ["fresh"]
