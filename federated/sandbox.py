"""A file system sandbox for the SuperLink process tree (Linux Landlock, no privilege needed).

Central's SuperLink runs as central's user, which can read the fleet CA key, the signing key and
the store. File modes cannot keep a process of the same user out; Landlock can: the process
restricts itself, for good, to the paths it lists, and everything it starts inherits the
restriction. federated.superlink applies it before Flower starts, so the SuperLink, its
SuperExec and the ServerApp read only the system, the Python install and the project, and write
only their own directory.

`landlock_restrict_self` needs no_new_privs (set here; the SuperLink never needs setuid). Under
systemd the unit's SystemCallFilter= must allow the three landlock_* calls (systemd 252 puts
them in no set but @known). Where the kernel has no Landlock (before 5.13, or disabled) or the
calls are filtered, `restrict` raises SandboxUnavailable and the caller decides.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Iterable
from pathlib import Path

from federated.errors import FederatedError

# The same numbers on every architecture (the generic syscall table).
_SYS_CREATE_RULESET, _SYS_ADD_RULE, _SYS_RESTRICT_SELF = 444, 445, 446
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1
_PR_SET_NO_NEW_PRIVS = 38

EXECUTE, WRITE_FILE, READ_FILE, READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
REMOVE_DIR, REMOVE_FILE, MAKE_CHAR, MAKE_DIR = 1 << 4, 1 << 5, 1 << 6, 1 << 7
MAKE_REG, MAKE_SOCK, MAKE_FIFO, MAKE_BLOCK, MAKE_SYM = 1 << 8, 1 << 9, 1 << 10, 1 << 11, 1 << 12
REFER, TRUNCATE, IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15
# What each Landlock ABI version can restrict (ABI 1: bits 0-12, 2: REFER, 3: TRUNCATE, 5: IOCTL_DEV).
_ABI_FS = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 4: (1 << 15) - 1}
_ALL_FS_LATEST = (1 << 16) - 1
_FILE_ONLY = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV

READ = EXECUTE | READ_FILE | READ_DIR
READ_WRITE = _ALL_FS_LATEST
DEVICES = READ_FILE | WRITE_FILE | READ_DIR | IOCTL_DEV

SYSTEM_READ = ("/usr", "/lib", "/lib32", "/lib64", "/bin", "/sbin", "/etc", "/proc", "/sys", "/run", "/opt/edgefleet")


class SandboxUnavailable(FederatedError):
    """The kernel cannot sandbox this process (no Landlock, or the calls are filtered)."""


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _libc():
    return ctypes.CDLL(None, use_errno=True)


def abi_version() -> int:
    """The kernel's Landlock ABI version; SandboxUnavailable when there is none."""
    if not sys.platform.startswith("linux"):
        raise SandboxUnavailable(f"Landlock is Linux only (this is {sys.platform})")
    libc = _libc()
    libc.syscall.restype = ctypes.c_long
    version = libc.syscall(_SYS_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(_CREATE_RULESET_VERSION))
    if version < 0:
        err = ctypes.get_errno()
        raise SandboxUnavailable(f"the kernel offers no Landlock ({os.strerror(err)})")
    return int(version)


def handled_access(abi: int) -> int:
    return _ABI_FS.get(abi, _ALL_FS_LATEST)


def default_rules(
    writable: Iterable[Path], readable: Iterable[Path] = (), python_paths: Iterable[str] | None = None
) -> list[tuple[Path, int]]:
    """The rules for a Python service: the system and the interpreter read-only, `readable` too,
    `writable` read-write, /dev for device files."""
    rules: list[tuple[Path, int]] = [(Path(p), READ) for p in SYSTEM_READ]
    paths = list(python_paths if python_paths is not None else [*sys.path, sys.prefix, sys.base_prefix])
    rules += [(Path(p), READ) for p in paths if p]
    rules += [(Path(p), READ) for p in readable]
    rules += [(Path("/dev"), DEVICES), (Path("/dev/shm"), READ_WRITE)]
    rules += [(Path(p), READ_WRITE) for p in writable]
    return rules


def restrict(rules: Iterable[tuple[Path, int]]) -> int:
    """Restrict this process and its future children to `rules` ((path, access) pairs; missing
    paths are skipped). Irreversible. Returns the ABI version used."""
    abi = abi_version()
    handled = handled_access(abi)
    libc = _libc()
    libc.syscall.restype = ctypes.c_long
    attr = ctypes.c_uint64(handled)
    ruleset = libc.syscall(_SYS_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(8), ctypes.c_uint32(0))
    if ruleset < 0:
        raise SandboxUnavailable(f"landlock_create_ruleset failed: {os.strerror(ctypes.get_errno())}")
    try:
        for path, access in rules:
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                allowed = access & handled
                if not os.path.isdir(path):
                    allowed &= _FILE_ONLY
                rule = _PathBeneath(allowed, fd)
                added = libc.syscall(
                    _SYS_ADD_RULE, ctypes.c_int(ruleset), ctypes.c_int(_RULE_PATH_BENEATH), ctypes.byref(rule), 0
                )
                if added < 0:
                    raise SandboxUnavailable(f"landlock_add_rule {path}: {os.strerror(ctypes.get_errno())}")
            finally:
                os.close(fd)
        if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise SandboxUnavailable(f"PR_SET_NO_NEW_PRIVS failed: {os.strerror(ctypes.get_errno())}")
        if libc.syscall(_SYS_RESTRICT_SELF, ctypes.c_int(ruleset), ctypes.c_uint32(0)) < 0:
            raise SandboxUnavailable(f"landlock_restrict_self failed: {os.strerror(ctypes.get_errno())}")
    finally:
        os.close(ruleset)
    return abi


def readable(paths: Iterable[Path]) -> list[Path]:
    """Those of `paths` this process can still open for reading (after `restrict`, none should be)."""
    found = []
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        except OSError:
            continue
        os.close(fd)
        found.append(Path(path))
    return found
