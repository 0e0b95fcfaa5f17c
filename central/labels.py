"""Node labels (``region=eu,site=fra``): parsing and validation, shared by the CLI and the handlers."""

from __future__ import annotations

import re

from central.errors import CentralError

_KEY = re.compile(r"^[a-z0-9]([a-z0-9._/-]{0,61}[a-z0-9])?$")
_VALUE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$")
MAX_LABELS = 32


class LabelError(CentralError, ValueError):
    """A label that is not key=value with the allowed characters."""


def validate_labels(labels: dict[str, str]) -> dict[str, str]:
    if len(labels) > MAX_LABELS:
        raise LabelError(f"at most {MAX_LABELS} labels, got {len(labels)}")
    for key, value in labels.items():
        if not _KEY.match(key):
            raise LabelError(f"label key {key!r} must be 1-63 lowercase letters, digits, '.', '_', '/', '-'")
        if not _VALUE.match(value):
            raise LabelError(f"label {key}={value!r}: the value must be 1-63 letters, digits, '.', '_', '-'")
    return dict(labels)


def parse_labels(text: str) -> dict[str, str]:
    """``k=v,k2=v2`` → dict; an empty string gives no labels."""
    labels: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise LabelError(f"label {item!r} must be key=value")
        if key.strip() in labels:
            raise LabelError(f"label {key.strip()!r} given twice")
        labels[key.strip()] = value.strip()
    return validate_labels(labels)


def format_labels(labels: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
