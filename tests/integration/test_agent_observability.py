"""Issue 17 on a real agent (SmolLM2) enrolled to a real central, with a real upstream (tests/logging_upstream.py):
the new /metrics series after real chat requests, the upstream token and cost counters with and without the
upstream's usage, a heartbeat's InferenceStats with its buckets and upstream usage, and `edge-agent status` of
a stopped agent."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from agent_process import start_agent
from central_process import create_token, start_central, wait_for
from edge_agent.access import add_key
from edge_agent.control.client import enroll
from edge_agent.control.identity import FleetFiles
from edge_agent.engines.llama import LlamaBackend
from edge_agent.models import resolve_model
from edgefleet import histogram_buckets
from edgefleet.v1 import admin_pb2
from logging_upstream import ANSWER, STREAM_USAGE, USAGE, start_logging_upstream

MODEL = "smollm2-135m-instruct"
CLASSES = ("public", "internal", "restricted")
FAST_RETRY = {"max_backoff_s": 1.0, "rpc_timeout_s": 3.0}
PRICE_PROMPT, PRICE_COMPLETION = 0.5, 1.5
SYSTEM = (
    "You are a helpful assistant for a bicycle repair shop. Answer briefly and politely, in plain words, "
    "and never invent prices, opening hours or stock levels that you were not told about."
)


@pytest.fixture(scope="module")
def central(tmp_path_factory):
    process = start_central(tmp_path_factory.mktemp("central"), "--heartbeat-interval", "1s")
    yield process
    process.stop()


@pytest.fixture(scope="module")
def upstream(tmp_path_factory):
    server = start_logging_upstream(tmp_path_factory.mktemp("upstream"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def box(tmp_path_factory, central, upstream):
    data_dir = tmp_path_factory.mktemp("box")
    key, _ = add_key(data_dir / "api-keys.json", "acme", "restricted", 1000, 1000, CLASSES)
    token = create_token(central, region="eu")
    identity = enroll(central.enroll_address, token.ca_fingerprint, token.token, FleetFiles(data_dir))
    agent = start_agent(
        data_dir,
        sections={
            "model": {"n_parallel": 2},
            "fleet": FAST_RETRY,
            "policy": {},
            "policy.classes": [
                {"name": "public", "jurisdictions": ["*"]},
                {"name": "internal", "jurisdictions": ["eu"], "redact": True},
                {"name": "restricted", "jurisdictions": []},
            ],
            "upstreams": [
                {
                    "name": "cloud",
                    "url": upstream.base_url + "/v1",
                    "jurisdiction": "eu",
                    "models": ["cloud-model", "bare-model=no-usage-model"],
                    "retries": 0,
                    "timeout_s": 30.0,
                    "price_per_1k_prompt_tokens": PRICE_PROMPT,
                    "price_per_1k_completion_tokens": PRICE_COMPLETION,
                    "currency": "EUR",
                },
                {
                    # The same upstream under another name, told not to ask streams for their usage (as for an
                    # upstream that refuses stream_options).
                    "name": "quiet",
                    "url": upstream.base_url + "/v1",
                    "jurisdiction": "eu",
                    "models": ["quiet-model=cloud-model"],
                    "retries": 0,
                    "timeout_s": 30.0,
                    "stream_usage": False,
                },
            ],
        },
    )
    agent.key = key
    agent.node_id = identity.node_id
    yield agent
    agent.stop()


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    """The local model in-process, to count tokens as the agent does when an upstream sends no usage."""
    backend = LlamaBackend(resolve_model(MODEL, "", Path(tmp_path_factory.mktemp("m"))), 256, 1, 64)
    yield backend
    backend.close()


def _headers(agent) -> dict:
    return {"Authorization": f"Bearer {agent.key}", "Cache-Control": "no-store"}


def _chat(agent, messages, model=MODEL, stream=False, **extra) -> dict:
    """One chat request; its usage (from the usage chunk when streamed with include_usage) and its text."""
    body = {"model": model, "messages": messages, "max_tokens": 8, "temperature": 0.0, "stream": stream, **extra}
    url = agent.base_url + "/v1/chat/completions"
    if not stream:
        r = httpx.post(url, json=body, headers=_headers(agent), timeout=120)
        assert r.status_code == 200, r.text
        return {"usage": r.json().get("usage"), "route": r.headers["x-edgefleet-route"], "events": []}
    events = []
    with httpx.stream("POST", url, json=body, headers=_headers(agent), timeout=120) as r:
        assert r.status_code == 200, r.read()
        route = r.headers["x-edgefleet-route"]
        for line in r.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                events.append(json.loads(line[6:]))
    usage = next((e["usage"] for e in events if e.get("usage")), None)
    return {"usage": usage, "route": route, "events": events}


def _series(samples: dict[str, float], name: str, **labels: str) -> float:
    """The one sample of ``name`` whose labels include ``labels`` (0.0 when none yet)."""
    want = [f'{k}="{v}"' for k, v in labels.items()]
    found = [v for k, v in samples.items() if k.split("{")[0] == name and all(w in k for w in want)]
    assert len(found) <= 1, (name, labels, found)
    return found[0] if found else 0.0


def _model_version(samples) -> str:
    info = next(k for k in samples if k.startswith("edgefleet_model_info{"))
    fields = dict(part.split("=", 1) for part in info[info.index("{") + 1 : -1].split(","))
    return f"{fields['name'].strip(chr(34))}@{fields['version'].strip(chr(34))}"


def test_metrics_after_real_chat_requests(box):
    before = box.metrics()
    mv = _model_version(before)
    assert mv.startswith(MODEL + "@")
    questions = ["How do I fix a flat tyre?", "How do I oil a chain?", "How tight should brakes be?"]
    answers = [_chat(box, [{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}]) for q in questions]
    answers.append(
        _chat(
            box,
            [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Which pump do I need?"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert all(a["route"] == "local" for a in answers)
    after = box.metrics()

    def delta(name, **labels):
        return _series(after, name, model_version=mv, **labels) - _series(before, name, model_version=mv, **labels)

    prompt = sum(a["usage"]["prompt_tokens"] for a in answers)
    completion = sum(a["usage"]["completion_tokens"] for a in answers)
    # The engine's counters are exactly what the answers reported.
    assert delta("edgefleet_prompt_tokens_total") == prompt
    assert delta("edgefleet_generated_tokens_total") == completion
    assert delta("edgefleet_prefix_cache_queries_total") == prompt
    # The shared system prompt was reused from a slot's KV cells after the first request.
    hits = delta("edgefleet_prefix_cache_hits_total")
    assert 0 < hits < prompt
    assert delta("edgefleet_time_to_first_token_seconds_count", endpoint="chat") == len(answers)
    assert delta("edgefleet_time_to_first_token_seconds_sum", endpoint="chat") > 0
    assert delta("edgefleet_time_per_output_token_seconds_count") >= 1
    assert delta("edgefleet_time_per_output_token_seconds_sum") > 0
    assert _series(after, "edgefleet_num_requests_running", model_version=mv) == 0
    assert _series(after, "edgefleet_num_requests_waiting", model_version=mv) == 0
    cells = _series(after, "edgefleet_kv_cache_cells", model_version=mv)
    used = _series(after, "edgefleet_kv_cache_cells_used", model_version=mv)
    assert cells > 0 and 0 < used <= cells  # the finished sequences' prefixes stay for reuse
    assert _series(after, "edgefleet_kv_cache_usage_ratio", model_version=mv) == pytest.approx(used / cells)


def test_upstream_tokens_and_cost_with_and_without_the_upstreams_usage(box, upstream, tokenizer):
    before = box.metrics()
    labels = {"upstream": "cloud", "tenant": "acme", "data_class": "public"}
    messages = [{"role": "user", "content": "Write a short poem about the sea."}]
    received = len(upstream.posts())
    body = _chat(box, messages, model="cloud-model")
    plain_stream = _chat(box, messages, model="cloud-model", stream=True)
    usage_stream = _chat(box, messages, model="cloud-model", stream=True, stream_options={"include_usage": True})
    bare = _chat(box, messages, model="bare-model")
    bare_stream = _chat(box, messages, model="bare-model", stream=True)
    assert {a["route"] for a in (body, plain_stream, usage_stream, bare, bare_stream)} == {"upstream:cloud"}
    # Every stream asked the upstream for its usage; a client that did not ask did not get the usage chunk.
    sent = [json.loads(p["body"]) for p in upstream.posts()[received:]]
    assert [s.get("stream_options") for s in sent if s["stream"]] == [{"include_usage": True}] * 3
    assert plain_stream["usage"] is None and all(e["choices"] for e in plain_stream["events"])
    assert usage_stream["usage"] == STREAM_USAGE
    # Without the upstream's usage: counted with the local model's tokenizer.
    local_prompt = len(tokenizer.chat_prompt_tokens(messages))
    local_completion = len(tokenizer.tokenize(ANSWER, add_special=False))
    prompt = USAGE["prompt_tokens"] + 2 * STREAM_USAGE["prompt_tokens"] + 2 * local_prompt
    completion = USAGE["completion_tokens"] + 2 * STREAM_USAGE["completion_tokens"] + 2 * local_completion
    after = wait_for(
        lambda: (
            (m := box.metrics())
            and _series(m, "edgefleet_upstream_requests_total", **labels)
            - _series(before, "edgefleet_upstream_requests_total", **labels)
            == 5
            and m
        ),
        what="the five upstream answers counted (a stream is counted when it ends)",
    )

    def delta(name, **extra):
        return _series(after, name, **labels, **extra) - _series(before, name, **labels, **extra)

    assert delta("edgefleet_upstream_tokens_total", direction="prompt") == prompt
    assert delta("edgefleet_upstream_tokens_total", direction="completion") == completion
    cost = (prompt * PRICE_PROMPT + completion * PRICE_COMPLETION) / 1000
    assert delta("edgefleet_upstream_cost_total", currency="EUR") == pytest.approx(cost)
    counted = _series(after, "edgefleet_upstream_locally_counted_total", upstream="cloud")
    assert counted - _series(before, "edgefleet_upstream_locally_counted_total", upstream="cloud") == 2


def test_an_upstream_told_not_to_ask_for_stream_usage_is_not_asked_and_its_tokens_are_counted_here(
    box, upstream, tokenizer
):
    before = box.metrics()
    messages = [{"role": "user", "content": "Write a short poem about the sea."}]
    received = len(upstream.posts())
    streamed = _chat(box, messages, model="quiet-model", stream=True)
    assert streamed["route"] == "upstream:quiet" and streamed["usage"] is None
    sent = [json.loads(p["body"]) for p in upstream.posts()[received:]]
    assert len(sent) == 1 and "stream_options" not in sent[0], sent
    labels = {"upstream": "quiet", "tenant": "acme", "data_class": "public"}
    after = wait_for(
        lambda: (
            (m := box.metrics())
            and _series(m, "edgefleet_upstream_requests_total", **labels)
            - _series(before, "edgefleet_upstream_requests_total", **labels)
            == 1
            and m
        ),
        what="the quiet upstream's stream counted when it ended",
    )
    local_prompt = len(tokenizer.chat_prompt_tokens(messages))
    prompt = _series(after, "edgefleet_upstream_tokens_total", **labels, direction="prompt") - _series(
        before, "edgefleet_upstream_tokens_total", **labels, direction="prompt"
    )
    assert prompt == local_prompt
    counted = _series(after, "edgefleet_upstream_locally_counted_total", upstream="quiet")
    assert counted - _series(before, "edgefleet_upstream_locally_counted_total", upstream="quiet") == 1


def _statuses(central, node_id, seen: dict) -> dict:
    with central.admin() as admin:
        node = admin.call("GetNode", admin_pb2.GetNodeRequest(node_id=node_id, report_limit=1)).node
    if node.HasField("status"):
        seen[node.status.observed_at.ToNanoseconds()] = node.status
    return seen


def test_a_heartbeat_carries_the_buckets_and_the_upstream_usage(box, central):
    """What the heartbeats carried, read two ways: the raw statuses central keeps (GetNode shows only the latest,
    so a busy poller can miss a window; local requests are sent until a window with requests is seen), and
    central's rollups and burst usage, which add up every window, so none can be missed."""
    seen: dict = {}
    _statuses(central, box.node_id, seen)  # what was reported before these requests
    earlier = set(seen)
    _chat(box, [{"role": "user", "content": "Write a short poem about the sea."}], model="cloud-model")

    def a_window_with_requests():
        _chat(box, [{"role": "user", "content": "Name a colour."}])
        statuses = [s for at, s in _statuses(central, box.node_id, seen).items() if at not in earlier]
        with_requests = [s for s in statuses if s.inference.requests and sum(s.inference.ttft_buckets)]
        return with_requests and statuses

    statuses = wait_for(a_window_with_requests, what="a heartbeat window with requests and first tokens")
    for status in statuses:
        inference = status.inference
        assert len(inference.latency_buckets) == len(inference.ttft_buckets) == histogram_buckets.BUCKETS
        assert sum(inference.latency_buckets) == inference.requests  # every request, exactly
        assert 0 <= inference.cached_prompt_tokens <= inference.prompt_tokens
        if sum(inference.ttft_buckets):
            assert 0 < inference.ttft_p50_ms <= inference.ttft_p99_ms

    def burst_row():
        with central.admin() as admin:
            reply = admin.call("ListBurstUsage", admin_pb2.ListBurstUsageRequest(group_by=["tenant", "data_class"]))
        rows = [r for r in reply.rows if r.upstream == "cloud" and r.group["tenant"] == "acme"]
        return rows[0] if rows else None

    usage = wait_for(burst_row, what="the burst to the cloud upstream in central's burst usage")
    assert (usage.group["data_class"], usage.currency) == ("public", "EUR")
    assert usage.requests >= 1 and usage.prompt_tokens >= 1 and usage.completion_tokens >= 1
    assert usage.cost == pytest.approx(
        (usage.prompt_tokens * PRICE_PROMPT + usage.completion_tokens * PRICE_COMPLETION) / 1000
    )
    with central.admin() as admin:
        history = admin.call(
            "GetMetricsHistory", admin_pb2.GetMetricsHistoryRequest(scopes=[f"node:{box.node_id}"])
        ).series[0]
    assert sum(p.prompt_tokens for p in history.points) > 0
    assert sum(p.upstream_requests for p in history.points) >= 1
    assert max(p.ttft_p99_ms for p in history.points) > 0  # from the TTFT buckets the beats carried


