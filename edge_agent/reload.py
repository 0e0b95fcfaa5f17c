"""SIGHUP: re-read the configuration and apply what can change while serving; name what cannot.

    config file + CLI flags -> validate -> changed keys -> live ones applied, the rest logged as needing a restart

Live: ``log_level``, ``cache.max_bytes``, ``cache.ttl_s`` and ``policy.*`` (the classifier and the rules are
swapped together, between requests), as long as the data class names stay the same: API keys were checked
against them at start. Everything else (``model.*``, ``server.*``, ``data_dir``, ``upstreams``, ``auth.*``,
``scheduler.*``, ``fleet.*``, ``federated.*``, ``embeddings.*``, ``cache.enabled``) needs a restart. An invalid
file changes nothing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edge_agent.config import AgentConfig
from edge_agent.errors import AgentError

log = logging.getLogger(__name__)

_LIVE_KEYS = frozenset({"log_level", "cache.max_bytes", "cache.ttl_s"})
# The loggers uvicorn.Config(log_level=...) sets, besides the root logger.
_UVICORN_LOGGERS = ("uvicorn.error", "uvicorn.access", "uvicorn.asgi")


@dataclass(frozen=True)
class Change:
    key: str  # dotted, as in the TOML file: "model.n_parallel"
    old: Any
    new: Any

    def describe(self) -> str:
        old, new = _show(self.old), _show(self.new)
        return f"{self.key} changed ({old} -> {new})" if old is not None and new is not None else f"{self.key} changed"


@dataclass(frozen=True)
class ReloadPlan:
    running: AgentConfig  # the configuration in force once the live changes are applied
    live: tuple[Change, ...]
    needs_restart: tuple[Change, ...]
    # Why live changes were held back (the data class names changed), or "".
    held_back: str = ""

    @property
    def policy_changed(self) -> bool:
        return any(c.key.startswith("policy.") for c in self.live)


def changes(old: Any, new: Any, prefix: str = "") -> list[Change]:
    """Every leaf that differs between two configs (or sections); lists of tables compare whole."""
    found: list[Change] = []
    for f in dataclasses.fields(old):
        a, b, key = getattr(old, f.name), getattr(new, f.name), prefix + f.name
        if a == b:
            continue
        if dataclasses.is_dataclass(a) and type(a) is type(b):
            found.extend(changes(a, b, key + "."))
        else:
            found.append(Change(key, a, b))
    return found


def is_live(key: str) -> bool:
    return key in _LIVE_KEYS or key.startswith("policy.")


def plan(old: AgentConfig, new: AgentConfig) -> ReloadPlan:
    """What a reload from ``old`` (running) to ``new`` (just read and validated) does."""
    found = changes(old, new)
    live = [c for c in found if is_live(c.key)]
    restart = [c for c in found if not is_live(c.key)]
    policy = new.policy
    held_back = ""
    names_old, names_new = [c.name for c in old.policy.classes], [c.name for c in new.policy.classes]
    if names_old != names_new:
        held_back = (
            f"the data class names changed ({', '.join(names_old)} -> {', '.join(names_new)}); API keys "
            "were checked against them at start, so the whole policy waits for a restart"
        )
        policy = old.policy
        restart += [c for c in live if c.key.startswith("policy.")]
        live = [c for c in live if not c.key.startswith("policy.")]
    running = dataclasses.replace(
        old,
        log_level=new.log_level,
        policy=policy,
        cache=dataclasses.replace(old.cache, max_bytes=new.cache.max_bytes, ttl_s=new.cache.ttl_s),
    )
    return ReloadPlan(running, tuple(live), tuple(restart), held_back)


def set_log_level(level: str) -> None:
    for name in ("", *_UVICORN_LOGGERS):
        logging.getLogger(name).setLevel(level.upper())


class Reloader:
    """Applies a reload to the running parts. ``load`` reads the file and applies the CLI flags again; it raises
    ConfigError on an invalid file. ``build_classifier`` makes a PromptClassifier from a PolicyConfig."""

    def __init__(
        self,
        running: AgentConfig,
        load: Callable[[], AgentConfig],
        gateway,
        cache,
        build_classifier: Callable[[Any], Any],
    ):
        self.running = running
        self._load = load
        self._gateway = gateway
        self._cache = cache
        self._build_classifier = build_classifier
        self._lock = asyncio.Lock()

    async def reload(self) -> bool:
        """Re-read and apply; False when the file was refused (the running configuration stays)."""
        async with self._lock:  # a second SIGHUP waits for the first: each sees the last file
            try:
                new = await asyncio.to_thread(self._load)
            except (AgentError, OSError) as exc:  # OSError: e.g. the file became unreadable
                log.error("SIGHUP: %s; keeping the running configuration", exc)
                return False
            p = plan(self.running, new)
            running, live = p.running, list(p.live)
            if p.policy_changed:
                try:
                    # Detectors compile and an ONNX classifier loads off the loop;
                    # requests keep the old policy meanwhile.
                    classifier = await asyncio.to_thread(self._build_classifier, running.policy)
                except AgentError as exc:
                    log.error("SIGHUP: the new policy cannot be used (%s); keeping the running policy", exc)
                    running = dataclasses.replace(running, policy=self.running.policy)
                    live = [c for c in live if not c.key.startswith("policy.")]
                else:
                    self._gateway.reload_policy(classifier)
            cache = running.cache
            if self._cache is not None and (cache.max_bytes, cache.ttl_s) != (
                self.running.cache.max_bytes,
                self.running.cache.ttl_s,
            ):
                await asyncio.to_thread(self._cache.set_limits, cache.max_bytes, cache.ttl_s)
            if p.held_back:
                log.warning("SIGHUP: %s", p.held_back)
            for c in p.needs_restart:
                log.warning("SIGHUP: %s but needs a restart", c.describe())
            for c in live:
                log.info("SIGHUP: %s: applied", c.describe())
            if not p.live and not p.needs_restart:
                log.info("SIGHUP: the configuration is unchanged")
            # Last, so that the lines above still show when the level goes up.
            if running.log_level != self.running.log_level:
                set_log_level(running.log_level)
            self.running = running
            return True


def _show(value: Any) -> str | None:
    """A scalar as it reads in the file; None for tables and lists (too long for one log line)."""
    if isinstance(value, str):
        return value if value else '""'
    if isinstance(value, (bool, int, float)):
        return str(value).lower() if isinstance(value, bool) else str(value)
    return None
