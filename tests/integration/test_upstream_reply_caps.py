"""An upstream that answers too much: a real agent process in front of a real HTTP server process that sends
bodies past the agent's caps (with and without a Content-Length, a stream too long in all, one event too long).
The client gets 502 upstream_reply_too_large (a stream: that error as its last event), the agent reads no further
than its cap, and it goes on serving."""

import json

import httpx
import pytest

from agent_process import start_agent
from central_process import wait_for
from logging_upstream import start_logging_upstream

MiB = 2**20


@pytest.fixture(scope="module")
def box(tmp_path_factory):
    upstream = start_logging_upstream(tmp_path_factory.mktemp("huge-upstream"))
    agent = None
    try:
        common = {"url": upstream.base_url + "/v1", "jurisdiction": "eu", "retries": 0, "failure_threshold": 100}
        agent = start_agent(
            tmp_path_factory.mktemp("capped-box"),
            sections={
                "policy": {},
                "policy.classes": [
                    {"name": "public", "jurisdictions": ["*"]},
                    {"name": "internal", "jurisdictions": []},
                    {"name": "restricted", "jurisdictions": []},
                ],
                "upstreams": [
                    # The default caps: 8 MiB a body, 64 MiB a stream, 1 MiB an event.
                    {
                        "name": "big",
                        "models": [f"huge-json:{20 * MiB}", f"huge-chunked:{20 * MiB}", f"huge-event:{32 * MiB}"],
                        **common,
                    },
                    {
                        "name": "tight",
                        "models": [f"huge-stream:{64 * MiB}", "logged-model"],
                        "max_stream_bytes": MiB,
                        **common,
                    },
                ],
            },
        )
        yield agent, upstream
    finally:
        if agent is not None:
            agent.stop()
        upstream.stop()


def _complete(agent, model: str, stream: bool = False) -> httpx.Response:
    body = {"model": model, "prompt": "Say hello.", "max_tokens": 4, "stream": stream}
    return httpx.post(agent.base_url + "/v1/completions", json=body, timeout=120)


def _cut_short(upstream, model: str) -> dict:
    """The upstream's record of its answer for ``model``: the agent hung up on it (closed the connection)."""
    answers = wait_for(lambda: [a for a in upstream.huge_answers() if a["model"] == model], what=f"{model}'s record")
    assert answers[-1]["cut"], f"the agent read all of {model}: {answers[-1]}"
    return answers[-1]


def _still_serving(agent) -> None:
    answer = _complete(agent, "logged-model")
    assert answer.status_code == 200 and answer.json()["choices"][0]["text"] == "logged"
    assert httpx.get(agent.base_url + "/readyz", timeout=30).status_code == 200


@pytest.mark.parametrize("model", [f"huge-json:{20 * MiB}", f"huge-chunked:{20 * MiB}"])
def test_a_body_past_max_reply_bytes_is_a_502_and_the_agent_goes_on(box, model):
    agent, upstream = box
    answer = _complete(agent, model)
    assert answer.status_code == 502
    assert answer.headers["x-edgefleet-route"] == "upstream:big"
    error = answer.json()["error"]
    assert error["code"] == "upstream_reply_too_large" and error["type"] == "upstream_error"
    assert "upstream big: the answer" in error["message"] and f"max_reply_bytes ({8 * MiB}" in error["message"]
    assert len(answer.content) < 1000
    assert _cut_short(upstream, model)["written"] < 20 * MiB
    _still_serving(agent)


def _events(answer: httpx.Response) -> list[str]:
    return [e for e in answer.text.split("\n\n") if e]


@pytest.mark.parametrize(
    "model, cap",
    [
        (f"huge-event:{32 * MiB}", f"one event of the stream passed {MiB} bytes (max_event_bytes)"),
        (f"huge-stream:{64 * MiB}", f"the streamed answer passed {MiB} bytes (max_stream_bytes)"),
    ],
)
def test_a_stream_past_its_caps_ends_with_the_error_event_and_the_agent_goes_on(box, model, cap):
    agent, upstream = box
    answer = _complete(agent, model, stream=True)
    assert answer.status_code == 200  # sent before the first byte; the error comes as the stream's last event
    events = _events(answer)
    assert events[-1] == "data: [DONE]"
    error = json.loads(events[-2].removeprefix("data: "))["error"]
    assert error["code"] == "upstream_reply_too_large" and cap in error["message"]
    assert len(answer.content) <= MiB + 1000, "relayed no further than the cap"
    assert all(e.startswith("data: {") or e == "data: [DONE]" for e in events), "no half event relayed"
    _cut_short(upstream, model)
    _still_serving(agent)
