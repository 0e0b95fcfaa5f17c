"""The agent's configuration: frozen value objects, validated at load.

A TOML file (documented example: ``packaging/edge-agent.example.toml``) is read
into :class:`AgentConfig`; CLI flags override it through :func:`with_overrides`.
Every problem raises :class:`ConfigError` naming the key, e.g.
``server.listen: expected HOST:PORT, got 'localhost'``.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

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
    # Seconds a report central acknowledged stays in the spool (within spool_max_reports), to send again should
    # central come back from a backup holding less than it acknowledged; 0 forgets it at once.
    spool_retain_acknowledged_s: float = 24 * 3600.0
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
class CentralConfig:
    # HOST:PORT of central's FleetService replicas (or of a load balancer), tried in turn, round-robin, when one
    # is unreachable; empty: the addresses central sent at enrollment.
    addresses: tuple[str, ...] = ()


@dataclass(frozen=True)
class FederatedConfig:
    # Take part in central's federated learning runs (needs an enrollment with a SuperLink, and a Python 3.11+
    # for the SuperNode: the agent's own, or `python`).
    enabled: bool = False
    # "fast": federated.fast_supernode (Flower's protocol and client, no idle waits, only the code-free FAB);
    # "flower": the stock flower-supernode, which installs and runs whatever code a run's bundle carries: refused
    # unless accept_code_bundles is also true.
    supernode: str = "fast"
    # The operator's explicit yes to "flower": central's SuperLink may make this box run a FAB's code.
    accept_code_bundles: bool = False
    # Port of the SuperNode's local Runtime API on 127.0.0.1; 0 picks a free one.
    clientappio_port: int = 0
    # The Python 3.11+ that runs the SuperNode when the agent's own is older (JetPack 6's 3.10): a venv's python
    # with flwr and edgefleet, or a bare interpreter that `edge-agent supernode-venv` built the SuperNode venv
    # from. Empty: the agent's own interpreter, else the SuperNode venv inside the agent's venv.
    python: str = ""


@dataclass(frozen=True)
class DataClassRule:
    """What prompts of one data class may do. ``jurisdictions``: the upstream jurisdictions they may go to;
    ``["*"]`` any upstream, empty: they never leave the box."""

    name: str = ""
    jurisdictions: tuple[str, ...] = ()
    # Replace detected spans (e.g. "[EMAIL]") in what goes to an upstream.
    redact: bool = False


@dataclass(frozen=True)
class CustomDetector:
    """An operator's detector: a regular expression, or whole words (case-insensitive), or both."""

    name: str = ""
    data_class: str = ""
    pattern: str = ""
    keywords: tuple[str, ...] = ()


# The classes of the example, least sensitive first; [[policy.classes]] replaces them.
DEFAULT_CLASSES = (
    DataClassRule("public", ("*",)),
    DataClassRule("internal", (), redact=True),
    DataClassRule("restricted", ()),
)
BUILTIN_DETECTORS = ("email", "phone", "card", "iban", "us_ssn")


@dataclass(frozen=True)
class DetectorClasses:
    """The data class each built-in detector raises a prompt to; "" turns the detector off."""

    email: str = "internal"
    phone: str = "internal"
    card: str = "restricted"
    iban: str = "restricted"
    us_ssn: str = "restricted"


@dataclass(frozen=True)
class PolicyConfig:
    # Ordered least sensitive first: a prompt takes the highest class any detector gives it.
    classes: tuple[DataClassRule, ...] = DEFAULT_CLASSES
    # The class of a prompt no detector fires on.
    default_class: str = "public"
    detectors: DetectorClasses = field(default_factory=DetectorClasses)
    custom: tuple[CustomDetector, ...] = ()
    # An ONNX sensitivity classifier (federated task `sensitivity`); a score at or above the threshold
    # raises the prompt to classifier_class.
    classifier_model: str = ""
    classifier_threshold: float = 0.5
    classifier_class: str = "internal"
    # Where national phone numbers (written without +country code) are recognized, as ISO 3166 region
    # codes; a number with + or 00 and a country code is recognized for every country.
    phone_regions: tuple[str, ...] = ("US", "GB", "DE", "FR", "ES", "IT", "NL", "PL", "BR", "JP", "IN", "AU")


