"""Pure decisions of the response cache: whether to use it, and under which key.

The key covers the model artifact's sha256 (a new model version never sees
another's answers), the endpoint, and the canonical request: the validated,
normalized parameters, minus fields that do not change the output.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# Fields that change how an answer is delivered or attributed, not what it is.
_NOT_IN_KEY = frozenset({"stream", "stream_options", "include_usage", "user"})


@dataclass(frozen=True)
class CacheDecision:
    lookup: bool
    store: bool
    reason: str


def cache_decision(params: Mapping[str, Any], cache_control: str, enabled: bool = True) -> CacheDecision:
    """Look up and store deterministic requests only (temperature 0 or a seed); n > 1 choices are cached on the
    same terms (choice i samples with seed + i, so a seed fixes all of them).

    ``Cache-Control: no-cache`` skips the lookup but stores the fresh answer;
    ``no-store`` keeps the cache out of it entirely.
    """
    if not enabled:
        return CacheDecision(False, False, "cache disabled")
    directives = {d.strip().lower().split("=", 1)[0] for d in cache_control.split(",") if d.strip()}
    if "no-store" in directives:
        return CacheDecision(False, False, "Cache-Control: no-store")
    if not is_deterministic(params):
        if params.get("n", 1) > 1:
            # Said apart: n choices sampled without a seed differ from each other and from any stored set.
            return CacheDecision(False, False, "not deterministic (n > 1 without a seed at temperature > 0)")
        return CacheDecision(False, False, "not deterministic (temperature > 0 and no seed)")
    if "no-cache" in directives:
        return CacheDecision(False, True, "Cache-Control: no-cache")
    return CacheDecision(True, True, "deterministic")


def is_deterministic(params: Mapping[str, Any]) -> bool:
    return params.get("temperature", 1.0) == 0 or params.get("seed") is not None


def cache_key(model_sha256: str, endpoint: str, params: Mapping[str, Any], tenant: str = "") -> str:
    """The tenant is part of the key: one tenant never gets, nor times, another's cached answer."""
    canonical = {k: v for k, v in params.items() if k not in _NOT_IN_KEY}
    blob = json.dumps(
        {"model_sha256": model_sha256, "endpoint": endpoint, "tenant": tenant, "request": canonical},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(blob.encode()).hexdigest()
