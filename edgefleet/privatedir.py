"""Directories only their owner may enter: the agent's and central's data dirs and what is created in them.

``os.makedirs(path, mode)`` applies the umask to ``mode``, and a plain ``mkdir`` gives 0755 under the usual umask
022: every local user could then list a data dir and read what in it is not 0600 (the spool, the cache, the
routing audit, the store). :func:`make_private_dir` creates each missing directory 0700 whatever the umask;
:func:`exposure` says why an existing one is open to others, for a warning (systemd's ``StateDirectoryMode=0700``
does the same for the packaged services).
"""

from __future__ import annotations

import os
from pathlib import Path

PRIVATE_DIR_MODE = 0o700


def make_private_dir(path: Path) -> Path:
    """Create ``path`` and every missing parent 0700, whatever the umask. Directories that exist are left as they are
    (see :func:`exposure`). Returns ``path``."""
    path = Path(path)
    missing: list[Path] = []
    here = path
    while not here.exists():
        missing.append(here)
        if here.parent == here:
            break
        here = here.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=PRIVATE_DIR_MODE)
        except FileExistsError:
            if not directory.is_dir():
                raise
            continue  # made by someone else meanwhile: theirs to set
        # mkdir's mode went through the umask; chmod does not.
        os.chmod(directory, PRIVATE_DIR_MODE)
    return path


def exposure(path: Path) -> str | None:
    """Why other local users can reach into the directory ``path`` (its group or other permission bits), with the
    command that closes it; None when it is owner-only or missing."""
    try:
        mode = Path(path).stat().st_mode & 0o777
    except FileNotFoundError:
        return None
    if not mode & 0o077:
        return None
    who = "other users" if mode & 0o007 else "its group"
    return f"{path} is open to {who} (mode {mode:04o}); make it owner-only: chmod 700 {path}"
