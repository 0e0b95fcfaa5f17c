"""Leader election over the store's real leader lock: a SQLite file lock, and a PostgreSQL session advisory
lock (two store instances stand for two replicas).

Tried: two candidates at once (one leads), the leader releasing (the other takes over with the next term),
the leader's database session killed under it (it learns it was deposed at its next check, and the other
takes over), a follower checking again and again while the leader holds the lock (it claims nothing).
"""

from __future__ import annotations

import pytest

from central.leadership import DEPOSED, ELECTED, Leadership
from central.store import SqliteFleetStore, open_store
from postgres_db import postgres_url  # noqa: F401 - the fixture


@pytest.fixture(params=["sqlite", "postgres"])
def two_stores(request, tmp_path):
    if request.param == "sqlite":
        stores = [SqliteFleetStore(tmp_path / "central.db"), SqliteFleetStore(tmp_path / "central.db")]
    else:
        url = request.getfixturevalue("postgres_url")
        stores = [open_store(url), open_store(url)]
    yield stores
    for store in stores:
        store.close()


def test_one_of_two_candidates_leads_and_the_other_takes_over_when_it_steps_down(two_stores):
    a = Leadership(two_stores[0], "a:7443", clock=lambda: 100.0)
    b = Leadership(two_stores[1], "b:7443", clock=lambda: 200.0)
    assert a.check() == ELECTED and a.is_leader and a.term == 1
    assert b.check() is None and not b.is_leader
    assert a.check() is None and a.is_leader  # still holds it
    leader = two_stores[1].leadership()
    assert (leader.replica_id, leader.term, leader.since) == ("a:7443", 1, 100.0)
    a.release()
    assert not a.is_leader
    assert b.check() == ELECTED and b.term == 2
    assert two_stores[0].leadership().replica_id == "b:7443"
    b.release()


def test_a_leader_whose_session_dies_is_deposed_and_another_takes_over(postgres_url):  # noqa: F811
    import psycopg

    stores = [open_store(postgres_url), open_store(postgres_url)]
    try:
        a, b = Leadership(stores[0], "a:7443"), Leadership(stores[1], "b:7443")
        assert a.check() == ELECTED
        assert b.check() is None
        # The database ends the leader's session (as it does when the leader's machine is lost).
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            killed = admin.execute(
                "SELECT pg_terminate_backend(l.pid) FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted"
                " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            ).fetchall()
        assert killed == [(True,)]
        assert a.check() == DEPOSED and not a.is_leader
        assert b.check() == ELECTED and b.term == 2
        b.release()
    finally:
        for store in stores:
            store.close()


def test_a_follower_claims_nothing_while_the_leader_holds_the_lock(tmp_path):
    store = SqliteFleetStore(tmp_path / "central.db")
    holder = SqliteFleetStore(tmp_path / "central.db")
    try:
        leading = Leadership(holder, "a:7443")
        assert leading.check() == ELECTED
        follower = Leadership(store, "b:7443")
        for _ in range(3):
            assert follower.check() is None
        assert store.leadership().replica_id == "a:7443" and store.leadership().term == 1
        leading.release()
    finally:
        store.close()
        holder.close()
