"""The history part of the FleetStore contract (issue 17): rollups, objectives and burst usage, on SQLite and on
PostgreSQL (a fresh database per test; skipped when no server is reachable, failed under CI=true)."""

import dataclasses
import threading

import pytest

from central.store import (
    BurstUsageRecord,
    NodeRecord,
    ObjectiveRecord,
    RollupRow,
    SqliteFleetStore,
    TokenRecord,
)
from edgefleet import histogram_buckets
from postgres_db import fleet_stores, postgres_database

DAY = 86400


def _buckets(**at):
    """BUCKETS counts with count n at index i for each b{i}=n."""
    counts = [0] * histogram_buckets.BUCKETS
    for key, n in at.items():
        counts[int(key[1:])] = n
    return tuple(counts)


def _enroll(store, node_id, labels):
    store.add_token(TokenRecord(f"t-{node_id}", "h", {}, 0.0, 1e12, 1, 1, False, "admin:a"))
    assert store.enroll(f"t-{node_id}", NodeRecord(node_id, labels, "box", 1.0, f"t-{node_id}", "ff", 2e12), now=2.0)


def _objective(name="api", **changes):
    fields = dict(
        name=name,
        selector={"region": "eu"},
        availability_percent=99.9,
        latency_threshold_ms=500.0,
        latency_percent=99.0,
        window_s=30 * DAY,
        updated_at=100.0,
        updated_by="admin:alice",
    )
    fields.update(changes)
    return ObjectiveRecord(**fields)


