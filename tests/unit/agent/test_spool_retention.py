"""Acknowledged reports kept a while, and sent again when central's acknowledged sequence goes backwards (central
restored from a backup): the pure decisions (plan_rewind, make_room), then on real SQLite spool files."""

import sqlite3

import pytest

from edge_agent.control import spool as spool_mod
from edge_agent.control.spool import ReportSpool, Rewind, make_room, plan_rewind
from edgefleet.sqlitedb import apply_migrations

DAY_S = 24 * 3600.0


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def make(tmp_path, max_reports=10_000, retain_s=DAY_S, clock=None):
    return ReportSpool(tmp_path / "spool.db", max_reports, retain_s, clock or Clock())


def fill(spool, n):
    return [spool.append("status", float(i), f"r{i}".encode()) for i in range(n)]


# -- the decisions -----------------------------------------------------------------------------------------


def test_no_rewind_while_central_holds_as_much_as_it_acknowledged_or_more():
    assert plan_rewind(100, 100, 0) is None
    assert plan_rewind(100, 130, 0) is None, "central holding more (a lost acknowledgement) is no rewind"
    assert plan_rewind(0, 0, 0) is None


def test_a_rewind_resends_what_is_kept_and_counts_the_rest_of_the_gap_as_lost():
    assert plan_rewind(100, 40, 60) == Rewind(100, 40, resent=60, lost=0)
    assert plan_rewind(100, 40, 25) == Rewind(100, 40, resent=25, lost=35)
    assert plan_rewind(100, 0, 0) == Rewind(100, 0, resent=0, lost=100), "central holds nothing of this spool"


def test_a_rewind_refuses_a_kept_count_the_gap_cannot_hold():
    with pytest.raises(ValueError, match="kept_after must be between 0 and 60"):
        plan_rewind(100, 40, 61)
    with pytest.raises(ValueError, match="kept_after"):
        plan_rewind(100, 40, -1)


def test_making_room_forgets_acknowledged_reports_before_dropping_unacknowledged_ones():
    assert make_room(pending=3, kept_acknowledged=4, max_reports=10) == (0, 0)
    assert make_room(pending=3, kept_acknowledged=7, max_reports=10) == (1, 0)
    assert make_room(pending=8, kept_acknowledged=2, max_reports=10) == (1, 0)
    assert make_room(pending=10, kept_acknowledged=2, max_reports=10) == (2, 1)
    assert make_room(pending=10, kept_acknowledged=0, max_reports=10) == (0, 1)
    assert make_room(pending=12, kept_acknowledged=0, max_reports=5) == (0, 8), "a smaller bound after a restart"


# -- on real spool files -------------------------------------------------------------------------------------


def test_acknowledged_reports_are_kept_but_not_sent_again(tmp_path):
    spool = make(tmp_path)
    seqs = fill(spool, 5)
    spool.acknowledge(seqs[2])
    assert [r.sequence for r in spool.peek(10)] == seqs[3:]
    assert len(spool) == 2 and spool.kept_acknowledged == 3
    assert spool.acknowledged_through == seqs[2]
    spool.acknowledge(seqs[1])  # an older figure is no rewind: acknowledge never goes back
    assert spool.acknowledged_through == seqs[2] and len(spool) == 2


def test_acknowledged_reports_go_once_kept_for_the_retention(tmp_path):
    clock = Clock()
    spool = make(tmp_path, retain_s=3600.0, clock=clock)
    first = fill(spool, 3)
    spool.acknowledge(first[-1])
    clock.now += 1800
    second = fill(spool, 2)
    spool.acknowledge(second[-1])
    assert spool.kept_acknowledged == 5
    clock.now += 1800  # the first three were acknowledged an hour ago now; the others half an hour ago
    spool.acknowledge(second[-1])
    assert spool.kept_acknowledged == 2
    assert spool.rewind(0) == Rewind(second[-1], 0, resent=2, lost=3)
    assert [r.sequence for r in spool.peek(10)] == second


def test_retention_zero_forgets_at_once_as_before(tmp_path):
    spool = make(tmp_path, retain_s=0.0)
    seqs = fill(spool, 4)
    spool.acknowledge(seqs[-1])
    assert spool.kept_acknowledged == 0 and len(spool) == 0
    assert spool.rewind(1) == Rewind(seqs[-1], 1, resent=0, lost=3)
    assert spool.dropped_unreported() == 3


