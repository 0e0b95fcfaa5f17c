"""The response cache on real SQLite files, with a controlled clock."""

import logging

import pytest

from edge_agent.cache import ResponseCache


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock():
    return Clock()


def make(tmp_path, clock, max_bytes=10_000, ttl_s=60.0):
    return ResponseCache(tmp_path / "cache" / "responses.db", max_bytes, ttl_s, clock)


def test_put_then_get_returns_the_bytes(tmp_path, clock):
    cache = make(tmp_path, clock)
    cache.put("k", "sha", b'{"a":1}')
    assert cache.get("k") == b'{"a":1}'
    assert cache.get("other") is None
    assert cache.stats().entries == 1 and cache.stats().bytes == 7


def test_entries_survive_a_restart(tmp_path, clock):
    cache = make(tmp_path, clock)
    cache.put("k", "sha", b"v" * 10)
    cache.close()
    again = make(tmp_path, clock)
    assert again.get("k") == b"v" * 10
    assert again.stats().bytes == 10


def test_expired_entry_is_a_miss_and_is_removed(tmp_path, clock):
    cache = make(tmp_path, clock, ttl_s=60)
    cache.put("k", "sha", b"value")
    clock.now += 59
    assert cache.get("k") == b"value"
    clock.now += 2
    assert cache.get("k") is None
    assert cache.stats().entries == 0 and cache.stats().bytes == 0


def test_least_recently_used_entries_are_evicted_past_the_byte_bound(tmp_path, clock):
    cache = make(tmp_path, clock, max_bytes=300)
    for name in "abc":
        cache.put(name, "sha", b"x" * 100)
        clock.now += 1
    assert cache.get("a") is not None  # a is now more recent than b
    clock.now += 1
    cache.put("d", "sha", b"x" * 100)
    assert cache.get("b") is None
    assert all(cache.get(k) is not None for k in "acd")
    assert cache.stats().bytes <= 300


def test_replacing_a_key_keeps_byte_count_exact(tmp_path, clock):
    cache = make(tmp_path, clock)
    cache.put("k", "sha", b"x" * 100)
    cache.put("k", "sha", b"x" * 40)
    assert cache.stats().bytes == 40 and cache.stats().entries == 1


def test_an_entry_larger_than_the_bound_is_not_stored(tmp_path, clock):
    cache = make(tmp_path, clock, max_bytes=10)
    cache.put("k", "sha", b"x" * 11)
    assert cache.get("k") is None


def test_corrupt_file_is_set_aside_and_rebuilt(tmp_path, clock, caplog):
    cache = make(tmp_path, clock)
    cache.put("k", "sha", b"value")
    cache.close()
    db = tmp_path / "cache" / "responses.db"
    db.write_bytes(b"this is not a database" * 100)
    (tmp_path / "cache" / "responses.db-wal").unlink(missing_ok=True)
    with caplog.at_level(logging.WARNING):
        rebuilt = make(tmp_path, clock)
    assert "unreadable" in caplog.text
    assert rebuilt.corrupt_rebuilds == 1
    assert rebuilt.get("k") is None
    rebuilt.put("k2", "sha", b"fresh")
    assert rebuilt.get("k2") == b"fresh"
    assert list((tmp_path / "cache").glob("responses.db.corrupt-*"))


def test_file_corrupted_while_open_is_rebuilt_on_next_use(tmp_path, clock):
    cache = make(tmp_path, clock)
    for i in range(50):
        cache.put(f"k{i}", "sha", b"v" * 500)
    cache._flush_touched_locked()
    cache._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db = tmp_path / "cache" / "responses.db"
    data = bytearray(db.read_bytes())
    data[0:100] = b"\xff" * 100  # destroy the header
    data[4096:8192] = b"\x00\x13" * 2048
    db.write_bytes(bytes(data))
    cache._conn.close()
    cache._conn = __import__("sqlite3").connect(db, check_same_thread=False)
    assert cache.get("k1") is None
    cache.put("k1", "sha", b"again")
    assert cache.get("k1") == b"again"
    assert cache.corrupt_rebuilds == 1
