"""The agent's Prometheus families of issue 17, rendered from given scheduler and engine figures."""

from prometheus_client.parser import text_string_to_metric_families

from edge_agent.control.interval_stats import UpstreamUsage
from edge_agent.metrics import AgentMetrics, model_version, model_version_of_info
from edge_agent.scheduler import SchedulerStats

INFO = {"name": "smollm2", "version": "1.0", "sha256": "0" * 64, "engine": "llama_cpp", "device": "cpu"}
STATS = SchedulerStats(
    queue_depth=2,
    inflight=3,
    slots=4,
    prompt_tokens=500,
    generated_tokens=120,
    prefix_cache_hits=200,
    kv_cells_used=256,
    kv_cells=1024,
)


def _samples(metrics: AgentMetrics) -> dict[tuple[str, tuple], float]:
    text = metrics.render().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _metrics() -> AgentMetrics:
    return AgentMetrics(model_info=lambda: INFO, scheduler_stats=lambda: STATS, cache_stats=lambda: None)


def test_model_version_label():
    assert model_version("smollm2", "1.0") == "smollm2@1.0" == model_version_of_info(INFO)
    assert model_version_of_info({}) == ""


def test_engine_families_carry_the_model_version():
    samples = _samples(_metrics())
    mv = (("model_version", "smollm2@1.0"),)
    assert samples["edgefleet_prompt_tokens_total", mv] == 500
    assert samples["edgefleet_generated_tokens_total", mv] == 120
    assert samples["edgefleet_prefix_cache_queries_total", mv] == 500
    assert samples["edgefleet_prefix_cache_hits_total", mv] == 200
    assert samples["edgefleet_num_requests_running", mv] == 3
    assert samples["edgefleet_num_requests_waiting", mv] == 2
    assert samples["edgefleet_kv_cache_cells_used", mv] == 256
    assert samples["edgefleet_kv_cache_cells", mv] == 1024
    assert samples["edgefleet_kv_cache_usage_ratio", mv] == 0.25
    # The older names stay.
    assert samples["edgefleet_queue_depth", ()] == 2 and samples["edgefleet_inflight_requests", ()] == 3


def test_ttft_and_time_per_output_token():
    metrics = _metrics()
    metrics.observe_first_token("chat", "smollm2@1.0", 0.25)
    metrics.observe_output("smollm2@1.0", first_token_at=10.0, last_token_at=10.9, tokens=10)
    metrics.observe_output("smollm2@1.0", first_token_at=10.0, last_token_at=10.0, tokens=1)  # no gap to time
    samples = _samples(metrics)
    assert (
        samples["edgefleet_time_to_first_token_seconds_count", (("endpoint", "chat"), ("model_version", "smollm2@1.0"))]
        == 1
    )
    assert samples["edgefleet_time_per_output_token_seconds_count", (("model_version", "smollm2@1.0"),)] == 1
    assert abs(samples["edgefleet_time_per_output_token_seconds_sum", (("model_version", "smollm2@1.0"),)] - 0.1) < 1e-9
    assert sum(metrics.window.take(0, now=1e9).ttft_buckets) == 1


def test_upstream_usage_counters():
    metrics = _metrics()
    metrics.observe_upstream(UpstreamUsage("cloud", "acme", "public", 1, 100, 20, 0.08, "EUR", 1))
    metrics.observe_upstream(UpstreamUsage("free", "acme", "public", 1, 5, 5, 0.0, "", 0))
    samples = _samples(metrics)
    labels = (("data_class", "public"), ("tenant", "acme"), ("upstream", "cloud"))
    assert samples["edgefleet_upstream_requests_total", labels] == 1
    assert samples["edgefleet_upstream_tokens_total", tuple(sorted((*labels, ("direction", "prompt"))))] == 100
    assert samples["edgefleet_upstream_tokens_total", tuple(sorted((*labels, ("direction", "completion"))))] == 20
    assert samples["edgefleet_upstream_cost_total", tuple(sorted((*labels, ("currency", "EUR"))))] == 0.08
    assert not any(name == "edgefleet_upstream_cost_total" and ("upstream", "free") in lab for name, lab in samples)
    assert samples["edgefleet_upstream_locally_counted_total", (("upstream", "cloud"),)] == 1
