"""The report spool on real SQLite files: order, bound, acknowledgement, restarts, corruption, threads."""

import logging
import threading

import pytest

from edge_agent.control.spool import ReportSpool, SpooledReport


def make(tmp_path, max_reports=10_000):
    return ReportSpool(tmp_path / "state" / "spool.db", max_reports)


def fill(spool, n, kind="status"):
    return [spool.append(kind, 1000.0 + i, f"r{i}".encode()) for i in range(n)]


def test_sequences_increase_and_continue_after_reopen(tmp_path):
    spool = make(tmp_path)
    first = fill(spool, 3)
    assert first == sorted(first) and len(set(first)) == 3
    spool.close()
    again = make(tmp_path)
    assert len(again) == 3
    assert again.append("event", 2000.0, b"x") > first[-1]


def test_peek_returns_reports_oldest_first_without_removing_them(tmp_path):
    spool = make(tmp_path)
    seqs = [
        spool.append(kind, t, p) for kind, t, p in [("status", 1.5, b"a"), ("event", 2.5, b"b"), ("status", 3.5, b"c")]
    ]
    assert spool.peek(2) == [SpooledReport(seqs[0], "status", 1.5, b"a"), SpooledReport(seqs[1], "event", 2.5, b"b")]
    assert [r.payload for r in spool.peek(10)] == [b"a", b"b", b"c"]
    assert spool.peek(0) == []
    assert len(spool) == 3


def test_the_bound_drops_the_oldest_and_counts_exactly(tmp_path):
    spool = make(tmp_path, max_reports=5)
    seqs = fill(spool, 12)
    assert seqs == list(range(1, 13))
    assert [r.sequence for r in spool.peek(100)] == [8, 9, 10, 11, 12]
    assert [r.payload for r in spool.peek(100)] == [b"r7", b"r8", b"r9", b"r10", b"r11"]
    assert len(spool) == 5
    assert spool.dropped_unreported() == 7


def test_a_smaller_bound_on_reopen_trims_on_the_next_append(tmp_path):
    spool = make(tmp_path, max_reports=10)
    fill(spool, 8)
    spool.close()
    smaller = make(tmp_path, max_reports=3)
    last = smaller.append("event", 5.0, b"new")
    assert [r.sequence for r in smaller.peek(100)] == [7, 8, last]
    assert smaller.dropped_unreported() == 6


def test_acknowledge_partial_then_full(tmp_path):
    spool = make(tmp_path)
    seqs = fill(spool, 5)
    spool.acknowledge(seqs[1])
    assert [r.sequence for r in spool.peek(10)] == seqs[2:]
    assert len(spool) == 3
    spool.acknowledge(seqs[1])  # again: a no-op
    assert len(spool) == 3
    spool.acknowledge(seqs[-1])
    assert spool.peek(10) == [] and len(spool) == 0


def test_sequence_is_not_reused_after_full_acknowledgement_and_reopen(tmp_path):
    spool = make(tmp_path)
    seqs = fill(spool, 4)
    spool.acknowledge(seqs[-1])
    assert spool.append("status", 1.0, b"a") == seqs[-1] + 1
    spool.acknowledge(seqs[-1] + 1)
    spool.close()
    again = make(tmp_path)
    assert len(again) == 0
    assert again.append("status", 1.0, b"b") == seqs[-1] + 2


def test_dropped_counter_persists_and_is_only_lowered_by_what_was_reported(tmp_path):
    spool = make(tmp_path, max_reports=2)
    fill(spool, 6)
    assert spool.dropped_unreported() == 4
    spool.close()
    again = make(tmp_path, max_reports=2)
    assert again.dropped_unreported() == 4
    told = again.dropped_unreported()
    fill(again, 1)  # one more drop while the flush is in flight
    again.mark_dropped_reported(told)
    assert again.dropped_unreported() == 1
    again.mark_dropped_reported(0)
    assert again.dropped_unreported() == 1
    with pytest.raises(ValueError, match="count"):
        again.mark_dropped_reported(2)
    with pytest.raises(ValueError, match="count"):
        again.mark_dropped_reported(-1)
    again.close()
    assert make(tmp_path, max_reports=2).dropped_unreported() == 1


def test_corrupt_file_is_set_aside_and_the_spool_is_usable(tmp_path, caplog):
    spool = make(tmp_path)
    fill(spool, 3)
    spool.close()
    db = tmp_path / "state" / "spool.db"
    db.write_bytes(b"this is not a database" * 100)
    (tmp_path / "state" / "spool.db-wal").unlink(missing_ok=True)
    with caplog.at_level(logging.WARNING):
        fresh = make(tmp_path)
    assert "unreadable" in caplog.text
    assert fresh.corrupt_rebuilds == 1
    assert len(fresh) == 0 and fresh.dropped_unreported() == 0
    seq = fresh.append("event", 1.0, b"after")
    assert fresh.peek(10) == [SpooledReport(seq, "event", 1.0, b"after")]
    aside = list((tmp_path / "state").glob("spool.db.corrupt-*"))
    assert aside and aside[0].read_bytes().startswith(b"this is not a database")


