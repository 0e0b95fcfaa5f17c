"""Shared fixtures: real agent processes on real models, on free loopback ports."""

import os

import pytest
from hypothesis import settings

from agent_process import start_agent
from central_process import start_central

# Under CI the property tests draw the same examples every run, so a failure there reproduces rather than
# coming and going with the draw; elsewhere each run explores new ones.
settings.register_profile("ci", derandomize=True)
if os.environ.get("CI") == "true":
    settings.load_profile("ci")


@pytest.fixture(scope="session")
def smol_agent(tmp_path_factory):
    """The default chat model, SmolLM2-135M-Instruct, with default settings."""
    agent = start_agent(tmp_path_factory.mktemp("smol"))
    yield agent
    agent.stop()


@pytest.fixture(scope="session")
def gemma_agent(tmp_path_factory):
    """gemma-3-270m, a base model without a chat template."""
    agent = start_agent(tmp_path_factory.mktemp("gemma"), model="gemma-3-270m")
    yield agent
    agent.stop()


@pytest.fixture
def fleet(tmp_path):
    """A central with a 0.5 s heartbeat interval, and a list the test appends its agents to; every agent
    and central are stopped by pid afterwards, whatever the outcome."""
    central = start_central(tmp_path / "central", "--heartbeat-interval", "0.5s")
    agents = []
    yield central, agents
    for agent in agents:
        agent.stop()
    central.stop()
