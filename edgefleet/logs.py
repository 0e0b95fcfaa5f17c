"""Logging for the programs' entry points: our lines at the chosen level, other libraries' at WARNING.

Libraries log, entry points configure: every `main` (edge-agent, edgefleet, the fast SuperNode, the
local-fleet launcher) calls :func:`configure` once, and nothing else adds handlers. Our own INFO lines
are state changes (started, enrolled, activated, stopped); third-party INFO lines are per request or
per poll (httpx logs each call central makes to its SuperLink), so they show only at DEBUG.
"""

from __future__ import annotations

import logging
import os
import sys

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Loggers whose records are ours; everything else is a library's.
OUR_LOGGERS = ("edge_agent", "central", "federated", "edgefleet", "local_fleet", "__main__")


def configure(level: str | int = "INFO", fmt: str = FORMAT) -> None:
    """Send log records to stderr: ours at `level`, other libraries' at WARNING unless `level` is DEBUG.

    Call it first in `main`, before anything imports gRPC, which reads its environment once, at import.

    The third-party threshold is decided per record against the root logger's level at that moment, so a
    later change of level (SIGHUP, central's log-level file) moves both together. Also quiets what native
    libraries print outside Python's logging: gRPC core's INFO lines ("skipping fork() handlers" whenever a
    process with gRPC threads starts a child) in this process and in the children it starts.
    """
    root = logging.getLogger()
    root.setLevel(level.upper() if isinstance(level, str) else level)
    handler = _Handler()
    handler.setFormatter(logging.Formatter(fmt))
    handler.addFilter(_third_party_at_warning)
    # Replaces only a handler this function added: others (pytest's capture, say) are not ours to remove.
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    if root.level > logging.DEBUG:
        # Read by gRPC core when it initializes, so before the first channel or server; children inherit it.
        os.environ.setdefault("GRPC_VERBOSITY", "ERROR")


class _Handler(logging.StreamHandler):
    """stderr as it is when a record is written, not as it was when configure() ran (as logging's own lastResort
    does): a stderr replaced since (a test's capture, say) never leaves the handler writing to a closed stream."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass  # StreamHandler.__init__ and setStream set it; sys.stderr is always the one written to


def is_ours(logger_name: str) -> bool:
    return logger_name.split(".", 1)[0] in OUR_LOGGERS


def _third_party_at_warning(record: logging.LogRecord) -> bool:
    if record.levelno >= logging.WARNING or is_ours(record.name):
        return True
    return logging.getLogger().getEffectiveLevel() <= logging.DEBUG
