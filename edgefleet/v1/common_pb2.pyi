import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ActivationState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACTIVATION_STATE_UNSPECIFIED: _ClassVar[ActivationState]
    ACTIVATION_STATE_DOWNLOADING: _ClassVar[ActivationState]
    ACTIVATION_STATE_VERIFYING: _ClassVar[ActivationState]
    ACTIVATION_STATE_WARMING: _ClassVar[ActivationState]
    ACTIVATION_STATE_ACTIVE: _ClassVar[ActivationState]
    ACTIVATION_STATE_FAILED: _ClassVar[ActivationState]
    ACTIVATION_STATE_ROLLED_BACK: _ClassVar[ActivationState]
ACTIVATION_STATE_UNSPECIFIED: ActivationState
ACTIVATION_STATE_DOWNLOADING: ActivationState
ACTIVATION_STATE_VERIFYING: ActivationState
ACTIVATION_STATE_WARMING: ActivationState
ACTIVATION_STATE_ACTIVE: ActivationState
ACTIVATION_STATE_FAILED: ActivationState
ACTIVATION_STATE_ROLLED_BACK: ActivationState

class NodeStatus(_message.Message):
    __slots__ = ("agent_version", "active_model", "system", "inference", "config_generation", "observed_at", "uptime_seconds", "activation", "routing", "model_slot")
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_MODEL_FIELD_NUMBER: _ClassVar[int]
    SYSTEM_FIELD_NUMBER: _ClassVar[int]
    INFERENCE_FIELD_NUMBER: _ClassVar[int]
    CONFIG_GENERATION_FIELD_NUMBER: _ClassVar[int]
    OBSERVED_AT_FIELD_NUMBER: _ClassVar[int]
    UPTIME_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ACTIVATION_FIELD_NUMBER: _ClassVar[int]
    ROUTING_FIELD_NUMBER: _ClassVar[int]
    MODEL_SLOT_FIELD_NUMBER: _ClassVar[int]
    agent_version: str
    active_model: ModelRef
    system: SystemMetrics
    inference: InferenceStats
    config_generation: int
    observed_at: _timestamp_pb2.Timestamp
    uptime_seconds: float
    activation: Activation
    routing: RoutingSummary
    model_slot: str
    def __init__(self, agent_version: _Optional[str] = ..., active_model: _Optional[_Union[ModelRef, _Mapping]] = ..., system: _Optional[_Union[SystemMetrics, _Mapping]] = ..., inference: _Optional[_Union[InferenceStats, _Mapping]] = ..., config_generation: _Optional[int] = ..., observed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., uptime_seconds: _Optional[float] = ..., activation: _Optional[_Union[Activation, _Mapping]] = ..., routing: _Optional[_Union[RoutingSummary, _Mapping]] = ..., model_slot: _Optional[str] = ...) -> None: ...

class RoutingSummary(_message.Message):
    __slots__ = ("counts", "audit_sequence", "audit_head_hash")
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    AUDIT_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    AUDIT_HEAD_HASH_FIELD_NUMBER: _ClassVar[int]
    counts: _containers.RepeatedCompositeFieldContainer[RouteCount]
    audit_sequence: int
    audit_head_hash: str
    def __init__(self, counts: _Optional[_Iterable[_Union[RouteCount, _Mapping]]] = ..., audit_sequence: _Optional[int] = ..., audit_head_hash: _Optional[str] = ...) -> None: ...

class RouteCount(_message.Message):
    __slots__ = ("data_class", "route", "count")
    DATA_CLASS_FIELD_NUMBER: _ClassVar[int]
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    data_class: str
    route: str
    count: int
    def __init__(self, data_class: _Optional[str] = ..., route: _Optional[str] = ..., count: _Optional[int] = ...) -> None: ...

class Activation(_message.Message):
    __slots__ = ("model", "state", "bytes_done", "bytes_total", "reason", "since")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    BYTES_DONE_FIELD_NUMBER: _ClassVar[int]
    BYTES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    model: ModelRef
    state: ActivationState
    bytes_done: int
    bytes_total: int
    reason: str
    since: _timestamp_pb2.Timestamp
    def __init__(self, model: _Optional[_Union[ModelRef, _Mapping]] = ..., state: _Optional[_Union[ActivationState, str]] = ..., bytes_done: _Optional[int] = ..., bytes_total: _Optional[int] = ..., reason: _Optional[str] = ..., since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ModelRef(_message.Message):
    __slots__ = ("name", "version", "sha256")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    sha256: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., sha256: _Optional[str] = ...) -> None: ...

class SystemMetrics(_message.Message):
    __slots__ = ("cpu_percent", "cpu_count", "load_average_1m", "memory_used_bytes", "memory_total_bytes", "disk_used_bytes", "disk_total_bytes", "temperatures", "gpus")
    CPU_PERCENT_FIELD_NUMBER: _ClassVar[int]
    CPU_COUNT_FIELD_NUMBER: _ClassVar[int]
    LOAD_AVERAGE_1M_FIELD_NUMBER: _ClassVar[int]
    MEMORY_USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    DISK_USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    DISK_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURES_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    cpu_percent: float
    cpu_count: int
    load_average_1m: float
    memory_used_bytes: int
    memory_total_bytes: int
    disk_used_bytes: int
    disk_total_bytes: int
    temperatures: _containers.RepeatedCompositeFieldContainer[Temperature]
    gpus: _containers.RepeatedCompositeFieldContainer[GpuMetrics]
    def __init__(self, cpu_percent: _Optional[float] = ..., cpu_count: _Optional[int] = ..., load_average_1m: _Optional[float] = ..., memory_used_bytes: _Optional[int] = ..., memory_total_bytes: _Optional[int] = ..., disk_used_bytes: _Optional[int] = ..., disk_total_bytes: _Optional[int] = ..., temperatures: _Optional[_Iterable[_Union[Temperature, _Mapping]]] = ..., gpus: _Optional[_Iterable[_Union[GpuMetrics, _Mapping]]] = ...) -> None: ...

