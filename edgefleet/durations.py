"""Durations as people write them: ``500ms``, ``15s``, ``10m``, ``1h``, ``30d``, or ``1h30m``."""

from __future__ import annotations

import re

from edgefleet.errors import EdgefleetError

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")


class DurationError(EdgefleetError, ValueError):
    """Text that is not a positive duration; a ValueError too, as callers parsing options expect."""


def parse_duration(text: str) -> float:
    """Seconds in text; DurationError naming the text when it is not a positive duration."""
    s = text.strip().lower()
    pos, total = 0, 0.0
    for match in _PART.finditer(s):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if not s or pos != len(s):
        raise DurationError(f"{text!r} is not a duration like 90s, 10m, 1h or 30d")
    if total <= 0:
        raise DurationError(f"{text!r} must be longer than zero")
    return total


def format_duration(seconds: float) -> str:
    """A short human form: 45s, 12m, 3h, 2d."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"