def _status(data_dir: Path, *flags: str) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "edge_agent.cli", "status", "--data-dir", str(data_dir), *flags],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result


def test_status_of_a_stopped_agent_says_so(central, tmp_path):
    data_dir = tmp_path / "stopped"
    token = create_token(central)
    enroll(central.enroll_address, token.ca_fingerprint, token.token, FleetFiles(data_dir))
    agent = start_agent(data_dir, sections={"fleet": FAST_RETRY})
    try:
        wait_for(lambda: (FleetFiles(data_dir).read_state() or {}).get("last_heartbeat_at"), what="a heartbeat")
        running = json.loads(_status(data_dir, "--json").stdout)
        assert running["daemon_running"] is True and running["control"]["state"] == "connected"
        assert "link:        connected" in _status(data_dir).stdout
    finally:
        agent.stop()
    # The state file still says "connected": it is what the daemon last wrote.
    assert FleetFiles(data_dir).read_state()["state"] == "connected"
    text = _status(data_dir).stdout
    assert "daemon:      not running" in text
    assert "(daemon not running)" in text and "last heartbeat" in text
    assert "connected" not in text
    report = json.loads(_status(data_dir, "--json").stdout)
    assert report["daemon_running"] is False and report["serving"]["running"] is False
    assert isinstance(report["last_heartbeat_age_s"], float) and report["last_heartbeat_age_s"] >= 0
