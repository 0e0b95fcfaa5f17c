"""The objectives handlers without gRPC: a real data dir, a real store (SQLite, and PostgreSQL when one is
reachable), callers as the TLS layer builds them, rollups written through the store and a clock the test moves.

The same calls over real mTLS, through the `edgefleet slo` CLI, are in tests/integration/test_slo_cli.py.
"""

from __future__ import annotations

import pytest

from central import audit, convert, slo
from central.errors import InvalidArgument, NotFound, PermissionDenied
from central.services import objectives
from central.services.base import Central, CentralSettings
from central.store import RollupRow
from central_handlers import STORES, central_with_callers, enroll
from edgefleet import histogram_buckets

T0 = 1_900_000_000.0  # a round hour
DAY = 86400
EU = slo.Objective("eu-latency", {"region": "eu"}, 99.9, 2000.0, 99.0, 30 * DAY)


@pytest.fixture(params=STORES)
def setup(request, tmp_path):
    yield from central_with_callers(tmp_path, request.param, CentralSettings(), T0)


def _beat(central: Central, scopes: list[str], requests: int, errors: int = 0, latency_ms: float = 100.0) -> None:
    """What central's rollups add for one beat at the clock's time: a minute and an hour row per scope."""
    buckets = tuple(histogram_buckets.counts([latency_ms] * requests))
    now = central.clock()
    central.store.add_rollups(
        RollupRow(scope, period, int(now // period * period), requests=requests, errors=errors, latency_buckets=buckets)
        for scope in scopes
        for period in (60, 3600)
    )


def _views(central, caller) -> dict[str, objectives.ObjectiveView]:
    return {v.record.name: v for v in objectives.list_objectives(central, caller)}


def test_an_admin_sets_and_replaces_an_objective_and_each_change_is_audited(setup):
    central, admin, _viewer = setup
    record = objectives.set_objective(central, admin, slo.Objective("eu-latency", {"region": "eu"}, 0, 2000, 0, DAY))
    assert (record.latency_percent, record.window_s, record.updated_by, record.updated_at) == (
        99.0,
        DAY,
        "admin:admin",
        T0,
    )
    central.clock.now += 60
    objectives.set_objective(central, admin, EU)
    [stored] = central.store.list_objectives()
    assert stored.availability_percent == 99.9 and stored.updated_at == T0 + 60
    entries = [e for e in central.store.list_audit(0, 1000) if e.action == "objective.set"]
    assert [(e.actor, e.target, e.outcome) for e in entries] == [("admin:admin", "eu-latency", audit.ALLOWED)] * 2
    assert entries[0].detail == "created: region=eu: 99% within 2000 ms over 86400 s"
    assert entries[1].detail.startswith("replaced: region=eu: availability 99.9%, 99% within 2000 ms")


def test_a_bad_objective_is_refused_with_the_field_named(setup):
    central, admin, _viewer = setup
    with pytest.raises(InvalidArgument, match="availability percent must be above 0 and below 100"):
        objectives.set_objective(central, admin, slo.Objective("x", {}, 100.0))
    with pytest.raises(InvalidArgument, match="window must be from 1h to 90d"):
        objectives.set_objective(
            central, admin, convert.objective_of_message(convert.admin_pb2.Objective(name="x", availability_percent=99))
        )
    assert central.store.list_objectives() == []


def test_a_viewer_lists_but_may_not_set_or_delete(setup):
    central, admin, viewer = setup
    objectives.set_objective(central, admin, EU)
    assert list(_views(central, viewer)) == ["eu-latency"]
    with pytest.raises(PermissionDenied, match=r"objective\.set needs the admin role"):
        objectives.set_objective(central, viewer, EU)
    with pytest.raises(PermissionDenied, match=r"objective\.delete needs the admin role"):
        objectives.delete_objective(central, viewer, "eu-latency")
    refused = [e for e in central.store.list_audit(0, 1000) if e.outcome == audit.REFUSED]
    assert [(e.action, e.actor) for e in refused] == [
        ("objective.set", "viewer:val"),
        ("objective.delete", "viewer:val"),
    ]


def test_delete_removes_it_is_audited_and_an_absent_one_is_not_found(setup):
    central, admin, _viewer = setup
    objectives.set_objective(central, admin, EU)
    objectives.delete_objective(central, admin, "eu-latency")
    assert central.store.list_objectives() == []
    with pytest.raises(NotFound, match="no objective 'eu-latency'"):
        objectives.delete_objective(central, admin, "eu-latency")
    [entry] = [e for e in central.store.list_audit(0, 1000) if e.action == "objective.delete"]
    assert (entry.target, entry.outcome, entry.detail) == ("eu-latency", audit.ALLOWED, "deleted")


def test_status_reads_the_label_group_the_fleet_or_the_matching_nodes(setup):
    central, admin, viewer = setup
    enroll(central, "n1", {"region": "eu", "rack": "r1"})
    enroll(central, "n2", {"region": "eu", "rack": "r2"})
    enroll(central, "n3", {"region": "us", "rack": "r1"})
    objectives.set_objective(central, admin, EU)
    objectives.set_objective(central, admin, slo.Objective("all", {}, 99.0, 0, 0, DAY))
    objectives.set_objective(central, admin, slo.Objective("rack1", {"rack": "r1"}, 99.0, 0, 0, DAY))
    objectives.set_objective(central, admin, slo.Objective("nobody", {"rack": "r9"}, 99.0, 0, 0, DAY))
    assert objectives.scopes(central, slo.Objective("rack1", {"rack": "r1"}, 99.0)) == ["node:n1", "node:n3"]
    # Ten minutes: eu (n1, n2) serves 1000 a minute with 1 error, n3 (us) 100 with 50 errors.
    for _ in range(10):
        _beat(central, ["fleet", "label:region=eu", "node:n1"], 500, errors=1)
        _beat(central, ["fleet", "label:region=eu", "node:n2"], 500)
        _beat(central, ["fleet", "label:region=us", "node:n3"], 100, errors=50)
        central.clock.now += 60
    views = _views(central, viewer)
    eu = views["eu-latency"].status
    assert (eu.requests, eu.errors, eu.slow_requests) == (10_000, 10, 0)
    assert eu.compliant and eu.error_budget_remaining == pytest.approx(0.0, abs=1e-9)
    assert eu.alert == ""  # burn 1.0: exactly on budget
    assert views["all"].status.requests == 11_000 and views["all"].status.errors == 510
    rack1 = views["rack1"].status  # n1 and n3, from their own rollups
    assert (rack1.requests, rack1.errors) == (6_000, 510)
    assert not rack1.compliant and rack1.alert == slo.PAGE
    assert views["nobody"].status.requests == 0 and views["nobody"].status.compliant


def test_status_follows_the_clock_the_burst_leaves_the_short_windows(setup):
    central, admin, viewer = setup
    objectives.set_objective(central, admin, EU)
    for _ in range(60):
        _beat(central, ["label:region=eu"], 1000, errors=20, latency_ms=2500)  # 2% errors, all slow
        central.clock.now += 60
    status = _views(central, viewer)["eu-latency"].status
    assert status.alert == slo.PAGE
    five = {b.window_s: b for b in status.burn_rates}[300]
    assert five.availability == pytest.approx(20) and five.latency == pytest.approx(100)
    assert status.slow_requests == 60_000 and status.latency_good_percent == 0.0
    central.clock.now += 2 * 3600  # two quiet hours later: no burn in the hour windows, the 30-day budget still spent
    status = _views(central, viewer)["eu-latency"].status
    rates = {b.window_s: b for b in status.burn_rates}
    assert rates[300].availability == 0 and rates[3600].availability == 0
    assert rates[21600].availability == pytest.approx(20)
    assert status.error_budget_remaining < 0 and not status.compliant
    assert status.alert == slo.TICKET  # no page (the 5 m and 30 m windows are clean); 3 d and 6 h still burn
