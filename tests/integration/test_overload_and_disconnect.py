"""Admission control and client disconnects on a real agent with one sequence slot."""

import time

import httpx
import pytest

from agent_process import start_agent

SMOL = "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def one_slot_agent(tmp_path_factory):
    agent = start_agent(
        tmp_path_factory.mktemp("one-slot"),
        sections={"model": {"n_parallel": 1}, "scheduler": {"max_queue": 1, "retry_after_s": 2}},
    )
    yield agent
    agent.stop()


def long_stream(agent, prompt):
    # ignore_eos: a generation that cannot end early, whatever the sampler draws.
    return {"model": SMOL, "prompt": prompt, "max_tokens": 1500, "temperature": 0.8, "stream": True, "ignore_eos": True}


def wait_for(predicate, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_full_queue_answers_429_with_retry_after_at_once(one_slot_agent):
    agent = one_slot_agent
    client = httpx.Client(timeout=60)
    streams, first_chunks = [], []
    try:
        for prompt in ("story one", "story two"):  # one generating, one queued
            ctx = client.stream("POST", agent.base_url + "/v1/completions", json=long_stream(agent, prompt))
            streams.append(ctx)
            response = ctx.__enter__()
            assert response.status_code == 200
            first_chunks.append(response)
        assert wait_for(lambda: agent.metrics()["edgefleet_queue_depth"] == 1)
        refused = httpx.post(
            agent.base_url + "/v1/completions", json={"model": SMOL, "prompt": "third", "max_tokens": 4}, timeout=30
        )
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "2"
        assert refused.json()["error"]["code"] == "queue_full"
    finally:
        for ctx in streams:
            ctx.__exit__(None, None, None)
        client.close()
    assert wait_for(lambda: agent.metrics()["edgefleet_inflight_requests"] == 0)
    ok = httpx.post(
        agent.base_url + "/v1/completions", json={"model": SMOL, "prompt": "after", "max_tokens": 3}, timeout=60
    )
    assert ok.status_code == 200
    assert agent.metrics()["edgefleet_rejected_overloaded_total"] >= 1


def test_client_disconnect_stops_generation(one_slot_agent):
    agent = one_slot_agent
    before = agent.metrics()
    with (
        httpx.Client(timeout=60) as client,
        client.stream("POST", agent.base_url + "/v1/completions", json=long_stream(agent, "a long tale")) as r,
    ):
        chunks = 0
        for line in r.iter_lines():
            if line.startswith("data: "):
                chunks += 1
            if chunks == 3:
                break  # leaving the block closes the connection mid-stream
    assert wait_for(lambda: agent.metrics()["edgefleet_inflight_requests"] == 0)
    after = agent.metrics()
    assert after["edgefleet_cancelled_requests_total"] == before["edgefleet_cancelled_requests_total"] + 1
    generated = after["edgefleet_generated_tokens_total"] - before["edgefleet_generated_tokens_total"]
    assert generated < 1500, "generation ran on after the client left"
    # Nothing keeps going once the slot is free: the counter stands still (the half second is the time we look
    # for tokens that should not come, not a wait for something to happen).
    time.sleep(0.5)
    assert agent.metrics()["edgefleet_generated_tokens_total"] == after["edgefleet_generated_tokens_total"]


def test_request_past_its_deadline_gets_504_and_frees_its_slot(tmp_path):
    agent = start_agent(tmp_path, sections={"server": {"request_timeout_s": 1.0}, "model": {"n_parallel": 1}})
    try:
        r = httpx.post(
            agent.base_url + "/v1/completions",
            timeout=60,
            json={
                "model": SMOL,
                "prompt": "an endless story",
                "max_tokens": 2000,
                "temperature": 0.8,
                "ignore_eos": True,
            },
        )
        assert r.status_code == 504
        assert r.json()["error"]["code"] == "deadline_exceeded"
        with httpx.stream(
            "POST",
            agent.base_url + "/v1/completions",
            timeout=60,
            json={**long_stream(agent, "another endless story"), "max_tokens": 2000},
        ) as s:
            events = [line for line in s.iter_lines() if line.startswith("data: ")]
        assert events[-1] == "data: [DONE]"
        assert '"deadline_exceeded"' in events[-2]
        assert wait_for(lambda: agent.metrics()["edgefleet_inflight_requests"] == 0)
        ok = httpx.post(
            agent.base_url + "/v1/completions", timeout=60, json={"model": SMOL, "prompt": "short", "max_tokens": 2}
        )
        assert ok.status_code == 200
    finally:
        agent.stop()


def test_client_leaving_a_non_streamed_request_stops_its_generation(one_slot_agent):
    agent = one_slot_agent
    before = agent.metrics()
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            agent.base_url + "/v1/completions",
            timeout=httpx.Timeout(60, read=1.0),
            json={
                "model": SMOL,
                "prompt": "a very long essay",
                "max_tokens": 1500,
                "temperature": 0.8,
                "ignore_eos": True,
            },
        )
    assert wait_for(lambda: agent.metrics()["edgefleet_inflight_requests"] == 0)
    after = agent.metrics()
    assert after["edgefleet_cancelled_requests_total"] == before["edgefleet_cancelled_requests_total"] + 1
    assert after["edgefleet_generated_tokens_total"] - before["edgefleet_generated_tokens_total"] < 1500
