"""Prometheus metrics of the agent, in one registry per process.

Counters and histograms are updated by the HTTP layer; gauges that mirror
live state (queue depth, in-flight requests, cache bytes, KV cells) and the
engine's own token counters are read at scrape time from their owners, so
they can never drift. Engine figures carry ``model_version="NAME@VERSION"``
of the model being served; after a switch the new version's series start
from zero (a counter reset to Prometheus' ``rate``).

Names, units and meaning follow vLLM's and llama.cpp's servers (seconds,
tokens, KV cells) with an ``edgefleet_`` prefix; docs/agent.md lists each
with its equivalent there.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from edge_agent.cache import CacheStats
from edge_agent.control.interval_stats import IntervalStats, UpstreamUsage
from edge_agent.scheduler import SchedulerStats

if TYPE_CHECKING:
    # Only a type here: the daemon imports federated's counters when federated learning is on.
    from federated.local_data import UsageCounters

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
# vLLM's time_per_output_token buckets, with three below 10 ms for small models on a GPU.
_TPOT_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)  # fmt: skip


def model_version(name: str, version: str) -> str:
    """The ``model_version`` label: "NAME@VERSION" (a local file without a version: its sha256's first 12 digits,
    as ``edgefleet_model_info`` shows it)."""
    return f"{name}@{version}"


def model_version_of_info(info: Mapping[str, str]) -> str:
    """``model_version`` of the dict ``edgefleet_model_info`` is made of; "" when it names no model."""
    return model_version(info["name"], info.get("version", "")) if info.get("name") else ""


class AgentMetrics:
    def __init__(
        self,
        model_info: Callable[[], dict[str, str]],
        scheduler_stats: Callable[[], SchedulerStats],
        cache_stats: Callable[[], CacheStats | None],
        onnx_providers: Callable[[], list[str]] = list,
        upstream_states: Callable[[], dict[str, str]] = dict,
    ):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("edgefleet_requests", "HTTP API requests.", ["endpoint", "route", "status"], registry=r)
        self.request_duration = Histogram(
            "edgefleet_request_duration_seconds",
            "Time from request to last byte.",
            ["endpoint"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "edgefleet_time_to_first_token_seconds",
            "Time from request to the first generated text (vLLM's time_to_first_token_seconds).",
            ["endpoint", "model_version"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.tpot = Histogram(
            "edgefleet_time_per_output_token_seconds",
            "Per request: time from the first to the last generated token over the tokens after the first "
            "(vLLM's time_per_output_token_seconds).",
            ["model_version"],
            buckets=_TPOT_BUCKETS,
            registry=r,
        )
        upstream_labels = ["upstream", "tenant", "data_class"]
        self.upstream_requests = Counter(
            "edgefleet_upstream_requests",
            "Requests an upstream answered (2xx), by upstream, the API key's tenant and the data class.",
            upstream_labels,
            registry=r,
        )
        self.upstream_tokens = Counter(
            "edgefleet_upstream_tokens",
            "Tokens sent to (prompt) and received from (completion) upstreams: the upstream's usage, "
            "else counted with the local model's tokenizer.",
            [*upstream_labels, "direction"],
            registry=r,
        )
        self.upstream_cost = Counter(
            "edgefleet_upstream_cost",
            "What upstream answers cost at the upstream's configured prices per 1,000 tokens, in its currency.",
            [*upstream_labels, "currency"],
            registry=r,
        )
        self.upstream_locally_counted = Counter(
            "edgefleet_upstream_locally_counted",
            "Upstream answers without usage, whose tokens the agent counted with the local model's tokenizer.",
            ["upstream"],
            registry=r,
        )
        self.cache_hits = Counter("edgefleet_cache_hits", "Answers served from the response cache.", registry=r)
        self.cache_misses = Counter("edgefleet_cache_misses", "Cache lookups that found nothing.", registry=r)
        self.overloaded = Counter("edgefleet_rejected_overloaded", "Requests refused with 429: queue full.", registry=r)
        self.rate_limited = Counter(
            "edgefleet_rejected_rate_limited", "Requests refused with 429: over the API key's rate.", registry=r
        )
        self.routed = Counter(
            "edgefleet_routed_requests",
            "Inference requests by data class and where they were answered (local, upstream:NAME, refused).",
            ["data_class", "route"],
            registry=r,
        )
        self.detector_hits = Counter(
            "edgefleet_detector_hits", "Requests a detector (or the classifier) fired on.", ["detector"], registry=r
        )
        self.classification_failures = Counter(
            "edgefleet_classification_failures",
            "Requests whose classification failed, by the error's kind; each "
            "was treated as the most sensitive data class.",
            ["kind"],
            registry=r,
        )
        self.classification_duration = Histogram(
            "edgefleet_classification_seconds",
            "Time to classify a request's text.",
            buckets=(0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05),
            registry=r,
        )
        self.trust_updates_refused = Counter(
            "edgefleet_trust_updates_refused",
            "Trust bundles from central refused because a CA or signing key in them did not verify; "
            "each left the node's trust unchanged.",
            registry=r,
        )
        # Figures since the last heartbeat, for central (Prometheus keeps the cumulative ones).
        self.window = IntervalStats(time.monotonic())
        # Figures since the last probation check of a newly activated model version.
        self.probation = IntervalStats(time.monotonic())
        r.register(_LiveCollector(model_info, scheduler_stats, cache_stats, onnx_providers, upstream_states))
        # Usage totals for the usage-stats federated task, when on.
        self.usage: UsageCounters | None = None

    def observe_inference(self, latency_s: float, error: bool) -> None:
        self.window.record_request(latency_s, error)
        self.probation.record_request(latency_s, error)
        if self.usage is not None:
            self.usage.record_request(latency_s, time.time())

    def observe_first_token(self, endpoint: str, model_version: str, ttft_s: float) -> None:
        """A request's time to its first generated text."""
        self.ttft.labels(endpoint, model_version).observe(ttft_s)
        self.window.record_ttft(ttft_s)

    def observe_output(self, model_version: str, first_token_at: float, last_token_at: float, tokens: int) -> None:
        """A finished generation of ``tokens`` tokens, its first and last at these (monotonic) times: one
        time-per-output-token observation when there was more than one token."""
        if tokens > 1:
            self.tpot.labels(model_version).observe(max(0.0, last_token_at - first_token_at) / (tokens - 1))

    def observe_upstream(self, usage: UpstreamUsage) -> None:
        """One upstream answer's usage: the Prometheus counters and the heartbeat window."""
        labels = (usage.upstream, usage.tenant, usage.data_class)
        self.upstream_requests.labels(*labels).inc(usage.requests)
        self.upstream_tokens.labels(*labels, "prompt").inc(usage.prompt_tokens)
        self.upstream_tokens.labels(*labels, "completion").inc(usage.completion_tokens)
        if usage.currency:
            self.upstream_cost.labels(*labels, usage.currency).inc(usage.cost)
        if usage.locally_counted:
            self.upstream_locally_counted.labels(usage.upstream).inc(usage.locally_counted)
        self.window.record_upstream(usage)

    def count_classification_failure(self, kind: str) -> None:
        self.classification_failures.labels(kind).inc()

    def observe_cache(self, hit: bool) -> None:
        self.window.record_cache(hit)
        self.probation.record_cache(hit)
        if self.usage is not None:
            self.usage.record_cache(hit)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _LiveCollector:
    def __init__(self, model_info, scheduler_stats, cache_stats, onnx_providers, upstream_states):
        self._upstream_states = upstream_states
        self._model_info = model_info
        self._scheduler_stats = scheduler_stats
        self._cache_stats = cache_stats
        self._onnx_providers = onnx_providers

    def collect(self):
        stats = self._scheduler_stats()
        model_info = self._model_info()
        yield GaugeMetricFamily(
            "edgefleet_queue_depth", "Requests waiting for a sequence slot.", value=stats.queue_depth
        )
        yield GaugeMetricFamily("edgefleet_inflight_requests", "Requests generating now.", value=stats.inflight)
        yield GaugeMetricFamily(
            "edgefleet_sequence_slots", "Sequences decoded together in one batch.", value=stats.slots
        )
        yield from _engine_families(stats, model_version_of_info(model_info))
        yield CounterMetricFamily(
            "edgefleet_cancelled_requests", "Generations stopped because the client went away.", value=stats.cancelled
        )
        cache = self._cache_stats()
        yield GaugeMetricFamily(
            "edgefleet_cache_bytes", "Bytes of answers in the response cache.", value=cache.bytes if cache else 0
        )
        yield GaugeMetricFamily(
            "edgefleet_cache_entries", "Answers in the response cache.", value=cache.entries if cache else 0
        )
        info = GaugeMetricFamily("edgefleet_model_info", "The model being served.", labels=list(model_info))
        info.add_metric(list(model_info.values()), 1)
        yield info
        providers = self._onnx_providers()
        if providers:
            onnx = GaugeMetricFamily(
                "edgefleet_onnx_provider_info",
                "onnxruntime execution providers in use, by priority.",
                labels=["provider", "priority"],
            )
            for i, name in enumerate(providers):
                onnx.add_metric([name, str(i)], 1)
            yield onnx
        states = self._upstream_states()
        if states:
            circuit = GaugeMetricFamily(
                "edgefleet_upstream_circuit",
                "Each upstream's circuit breaker: 1 for its state now.",
                labels=["upstream", "state"],
            )
            for name, state in states.items():
                for candidate in ("closed", "open", "half_open"):
                    circuit.add_metric([name, candidate], 1 if state == candidate else 0)
            yield circuit