def test_rewind_sends_again_every_report_kept_after_centrals_figure(tmp_path):
    spool = make(tmp_path)
    seqs = fill(spool, 10)
    spool.acknowledge(seqs[7])
    rewind = spool.rewind(seqs[3])
    assert rewind == Rewind(seqs[7], seqs[3], resent=4, lost=0)
    assert [r.sequence for r in spool.peek(100)] == seqs[4:], "the four taken back and the two never acknowledged"
    assert len(spool) == 6 and spool.kept_acknowledged == 4
    assert spool.acknowledged_through == seqs[3]
    assert spool.dropped_unreported() == 0
    assert spool.rewind(seqs[3]) is None, "a second look at the same figure changes nothing"


def test_reports_no_longer_kept_are_counted_as_dropped_once(tmp_path):
    spool = make(tmp_path, max_reports=6)
    seqs = fill(spool, 6)
    spool.acknowledge(seqs[-1])
    fill(spool, 3)  # full: three acknowledged reports are forgotten, uncounted (central had them)
    assert spool.dropped_unreported() == 0 and spool.kept_acknowledged == 3
    rewind = spool.rewind(0)
    assert rewind == Rewind(seqs[-1], 0, resent=3, lost=3)
    assert spool.dropped_unreported() == 3
    assert [r.sequence for r in spool.peek(100)] == list(range(4, 10))
    assert spool.rewind(0) is None


def test_a_full_spool_forgets_acknowledged_reports_first_then_drops_counted(tmp_path):
    spool = make(tmp_path, max_reports=5)
    seqs = fill(spool, 3)
    spool.acknowledge(seqs[-1])
    fill(spool, 4)
    assert len(spool) == 4 and spool.kept_acknowledged == 1 and spool.dropped_unreported() == 0
    fill(spool, 3)
    assert len(spool) == 5 and spool.kept_acknowledged == 0
    assert spool.dropped_unreported() == 2, "only unacknowledged reports dropped are counted"


def test_the_acknowledged_mark_and_kept_reports_survive_a_restart(tmp_path):
    clock = Clock()
    spool = make(tmp_path, clock=clock)
    seqs = fill(spool, 6)
    spool.acknowledge(seqs[3])
    spool.close()
    again = make(tmp_path, clock=clock)
    assert again.acknowledged_through == seqs[3]
    assert len(again) == 2 and again.kept_acknowledged == 4
    assert again.rewind(seqs[1]).resent == 2
    again.close()
    third = make(tmp_path, clock=clock)
    assert [r.sequence for r in third.peek(10)] == seqs[2:]


def test_a_spool_from_before_retention_takes_every_report_it_holds_as_unacknowledged(tmp_path):
    path = tmp_path / "spool.db"
    old = sqlite3.connect(path)
    apply_migrations(old, spool_mod._MIGRATIONS[:2])
    old.executemany("INSERT INTO reports (kind, observed_at, payload) VALUES ('event', 1.0, x'')", [()] * 7)
    old.execute("DELETE FROM reports WHERE sequence <= 4")  # acknowledged, as acknowledging used to delete
    old.commit()
    old.close()
    upgraded = make(tmp_path)
    assert upgraded.acknowledged_through == 4
    assert [r.sequence for r in upgraded.peek(10)] == [5, 6, 7]
    assert len(upgraded) == 3 and upgraded.kept_acknowledged == 0


def test_an_empty_spool_from_before_retention_takes_every_sequence_given_as_acknowledged(tmp_path):
    path = tmp_path / "spool.db"
    old = sqlite3.connect(path)
    apply_migrations(old, spool_mod._MIGRATIONS[:2])
    old.executemany("INSERT INTO reports (kind, observed_at, payload) VALUES ('event', 1.0, x'')", [()] * 5)
    old.execute("DELETE FROM reports")
    old.commit()
    old.close()
    upgraded = make(tmp_path)
    assert upgraded.acknowledged_through == 5 and len(upgraded) == 0
    assert upgraded.append("event", 2.0, b"") == 6


def test_a_new_spool_starts_with_nothing_acknowledged(tmp_path):
    spool = make(tmp_path)
    assert spool.acknowledged_through == 0 and spool.kept_acknowledged == 0
    assert spool.rewind(0) is None


def test_a_negative_retention_is_refused(tmp_path):
    with pytest.raises(ValueError, match="retain_acknowledged_s must be 0 or more, got -1"):
        make(tmp_path, retain_s=-1.0)
