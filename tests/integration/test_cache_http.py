"""The response cache through the HTTP API of real agents, on real SQLite files."""

import shutil
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from agent_process import start_agent

SMOL = "smollm2-135m-instruct"


def post(agent, path, body, headers=None):
    return httpx.post(agent.base_url + path, json=body, headers=headers or {}, timeout=120)


def body(prompt, **extra):
    return {"model": SMOL, "prompt": prompt, "max_tokens": 6, "temperature": 0, **extra}


def test_miss_then_hit_returns_the_same_answer(smol_agent):
    first = post(smol_agent, "/v1/completions", body("cache hit test"))
    second = post(smol_agent, "/v1/completions", body("cache hit test", user="someone else"))
    assert first.headers["x-cache"] == "miss" and second.headers["x-cache"] == "hit"
    assert first.json() == second.json()


def test_sampled_request_without_seed_bypasses_the_cache(smol_agent):
    r = post(smol_agent, "/v1/completions", body("bypass test", temperature=0.8))
    assert r.status_code == 200 and r.headers["x-cache"] == "bypass"


def test_seeded_sampled_request_is_cached(smol_agent):
    assert post(smol_agent, "/v1/completions", body("seed test", temperature=0.8, seed=5)).headers["x-cache"] == "miss"
    assert post(smol_agent, "/v1/completions", body("seed test", temperature=0.8, seed=5)).headers["x-cache"] == "hit"
    assert post(smol_agent, "/v1/completions", body("seed test", temperature=0.8, seed=6)).headers["x-cache"] == "miss"


def test_cache_control_no_cache_refreshes_and_no_store_stays_out(smol_agent):
    b = body("cache-control test")
    assert post(smol_agent, "/v1/completions", b, {"Cache-Control": "no-store"}).headers["x-cache"] == "bypass"
    assert post(smol_agent, "/v1/completions", b).headers["x-cache"] == "miss"  # no-store stored nothing
    assert post(smol_agent, "/v1/completions", b, {"Cache-Control": "no-cache"}).headers["x-cache"] == "bypass"
    assert post(smol_agent, "/v1/completions", b).headers["x-cache"] == "hit"


def test_streamed_request_is_served_from_a_non_streamed_answer_as_sse(smol_agent):
    plain = post(
        smol_agent,
        "/v1/chat/completions",
        {"model": SMOL, "messages": [{"role": "user", "content": "stream replay"}], "max_tokens": 6, "temperature": 0},
    ).json()
    raw = smol_agent.client().chat.completions.with_raw_response.create(
        model=SMOL,
        messages=[{"role": "user", "content": "stream replay"}],
        max_tokens=6,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    assert raw.headers["x-cache"] == "hit"
    chunks = list(raw.parse())
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain["choices"][0]["message"]["content"]
    assert chunks[-1].usage.completion_tokens == plain["usage"]["completion_tokens"]


def test_streamed_answer_is_cached_for_a_plain_request(smol_agent):
    stream = list(
        smol_agent.client().completions.create(
            model=SMOL, prompt="streamed first", max_tokens=6, temperature=0, stream=True
        )
    )
    text = "".join(c.choices[0].text for c in stream)
    r = post(smol_agent, "/v1/completions", body("streamed first"))
    assert r.headers["x-cache"] == "hit" and r.json()["choices"][0]["text"] == text


def test_single_flight_generates_identical_concurrent_requests_once(smol_agent):
    before = smol_agent.metrics()
    b = body("single flight test", max_tokens=24)
    with ThreadPoolExecutor(6) as pool:
        responses = list(pool.map(lambda _: post(smol_agent, "/v1/completions", b), range(6)))
    after = smol_agent.metrics()
    assert sorted(r.headers["x-cache"] for r in responses) == ["hit"] * 5 + ["miss"]
    assert len({r.content for r in responses}) == 1
    generated = after["edgefleet_generated_tokens_total"] - before["edgefleet_generated_tokens_total"]
    assert generated == responses[0].json()["usage"]["completion_tokens"]


def test_new_model_version_never_gets_another_versions_answer(tmp_path):
    """Two different artifacts served under the same model id and the same data dir."""
    from edge_agent.models import BUILTIN_MODELS, _distribution_file

    original = _distribution_file(BUILTIN_MODELS[SMOL].distribution, ".gguf")
    v1, v2 = tmp_path / "v1" / "m.gguf", tmp_path / "v2" / "m.gguf"
    for path in (v1, v2):
        path.parent.mkdir()
        shutil.copyfile(original, path)
    with open(v2, "ab") as f:  # other bytes, same name: a new version of "m"
        f.write(b"\0" * 64)
    data = tmp_path / "data"
    b = {"model": "m", "prompt": "version isolation", "max_tokens": 4, "temperature": 0}
    for version in (v1, v2):  # v2 starts on v1's cache file and must not see v1's answer
        agent = start_agent(data, model=str(version))
        try:
            assert post(agent, "/v1/completions", b).headers["x-cache"] == "miss"
            assert post(agent, "/v1/completions", b).headers["x-cache"] == "hit"
        finally:
            agent.stop()
    assert len(list((data / "cache").glob("responses.db.corrupt-*"))) == 0


def test_ttl_and_byte_bound_over_http(tmp_path):
    # Long enough that the hit right after the miss comes within it on a busy machine too.
    ttl_s = 5.0
    agent = start_agent(tmp_path, sections={"cache": {"ttl_s": ttl_s, "max_bytes": 1200}})
    try:
        assert post(agent, "/v1/completions", body("ttl")).headers["x-cache"] == "miss"
        stored_by = time.monotonic()  # the answer was stored before it was sent
        assert post(agent, "/v1/completions", body("ttl")).headers["x-cache"] == "hit"
        # The TTL itself is what is tested, so this waits it out; the clock-driven unit test covers the logic.
        time.sleep(max(0.0, stored_by + ttl_s + 0.2 - time.monotonic()))
        assert post(agent, "/v1/completions", body("ttl")).headers["x-cache"] == "miss"
        # Each answer is ~350 bytes: a fourth one evicts the least recently used.
        for prompt in ("a1", "a2", "a3", "a4"):
            post(agent, "/v1/completions", body(prompt))
        assert agent.metrics()["edgefleet_cache_bytes"] <= 1200
        assert post(agent, "/v1/completions", body("a4")).headers["x-cache"] == "hit"
        assert post(agent, "/v1/completions", body("ttl")).headers["x-cache"] == "miss"
    finally:
        agent.stop()


def test_corrupt_cache_file_is_set_aside_and_the_agent_serves(tmp_path):
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir(parents=True)
    (cache_dir / "responses.db").write_bytes(b"garbage, not SQLite " * 512)
    agent = start_agent(tmp_path)
    try:
        assert "unreadable" in agent.log()
        assert list(cache_dir.glob("responses.db.corrupt-*"))
        assert post(agent, "/v1/completions", body("after corruption")).headers["x-cache"] == "miss"
        assert post(agent, "/v1/completions", body("after corruption")).headers["x-cache"] == "hit"
    finally:
        agent.stop()
