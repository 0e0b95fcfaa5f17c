"""The Activator follows the name and version central assigns, not only the bytes: the same file pushed again as
chat@2.0.0 (or under another name) is switched to, from the slot that holds it, so the box's reports
(NodeStatus.active_model, the activation) and the model id clients ask for say chat@2.0.0. Real ModelSlots on a
tmp dir with a key made here, a real event loop thread; the model is a stand-in (no engine is loaded)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
from dataclasses import dataclass
from types import SimpleNamespace

import pytest

from edge_agent.config import FleetConfig
from edge_agent.control.activation import ACTIVE, FAILED, Activator
from edge_agent.control.artifacts import ArtifactError, ModelSlots
from edge_agent.control.client import ModelInfo
from edge_agent.models import ModelArtifact
from edgefleet import manifest, pki

DATA = os.urandom(4096)
SHA = hashlib.sha256(DATA).hexdigest()


@dataclass
class Serving:
    """What the Activator reads of a ServingModel: the backend's artifact and the model id."""

    backend: SimpleNamespace
    model_id: str

    @property
    def sha256(self) -> str:
        return self.backend.artifact.sha256

    def close(self) -> None:
        pass


def serving(name: str, version: str, path) -> Serving:
    return Serving(SimpleNamespace(artifact=ModelArtifact(name, path, SHA, len(DATA), version)), name)


class Service:
    def __init__(self, current: Serving):
        self.current = current

    @property
    def model_sha256(self) -> str:
        return self.current.sha256

    async def warm_up(self, model: Serving) -> None:
        pass

    async def switch_to(self, new: Serving, drain_timeout_s: float, warm: bool = True) -> Serving:
        old, self.current = self.current, new
        return old


@pytest.fixture(scope="module")
def key():
    return pki.generate_signing_key()


@pytest.fixture
def loop():
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


def signed(key, name: str, version: str) -> tuple[bytes, str]:
    return manifest.sign(manifest.Manifest(name, version, "gguf", SHA, len(DATA)), key)


@pytest.fixture
def slots(tmp_path, key):
    """chat@1.0.0 downloaded into slot a and active, as after its activation."""
    slots = ModelSlots(tmp_path, pki.public_key_pem(key))
    installed = slots.verify_manifest(*signed(key, "chat", "1.0.0"))
    slots.download(installed, lambda offset: iter([(0, DATA, len(DATA))]))
    slots.activate("a")
    return slots


class Fleet:
    """An Activator on the slots, serving chat@1.0.0 from slot a; `loads` records each model it loads."""

    def __init__(self, slots, loop, key, fail_versions=()):
        self.key, self.loads = key, []
        self.service = Service(serving("chat", "1.0.0", slots.active().path))

        def load(m, path):
            self.loads.append((m.name, m.version, path))
            if m.version in fail_versions:
                raise ArtifactError("the test generation failed")
            return serving(m.name, m.version, path)

        def client():
            raise AssertionError("nothing is downloaded: the bytes are in a slot already")

        fleet = FleetConfig(probation_s=0)
        self.activator = Activator(slots, client, self.service, loop, load, 5.0, fleet)

    def assign(self, name: str, version: str) -> None:
        self.activator.want(ModelInfo(name, version, SHA), *signed(self.key, name, version))
        thread = self.activator._thread
        if thread is not None:
            thread.join(30)
            assert not thread.is_alive()

    @property
    def reported(self) -> tuple[str, str]:
        """NodeStatus.active_model as the daemon builds it (from the serving backend's artifact)."""
        a = self.service.current.backend.artifact
        return a.name, a.version


def test_the_same_bytes_as_a_new_version_are_switched_to_and_reported_under_it(slots, loop, key):
    fleet = Fleet(slots, loop, key)
    fleet.assign("chat", "1.0.0")  # after a restart: what the slot serves, nothing loaded
    assert fleet.activator.status.model == ModelInfo("chat", "1.0.0", SHA) and fleet.activator.status.state == ACTIVE
    assert fleet.loads == []

    fleet.assign("chat", "2.0.0")
    assert fleet.activator.status.model == ModelInfo("chat", "2.0.0", SHA)
    assert fleet.activator.status.state == ACTIVE
    assert fleet.reported == ("chat", "2.0.0")
    status = fleet.activator.status
    assert status.bytes_done == status.bytes_total == len(DATA), "every byte is on the box, none fetched"
    assert fleet.loads == [("chat", "2.0.0", slots.slot_dir("a") / "model.gguf")], "loaded from the slot it is in"
    assert slots.active().slot == "a"

    fleet.assign("chat", "2.0.0")  # the next heartbeats: nothing more to do
    assert len(fleet.loads) == 1 and fleet.activator.status.state == ACTIVE


def test_the_same_bytes_under_another_name_change_the_model_id(slots, loop, key):
    fleet = Fleet(slots, loop, key)
    fleet.assign("assistant", "1.0.0")
    assert fleet.activator.status.state == ACTIVE
    assert fleet.service.current.model_id == "assistant" and fleet.reported == ("assistant", "1.0.0")


def test_a_failed_version_waits_for_another_even_of_the_same_bytes(slots, loop, key):
    fleet = Fleet(slots, loop, key, fail_versions={"2.0.0"})
    fleet.assign("chat", "2.0.0")
    assert fleet.activator.status.state == FAILED and fleet.reported == ("chat", "1.0.0"), "1.0.0 serves on"
    fleet.assign("chat", "2.0.0")
    assert len(fleet.loads) == 1, "the same version is not retried"
    fleet.assign("chat", "3.0.0")
    assert fleet.activator.status.state == ACTIVE and fleet.reported == ("chat", "3.0.0")