def test_many_threads_appending_lose_nothing_and_share_no_sequence(tmp_path):
    spool = make(tmp_path)
    threads, per_thread = 8, 40
    results: list[list[int]] = [[] for _ in range(threads)]
    start = threading.Barrier(threads)

    def work(i):
        start.wait()
        for j in range(per_thread):
            results[i].append(spool.append("event", float(j), f"{i}:{j}".encode()))

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    every = [s for r in results for s in r]
    assert len(set(every)) == threads * per_thread
    assert all(r == sorted(r) for r in results)
    stored = spool.peek(threads * per_thread + 1)
    assert [r.sequence for r in stored] == sorted(every)
    assert {r.payload for r in stored} == {f"{i}:{j}".encode() for i in range(threads) for j in range(per_thread)}


def test_threads_past_the_bound_keep_count_and_drops_exact(tmp_path):
    spool = make(tmp_path, max_reports=25)
    workers = [threading.Thread(target=fill, args=(spool, 30)) for _ in range(6)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert len(spool) == 25
    assert spool.dropped_unreported() == 6 * 30 - 25
    assert [r.sequence for r in spool.peek(100)] == list(range(156, 181))


def test_empty_and_large_payloads_round_trip(tmp_path):
    spool = make(tmp_path)
    large = bytes(range(256)) * 4096  # 1 MiB, every byte value
    spool.append("status", 1.0, b"")
    spool.append("event", 2.0, large)
    spool.close()
    assert [r.payload for r in make(tmp_path).peek(2)] == [b"", large]


def test_arguments_are_checked(tmp_path):
    with pytest.raises(ValueError, match="max_reports"):
        make(tmp_path, max_reports=0)
    spool = make(tmp_path)
    with pytest.raises(ValueError, match="kind"):
        spool.append("metrics", 1.0, b"")
    with pytest.raises(ValueError, match="limit"):
        spool.peek(-1)
    assert len(spool) == 0


# -- spool epochs and report bounds (issue 16) -------------------------------------------------------------


def test_the_epoch_is_made_with_the_file_kept_across_reopens_and_new_after_a_rebuild(tmp_path):
    spool = make(tmp_path)
    epoch = spool.epoch
    assert len(epoch) == 32 and int(epoch, 16) >= 0
    fill(spool, 2)
    spool.close()
    again = make(tmp_path)
    assert again.epoch == epoch
    again.close()
    (tmp_path / "state" / "spool.db").write_bytes(b"this is not a database" * 100)
    (tmp_path / "state" / "spool.db-wal").unlink(missing_ok=True)
    rebuilt = make(tmp_path)
    assert rebuilt.corrupt_rebuilds == 1 and rebuilt.epoch not in ("", epoch)
    assert rebuilt.append("event", 1.0, b"") == 1, "a rebuilt spool numbers from 1 again: hence the new epoch"


def test_a_spool_from_before_epochs_gets_one_and_keeps_its_numbering(tmp_path):
    import sqlite3

    from edge_agent.control import spool as spool_mod

    path = tmp_path / "state" / "spool.db"
    path.parent.mkdir()
    old = sqlite3.connect(path)
    from edgefleet.sqlitedb import apply_migrations

    apply_migrations(old, spool_mod._MIGRATIONS[:1])
    old.executemany("INSERT INTO reports (kind, observed_at, payload) VALUES ('event', 1.0, x'')", [()] * 3)
    old.commit()
    old.close()
    upgraded = make(tmp_path)
    assert len(upgraded.epoch) == 32
    assert upgraded.append("event", 2.0, b"") == 4


def test_an_oversized_report_is_clipped_to_centrals_bounds_before_it_is_kept(tmp_path):
    from edgefleet import report_limits
    from edgefleet.v1 import common_pb2, fleet_pb2

    spool = make(tmp_path)
    status = common_pb2.NodeStatus(agent_version="1.2.3")
    status.activation.reason = "x" * 10_000
    status.system.temperatures.extend(common_pb2.Temperature(sensor=f"t{i}", celsius=1.0) for i in range(200))
    spool.append("status", 1.0, status.SerializeToString())
    spool.append("event", 2.0, fleet_pb2.Event(kind="k", message="m" * 5000).SerializeToString())
    kept_status, kept_event = (r.payload for r in spool.peek(2))
    status = common_pb2.NodeStatus.FromString(kept_status)
    assert report_limits.problem(status) == "" and status.agent_version == "1.2.3"
    assert len(status.activation.reason) == 2048 and len(status.system.temperatures) == 64
    assert report_limits.problem(fleet_pb2.Event.FromString(kept_event), "event") == ""


def test_a_report_too_big_even_clipped_is_counted_as_dropped(tmp_path, caplog):
    from edgefleet.v1 import common_pb2

    spool = make(tmp_path)
    status = common_pb2.NodeStatus()
    for i in range(64):
        status.routing.counts.add(data_class="c" * 256, route="r" * 256, count=i)
    with caplog.at_level(logging.WARNING):
        assert spool.append("status", 1.0, status.SerializeToString()) == 0
    assert "counted as dropped" in caplog.text
    assert len(spool) == 0 and spool.dropped_unreported() == 1