class Temperature(_message.Message):
    __slots__ = ("sensor", "celsius")
    SENSOR_FIELD_NUMBER: _ClassVar[int]
    CELSIUS_FIELD_NUMBER: _ClassVar[int]
    sensor: str
    celsius: float
    def __init__(self, sensor: _Optional[str] = ..., celsius: _Optional[float] = ...) -> None: ...

class GpuMetrics(_message.Message):
    __slots__ = ("name", "utilization_percent", "memory_used_bytes", "memory_total_bytes", "temperature_celsius", "source")
    NAME_FIELD_NUMBER: _ClassVar[int]
    UTILIZATION_PERCENT_FIELD_NUMBER: _ClassVar[int]
    MEMORY_USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_CELSIUS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    name: str
    utilization_percent: float
    memory_used_bytes: int
    memory_total_bytes: int
    temperature_celsius: float
    source: str
    def __init__(self, name: _Optional[str] = ..., utilization_percent: _Optional[float] = ..., memory_used_bytes: _Optional[int] = ..., memory_total_bytes: _Optional[int] = ..., temperature_celsius: _Optional[float] = ..., source: _Optional[str] = ...) -> None: ...

class InferenceStats(_message.Message):
    __slots__ = ("interval_seconds", "requests", "errors", "generated_tokens", "tokens_per_second", "latency_p50_ms", "latency_p99_ms", "queue_depth", "cache_hits", "cache_lookups", "prompt_tokens", "cached_prompt_tokens", "latency_buckets", "ttft_buckets", "ttft_p50_ms", "ttft_p99_ms", "running", "upstream_usage")
    INTERVAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    GENERATED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TOKENS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P50_MS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P99_MS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_DEPTH_FIELD_NUMBER: _ClassVar[int]
    CACHE_HITS_FIELD_NUMBER: _ClassVar[int]
    CACHE_LOOKUPS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CACHED_PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_BUCKETS_FIELD_NUMBER: _ClassVar[int]
    TTFT_BUCKETS_FIELD_NUMBER: _ClassVar[int]
    TTFT_P50_MS_FIELD_NUMBER: _ClassVar[int]
    TTFT_P99_MS_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    UPSTREAM_USAGE_FIELD_NUMBER: _ClassVar[int]
    interval_seconds: float
    requests: int
    errors: int
    generated_tokens: int
    tokens_per_second: float
    latency_p50_ms: float
    latency_p99_ms: float
    queue_depth: int
    cache_hits: int
    cache_lookups: int
    prompt_tokens: int
    cached_prompt_tokens: int
    latency_buckets: _containers.RepeatedScalarFieldContainer[int]
    ttft_buckets: _containers.RepeatedScalarFieldContainer[int]
    ttft_p50_ms: float
    ttft_p99_ms: float
    running: int
    upstream_usage: _containers.RepeatedCompositeFieldContainer[UpstreamUsage]
    def __init__(self, interval_seconds: _Optional[float] = ..., requests: _Optional[int] = ..., errors: _Optional[int] = ..., generated_tokens: _Optional[int] = ..., tokens_per_second: _Optional[float] = ..., latency_p50_ms: _Optional[float] = ..., latency_p99_ms: _Optional[float] = ..., queue_depth: _Optional[int] = ..., cache_hits: _Optional[int] = ..., cache_lookups: _Optional[int] = ..., prompt_tokens: _Optional[int] = ..., cached_prompt_tokens: _Optional[int] = ..., latency_buckets: _Optional[_Iterable[int]] = ..., ttft_buckets: _Optional[_Iterable[int]] = ..., ttft_p50_ms: _Optional[float] = ..., ttft_p99_ms: _Optional[float] = ..., running: _Optional[int] = ..., upstream_usage: _Optional[_Iterable[_Union[UpstreamUsage, _Mapping]]] = ...) -> None: ...

class UpstreamUsage(_message.Message):
    __slots__ = ("upstream", "tenant", "data_class", "requests", "prompt_tokens", "completion_tokens", "cost", "currency", "locally_counted")
    UPSTREAM_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    DATA_CLASS_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    LOCALLY_COUNTED_FIELD_NUMBER: _ClassVar[int]
    upstream: str
    tenant: str
    data_class: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cost: float
    currency: str
    locally_counted: int
    def __init__(self, upstream: _Optional[str] = ..., tenant: _Optional[str] = ..., data_class: _Optional[str] = ..., requests: _Optional[int] = ..., prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ..., cost: _Optional[float] = ..., currency: _Optional[str] = ..., locally_counted: _Optional[int] = ...) -> None: ...

class SignedManifest(_message.Message):
    __slots__ = ("body", "signature")
    BODY_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    body: bytes
    signature: str
    def __init__(self, body: _Optional[bytes] = ..., signature: _Optional[str] = ...) -> None: ...