@dataclass(frozen=True)
class UpstreamConfig:
    """An OpenAI-compatible endpoint to burst to; [[upstreams]] are tried in the order written."""

    name: str = ""
    # Base URL up to and including /v1, e.g. "https://api.example.com/v1".
    url: str = ""
    jurisdiction: str = ""
    # The model names a client may ask this upstream for, each "NAME" or "NAME=UPSTREAM_NAME" (renamed on the way
    # out). A request naming a listed model goes to the upstreams that list it (its data class permitting); a name
    # no upstream lists and the box does not serve is 404 model_not_found.
    models: tuple[str, ...] = ()
    # When the box's own model overflows (queue full, warming up): the model to ask this upstream for instead;
    # empty: the box's model name (a "models" entry naming it wins).
    model: str = ""
    # The environment variable holding the upstream's bearer key (keys stay out of config files).
    api_key_env: str = ""
    connect_timeout_s: float = 2.0
    # Seconds to the first byte of the answer (whole answer when not streamed).
    timeout_s: float = 60.0
    # Further tries on the same upstream after a connection error, timeout or 5xx before the next one.
    retries: int = 1
    # Consecutive failures that open the circuit; it stays open this long, then lets one trial through.
    failure_threshold: int = 3
    open_s: float = 30.0
    # GET <url>/models this often; a failed check counts as a failure.
    health_interval_s: float = 10.0
    # A plain http:// url is refused unless its host is loopback (prompts and the key would cross the network in
    # clear); true accepts it anyway (a sidecar on a private link, a test rig).
    allow_plain_http: bool = False
    # The most an answer may hold: a non-streamed body (and every error body, and a health check's), a streamed
    # answer in all, and one event of a stream. Past one, the request fails with 502 upstream_reply_too_large
    # and the connection is closed.
    max_reply_bytes: int = 8 * 2**20
    max_stream_bytes: int = 64 * 2**20
    max_event_bytes: int = 2**20
    # What the upstream charges per 1,000 prompt (sent) and completion (received) tokens, for the burst cost the
    # agent reports (edgefleet_upstream_cost_total, heartbeats); unset: its tokens are counted, not priced.
    price_per_1k_prompt_tokens: float | None = None
    price_per_1k_completion_tokens: float | None = None
    # The prices' ISO 4217 code, 3 capital letters; "USD" when a price is set and this is not.
    currency: str = ""
    # Ask a streamed answer for its token usage (stream_options.include_usage, as OpenAI, vLLM, llama.cpp and
    # Ollama accept); false for an upstream that refuses the option: its streamed tokens are then counted locally.
    stream_usage: bool = True

    @property
    def priced(self) -> bool:
        return self.price_per_1k_prompt_tokens is not None or self.price_per_1k_completion_tokens is not None

    @property
    def cost_currency(self) -> str:
        """The currency of this upstream's cost: ``currency``, else "USD" when priced; "" when not priced."""
        return (self.currency or "USD") if self.priced else ""

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        """What these tokens cost at this upstream's prices (0.0 when it has none)."""
        return (
            prompt_tokens * (self.price_per_1k_prompt_tokens or 0.0)
            + completion_tokens * (self.price_per_1k_completion_tokens or 0.0)
        ) / 1000.0

    @property
    def model_map(self) -> dict[str, str]:
        """Client model name -> the name asked of this upstream, from ``models`` (validated at load)."""
        return dict(parse_model_entry(entry) for entry in self.models)


