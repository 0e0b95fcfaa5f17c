"""The agent's configuration: frozen value objects, validated at load.

A TOML file (documented example: ``packaging/edge-agent.example.toml``) is read
into :class:`AgentConfig`; CLI flags override it through :func:`with_overrides`.
Every problem raises :class:`ConfigError` naming the key, e.g.
``server.listen: expected HOST:PORT, got 'localhost'``.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

if sys.version_info >= (3, 11):
    import tomllib
else:  # JetPack 6 ships Python 3.10
    import tomli as tomllib

from edge_agent.errors import AgentError

DEFAULT_LISTEN = "127.0.0.1:8080"
DEFAULT_MODEL = "smollm2-135m-instruct"


class ConfigError(AgentError):
    """The configuration is invalid; the message names the key."""


@dataclass(frozen=True)
class ServerConfig:
    listen: str = DEFAULT_LISTEN
    max_body_bytes: int = 1 << 20
    # Deadline for one request, queueing and generation together.
    request_timeout_s: float = 300.0


@dataclass(frozen=True)
class ModelConfig:
    # A built-in model name (see edge_agent.models) or a path to a GGUF file.
    name: str = DEFAULT_MODEL
    path: str = ""
    # Context length per sequence, in tokens.
    n_ctx: int = 2048
    # Sequences decoded together in one batch.
    n_parallel: int = 8
    n_batch: int = 512
    # 0: one per CPU core.
    n_threads: int = 0
    # Layers offloaded to the GPU (-1: all); 0 on CPU-only boxes.
    n_gpu_layers: int = 0


@dataclass(frozen=True)
class EmbeddingsConfig:
    # "llama_cpp" (the serving model's embeddings) or "onnx" (an ONNX encoder).
    engine: str = "llama_cpp"
    onnx_model: str = ""
    # A Hugging Face tokenizers JSON file for the ONNX encoder.
    onnx_tokenizer: str = ""


@dataclass(frozen=True)
class SchedulerConfig:
    # Requests allowed to wait for a free sequence slot; beyond it: 429.
    max_queue: int = 64
    retry_after_s: int = 1


@dataclass(frozen=True)
class CacheConfig:
    enabled: bool = True
    max_bytes: int = 256 << 20
    ttl_s: float = 7 * 24 * 3600.0


@dataclass(frozen=True)
class FleetConfig:
    # Report to central when the data dir holds an enrollment (`edge-agent enroll`).
    enabled: bool = True
    # Status reports and events kept while central is unreachable; the oldest go first.
    spool_max_reports: int = 10_000
    # Seconds an RPC to central may take before it counts as failed.
    rpc_timeout_s: float = 10.0
    # Longest wait between retries while central is unreachable.
    max_backoff_s: float = 60.0
    # A newly activated version must answer its test generation within this many seconds.
    warmup_max_s: float = 120.0
    # After activation, each heartbeat window is judged for this long; a breach switches back by itself.
    probation_s: float = 300.0
    probation_max_error_rate: float = 0.05
    probation_max_p99_ms: float = 30000.0


@dataclass(frozen=True)
class FederatedConfig:
    # Take part in central's federated learning runs (needs an enrollment with a SuperLink, Python 3.11+).
    enabled: bool = False
    # "fast": federated.fast_supernode (Flower's protocol and client, no idle waits, only the code-free FAB);
    # "flower": the stock flower-supernode.
    supernode: str = "fast"
    # Port of the SuperNode's local Runtime API on 127.0.0.1; 0 picks a free one.
    clientappio_port: int = 0


@dataclass(frozen=True)
class AgentConfig:
    data_dir: str = ""
    log_level: str = "info"
    server: ServerConfig = field(default_factory=ServerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    embeddings: EmbeddingsConfig = field(default_factory=EmbeddingsConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    fleet: FleetConfig = field(default_factory=FleetConfig)
    federated: FederatedConfig = field(default_factory=FederatedConfig)

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir) if self.data_dir else default_data_dir()


# Written into the data dir by the daemon once its socket is bound: the real address when the config
# asked for port 0 (tests, several agents on one box); read by `edge-agent status`.
HTTP_ADDRESS_FILE = "http-address"


def default_data_dir() -> Path:
    """systemd's StateDirectory when run as a unit, else the user's state dir."""
    state = os.environ.get("STATE_DIRECTORY")
    if state:
        return Path(state.split(":")[0])
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "edgefleet"


_SECTIONS = {
    "server": ServerConfig,
    "model": ModelConfig,
    "embeddings": EmbeddingsConfig,
    "scheduler": SchedulerConfig,
    "cache": CacheConfig,
    "fleet": FleetConfig,
    "federated": FederatedConfig,
}
_LOG_LEVELS = ("debug", "info", "warning", "error")


def load_config(path: str | os.PathLike[str] | None) -> AgentConfig:
    """Read and validate a TOML config; None gives the defaults."""
    if path is None:
        return validate(AgentConfig())
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    return parse_config(raw)


def parse_config(raw: Mapping[str, Any]) -> AgentConfig:
    top: dict[str, Any] = {}
    for key, value in raw.items():
        if key in _SECTIONS:
            if not isinstance(value, Mapping):
                raise ConfigError(f"{key}: expected a table, got {type(value).__name__}")
            top[key] = _build(_SECTIONS[key], value, prefix=key)
        elif key in ("data_dir", "log_level"):
            top[key] = _check_type(key, value, str)
        else:
            raise ConfigError(f"{key}: unknown key (known: {', '.join(_known_top())})")
    return validate(AgentConfig(**top))


def with_overrides(config: AgentConfig, **overrides: Any) -> AgentConfig:
    """Apply CLI flags (``listen``, ``model``, ``data_dir``); None leaves a value alone."""
    server, model, top = config.server, config.model, {}
    if overrides.get("listen") is not None:
        server = dataclasses.replace(server, listen=overrides["listen"])
    if overrides.get("model") is not None:
        value = overrides["model"]
        if value.endswith(".gguf") or os.sep in value:
            model = dataclasses.replace(model, path=value, name="")
        else:
            model = dataclasses.replace(model, name=value, path="")
    if overrides.get("data_dir") is not None:
        top["data_dir"] = overrides["data_dir"]
    return validate(dataclasses.replace(config, server=server, model=model, **top))


def validate(config: AgentConfig) -> AgentConfig:
    parse_listen(config.server.listen, key="server.listen")
    _positive("server.max_body_bytes", config.server.max_body_bytes)
    _positive("server.request_timeout_s", config.server.request_timeout_s)
    m = config.model
    if not m.name and not m.path:
        raise ConfigError("model: set model.name (a built-in model) or model.path (a GGUF file)")
    _positive("model.n_ctx", m.n_ctx)
    if not 1 <= m.n_parallel <= 256:
        raise ConfigError(f"model.n_parallel: expected 1..256, got {m.n_parallel}")
    _positive("model.n_batch", m.n_batch)
    if m.n_threads < 0:
        raise ConfigError(f"model.n_threads: expected 0 (auto) or more, got {m.n_threads}")
    if m.n_gpu_layers < -1:
        raise ConfigError(f"model.n_gpu_layers: expected -1 (all) or more, got {m.n_gpu_layers}")
    e = config.embeddings
    if e.engine not in ("llama_cpp", "onnx"):
        raise ConfigError(f"embeddings.engine: expected 'llama_cpp' or 'onnx', got {e.engine!r}")
    if e.engine == "onnx" and not (e.onnx_model and e.onnx_tokenizer):
        raise ConfigError("embeddings.onnx_model and embeddings.onnx_tokenizer: both are required when embeddings.engine = 'onnx'")
    if config.scheduler.max_queue < 0:
        raise ConfigError(f"scheduler.max_queue: expected 0 or more, got {config.scheduler.max_queue}")
    _positive("scheduler.retry_after_s", config.scheduler.retry_after_s)
    _positive("cache.max_bytes", config.cache.max_bytes)
    _positive("cache.ttl_s", config.cache.ttl_s)
    _positive("fleet.spool_max_reports", config.fleet.spool_max_reports)
    _positive("fleet.rpc_timeout_s", config.fleet.rpc_timeout_s)
    _positive("fleet.max_backoff_s", config.fleet.max_backoff_s)
    _positive("fleet.warmup_max_s", config.fleet.warmup_max_s)
    if config.fleet.probation_s < 0:
        raise ConfigError(f"fleet.probation_s: expected 0 (no probation) or more, got {config.fleet.probation_s}")
    if not 0 <= config.fleet.probation_max_error_rate <= 1:
        raise ConfigError("fleet.probation_max_error_rate: expected a fraction from 0 to 1, "
                          f"got {config.fleet.probation_max_error_rate}")
    _positive("fleet.probation_max_p99_ms", config.fleet.probation_max_p99_ms)
    if config.federated.supernode not in ("flower", "fast"):
        raise ConfigError(f"federated.supernode: expected 'flower' or 'fast', got {config.federated.supernode!r}")
    if not 0 <= config.federated.clientappio_port <= 65535:
        raise ConfigError(f"federated.clientappio_port: expected 0..65535, got {config.federated.clientappio_port}")
    if config.log_level not in _LOG_LEVELS:
        raise ConfigError(f"log_level: expected one of {', '.join(_LOG_LEVELS)}, got {config.log_level!r}")
    return config


def parse_listen(value: str, key: str = "listen") -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{key}: expected HOST:PORT with a port 0..65535, got {value!r}")
    return host.strip("[]"), int(port)


def _known_top() -> list[str]:
    return ["data_dir", "log_level", *_SECTIONS]


def _build(cls: type, values: Mapping[str, Any], prefix: str) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if key not in fields:
            raise ConfigError(f"{prefix}.{key}: unknown key (known: {', '.join(fields)})")
        default = fields[key].default
        kwargs[key] = _check_type(f"{prefix}.{key}", value, type(default))
    return cls(**kwargs)


def _check_type(key: str, value: Any, expected: type) -> Any:
    # TOML has no bool/int confusion, but Python's bool is an int subclass.
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, bool) and expected is not bool:
        raise ConfigError(f"{key}: expected {expected.__name__}, got a boolean")
    if not isinstance(value, expected):
        raise ConfigError(f"{key}: expected {expected.__name__}, got {type(value).__name__} {value!r}")
    return value


def _positive(key: str, value: float) -> None:
    if value <= 0:
        raise ConfigError(f"{key}: expected a positive number, got {value}")
