"""Backups of central (issue 18): an encrypted archive of the store, the keys and the blobs, and its restore.

- :mod:`central.backup.archive`: the encrypted container, a pure format (header, then an AES-256-GCM STREAM
  of 1 MiB chunks) with streaming encrypt and decrypt;
- :mod:`central.backup.snapshot`: takes a consistent snapshot while central serves and writes the archive
  (manifest first, then the store, the data dir's keys and certificates, the blobs), and checks one (verify);
- :mod:`central.backup.restore`: puts an archive back onto an empty data dir (and an empty PostgreSQL
  database) and continues the audit chain with a ``central.restored`` entry.

:mod:`central.backup_commands` is the CLI over them. Every refusal is a :class:`BackupError` whose message says
what is wrong and what to do; the archive's own refusals are the subclasses in :mod:`central.backup.archive`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from central.errors import CentralError

# Where `central backup` and the timer may take the passphrase from; never passed on to a child process.
PASSPHRASE_ENV = "EDGEFLEET_BACKUP_PASSPHRASE"


class BackupError(CentralError):
    """A backup that cannot be taken, read, verified or restored; the message says why."""


class Progress(Protocol):
    """What long work reports to (the CLI's bar on a terminal): bytes as they go, then done."""

    def advance(self, n: int) -> None: ...

    def done(self) -> None: ...


# Makes a Progress from a label and the total bytes expected (central.cli.Progress fits).
ProgressFactory = Callable[[str, int], Progress]
_REPORT_BYTES = 1 << 20


class CountingFile:
    """A file object passed through, reporting the bytes read or written to a Progress a MiB at a time."""

    def __init__(self, f, progress: Progress):
        self._f, self._progress, self._pending = f, progress, 0

    def read(self, size: int = -1) -> bytes:
        data = self._f.read(size)
        self._count(len(data))
        return data

    def write(self, data: bytes) -> int:
        written = self._f.write(data)
        self._count(len(data))
        return written

    def _count(self, n: int) -> None:
        self._pending += n
        if self._pending >= _REPORT_BYTES:
            self._progress.advance(self._pending)
            self._pending = 0

    def done(self) -> None:
        if self._pending:
            self._progress.advance(self._pending)
            self._pending = 0
        self._progress.done()