@dataclass(frozen=True)
class AuthConfig:
    # API keys managed by `edge-agent keys`; empty: <data_dir>/api-keys.json.
    keys_file: str = ""
    # Serve a non-loopback address with no API keys (anyone who reaches the port may use it).
    allow_open_non_loopback: bool = False


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
    central: CentralConfig = field(default_factory=CentralConfig)
    federated: FederatedConfig = field(default_factory=FederatedConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    upstreams: tuple[UpstreamConfig, ...] = ()
    auth: AuthConfig = field(default_factory=AuthConfig)

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
    "central": CentralConfig,
    "federated": FederatedConfig,
    "policy": PolicyConfig,
    "auth": AuthConfig,
}
# Top-level arrays of tables: [[upstreams]].
_TABLE_LISTS = {"upstreams": UpstreamConfig}
# Fields that are arrays of tables inside a section, and tables inside a section.
# Keyed by (dataclass, key), as _build looks them up for whichever dataclass it is building.
_NESTED: dict[tuple[type, str], type] = {
    (PolicyConfig, "classes"): DataClassRule,
    (PolicyConfig, "custom"): CustomDetector,
}
_SUBTABLES: dict[tuple[type, str], type] = {(PolicyConfig, "detectors"): DetectorClasses}
# Keys that once existed: an old file that still sets one is told what replaces it.
_REMOVED: dict[tuple[type, str], str] = {
    (PolicyConfig, "upstream_unknown_models"): (
        "removed: a client can no longer send any model name it likes upstream. List the model names each "
        'upstream may serve in [[upstreams]] models = ["NAME", "NAME=UPSTREAM_NAME", ...]; a request naming '
        "a model the box does not serve and no upstream lists gets 404 model_not_found. Delete this key"
    ),
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
        elif key in _TABLE_LISTS:
            top[key] = _build_list(_TABLE_LISTS[key], value, prefix=key)
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
        raise ConfigError(
            "embeddings.onnx_model and embeddings.onnx_tokenizer: both are required when embeddings.engine = 'onnx'"
        )
    if config.scheduler.max_queue < 0:
        raise ConfigError(f"scheduler.max_queue: expected 0 or more, got {config.scheduler.max_queue}")
    _positive("scheduler.retry_after_s", config.scheduler.retry_after_s)
    _positive("cache.max_bytes", config.cache.max_bytes)
    _positive("cache.ttl_s", config.cache.ttl_s)
    _positive("fleet.spool_max_reports", config.fleet.spool_max_reports)
    if config.fleet.spool_retain_acknowledged_s < 0:
        raise ConfigError(
            "fleet.spool_retain_acknowledged_s: expected 0 (forget acknowledged reports at once) or more, "
            f"got {config.fleet.spool_retain_acknowledged_s}"
        )
    _positive("fleet.rpc_timeout_s", config.fleet.rpc_timeout_s)
    _positive("fleet.max_backoff_s", config.fleet.max_backoff_s)
    _positive("fleet.warmup_max_s", config.fleet.warmup_max_s)
    if config.fleet.probation_s < 0:
        raise ConfigError(f"fleet.probation_s: expected 0 (no probation) or more, got {config.fleet.probation_s}")
    if not 0 <= config.fleet.probation_max_error_rate <= 1:
        raise ConfigError(
            "fleet.probation_max_error_rate: expected a fraction from 0 to 1, "
            f"got {config.fleet.probation_max_error_rate}"
        )
    _positive("fleet.probation_max_p99_ms", config.fleet.probation_max_p99_ms)
    for i, address in enumerate(config.central.addresses):
        if parse_listen(address, key=f"central.addresses[{i}]")[1] == 0:
            raise ConfigError(f"central.addresses[{i}]: port 0 cannot be dialled, got {address!r}")
    if config.federated.supernode not in ("flower", "fast"):
        raise ConfigError(f"federated.supernode: expected 'flower' or 'fast', got {config.federated.supernode!r}")
    if config.federated.supernode == "flower" and not config.federated.accept_code_bundles:
        raise ConfigError(
            "federated.supernode = 'flower' runs the code of any bundle a run sends (the stock SuperNode installs and "
            "imports it): set federated.accept_code_bundles = true to accept that, or use supernode = 'fast'"
        )
    python = config.federated.python
    if python and (not os.path.isabs(python) or any(c in python for c in "\n\r\0")):
        raise ConfigError(f"federated.python: expected an absolute path to a Python 3.11+ interpreter, got {python!r}")
    if not 0 <= config.federated.clientappio_port <= 65535:
        raise ConfigError(f"federated.clientappio_port: expected 0..65535, got {config.federated.clientappio_port}")
    _validate_policy(config.policy)
    _validate_upstreams(config.upstreams)
    if config.log_level not in _LOG_LEVELS:
        raise ConfigError(f"log_level: expected one of {', '.join(_LOG_LEVELS)}, got {config.log_level!r}")
    return config


def _validate_policy(p: PolicyConfig) -> None:
    names = [c.name for c in p.classes]
    if not names:
        raise ConfigError("policy.classes: at least one data class is required")
    for i, c in enumerate(p.classes):
        if not c.name:
            raise ConfigError(f"policy.classes[{i}].name: required")
        if "*" in c.jurisdictions and len(c.jurisdictions) > 1:
            raise ConfigError(
                f"policy.classes[{i}].jurisdictions: '*' (any upstream) stands alone, got {list(c.jurisdictions)}"
            )
    if len(set(names)) != len(names):
        raise ConfigError(f"policy.classes: names must be unique, got {names}")

    def known(key: str, value: str, allow_off: bool = False) -> None:
        if value not in names and not (allow_off and value == ""):
            raise ConfigError(f"{key}: {value!r} is not a data class (policy.classes: {', '.join(names)})")

    known("policy.default_class", p.default_class)
    for detector in BUILTIN_DETECTORS:
        known(f"policy.detectors.{detector}", getattr(p.detectors, detector), allow_off=True)
    seen = set(BUILTIN_DETECTORS)
    for i, d in enumerate(p.custom):
        key = f"policy.custom[{i}]"
        if not d.name or d.name in seen:
            raise ConfigError(f"{key}.name: required, and unique among detectors (got {d.name!r})")
        seen.add(d.name)
        known(f"{key}.data_class", d.data_class)
        if not d.pattern and not d.keywords:
            raise ConfigError(f"{key}: set pattern (a regular expression) or keywords (a list of words)")
        if d.pattern:
            try:
                compiled = compile_custom_pattern(d.pattern)
            except ValueError as exc:
                raise ConfigError(f"{key}.pattern: {exc}") from None
            if compiled.match(""):
                raise ConfigError(f"{key}.pattern: matches the empty string, so it would fire on every prompt")
        if any(not w.strip() for w in d.keywords):
            raise ConfigError(f"{key}.keywords: empty keywords are not allowed")
    import phonenumbers

    for region in p.phone_regions:
        if region not in phonenumbers.SUPPORTED_REGIONS:
            raise ConfigError(
                f"policy.phone_regions: {region!r} is not a region code libphonenumber knows "
                "(ISO 3166-1 alpha-2, upper case: 'US', 'GB', 'DE', ...)"
            )
    if not 0 < p.classifier_threshold <= 1:
        raise ConfigError(
            f"policy.classifier_threshold: expected a probability in (0, 1], got {p.classifier_threshold}"
        )
    if p.classifier_model:
        known("policy.classifier_class", p.classifier_class)


def compile_custom_pattern(pattern: str) -> Any:
    """An operator's pattern compiled with RE2, which matches in time linear in the text: no pattern can stall the
    agent on a crafted prompt. RE2 has no backreferences or lookaround; ValueError says what it cannot take."""
    import re2

    options = re2.Options()
    options.log_errors = False  # the error is ours to report, naming the key
    try:
        return re2.compile(pattern, options)
    except re2.error as exc:
        reason = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise ValueError(
            f"RE2 cannot compile {pattern!r}: {reason} (RE2 runs in linear time, so it has no "
            "backreferences or lookaround)"
        ) from None


def _validate_upstreams(upstreams: tuple[UpstreamConfig, ...]) -> None:
    seen: set[str] = set()
    for i, u in enumerate(upstreams):
        key = f"upstreams[{i}]"
        if not u.name or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", u.name):
            raise ConfigError(f"{key}.name: required; letters, digits, '.', '_' and '-' (got {u.name!r})")
        if u.name in seen:
            raise ConfigError(f"{key}.name: {u.name!r} is used twice")
        seen.add(u.name)
        if not re.match(r"https?://[^/\s]+", u.url):
            raise ConfigError(f"{key}.url: expected an http:// or https:// base URL ending in /v1, got {u.url!r}")
        refusal = plain_http_refusal(key, u)
        if refusal:
            raise ConfigError(refusal)
        for name in ("max_reply_bytes", "max_stream_bytes", "max_event_bytes"):
            _positive(f"{key}.{name}", getattr(u, name))
        for name in ("connect_timeout_s", "timeout_s", "open_s", "health_interval_s"):
            _positive(f"{key}.{name}", getattr(u, name))
        if u.retries < 0:
            raise ConfigError(f"{key}.retries: expected 0 or more, got {u.retries}")
        _positive(f"{key}.failure_threshold", u.failure_threshold)
        if u.api_key_env and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", u.api_key_env):
            raise ConfigError(f"{key}.api_key_env: expected an environment variable name, got {u.api_key_env!r}")
        listed: set[str] = set()
        for j, entry in enumerate(u.models):
            try:
                name, _ = parse_model_entry(entry)
            except ValueError as exc:
                raise ConfigError(f"{key}.models[{j}]: {exc}") from None
            if name in listed:
                raise ConfigError(f"{key}.models[{j}]: {name!r} is listed twice")
            listed.add(name)
        _validate_prices(key, u)


def _validate_prices(key: str, u: UpstreamConfig) -> None:
    for name in ("price_per_1k_prompt_tokens", "price_per_1k_completion_tokens"):
        price = getattr(u, name)
        if price is not None and not (math.isfinite(price) and price >= 0):
            raise ConfigError(f"{key}.{name}: expected a non-negative number (per 1,000 tokens), got {price}")
    if u.currency and not re.fullmatch(r"[A-Z]{3}", u.currency):
        raise ConfigError(
            f"{key}.currency: expected an ISO 4217 code of 3 capital letters, e.g. 'EUR', got {u.currency!r}"
        )
    if u.currency and not u.priced:
        raise ConfigError(
            f"{key}.currency: {u.currency!r} is set but neither price_per_1k_prompt_tokens nor "
            "price_per_1k_completion_tokens is: set the prices, or delete currency"
        )


def plain_http_refusal(key: str, u: UpstreamConfig) -> str | None:
    """Why an upstream's http:// url is refused (its host is not loopback and allow_plain_http is not set); None
    for https://, a loopback host, or an upstream that allows it."""
    parts = urlsplit(u.url)
    if parts.scheme != "http" or u.allow_plain_http or _is_loopback_host(parts.hostname or ""):
        return None
    return (
        f"{key}.url: upstream {u.name!r} at {u.url} is plain http:// off loopback: prompts, answers and its API key"
        f" would cross the network unencrypted. Use https://, or set {key}.allow_plain_http = true in that"
        " [[upstreams]] table to accept it"
    )


def _is_loopback_host(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it may resolve anywhere


# A model name as clients and upstreams spell them ("gpt-4o-mini", "meta-llama/Llama-3.1-8B", "org:model@v2").
_MODEL_NAME = re.compile(r"[^\s=]+")


def parse_model_entry(entry: str) -> tuple[str, str]:
    """One [[upstreams]] models entry: "NAME" -> (NAME, NAME); "NAME=UPSTREAM_NAME" -> (NAME, UPSTREAM_NAME).
    ValueError says what is wrong."""
    name, sep, upstream_name = entry.partition("=")
    if not sep:
        upstream_name = name
    if not _MODEL_NAME.fullmatch(name) or not _MODEL_NAME.fullmatch(upstream_name):
        raise ValueError(
            f'expected "NAME" or "NAME=UPSTREAM_NAME" (model names without spaces or \'=\'), got {entry!r}'
        )
    return name, upstream_name


def parse_listen(value: str, key: str = "listen") -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{key}: expected HOST:PORT with a port 0..65535, got {value!r}")
    return host.strip("[]"), int(port)


def _known_top() -> list[str]:
    return ["data_dir", "log_level", *_SECTIONS, *_TABLE_LISTS]


def _build(cls: type, values: Mapping[str, Any], prefix: str) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if (cls, key) in _REMOVED:
            raise ConfigError(f"{prefix}.{key}: {_REMOVED[cls, key]}")
        if key not in fields:
            raise ConfigError(f"{prefix}.{key}: unknown key (known: {', '.join(fields)})")
        where = f"{prefix}.{key}"
        if (cls, key) in _NESTED:
            kwargs[key] = _build_list(_NESTED[cls, key], value, where)
        elif (cls, key) in _SUBTABLES:
            if not isinstance(value, Mapping):
                raise ConfigError(f"{where}: expected a table, got {type(value).__name__}")
            kwargs[key] = _build(_SUBTABLES[cls, key], value, where)
        elif isinstance(fields[key].default, tuple):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{where}: expected a list of strings, got {value!r}")
            kwargs[key] = tuple(value)
        else:
            default = fields[key].default
            # A None default is an optional number ([[upstreams]] prices): unset, or a float.
            kwargs[key] = _check_type(where, value, float if default is None else type(default))
    return cls(**kwargs)


def _build_list(cls: type, values: Any, prefix: str) -> tuple:
    if not isinstance(values, list) or not all(isinstance(v, Mapping) for v in values):
        raise ConfigError(f"{prefix}: expected an array of tables ([[{prefix}]]), got {type(values).__name__}")
    return tuple(_build(cls, v, f"{prefix}[{i}]") for i, v in enumerate(values))


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
