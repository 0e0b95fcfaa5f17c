"""API keys: who may call the agent, with which data, how often.

Clients authenticate as with the OpenAI API, ``Authorization: Bearer <secret>``. The keys file
(``auth.keys_file``, else ``<data_dir>/api-keys.json``, mode 0600) holds each key's public id,
tenant, highest data class, rate limit and the sha256 of its secret; the secret itself is shown
once by ``edge-agent keys add`` and never stored::

    {"version": 1, "keys": [{"key_id": "k_3f9a12c4", "tenant": "acme", "max_data_class": "internal",
                             "rate_per_s": 10.0, "burst": 20, "created_at": 1767225600.0,
                             "key_sha256": "<64 hex>"}]}

:class:`Authenticator` holds the keys for the daemon and re-reads the file when it changes, so
``edge-agent keys add|revoke`` act on a running agent. The decisions (token buckets, the loopback
rule, data-class order) are pure functions of their arguments.

    AgentError                  (edge_agent.errors)
    └── AccessError             a bad keys file or bad arguments; the message names the problem
        └── AuthError           a request without a valid key -> 401 (.status, .code)
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import ipaddress
import json
import logging
import math
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from edge_agent.config import AgentConfig
from edge_agent.errors import AgentError
from edgefleet.atomicfile import write_private

log = logging.getLogger(__name__)

KEYS_FILE = "api-keys.json"
FILE_VERSION = 1
SECRET_PREFIX = "efk_"
# The tenant of every request while no keys are configured.
OPEN_TENANT = "default"
# Seconds between two looks at the keys file's stat.
RELOAD_INTERVAL_S = 1.0

_TENANT = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_KEY_ID = re.compile(r"k_[0-9a-f]{8}")
_SHA256 = re.compile(r"[0-9a-f]{64}")


class AccessError(AgentError):
    """A bad keys file or bad arguments; the message names the problem."""


class AuthError(AccessError):
    """A request carries no valid API key: HTTP 401 in OpenAI's error shape."""

    status = 401
    type = "invalid_request_error"

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code  # "missing_api_key" | "invalid_api_key"


@dataclass(frozen=True)
class ApiKey:
    key_id: str  # public id, shown in lists and logs; never the secret
    tenant: str
    max_data_class: str  # the most sensitive data class this key may send
    rate_per_s: float  # sustained requests per second
    burst: int  # requests allowed at once after a quiet spell
    created_at: float  # Unix time
    key_sha256: str  # hex sha256 of the secret


@dataclass(frozen=True)
class Caller:
    """Who a request comes from, as the authenticator established it."""

    tenant: str
    key_id: str  # "" when the agent is open (no keys configured)
    max_data_class: str


# --- the keys file ---------------------------------------------------------------------------------


def keys_path(config: AgentConfig) -> Path:
    return Path(config.auth.keys_file) if config.auth.keys_file else config.data_path / KEYS_FILE


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def load_keys(path: Path, class_names: Sequence[str]) -> dict[str, ApiKey]:
    """The keys by the sha256 of their secret; a missing file holds none."""
    return {k.key_sha256: k for k in _read(path, class_names)}


def list_keys(path: Path, class_names: Sequence[str]) -> list[ApiKey]:
    """The keys in the order they were added."""
    return sorted(_read(path, class_names), key=lambda k: k.created_at)


def add_key(
    path: Path, tenant: str, max_data_class: str, rate_per_s: float, burst: int, class_names: Sequence[str]
) -> tuple[str, ApiKey]:
    """Make a key and return ``(secret, key)``; the secret exists only in the return value."""
    if not isinstance(tenant, str) or not _TENANT.fullmatch(tenant):
        raise AccessError(f"tenant: expected 1-64 letters, digits, '.', '_' or '-', got {tenant!r}")
    _check_class("max class", max_data_class, class_names)
    if (
        isinstance(rate_per_s, bool)
        or not isinstance(rate_per_s, (int, float))
        or not math.isfinite(rate_per_s)
        or rate_per_s <= 0
    ):
        raise AccessError(f"rate: expected a positive number of requests per second, got {rate_per_s!r}")
    if isinstance(burst, bool) or not isinstance(burst, int) or burst < 1:
        raise AccessError(f"burst: expected a whole number of requests, 1 or more, got {burst!r}")
    with _locked(path):
        keys = _read(path, None)
        taken = {k.key_id for k in keys}
        key_id = _new_key_id(taken)
        secret = SECRET_PREFIX + secrets.token_urlsafe(32)
        key = ApiKey(key_id, tenant, max_data_class, float(rate_per_s), burst, time.time(), hash_secret(secret))
        _write(path, [*keys, key])
    return secret, key


