"""Two store instances on one database, as two central replicas have them: what must hold when they race.

Each instance has its own connections (PostgreSQL: its own pool; SQLite: its own file handle), so to the
database they are two clients, as two processes are. PostgreSQL runs on a fresh database per test
(tests/postgres_db.py); the SQLite variants share one file.
"""

import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from central.audit import verify_chain
from central.store import AuditEvent, NodeRecord, SqliteFleetStore, StoreError, TokenRecord
from central.store.postgres import LEADER_LOCK_KEY, PostgresFleetStore
from postgres_db import postgres_database

ROOT = Path(__file__).resolve().parents[3]
WAIT_S = 30.0


def _token(uses: int) -> TokenRecord:
    return TokenRecord("tok", "hash", {}, 0.0, 1e12, uses, uses, False, "admin:a")


def _node(node_id: str) -> NodeRecord:
    return NodeRecord(node_id, {}, "box", 1.0, "tok", "ff", 2e9)


def _race(calls: list[Callable[[], object]]) -> list[object]:
    """Run the calls on threads released together; their results in call order (a raised error re-raised)."""
    barrier = threading.Barrier(len(calls))
    results: list[object] = [None] * len(calls)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = calls[i]()
        except BaseException as exc:  # noqa: BLE001 — re-raised by the test below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


def _wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {WAIT_S:g} s waiting for {what}")
        time.sleep(0.01)


@pytest.fixture
def pg_url():
    with postgres_database() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def two_stores(request, tmp_path):
    """Two instances on one database, as two replicas."""
    if request.param == "sqlite":
        stores = [SqliteFleetStore(tmp_path / "central.db"), SqliteFleetStore(tmp_path / "central.db")]
        yield stores
        for s in stores:
            s.close()
        return
    with postgres_database() as url:
        stores = [PostgresFleetStore(url, pool_size=8), PostgresFleetStore(url, pool_size=8)]
        yield stores
        for s in stores:
            s.close()


def test_twenty_enrollments_from_two_replicas_spend_a_ten_use_token_exactly(two_stores):
    a, b = two_stores
    a.add_token(_token(uses=10))
    results = _race([lambda i=i: (a, b)[i % 2].enroll("tok", _node(f"n{i:02d}"), 5.0) for i in range(20)])
    assert results.count(True) == 10
    assert len(b.list_nodes()) == 10 and a.get_token("tok").uses_left == 0


def test_audit_appends_from_two_replicas_make_one_chain(two_stores):
    a, b = two_stores

    def append_many(store, who):
        return [store.append_audit(float(i), who, "x", str(i), "allowed", "", "") for i in range(25)]

    _race([lambda: append_many(a, "replica:a"), lambda: append_many(b, "replica:b")])
    entries = list(a.iter_audit())
    assert [e.sequence for e in entries] == list(range(1, 51))
    check = verify_chain(entries)
    assert check.intact and check.entries_checked == 50, check.problem


def test_a_rollout_step_is_promoted_and_audited_once_when_replicas_race(two_stores):
    a, b = two_stores
    a.add_rollout("r1", "{}", "canary", 1.0)
    event = AuditEvent(2.0, "central:leader", "rollout.promote", "r1", "allowed", "canary -> wave-1", "")
    results = _race([lambda i=i: (a, b)[i % 2].advance_rollout("r1", "canary", "wave-1", [event]) for i in range(8)])
    assert results.count(True) == 1
    assert b.get_rollout("r1")[1] == "wave-1"
    assert [e.action for e in a.iter_audit()] == ["rollout.promote"], "audited once"


def test_overlapping_heartbeat_batches_from_two_replicas_do_not_deadlock(two_stores):
    a, b = two_stores
    a.add_token(_token(uses=300))
    for i in range(300):
        a.enroll("tok", _node(f"n{i:03d}"), 5.0)
    ids = [f"n{i:03d}" for i in range(300)]
    for round_ in range(10):
        # Two replicas each flush a batch naming every node, in opposite orders.
        batch_a = {node_id: (float(round_), b"a") for node_id in ids}
        batch_b = {node_id: (float(round_), b"b") for node_id in reversed(ids)}
        _race([lambda x=batch_a: a.record_heartbeats(x), lambda y=batch_b: b.record_heartbeats(y)])
    assert {n.status for n in a.list_nodes()} <= {b"a", b"b"}


def test_the_leader_lock_excludes_other_replicas(two_stores):
    a, b = two_stores
    lock_a, lock_b = a.leader_lock(), b.leader_lock()
    assert _race([lock_a.try_acquire, lock_b.try_acquire]).count(True) == 1
    holder, other = (lock_a, lock_b) if lock_a.held() else (lock_b, lock_a)
    assert not other.try_acquire()
    holder.release()
    assert other.try_acquire() and other.held() and not holder.held()
    other.release()


def test_a_terminated_leader_loses_the_lock_and_another_takes_over(pg_url):
    a, b = PostgresFleetStore(pg_url, pool_size=1), PostgresFleetStore(pg_url, pool_size=1)
    lock_a, lock_b = a.leader_lock(), b.leader_lock()
    try:
        assert lock_a.try_acquire()
        assert not lock_b.try_acquire()
        with psycopg.connect(pg_url, autocommit=True) as admin:
            [(pid,)] = admin.execute(
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objid = %s AND granted"
                " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
                (LEADER_LOCK_KEY,),
            ).fetchall()
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        _wait_for(lambda: not lock_a.held(), "the terminated holder to see its lock gone")
        _wait_for(lock_b.try_acquire, "the other replica to take the lock")
        assert lock_b.held() and not lock_a.held()
        assert lock_a.try_acquire() is False, "the old leader, reconnecting, finds it taken"
    finally:
        lock_a.release()
        lock_b.release()
        a.close()
        b.close()


