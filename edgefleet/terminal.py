"""Text for a terminal from strings someone else chose: a node's hostname, labels, status and events, model
names, audit details, error messages relayed from central.

A raw ESC can clear the operator's screen, rewrite earlier lines, set the window title or hide text; a C1 CSI
(U+009B) does the same on terminals that honour 8-bit controls; a bidi override (U+202E) makes ``node-1`` read as
something else. :func:`printable` shows each such character as its escape (``\\x1b``, ``\\x9b``, ``\\u202e``,
``\\n``), so what is printed is what was sent, and nothing in it acts on the terminal.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any, TextIO

# Bidirectional formatting: embeddings and overrides (U+202A..U+202E), isolates (U+2066..U+2069), and the marks
# (LRM, RLM, ALM), which reorder the text around them as well.
_BIDI = (*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F, 0x061C)
# Line and paragraph separators: some terminals and viewers break lines on them.
_SEPARATORS = (0x2028, 0x2029)
_NAMED = {0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r"}


def _escape(code: int) -> str:
    if code in _NAMED:
        return _NAMED[code]
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


# C0 controls (ESC among them), DEL, C1 controls (CSI 0x9b, OSC 0x9d among them), bidi formatting, separators.
_TABLE = {code: _escape(code) for code in (*range(0x20), *range(0x7F, 0xA0), *_BIDI, *_SEPARATORS)}


def printable(text: str) -> str:
    """``text`` with every control character, bidi formatting character and line separator replaced by its
    visible escape; everything else (letters of any script, emoji, backslashes) as it was."""
    return text.translate(_TABLE)


def safe_print(*values: Any, sep: str = " ", end: str = "\n", file: TextIO | None = None, flush: bool = False) -> None:
    """``print`` for one line of output: the line is passed through :func:`printable` (so a newline inside a
    value is shown as ``\\n`` and cannot forge a line of its own), then ``end`` is written as given."""
    stream = sys.stdout if file is None else file
    stream.write(printable(sep.join(str(v) for v in values)) + end)
    if flush:
        stream.flush()


def exits_quietly_when_the_reader_leaves(main: Callable[..., int]) -> Callable[..., int]:
    """`main` as a command line's entry point that, when its reader goes away (`edgefleet ... | head`), stops
    printing and exits 141 (128 + SIGPIPE, as a shell reports it) instead of ending in a BrokenPipeError traceback."""

    @functools.wraps(main)
    def run(argv: list[str] | None = None) -> int:
        try:
            code = main(argv)
            sys.stdout.flush()  # inside the try: buffered output meets the closed pipe here
            return code
        except BrokenPipeError:
            # What is left to print has nowhere to go; point stdout at /dev/null so the interpreter's own flush at
            # exit does not raise again.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            return 141

    return run