def revoke_key(path: Path, key_id: str) -> ApiKey:
    """Remove a key by its id and return it; a running agent refuses it within a second or so."""
    with _locked(path):
        keys = _read(path, None)
        found = [k for k in keys if k.key_id == key_id]
        if not found:
            known = ", ".join(k.key_id for k in keys) or "none"
            raise AccessError(f"no API key {key_id!r} in {path} (keys: {known})")
        _write(path, [k for k in keys if k.key_id != key_id])
    return found[0]


def _new_key_id(taken: set[str]) -> str:
    while True:
        key_id = f"k_{secrets.token_hex(4)}"
        if key_id not in taken:
            return key_id


def _write(path: Path, keys: Sequence[ApiKey]) -> None:
    document = {"version": FILE_VERSION, "keys": [asdict(k) for k in keys]}
    write_private(path, (json.dumps(document, indent=2) + "\n").encode("utf-8"))


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Serialize read-modify-write of the keys file, so two `keys add` at once both land."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_name(f".{path.name}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _read(path: Path, class_names: Sequence[str] | None) -> list[ApiKey]:
    """Parse and check the whole file; ``class_names`` None skips the data-class check (revoke)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as exc:
        raise AccessError(f"API keys file {path}: cannot be read: {exc}") from exc
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AccessError(f"API keys file {path}: not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise AccessError(f"API keys file {path}: expected a JSON object, got {type(document).__name__}")
    if document.get("version") != FILE_VERSION:
        raise AccessError(f"API keys file {path}: version: expected {FILE_VERSION}, got {document.get('version')!r}")
    entries = document.get("keys")
    if not isinstance(entries, list):
        raise AccessError(f"API keys file {path}: keys: expected a list, got {type(entries).__name__}")
    keys = [_parse_entry(entry, f"API keys file {path}: keys[{i}]", class_names) for i, entry in enumerate(entries)]
    for what in ("key_id", "key_sha256"):
        seen: set[str] = set()
        for i, k in enumerate(keys):
            value = getattr(k, what)
            if value in seen:
                raise AccessError(f"API keys file {path}: keys[{i}].{what}: {value!r} is used twice")
            seen.add(value)
    return keys


def _parse_entry(entry: Any, where: str, class_names: Sequence[str] | None) -> ApiKey:
    if not isinstance(entry, dict):
        raise AccessError(f"{where}: expected an object, got {type(entry).__name__}")
    names = [f.name for f in fields(ApiKey)]
    missing = [n for n in names if n not in entry]
    unknown = [n for n in entry if n not in names]
    if missing or unknown:
        problems = [f"missing {', '.join(missing)}"] if missing else []
        problems += [f"unknown {', '.join(unknown)}"] if unknown else []
        raise AccessError(f"{where}: {'; '.join(problems)}")

    def problem(name: str, expected: str) -> AccessError:
        return AccessError(f"{where}.{name}: expected {expected}, got {entry[name]!r}")

    for name, pattern, expected in (
        ("key_id", _KEY_ID, "'k_' and 8 hex digits"),
        ("tenant", _TENANT, "1-64 letters, digits, '.', '_' or '-'"),
        ("key_sha256", _SHA256, "64 lowercase hex digits"),
    ):
        if not isinstance(entry[name], str) or not pattern.fullmatch(entry[name]):
            raise problem(name, expected)
    if not isinstance(entry["max_data_class"], str):
        raise problem("max_data_class", "a data class name")
    if class_names is not None and entry["max_data_class"] not in class_names:
        raise AccessError(
            f"{where}.max_data_class: {entry['max_data_class']!r} is not a data class "
            f"(policy.classes: {', '.join(class_names)})"
        )
    rate, burst, created = entry["rate_per_s"], entry["burst"], entry["created_at"]
    if not _number(rate) or not math.isfinite(rate) or rate <= 0:
        raise problem("rate_per_s", "a positive number")
    if isinstance(burst, bool) or not isinstance(burst, int) or burst < 1:
        raise problem("burst", "a whole number, 1 or more")
    if not _number(created) or not math.isfinite(created):
        raise problem("created_at", "a Unix time")
    return ApiKey(
        entry["key_id"],
        entry["tenant"],
        entry["max_data_class"],
        float(rate),
        burst,
        float(created),
        entry["key_sha256"],
    )


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# --- decisions --------------------------------------------------------------------------------------


class TokenBucket:
    """``burst`` requests at once, ``rate_per_s`` sustained; times come from the caller."""

    def __init__(self, rate_per_s: float, burst: int, now: float) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise AccessError(f"token bucket: expected rate > 0 and burst >= 1, got {rate_per_s} and {burst}")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._tokens = float(burst)
        self._at = now

    def take(self, now: float) -> float | None:
        """Take one token: None when taken, else the seconds until one is available."""
        elapsed = max(0.0, now - self._at)  # a clock that steps back refills nothing
        self._tokens = min(float(self.burst), self._tokens + elapsed * self.rate_per_s)
        self._at = max(self._at, now)
        if self._tokens >= 1.0 - 1e-9:
            self._tokens = max(0.0, self._tokens - 1.0)
            return None
        return (1.0 - self._tokens) / self.rate_per_s


def retry_after_seconds(wait_s: float) -> int:
    """A ``Retry-After`` header value: whole seconds, at least 1."""
    return max(1, math.ceil(wait_s))


def exceeds(data_class: str, max_data_class: str, class_names: Sequence[str]) -> bool:
    """Whether ``data_class`` is more sensitive than ``max_data_class`` (classes least sensitive first)."""
    _check_class("data class", data_class, class_names)
    _check_class("max data class", max_data_class, class_names)
    return list(class_names).index(data_class) > list(class_names).index(max_data_class)


def _check_class(what: str, name: str, class_names: Sequence[str]) -> None:
    if name not in class_names:
        raise AccessError(f"{what}: {name!r} is not a data class (policy.classes: {', '.join(class_names)})")


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 (also as an IPv4-mapped address) and the name localhost; no DNS."""
    host = host.strip("[]").lower()
    if host in ("localhost", "localhost."):
        return True
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False  # another name may resolve to anything
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def refuse_open_listen(host: str, keys_configured: bool, allow_open: bool, port: int | None = None) -> str | None:
    """Why the agent must not start on ``host`` (and ``port``, for the message), or None."""
    if keys_configured or allow_open or is_loopback(host):
        return None
    shown = host.strip("[]")
    if ":" in shown and port is not None:
        shown = f"[{shown}]"
    if port is not None:
        shown = f"{shown}:{port}"
    return (
        f"server.listen {shown} is beyond loopback and no API keys are configured: add one with "
        f"`edge-agent keys add --tenant NAME` or set auth.allow_open_non_loopback = true"
    )


