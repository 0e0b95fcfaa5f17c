"""`edgefleet ... | head` and `edge-agent ... | head`: when the reader leaves, the command stops quietly with 141
(128 + SIGPIPE, as a shell reports it), not with a BrokenPipeError traceback on stderr."""

from __future__ import annotations

import subprocess
import sys

import pytest

PRINTS_A_LOT = """
import sys
from edgefleet.terminal import exits_quietly_when_the_reader_leaves

@exits_quietly_when_the_reader_leaves
def main(argv=None):
    for _ in range(100_000):
        print("x" * 100)
    return 0

sys.exit(main())
"""


def _first_line_then_close(cmd: list[str]) -> subprocess.CompletedProcess:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    proc.stdout.close()  # as `head -1` does
    err = proc.stderr.read()
    proc.wait(60)
    return subprocess.CompletedProcess(cmd, proc.returncode, first, err)


def test_a_reader_that_leaves_ends_the_command_quietly_with_141():
    done = _first_line_then_close([sys.executable, "-c", PRINTS_A_LOT])
    assert done.stdout == b"x" * 100 + b"\n"
    assert done.returncode == 141
    assert b"Traceback" not in done.stderr and b"BrokenPipeError" not in done.stderr


@pytest.mark.parametrize("module", ["central.cli", "edge_agent.cli"])
def test_both_command_lines_are_wrapped(module):
    import importlib

    main = importlib.import_module(module).main
    assert main.__wrapped__.__name__ == "main"  # functools.wraps: the wrapper around the real main