class HistoryStoreContract:
    """Subclass with a `store` fixture returning a fresh, empty store."""

    def test_objectives_are_created_replaced_listed_by_name_and_deleted(self, store):
        assert store.list_objectives() == []
        store.set_objective(_objective("web"))
        store.set_objective(_objective("api"))
        store.set_objective(_objective("api", selector={}, availability_percent=0.0, updated_by="admin:bob"))
        assert store.list_objectives() == [
            _objective("api", selector={}, availability_percent=0.0, updated_by="admin:bob"),
            _objective("web"),
        ]
        assert store.delete_objective("api") is True
        assert store.delete_objective("api") is False
        assert [o.name for o in store.list_objectives()] == ["web"]

    def test_rollup_deltas_add_up_and_keep_the_largest_queue(self, store):
        a = RollupRow(
            "fleet", 60, 600, requests=3, errors=1, heartbeats=1, queue_depth_sum=4, queue_depth_max=4,
            upstream_cost=0.25, latency_buckets=_buckets(b0=2, b3=1), ttft_buckets=_buckets(b1=3),
        )  # fmt: skip
        b = RollupRow(
            "fleet", 60, 600, requests=2, heartbeats=1, queue_depth_sum=1, queue_depth_max=1,
            upstream_cost=0.5, generated_tokens=40, latency_buckets=_buckets(b3=2),
        )  # fmt: skip
        store.add_rollups([a])
        store.add_rollups([b, RollupRow("fleet", 60, 660, requests=7)])
        rows = store.rollup_series(["fleet"], 60, 600, 720)["fleet"]
        merged = RollupRow(
            "fleet", 60, 600, requests=5, errors=1, generated_tokens=40, heartbeats=2, queue_depth_sum=5,
            queue_depth_max=4, upstream_cost=0.75, latency_buckets=_buckets(b0=2, b3=3), ttft_buckets=_buckets(b1=3),
        )  # fmt: skip
        assert rows == [merged, RollupRow("fleet", 60, 660, requests=7)]

    def test_series_is_per_scope_period_and_half_open_range(self, store):
        store.add_rollups(
            [
                RollupRow("node:a", 60, 0, requests=1),
                RollupRow("node:a", 60, 60, requests=2),
                RollupRow("node:a", 60, 120, requests=3),
                RollupRow("node:a", 3600, 0, requests=6),
                RollupRow("node:b", 60, 60, requests=9),
            ]
        )
        series = store.rollup_series(["node:a", "label:region=eu", "node:b"], 60, 60, 120)
        assert list(series) == ["node:a", "label:region=eu", "node:b"]
        assert [r.requests for r in series["node:a"]] == [2]
        assert series["label:region=eu"] == []
        assert [r.requests for r in series["node:b"]] == [9]
        assert [r.requests for r in store.rollup_series(["node:a"], 3600, 0, 3600)["node:a"]] == [6]

    def test_sums_over_scopes_and_time(self, store):
        store.add_rollups(
            [
                RollupRow("node:a", 60, 0, requests=1, errors=1, queue_depth_max=3, latency_buckets=_buckets(b2=1)),
                RollupRow("node:a", 60, 60, requests=2, queue_depth_max=8, latency_buckets=_buckets(b2=2)),
                RollupRow("node:b", 60, 60, requests=4, upstream_cost=1.5, ttft_buckets=_buckets(b19=4)),
                RollupRow("node:b", 60, 120, requests=100),  # past the end
                RollupRow("node:c", 60, 60, requests=100),  # not asked for
            ]
        )
        total = store.rollup_sums(["node:a", "node:b"], 60, 0, 120)
        assert total == RollupRow(
            "", 60, 0, requests=7, errors=1, queue_depth_max=8, upstream_cost=1.5,
            latency_buckets=_buckets(b2=3), ttft_buckets=_buckets(b19=4),
        )  # fmt: skip
        assert store.rollup_sums(["nobody"], 60, 0, 120) == RollupRow("", 60, 0)

    def test_prune_keeps_a_day_of_minutes_and_thirty_days_of_hours_and_burst_usage(self, store):
        _enroll(store, "a", {})
        now = 100 * DAY
        store.add_rollups(
            [
                RollupRow("fleet", 60, now - DAY - 60, requests=1),  # a minute older than a day: goes
                RollupRow("fleet", 60, now - DAY + 60, requests=1),
                RollupRow("fleet", 3600, now - 31 * DAY, requests=1),  # goes
                RollupRow("fleet", 3600, now - 29 * DAY, requests=1),
            ]
        )
        store.add_burst_usage(
            [
                BurstUsageRecord(now - 31 * DAY, "a", "cloud", "", "public", "USD", 1, 1, 1, 0.1, 1.0),
                BurstUsageRecord(now - 29 * DAY, "a", "cloud", "", "public", "USD", 1, 1, 1, 0.1, 1.0),
            ]
        )
        assert store.prune_rollups(now) == 3
        assert [r.start for r in store.rollup_series(["fleet"], 60, 0, now)["fleet"]] == [now - DAY + 60]
        # The minute kept counts in its hour, not derived yet (derive_rollup_hours), which reads from its minutes.
        assert [r.start for r in store.rollup_series(["fleet"], 3600, 0, now)["fleet"]] == [now - 29 * DAY, now - DAY]
        assert [r.hour for r, _ in store.burst_usage_rows()] == [now - 29 * DAY]
        assert store.prune_rollups(now) == 0

    def test_burst_usage_adds_up_per_key_with_the_nodes_labels(self, store):
        _enroll(store, "a", {"region": "eu"})
        _enroll(store, "b", {"region": "us"})
        store.add_burst_usage(
            [
                BurstUsageRecord(3600, "a", "cloud", "acme", "public", "USD", 2, 100, 50, 0.5, 3700.0),
                BurstUsageRecord(3600, "b", "cloud", "", "public", "", 1, 10, 5, 0.0, 3650.0),
                BurstUsageRecord(3600, "ghost", "cloud", "", "public", "", 1, 10, 5, 0.0, 3650.0),  # unknown: skipped
            ]
        )
        store.add_burst_usage([BurstUsageRecord(3600, "a", "cloud", "acme", "public", "USD", 1, 10, 5, 0.25, 3690.0)])
        store.add_burst_usage([BurstUsageRecord(7200, "a", "cloud", "acme", "public", "USD", 1, 1, 1, 0.0, 7300.0)])
        assert store.burst_usage_rows() == [
            (BurstUsageRecord(3600, "a", "cloud", "acme", "public", "USD", 3, 110, 55, 0.75, 3700.0), {"region": "eu"}),
            (BurstUsageRecord(3600, "b", "cloud", "", "public", "", 1, 10, 5, 0.0, 3650.0), {"region": "us"}),
            (BurstUsageRecord(7200, "a", "cloud", "acme", "public", "USD", 1, 1, 1, 0.0, 7300.0), {"region": "eu"}),
        ]
        # Since a time inside the first hour: that hour still counts; since its end: only the next.
        assert len(store.burst_usage_rows(since=5000)) == 3
        assert [r.hour for r, _ in store.burst_usage_rows(since=7200)] == [7200]

    def test_burst_usage_totals_add_up_the_hours_per_node_and_key_with_each_nodes_labels_once(self, store):
        _enroll(store, "a", {"region": "eu"})
        _enroll(store, "b", {"region": "us"})
        store.add_burst_usage(
            [
                BurstUsageRecord(3600, "a", "cloud", "acme", "public", "USD", 2, 100, 50, 0.5, 3700.0),
                BurstUsageRecord(7200, "a", "cloud", "acme", "public", "USD", 1, 10, 5, 0.25, 7300.0),
                BurstUsageRecord(10800, "a", "cloud", "acme", "public", "USD", 4, 40, 20, 1.0, 10900.0),
                BurstUsageRecord(7200, "a", "cloud", "acme", "public", "EUR", 1, 1, 1, 0.1, 7250.0),
                BurstUsageRecord(7200, "a", "backup", "", "internal", "", 3, 30, 0, 0.0, 7400.0),
                BurstUsageRecord(3600, "b", "cloud", "acme", "public", "USD", 5, 5, 5, 2.0, 3601.0),
            ]
        )
        totals = store.burst_usage_totals()
        assert totals == [
            (BurstUsageRecord(7200, "a", "backup", "", "internal", "", 3, 30, 0, 0.0, 7400.0), {"region": "eu"}),
            (BurstUsageRecord(7200, "a", "cloud", "acme", "public", "EUR", 1, 1, 1, 0.1, 7250.0), {"region": "eu"}),
            (
                BurstUsageRecord(10800, "a", "cloud", "acme", "public", "USD", 7, 150, 75, 1.75, 10900.0),
                {"region": "eu"},
            ),
            (BurstUsageRecord(3600, "b", "cloud", "acme", "public", "USD", 5, 5, 5, 2.0, 3601.0), {"region": "us"}),
        ]
        assert all(type(v) is int for r, _ in totals for v in (r.hour, r.requests, r.prompt_tokens))
        assert totals[0][1] is totals[2][1]  # one mapping per node
        # The hours that end after `since`, as burst_usage_rows reads them.
        assert [(r.currency, r.requests) for r, _ in store.burst_usage_totals(since=7300) if r.upstream == "cloud"] == [
            ("EUR", 1),
            ("USD", 5),
        ]
        assert store.burst_usage_totals(since=14400) == []

    def test_a_rollup_row_reads_back_every_field_in_its_place(self, store):
        names = [f.name for f in dataclasses.fields(RollupRow)][3:-2]  # past the key, before the buckets
        row = RollupRow(
            "node:a", 60, 120, **{name: i + 1 for i, name in enumerate(names)},
            latency_buckets=tuple(range(100, 100 + histogram_buckets.BUCKETS)),
            ttft_buckets=tuple(range(200, 200 + histogram_buckets.BUCKETS)),
        )  # fmt: skip
        row = dataclasses.replace(row, upstream_cost=0.5)
        store.add_rollups([row])
        assert store.rollup_series(["node:a"], 60, 0, 180)["node:a"] == [row]
        store.add_rollups([RollupRow("fleet", 60, 0, requests=1)])
        (plain,) = store.rollup_series(["fleet"], 60, 0, 60)["fleet"]
        assert type(plain.upstream_cost) is float and type(plain.requests) is int
        assert type(plain.latency_buckets) is tuple and len(plain.latency_buckets) == histogram_buckets.BUCKETS

    def test_ended_hours_are_derived_from_their_minutes_and_the_current_hour_is_read_from_them(self, store):
        lat = _buckets(b3=1)
        store.add_rollups(
            [
                RollupRow("fleet", 60, 3600, requests=1, queue_depth_max=2, upstream_cost=0.5, latency_buckets=lat),
                RollupRow("fleet", 60, 7140, requests=2, queue_depth_max=5),
                RollupRow("node:a", 60, 3660, requests=4),
                RollupRow("fleet", 60, 7200, requests=8),  # the hour from 7200 has not ended
            ]
        )
        expected = {
            "fleet": [
                RollupRow("fleet", 3600, 3600, requests=3, queue_depth_max=5, upstream_cost=0.5, latency_buckets=lat),
                RollupRow("fleet", 3600, 7200, requests=8),
            ],
            "node:a": [RollupRow("node:a", 3600, 3600, requests=4)],
        }
        before = store.rollup_series(["fleet", "node:a"], 3600, 0, 10800)
        assert before == expected, "hours not derived yet read from their minutes"
        assert store.derive_rollup_hours(7200 + 119) == 2  # the hour from 3600 ended: fleet's and node:a's rows
        assert store.derive_rollup_hours(7200 + 120) == 0, "derived once"
        assert store.rollup_series(["fleet", "node:a"], 3600, 0, 10800) == expected
        assert store.rollup_sums(["fleet", "node:a"], 3600, 0, 10800).requests == 15
        assert store.rollup_sums(["fleet"], 3600, 3600, 7200) == RollupRow(
            "", 3600, 3600, requests=3, queue_depth_max=5, upstream_cost=0.5, latency_buckets=lat
        )
        # The minute rows of a derived hour go with their retention; its hour row stays.
        assert store.prune_rollups(7200 + 86400) == 3
        assert store.rollup_series(["fleet"], 3600, 0, 7200)["fleet"] == expected["fleet"][:1]

    def test_a_minute_written_after_its_hour_was_derived_counts_in_the_hour(self, store):
        store.add_rollups([RollupRow("fleet", 60, 3600, requests=1)])
        store.derive_rollup_hours(7200)
        store.add_rollups([RollupRow("fleet", 60, 3660, requests=2), RollupRow("node:late", 60, 3720, requests=4)])
        assert [r.requests for r in store.rollup_series(["fleet", "node:late"], 3600, 0, 7200)["fleet"]] == [3]
        assert store.rollup_sums(["fleet", "node:late"], 3600, 3600, 7200).requests == 7
        assert store.rollup_sums(["fleet"], 60, 3600, 7200).requests == 3

    def test_deriving_with_no_minutes_only_marks_the_hours_done(self, store):
        assert store.derive_rollup_hours(10 * 3600) == 0
        store.add_rollups([RollupRow("fleet", 60, 3600, requests=1)])  # an hour already passed: counted in it
        assert store.rollup_sums(["fleet"], 3600, 0, 7200).requests == 1

    def test_heartbeat_targets_carry_the_nodes_labels(self, store):
        _enroll(store, "a", {"region": "eu", "site": "lab"})
        assert store.heartbeat_target("a").labels == {"region": "eu", "site": "lab"}
        assert store.heartbeat_targets(["a"])["a"].labels == {"region": "eu", "site": "lab"}

    def test_concurrent_deltas_to_the_same_rows_are_all_counted(self, store):
        def add(i):
            for _ in range(20):
                store.add_rollups([RollupRow("fleet", 60, 0, requests=1), RollupRow(f"node:{i}", 60, 0, requests=1)])

        threads = [threading.Thread(target=add, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert store.rollup_sums(["fleet"], 60, 0, 60).requests == 80


class TestHistoryStore(HistoryStoreContract):
    @pytest.fixture(params=["sqlite", "postgres"])
    def store(self, request, tmp_path):
        yield from fleet_stores(request.param, tmp_path)


def test_two_postgres_replicas_adding_to_the_same_rows_lose_nothing():
    from central.store.postgres import PostgresFleetStore

    with postgres_database() as url:
        replicas = [PostgresFleetStore(url, pool_size=2) for _ in range(2)]
        try:

            def add(store):
                for _ in range(25):
                    store.add_rollups(
                        [RollupRow(s, p, 0, requests=1) for s in ("fleet", "label:region=eu") for p in (60, 3600)]
                    )

            threads = [threading.Thread(target=add, args=(r,)) for r in replicas]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert replicas[0].rollup_sums(["fleet"], 3600, 0, 3600).requests == 50
            assert replicas[1].rollup_sums(["label:region=eu"], 60, 0, 60).requests == 50
        finally:
            for r in replicas:
                r.close()


def test_hours_written_before_hours_were_derived_count_as_derived_after_the_migration(tmp_path):
    """A SQLite store of migration 12, where heartbeats wrote the hour rows: after 13 those hours are derived, so a
    later minute of the current hour is added to its hour row instead of hiding it."""
    from central.store.sqlite import _MIGRATIONS
    from edgefleet.sqlitedb import apply_migrations, connect_wal

    path = tmp_path / "central.db"
    conn = connect_wal(path)
    apply_migrations(conn, [m for m in _MIGRATIONS if m[0] < 13])
    for period, start, requests in ((60, 3600, 1), (3600, 3600, 1), (60, 7200, 2), (3600, 7200, 2)):
        conn.execute(
            "INSERT INTO rollups (scope, period_s, start, requests) VALUES ('fleet', ?, ?, ?)",
            (period, start, requests),
        )
    conn.commit()
    conn.close()
    store = SqliteFleetStore(path)
    try:
        store.add_rollups([RollupRow("fleet", 60, 7260, requests=4)])
        assert [r.requests for r in store.rollup_series(["fleet"], 3600, 0, 10800)["fleet"]] == [1, 6]
        assert store.derive_rollup_hours(10800) == 0, "those hours were written already"
        assert store.rollup_sums(["fleet"], 3600, 0, 10800).requests == 7
    finally:
        store.close()


def test_a_store_from_before_history_is_migrated_in_place(tmp_path):
    from central.store.sqlite import _MIGRATIONS
    from edgefleet.sqlitedb import apply_migrations, connect_wal

    path = tmp_path / "central.db"
    conn = connect_wal(path)
    apply_migrations(conn, [m for m in _MIGRATIONS if m[0] < 12])
    conn.close()
    store = SqliteFleetStore(path)
    try:
        _enroll(store, "a", {"region": "eu"})
        store.add_rollups([RollupRow("node:a", 60, 0, requests=1)])
        assert store.rollup_sums(["node:a"], 60, 0, 60).requests == 1
        assert store.heartbeat_target("a").labels == {"region": "eu"}
    finally:
        store.close()
