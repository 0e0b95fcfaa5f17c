"""How the ``edgefleet`` CLI prints: tables for people, ASCII-only JSON for scripts, times as ISO 8601.

Every string goes through :mod:`edgefleet.terminal` (control and bidi characters shown as escapes), so what a node
or an operator put in a field cannot drive the operator's terminal.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import time

from google.protobuf.json_format import MessageToDict

from edgefleet.durations import format_duration
from edgefleet.terminal import printable
from edgefleet.terminal import safe_print as print


def to_dict(message) -> dict:
    return MessageToDict(message, preserving_proto_field_name=True)


def print_json(value) -> None:
    # ensure_ascii: every control character (C0, DEL, C1) and every non-ASCII one (bidi overrides among them) is a
    # \uXXXX escape, so the text is printable ASCII and newlines between JSON tokens only; a JSON parser reads the
    # strings back exactly.
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=False, ensure_ascii=True) + "\n")


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    rows = [[printable(str(c)) for c in row] for row in rows]  # escaped before the widths are measured
    widths = [max(len(h), *(len(str(r[i])) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    for row in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def iso(ts) -> str:
    return iso_seconds(ts.ToNanoseconds() / 1e9)


def iso_seconds(unix_seconds: float) -> str:
    return dt.datetime.fromtimestamp(unix_seconds, tz=dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def relative(seconds: float) -> str:
    return f"in {format_duration(seconds)}" if seconds >= 0 else f"{format_duration(-seconds)} ago"


class Progress:
    """A one-line progress bar on stderr when it is a terminal; silent otherwise (scripts, logs)."""

    def __init__(self, label: str, total: int, stream=sys.stderr):
        self.label, self.total, self.stream = label, total, stream
        self.done_bytes, self.started = 0, time.monotonic()
        self.live = stream.isatty()

    def advance(self, n: int) -> None:
        self.done_bytes += n
        if self.live:
            elapsed = max(time.monotonic() - self.started, 1e-6)
            share = min(self.done_bytes / self.total, 1.0) if self.total else 1.0  # an estimate may run over
            bar = "#" * int(share * 30)
            self.stream.write(
                f"\r{self.label} [{bar:<30}] {share:4.0%} {self.done_bytes / 2**20:,.0f}/"
                f"{self.total / 2**20:,.0f} MiB {self.done_bytes / 2**20 / elapsed:,.0f} MiB/s"
            )
            self.stream.flush()

    def done(self) -> None:
        if self.live:
            self.stream.write("\n")
