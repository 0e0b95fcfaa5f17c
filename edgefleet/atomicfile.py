"""Files replaced whole: a reader sees the old content or the new, never a torn write.

Each writer puts the bytes in a temporary file beside the target and renames it over the
target (rename is atomic within one directory), so a crash leaves at most a stray
`.NAME.XXXX.tmp` and never a half-written certificate, key or state file.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from edgefleet.privatedir import make_private_dir


def write_private(path: Path, data: bytes) -> None:
    """Write secret bytes readable by the owner only (0600), atomically; missing parent dirs are made 0700."""
    make_private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_public(path: Path, data: bytes) -> None:
    """Write non-secret bytes (certificates, state) atomically, 0644."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    tmp.write_bytes(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
