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

from central.errors import CentralError


class BackupError(CentralError):
    """A backup that cannot be taken, read, verified or restored; the message says why."""