_HOLD_SQLITE_LOCK = """
import sys
from pathlib import Path
from central.store import SqliteFleetStore
lock = SqliteFleetStore(Path(sys.argv[1])).leader_lock()
print(lock.try_acquire(), flush=True)
sys.stdin.read()
"""


def test_a_dead_process_s_sqlite_leader_lock_is_free_again(tmp_path):
    path = tmp_path / "central.db"
    store = SqliteFleetStore(path)
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_SQLITE_LOCK, str(path)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    lock = store.leader_lock()
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "True"
        assert not lock.try_acquire(), "another process holds it"
        holder.kill()
        holder.wait(timeout=WAIT_S)
        assert lock.try_acquire() and lock.held()
    finally:
        lock.release()
        if holder.poll() is None:
            holder.kill()
            holder.wait(timeout=WAIT_S)
        store.close()


def test_migrations_applied_twice_or_by_two_replicas_at_once_are_applied_once(pg_url):
    stores = _race([lambda: PostgresFleetStore(pg_url, pool_size=1) for _ in range(4)])
    stores.append(PostgresFleetStore(pg_url, pool_size=1))  # and once more, later
    for s in stores:
        s.close()
    with psycopg.connect(pg_url) as conn:
        versions = [r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY version")]
    from central.store.postgres import _MIGRATIONS

    assert versions == [v for v, _ in _MIGRATIONS]


def test_postgres_audit_rows_cannot_be_updated_deleted_or_truncated(pg_url):
    store = PostgresFleetStore(pg_url, pool_size=1)
    store.append_audit(1.0, "admin:a", "x", "", "allowed", "", "")
    store.close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        for statement in ("UPDATE audit SET detail = 'edited'", "DELETE FROM audit", "TRUNCATE audit"):
            with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
                conn.execute(statement)


def test_a_busy_pool_is_a_clear_error_after_its_timeout(pg_url):
    store = PostgresFleetStore(pg_url, pool_size=1, pool_timeout_s=0.5)
    store.add_token(_token(uses=1))
    with psycopg.connect(pg_url) as blocker:
        blocker.execute("SELECT 1 FROM tokens WHERE token_id = 'tok' FOR UPDATE")  # held until rollback
        enrolling = threading.Thread(target=lambda: store.enroll("tok", _node("n1"), 5.0))
        enrolling.start()  # takes the pool's only connection and waits on the row
        with psycopg.connect(pg_url, autocommit=True) as admin:
            _wait_for(
                lambda: (
                    admin.execute(
                        "SELECT count(*) FROM pg_stat_activity"
                        " WHERE wait_event_type = 'Lock' AND datname = current_database()"
                    ).fetchone()[0]
                    == 1
                ),
                "the enrollment to wait on the token's row",
            )
        with pytest.raises(StoreError, match=r"within 0.5 s.*all 1 pooled connections are busy"):
            store.get_token("tok")
        blocker.rollback()
    enrolling.join(WAIT_S)
    assert store.get_token("tok").uses_left == 0, "the enrollment went through once the row was free"
    store.close()


@pytest.mark.parametrize(
    "url, message",
    [
        ("postgresql://127.0.0.1:notaport/x", "port 'notaport' is not a number"),
        ("postgresql://127.0.0.1:5432/x?nosuchoption=1", "malformed PostgreSQL URL: invalid URI query parameter"),
        ("postgresql://postgres@127.0.0.1:5432/edgefleet_no_such_db", 'database "edgefleet_no_such_db" does not exist'),
    ],
)
def test_a_wrong_url_is_a_clear_store_error(url, message):
    from central.store import open_store

    with pytest.raises(StoreError, match=message):
        open_store(url)


def test_an_unreachable_database_is_a_fast_clear_error_without_the_password():
    from central.store import open_store
    from edgefleet.ports import free_port

    port = free_port()  # nothing listens there
    started = time.monotonic()
    with pytest.raises(StoreError) as caught:
        open_store(f"postgresql://postgres:s3cret-pw@127.0.0.1:{port}/fleet")
    assert time.monotonic() - started < 5.0
    message = str(caught.value)
    assert f"127.0.0.1:{port}/fleet" in message and "Connection refused" in message
    assert "s3cret-pw" not in message and "s3cret-pw" not in repr(caught.value.__cause__)


def test_open_store_and_display_store_tell_postgres_from_sqlite(pg_url, tmp_path):
    from central.store import display_store, open_store

    for spec in (pg_url, pg_url.replace("postgresql://", "postgres://", 1)):
        store = open_store(spec)
        assert isinstance(store, PostgresFleetStore) and store.remote
        store.close()
    store = open_store(tmp_path / "central.db")
    assert isinstance(store, SqliteFleetStore) and not store.remote
    store.close()
    assert (
        display_store("postgresql://fleet:pw@db.example:5432/fleet") == "postgresql://fleet:***@db.example:5432/fleet"
    )
    assert display_store("postgres://db/fleet?password=pw&sslmode=verify-full") == (
        "postgres://db/fleet?password=***&sslmode=verify-full"
    )
    assert display_store(tmp_path / "central.db") == str(tmp_path / "central.db")