def _engine_families(stats: SchedulerStats, version: str):
    """The serving model's engine figures, labelled with its model_version (vLLM's and llama.cpp's names)."""
    families = (
        (
            CounterMetricFamily,
            "edgefleet_generated_tokens",
            "Tokens generated by the engine, cancelled requests included (vLLM's generation_tokens).",
            stats.generated_tokens,
        ),
        (
            CounterMetricFamily,
            "edgefleet_prompt_tokens",
            "Prompt tokens given to the engine, prefix-cache hits included (vLLM's prompt_tokens).",
            stats.prompt_tokens,
        ),
        (
            CounterMetricFamily,
            "edgefleet_prefix_cache_queries",
            "Prompt tokens looked up in the engine's prefix cache (vLLM's prefix_cache_queries).",
            stats.prompt_tokens,
        ),
        (
            CounterMetricFamily,
            "edgefleet_prefix_cache_hits",
            "Prompt tokens whose KV cells were reused instead of decoded (vLLM's prefix_cache_hits).",
            stats.prefix_cache_hits,
        ),
        (
            GaugeMetricFamily,
            "edgefleet_num_requests_running",
            "Requests generating now (vLLM's num_requests_running).",
            stats.inflight,
        ),
        (
            GaugeMetricFamily,
            "edgefleet_num_requests_waiting",
            "Requests waiting for a sequence slot (vLLM's num_requests_waiting).",
            stats.queue_depth,
        ),
        (
            GaugeMetricFamily,
            "edgefleet_kv_cache_cells_used",
            "KV cells holding a token: live sequences and prefixes kept for reuse (llama.cpp's kv_cache_tokens).",
            stats.kv_cells_used,
        ),
        (GaugeMetricFamily, "edgefleet_kv_cache_cells", "KV cells in all, every sequence's.", stats.kv_cells),
        (
            GaugeMetricFamily,
            "edgefleet_kv_cache_usage_ratio",
            "KV cells used over KV cells, 0..1 (llama.cpp's kv_cache_usage_ratio).",
            stats.kv_cells_used / stats.kv_cells if stats.kv_cells else 0.0,
        ),
    )
    for kind, name, help_text, value in families:
        family = kind(name, help_text, labels=["model_version"])
        family.add_metric([version], value)
        yield family
