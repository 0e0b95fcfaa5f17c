"""Prometheus metrics of the agent, in one registry per process.

Counters and histograms are updated by the HTTP layer; gauges that mirror
live state (queue depth, in-flight requests, cache bytes) are read at scrape
time from their owners, so they can never drift.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from edge_agent.cache import CacheStats
from edge_agent.control.interval_stats import IntervalStats
from edge_agent.scheduler import SchedulerStats

if TYPE_CHECKING:
    # Only a type here: the daemon imports federated's counters when federated learning is on.
    from federated.local_data import UsageCounters

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


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
            "Time from request to the first generated text.",
            ["endpoint"],
            buckets=_LATENCY_BUCKETS,
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
        yield GaugeMetricFamily(
            "edgefleet_queue_depth", "Requests waiting for a sequence slot.", value=stats.queue_depth
        )
        yield GaugeMetricFamily("edgefleet_inflight_requests", "Requests generating now.", value=stats.inflight)
        yield GaugeMetricFamily(
            "edgefleet_sequence_slots", "Sequences decoded together in one batch.", value=stats.slots
        )
        yield CounterMetricFamily(
            "edgefleet_generated_tokens",
            "Tokens generated by the engine, cancelled requests included.",
            value=stats.generated_tokens,
        )
        yield CounterMetricFamily(
            "edgefleet_prompt_tokens", "Prompt tokens decoded by the engine.", value=stats.prompt_tokens
        )
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
        model_info = self._model_info()
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
