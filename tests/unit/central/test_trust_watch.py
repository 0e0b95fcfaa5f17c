"""central.server's trust watch on a real data dir and store: a replica's own rotation (through the handler) is not
reported as trust files copied in from another replica; files changed behind its back still are, and are served."""

from __future__ import annotations

import asyncio
import logging
import time

from central import rotation, server
from central.datadir import CentralPaths
from central.services import trust
from central.services.base import CentralSettings
from central_handlers import central_with_callers

RELOADED = "reloaded the data dir's trust files"


def test_only_trust_files_from_elsewhere_are_reported(tmp_path, monkeypatch, caplog):
    gen = central_with_callers(tmp_path, "sqlite", CentralSettings(), time.time())
    central, admin, _ = next(gen)
    paths = CentralPaths(tmp_path / "central")
    trust.apply(central, rotation.load_trust(paths))
    trust.reconcile_store(central.store, central.trust)
    monkeypatch.setattr(server, "TRUST_CHECK_INTERVAL_S", 0.01)
    rounds = []  # the states each round checked against the store: the watch's progress
    check = trust.lag_against_store
    monkeypatch.setattr(trust, "lag_against_store", lambda store, state: rounds.append(state) or check(store, state))

    async def rounds_after(count: int) -> None:
        wanted = len(rounds) + count

        async def reached() -> None:
            while len(rounds) < wanted:
                await asyncio.sleep(0.01)

        await asyncio.wait_for(reached(), 10)

    async def scenario() -> None:
        stop = asyncio.Event()
        watch = asyncio.create_task(server._watch_trust(central, stop))
        await rounds_after(1)
        rotated = trust.rotate_signing_key(central, admin, 3600)  # this replica's own rotation
        await rounds_after(2)
        assert RELOADED not in caplog.text, "the replica's own rotation is not news"
        assert central.trust.history.current.key_id == rotated.current.key_id
        # Another replica's rotation, copied in: the files change behind this replica's back.
        elsewhere = rotation.finish_signing_rotation(paths, time.time())[0]
        await rounds_after(2)
        assert RELOADED in caplog.text
        assert central.trust.version == elsewhere.version
        stop.set()
        await watch

    try:
        with caplog.at_level(logging.INFO, logger="central.server"):
            asyncio.run(scenario())
    finally:
        gen.close()
