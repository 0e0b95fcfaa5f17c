"""What a node trains on: labeled prompts and usage counts, kept in its data dir.

Layout under `<data-dir>/federated/`:
- `examples.jsonl`: one labeled prompt a line, `{"text": ..., "label": "sensitive"|"public", "source": ...}`,
  appended by `edge-agent label` (operators) and by the agent's detectors (weak labels).
- `usage.json`: the agent's request counts per hour of day, latency buckets and cache hits.

The ClientApp only reads these files (opened read-only); every problem with a
row is reported with its line number so the operator can fix the file.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from edgefleet.atomicfile import write_public
from federated.errors import TaskError

LABELS = {"public": 0, "sensitive": 1}
MAX_TEXT_CHARS = 32_768
# Upper bounds (ms) of the latency histogram; the last bucket is everything slower.
LATENCY_BUCKETS_MS = (50, 100, 250, 500, 1000, 2500, 5000, 10000)


@dataclass(frozen=True)
class Example:
    text: str
    label: int  # 1 sensitive, 0 public


def federated_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "federated"


def examples_path(data_dir: Path) -> Path:
    return federated_dir(data_dir) / "examples.jsonl"


def usage_path(data_dir: Path) -> Path:
    return federated_dir(data_dir) / "usage.json"


def parse_example(line: str, where: str) -> Example:
    """One JSONL row; TaskError naming `where` and the problem when it is not a valid example."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise TaskError(f"{where}: not JSON ({exc.msg})") from None
    if not isinstance(row, dict):
        raise TaskError(f"{where}: expected an object with text and label")
    text, label = row.get("text"), row.get("label")
    if not isinstance(text, str) or not text.strip():
        raise TaskError(f"{where}: text must be a non-empty string")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise TaskError(f"{where}: text is not valid Unicode (it holds a lone surrogate)") from None
    if len(text) > MAX_TEXT_CHARS:
        raise TaskError(f"{where}: text is {len(text)} characters, more than {MAX_TEXT_CHARS}")
    if label not in LABELS:
        raise TaskError(f"{where}: label must be one of {', '.join(LABELS)}, got {label!r}")
    return Example(text, LABELS[label])


def read_examples(data_dir: Path) -> list[Example]:
    path = examples_path(data_dir)
    if not path.exists():
        raise TaskError(f"no labeled examples on this node: {path} does not exist (add some with `edge-agent label`)")
    examples = []
    with open(path, encoding="utf-8", errors="strict") as rows:
        try:
            for number, line in enumerate(rows, 1):
                if line.strip():
                    examples.append(parse_example(line, f"{path}:{number}"))
        except UnicodeDecodeError:
            raise TaskError(f"{path}: not UTF-8 text") from None
    if not examples:
        raise TaskError(f"no labeled examples on this node: {path} is empty")
    return examples


def append_example(data_dir: Path, text: str, label: str, source: str) -> None:
    """Append one validated example (the writer side: `edge-agent label`, the HTTP endpoint)."""
    line = json.dumps({"text": text, "label": label, "source": source}, ensure_ascii=False)
    parse_example(line, "example")
    path = examples_path(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    # One write of one line with O_APPEND: concurrent writers never interleave within a row.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Usage:
    requests_per_hour: tuple[int, ...]  # 24 counts, by UTC hour of day
    latency_buckets: tuple[int, ...]  # len(LATENCY_BUCKETS_MS) + 1 counts
    cache_hits: int
    cache_lookups: int


def parse_usage(raw: object, where: str) -> Usage:
    if not isinstance(raw, dict):
        raise TaskError(f"{where}: expected a JSON object")

    def counts(key: str, length: int) -> tuple[int, ...]:
        values = raw.get(key)
        if (
            not isinstance(values, list)
            or len(values) != length
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values)
        ):
            raise TaskError(f"{where}: {key} must be a list of {length} non-negative integers")
        return tuple(values)

    hours = counts("requests_per_hour", 24)
    latency = counts("latency_buckets", len(LATENCY_BUCKETS_MS) + 1)
    hits, lookups = counts("cache", 2)
    if hits > lookups:
        raise TaskError(f"{where}: cache hits ({hits}) exceed lookups ({lookups})")
    return Usage(hours, latency, hits, lookups)


def read_usage(data_dir: Path) -> Usage:
    path = usage_path(data_dir)
    if not path.exists():
        raise TaskError(f"no usage figures on this node: {path} does not exist")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TaskError(f"{path}: not valid JSON ({exc})") from None
    return parse_usage(raw, str(path))


def latency_bucket(latency_ms: float) -> int:
    for index, bound in enumerate(LATENCY_BUCKETS_MS):
        if latency_ms <= bound:
            return index
    return len(LATENCY_BUCKETS_MS)


class UsageCounters:
    """The agent's side of usage.json: counts requests as they finish, adds them to the file now and then.

    Fed from the HTTP server's thread, flushed from another, so both hold one lock. The file keeps
    running totals; a file that is missing or unreadable starts again from zero (and says so).
    """

    def __init__(self, data_dir: Path):
        import threading

        self.path = usage_path(data_dir)
        self._lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self._hours = [0] * 24
        self._latency = [0] * (len(LATENCY_BUCKETS_MS) + 1)
        self._hits = self._lookups = 0

    def record_request(self, latency_s: float, at_unix: float) -> None:
        hour = int(at_unix // 3600) % 24
        with self._lock:
            self._hours[hour] += 1
            self._latency[latency_bucket(latency_s * 1000.0)] += 1

    def record_cache(self, hit: bool) -> None:
        with self._lock:
            self._lookups += 1
            self._hits += int(hit)

    def flush(self) -> None:
        import logging

        with self._lock:
            hours, latency, hits, lookups = self._hours, self._latency, self._hits, self._lookups
            self._reset()
        if not any(hours) and not lookups:
            return
        try:
            current = read_usage(self.path.parent.parent)
        except TaskError as exc:
            if self.path.exists():
                logging.getLogger(__name__).warning("starting usage totals again: %s", exc)
            current = Usage((0,) * 24, (0,) * len(latency), 0, 0)
        merged = {
            "requests_per_hour": [a + b for a, b in zip(current.requests_per_hour, hours, strict=True)],
            "latency_buckets": [a + b for a, b in zip(current.latency_buckets, latency, strict=True)],
            "cache": [current.cache_hits + hits, current.cache_lookups + lookups],
        }
        write_public(self.path, json.dumps(merged).encode())