# --- the daemon's view ------------------------------------------------------------------------------


class Authenticator:
    """The keys a running agent accepts, and a token bucket per key.

    The keys file's stat is looked at no more than once per :data:`RELOAD_INTERVAL_S`; a change
    re-reads it. A file that no longer parses leaves the previous keys in force (and is logged,
    and shown by :attr:`error`). The agent is open (no key needed) only while it has never had a
    key: revoking the last key or deleting the file refuses every request until a key is added or
    the agent restarts, so a running agent never drops to open.
    """

    def __init__(self, path: Path, class_names: Sequence[str], clock: Callable[[], float] = time.monotonic) -> None:
        self.path = Path(path)
        self.class_names = tuple(class_names)
        self._clock = clock
        self._lock = threading.Lock()
        self._signature: tuple[int, int, int] | None = None
        self._signature = self._stat()
        self._keys = load_keys(self.path, self.class_names)  # a bad file at start: AccessError
        self._by_id = {k.key_id: k for k in self._keys.values()}
        self._ever_keyed = bool(self._keys)
        self._checked_at = clock()
        self._buckets: dict[str, TokenBucket] = {}
        self._error: str | None = None

    @property
    def open(self) -> bool:
        """No keys configured (ever, in this process): requests need no key."""
        with self._lock:
            self._refresh_locked()
            return not self._ever_keyed

    @property
    def error(self) -> str | None:
        """The problem with the keys file's last change, while the previous keys stay in force."""
        return self._error

    def keys(self) -> list[ApiKey]:
        with self._lock:
            self._refresh_locked()
            return sorted(self._keys.values(), key=lambda k: k.created_at)

    def authenticate(self, authorization_header: str | None) -> Caller:
        with self._lock:
            self._refresh_locked()
            if not self._ever_keyed:
                return Caller(OPEN_TENANT, "", self.class_names[-1])
            keys = self._keys
        if not authorization_header or not authorization_header.strip():
            raise AuthError(
                "You didn't provide an API key. Send it in an Authorization header "
                "('Authorization: Bearer YOUR_KEY'); keys come from `edge-agent keys add`.",
                "missing_api_key",
            )
        scheme, _, secret = authorization_header.strip().partition(" ")
        secret = secret.strip()
        if scheme.lower() != "bearer" or not secret or " " in secret:
            raise AuthError("Malformed Authorization header: expected 'Bearer YOUR_KEY'.", "invalid_api_key")
        key = keys.get(hash_secret(secret))
        if key is None:
            raise AuthError("Incorrect API key provided (unknown or revoked).", "invalid_api_key")
        return Caller(key.tenant, key.key_id, key.max_data_class)

    def check_rate(self, caller: Caller) -> float | None:
        """None when allowed (one token taken), else the seconds until the key may send again."""
        if not caller.key_id:
            return None
        with self._lock:
            now = self._clock()
            self._refresh_locked(now)
            key = self._by_id.get(caller.key_id)
            if key is None:
                return None  # revoked since authenticate(); its next request is refused there
            bucket = self._buckets.get(key.key_id)
            if bucket is None or (bucket.rate_per_s, bucket.burst) != (key.rate_per_s, key.burst):
                bucket = self._buckets[key.key_id] = TokenBucket(key.rate_per_s, key.burst, now)
            return bucket.take(now)

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("cannot stat API keys file %s: %s", self.path, exc)
            return self._signature  # unknown: treat as unchanged
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _refresh_locked(self, now: float | None = None) -> None:
        now = self._clock() if now is None else now
        if now - self._checked_at < RELOAD_INTERVAL_S:
            return
        self._checked_at = now
        signature = self._stat()
        if signature == self._signature:
            return
        self._signature = signature
        try:
            keys = load_keys(self.path, self.class_names)
        except AccessError as exc:
            self._error = str(exc)
            log.error("%s; keeping the %d API keys loaded before", exc, len(self._keys))
            return
        self._error = None
        if self._ever_keyed and not keys:
            log.warning(
                "no API keys left in %s: every request is refused until a key is added or the agent restarts", self.path
            )
        added = {k.key_id for k in keys.values()} - set(self._by_id)
        removed = set(self._by_id) - {k.key_id for k in keys.values()}
        self._keys = keys
        self._by_id = {k.key_id: k for k in keys.values()}
        self._ever_keyed = self._ever_keyed or bool(keys)
        for key_id in removed:
            self._buckets.pop(key_id, None)
        log.info(
            "API keys reloaded from %s: %d keys (added %s, revoked %s)",
            self.path,
            len(keys),
            ", ".join(sorted(added)) or "none",
            ", ".join(sorted(removed)) or "none",
        )
