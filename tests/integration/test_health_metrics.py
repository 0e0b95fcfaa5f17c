"""Health endpoints and the Prometheus metrics of a real agent."""

import httpx

REQUIRED = [
    "edgefleet_requests_total",
    "edgefleet_request_duration_seconds_bucket",
    "edgefleet_time_to_first_token_seconds_bucket",
    "edgefleet_generated_tokens_total",
    "edgefleet_prompt_tokens_total",
    "edgefleet_queue_depth",
    "edgefleet_inflight_requests",
    "edgefleet_cache_hits_total",
    "edgefleet_cache_misses_total",
    "edgefleet_cache_bytes",
    "edgefleet_model_info",
]


def test_healthz_and_readyz(smol_agent):
    assert httpx.get(smol_agent.base_url + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(smol_agent.base_url + "/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"


def test_metrics_have_every_required_family_and_count_requests(smol_agent):
    httpx.post(
        smol_agent.base_url + "/v1/completions",
        timeout=120,
        json={"model": "smollm2-135m-instruct", "prompt": "metrics", "max_tokens": 3, "temperature": 0.5},
    )
    samples = smol_agent.metrics()
    names = {key.split("{")[0] for key in samples}
    for name in REQUIRED:
        assert name in names, name
    assert samples['edgefleet_requests_total{endpoint="/v1/completions",route="local",status="200"}'] >= 1
    ttft = [
        v
        for k, v in samples.items()
        if k.startswith('edgefleet_time_to_first_token_seconds_count{endpoint="completions"')
    ]
    assert ttft and ttft[0] >= 1
    info = next(k for k in samples if k.startswith("edgefleet_model_info"))
    for label in ('name="smollm2-135m-instruct"', 'engine="llama_cpp"', 'device="cpu"', "version=", "sha256="):
        assert label in info
