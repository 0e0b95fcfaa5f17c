"""Heartbeats' batched reads of the desired state (central.heartbeats.TargetReads), on a real store.

Tried: many beats arriving together (fewer reads than beats, each beat its own node's answer), a revoked and
an unknown node (None), a store that fails (every waiting beat gets the error, and the next beat is read
again), a beat arriving while a read is in flight (it waits for the next read, begun after it arrived).
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from central.heartbeats import TargetReads
from central.store import NodeRecord, SqliteFleetStore, StoreError, TokenRecord


class CountingStore(SqliteFleetStore):
    """The real store, noting the batches it is asked to read; it can be told to fail or to hold a read."""

    def __init__(self, path):
        super().__init__(path)
        self.batches: list[list[str]] = []
        self.fail = False
        self.hold = threading.Event()
        self.hold.set()
        self.reading = threading.Event()

    def heartbeat_targets(self, node_ids):
        self.batches.append(list(node_ids))
        self.reading.set()
        self.hold.wait(10)
        if self.fail:
            raise StoreError("the database went away")
        return super().heartbeat_targets(node_ids)


@pytest.fixture
def store(tmp_path):
    store = CountingStore(tmp_path / "central.db")
    store.add_token(TokenRecord("t", "h", {}, 0.0, 1e12, 100, 100, False, "admin:a"))
    for i in range(40):
        store.enroll("t", NodeRecord(f"node-{i:02}", {}, "box", 1.0, "t", "ff", 2e9), 1.0)
    store.revoke_node("node-39", 2.0)
    yield store
    store.close()


def test_beats_arriving_together_are_read_together(store):
    async def main():
        with ThreadPoolExecutor(2) as pool:
            reads = TargetReads(store, pool)
            asked = [f"node-{i:02}" for i in range(40)] + ["ghost", "node-00"]
            return asked, await asyncio.gather(*(reads.get(n) for n in asked))

    asked, answers = asyncio.run(main())
    assert len(store.batches) < len(asked)
    assert sum(len(b) for b in store.batches) <= len(asked)
    for node_id, answer in zip(asked, answers, strict=True):
        assert answer == store.heartbeat_target(node_id)
    assert answers[asked.index("node-39")] is None and answers[asked.index("ghost")] is None


def test_a_failing_store_fails_every_waiting_beat_and_the_next_is_read_again(store):
    async def main():
        with ThreadPoolExecutor(2) as pool:
            reads = TargetReads(store, pool)
            store.fail = True
            failed = await asyncio.gather(*(reads.get(f"node-{i:02}") for i in range(5)), return_exceptions=True)
            store.fail = False
            return failed, await reads.get("node-01")

    failed, answer = asyncio.run(main())
    assert all(isinstance(e, StoreError) for e in failed)
    assert answer == store.heartbeat_target("node-01")


def test_a_beat_arriving_during_a_read_waits_for_a_read_begun_after_it(store):
    async def main():
        with ThreadPoolExecutor(2) as pool:
            reads = TargetReads(store, pool)
            store.hold.clear()
            first = asyncio.ensure_future(reads.get("node-01"))
            await asyncio.get_running_loop().run_in_executor(None, store.reading.wait, 10)
            second = asyncio.ensure_future(reads.get("node-02"))
            await asyncio.sleep(0)
            store.revoke_node("node-02", 3.0)  # committed before the read that answers the second beat
            store.hold.set()
            return await first, await second

    first, second = asyncio.run(main())
    assert first == store.heartbeat_target("node-01")
    assert second is None, "the revocation committed after the first read began refuses the second beat"
    assert store.batches == [["node-01"], ["node-02"]]
