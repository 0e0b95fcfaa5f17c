"""``edgefleet central backup|backup verify|backup keygen|restore``: backups of central, on the data dir directly.

These commands never call AdminService: a backup reads the data dir and the store while central serves (or not),
and a restore makes a data dir central has not served yet. The passphrase comes from ``--passphrase-file FILE``
or ``$EDGEFLEET_BACKUP_PASSPHRASE``, never from the command line (other local users read argv); ``--recipient``
seals for an X25519 key instead, whose private half (``--identity``) can stay off central's machine.
Refusals exit 1 with the reason; usage errors exit 2. :mod:`central.cli` registers these commands.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import errno
import os
import re
import signal
import stat
import sys
import tempfile
import threading
import time
from pathlib import Path

from central.backup import PASSPHRASE_ENV, BackupError
from central.cli_output import iso_seconds, print_json, relative
from edgefleet import __version__
from edgefleet.terminal import safe_print as print

COMMANDS = ("backup", "restore")
MIN_PASSPHRASE_CHARS = 12
MAX_SECRET_FILE_BYTES = 64 << 10
BACKUP_SUFFIX = ".edgefleet-backup"
_SCHEDULED_NAME = re.compile(r"central-\d{8}T\d{6}Z" + re.escape(BACKUP_SUFFIX))


class BackupUsageError(BackupError):
    """Bad flags, refused before anything is read (exit 2)."""


class _RefuseArgvPassphrase(argparse.Action):
    """--passphrase VALUE: refused without echoing VALUE (argparse would, as an unknown argument)."""

    def __call__(self, parser, namespace, values, option_string=None):
        parser.error(
            f"the backup passphrase is never taken from the command line (other users see it in ps): use"
            f" --passphrase-file FILE or ${PASSPHRASE_ENV}"
        )


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return int(text)


def _passphrase_flags(parser: argparse.ArgumentParser, key_flag: str, key_help: str) -> None:
    key = parser.add_mutually_exclusive_group()
    key.add_argument(
        "--passphrase-file",
        type=Path,
        default=None,
        help=f"a file holding the passphrase (one line; default ${PASSPHRASE_ENV})",
    )
    key.add_argument(key_flag, type=Path, default=None, help=key_help)
    parser.add_argument("--passphrase", nargs="?", action=_RefuseArgvPassphrase, help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")


def add_parsers(central) -> None:
    """`backup` (with `verify` and `keygen`) and `restore`, on the `central` group's subparsers."""
    backup = central.add_parser(
        "backup",
        help="an encrypted backup of the store, keys and blobs, consistent while central serves",
        allow_abbrev=False,
    )
    backup.add_argument("--data-dir", default=None, help="central's data dir (as `central serve --data-dir`)")
    where = backup.add_mutually_exclusive_group()
    where.add_argument("--out", type=Path, default=None, help="the archive to write; it must not exist")
    where.add_argument(
        "--out-dir", type=Path, default=None, help=f"write central-<UTC time>{BACKUP_SUFFIX} into this directory"
    )
    backup.add_argument(
        "--keep", type=_positive_int, default=None, help="with --out-dir: keep the newest N backups there, delete older"
    )
    backup.add_argument("--store", default="", help="override the data dir's store (a postgresql:// URL)")
    backup.add_argument(
        "--blobs", default="", help="the blob store central serves with --blobs (default: <data-dir>/blobs)"
    )
    backup.add_argument(
        "--without-blobs",
        action="store_true",
        help="list the blobs with their sha256 but leave their bytes out (blob storage backed up apart)",
    )
    _passphrase_flags(backup, "--recipient", "seal for this X25519 public key (PEM, from `backup keygen`) instead")
    sub = backup.add_subparsers(dest="backup_command")
    verify = sub.add_parser(
        "verify",
        help="check a backup without restoring it: every chunk, every file's hash, the store and its audit chain",
        allow_abbrev=False,
    )
    verify.add_argument("file", type=Path, help="the backup archive")
    _passphrase_flags(verify, "--identity", "the X25519 private key (PEM) of a backup sealed with --recipient")
    keygen = sub.add_parser(
        "keygen",
        help="make an X25519 key pair for --recipient: the private key to FILE (0600), the public to FILE.pub",
        allow_abbrev=False,
    )
    keygen.add_argument("--out", type=Path, required=True, help="the private key file to write; it must not exist")
    keygen.add_argument("--json", action="store_true", help="print JSON for scripts")
    restore = central.add_parser(
        "restore", help="restore a backup onto an empty data dir (and an empty database)", allow_abbrev=False
    )
    restore.add_argument("file", type=Path, help="the backup archive")
    restore.add_argument("--data-dir", required=True, help="the new data dir: absent or empty (made 0700)")
    restore.add_argument(
        "--store", default="", help="a PostgreSQL backup's new, empty database: postgresql://USER@HOST/DB"
    )
    restore.add_argument(
        "--blobs",
        default="",
        help="the blob store to put blobs into, as `central serve --blobs` (default: <data-dir>/blobs)",
    )
    _passphrase_flags(restore, "--identity", "the X25519 private key (PEM) of a backup sealed with --recipient")


def run(args) -> int:
    """Run `central backup ...` or `central restore`; BackupError and OSError are refusals (exit 1)."""
    from central.backup.archive import NotABackupError
    from central.blobs import BlobError
    from central.datadir import DataDirError
    from central.store import StoreError

    try:
        with _sigterm_as_exit():
            return _dispatch(args)
    except BackupUsageError as exc:
        print(f"edgefleet: {exc}", file=sys.stderr)
        return 2
    except NotABackupError as exc:  # "it is not an edgefleet backup", "its header ...": say which file "it" is
        print(f"edgefleet: {getattr(args, 'file', 'the backup')}: {exc}", file=sys.stderr)
        return 1
    except (BackupError, DataDirError, StoreError, BlobError) as exc:
        print(f"edgefleet: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        hint = f": {no_space_hint(args)}" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else ""
        print(f"edgefleet: {where}{exc.strerror or exc}{hint}", file=sys.stderr)
        return 1


def _dispatch(args) -> int:
    if args.command == "restore":
        return _restore(args)
    if args.backup_command == "verify":
        return _verify(args)
    if args.backup_command == "keygen":
        return _keygen(args)
    return _backup(args)


@contextlib.contextmanager
def _sigterm_as_exit():
    """SIGTERM (systemctl stop, the timer's TimeoutStartSec) unwinds like Ctrl-C, so the partial archive, the
    verify scratch copy and the restore's staging (keys in it) are removed; Python's default would leave them."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def no_space_hint(args) -> str:
    """Where the command that ran out of space was writing (a write's OSError names no file), and what to do."""
    if args.command == "restore":
        blobs = f" and the blob store {args.blobs}" if args.blobs else ""
        return (
            f"the restore stages the store, keys and blobs in or beside {args.data_dir}{blobs} before moving"
            " them in;"
            " nothing was left behind: free space there, or restore onto another disk"
        )
    if args.backup_command == "verify":
        return (
            f"verify copies the store out of the archive into {tempfile.gettempdir()}: point TMPDIR at a"
            " directory with room for it"
        )
    where = args.out_dir if args.out_dir is not None else (args.out.parent if args.out else ".")
    return (
        f"the backup is written in {where}, its store snapshot first in the data dir (partial files were removed):"
        " free space there or write elsewhere"
    )


def _progress():
    """A bar on stderr while gigabytes go by, when stderr is a terminal (the timer's journal gets none)."""
    if not sys.stderr.isatty():
        return None
    from central.cli_output import Progress

    return Progress


# -- keys ---------------------------------------------------------------------------------------------------------


def read_passphrase(passphrase_file: Path | None, environ=os.environ):
    """The passphrase from the file (its first line), else the environment; None when neither gives one."""
    from central.backup.archive import Passphrase

    if passphrase_file is not None:
        text = read_secret_file(passphrase_file, "passphrase file")
        line = text.split(b"\n", 1)[0].rstrip(b"\r")
        return Passphrase(line)
    value = environ.get(PASSPHRASE_ENV)
    return Passphrase(value.encode()) if value is not None else None


def read_secret_file(path: Path, what: str, secret: bool = True) -> bytes:
    """A passphrase or key file's bytes, at most MAX_SECRET_FILE_BYTES (so /dev/zero or a wrong file is refused,
    not read whole); with `secret`, a regular file that others than its owner may read is a warning on stderr."""
    with open(path, "rb") as f:
        mode = os.fstat(f.fileno()).st_mode
        data = f.read(MAX_SECRET_FILE_BYTES + 1)
    if len(data) > MAX_SECRET_FILE_BYTES:
        raise BackupError(f"the {what} {path} holds more than {MAX_SECRET_FILE_BYTES >> 10} KiB: not a {what}")
    if secret:
        _warn_exposed(path, mode, what)
    return data


def _warn_exposed(path: Path, mode: int, what: str) -> None:
    warning = exposed_secret(path, mode, what)
    if warning:
        print(f"edgefleet: warning: {warning}", file=sys.stderr)


def exposed_secret(path: Path, mode: int, what: str) -> str | None:
    """Why a regular file holding a secret is open to other local users, with the command that closes it."""
    if not stat.S_ISREG(mode) or not mode & 0o044:  # a pipe (--passphrase-file <(pass show ...)) is the caller's
        return None
    who = "group and others" if mode & 0o004 else "its group"
    return f"the {what} {path} is readable by {who} (mode {mode & 0o777:04o}); make it owner-only: chmod 600 {path}"


def weak_passphrase(secret: bytes) -> str | None:
    """Why a passphrase is too short to seal a backup with (a backup holds the fleet's CA key; scrypt slows a
    guess, it does not make eight letters safe); None when it will do. Opening takes any passphrase."""
    length = len(secret.decode("utf-8", errors="replace"))
    if length >= MIN_PASSPHRASE_CHARS:
        return None
    return (
        f"the backup passphrase has {length} characters; a backup holds the fleet's CA key, so seal it with at least"
        f" {MIN_PASSPHRASE_CHARS} (e.g. `openssl rand -base64 24 > FILE`, then --passphrase-file FILE)"
    )


def _sealer(args):
    from central.backup.archive import load_recipient

    if args.recipient is not None:
        return _load_key(load_recipient, "--recipient", args.recipient)
    passphrase = read_passphrase(args.passphrase_file)
    if passphrase is None:
        raise BackupUsageError(
            f"a backup is encrypted: give --passphrase-file FILE, set {PASSPHRASE_ENV}, or seal for a key with"
            " --recipient FILE"
        )
    weak = weak_passphrase(passphrase.secret)
    if weak:
        raise BackupError(weak)
    return passphrase


def _opener(args):
    from central.backup.archive import load_identity

    if args.identity is not None:
        return _load_key(load_identity, "--identity", args.identity)
    return read_passphrase(args.passphrase_file)


def _load_key(load, flag: str, path: Path):
    """A recipient or identity key file, a refusal naming the flag and the file."""
    from central.backup.archive import WrongKeyError

    identity = flag == "--identity"
    try:
        key = load(read_secret_file(path, "identity file" if identity else "recipient file", secret=False))
    except WrongKeyError as exc:
        raise WrongKeyError(f"{flag} {path}: {exc}") from None
    if identity:  # once it is a private key (a recipient is public: anyone may read it)
        _warn_exposed(path, path.stat().st_mode, "identity file")
    return key


def _keygen(args) -> int:
    from central.backup.archive import generate_identity, load_recipient
    from edgefleet.atomicfile import write_public

    private_path, public_path = args.out, Path(f"{args.out}.pub")
    for path in (private_path, public_path):
        if path.exists():
            raise BackupError(f"{path} exists already: keygen never replaces a key (backups sealed for it need it)")
    private_pem, public_pem = generate_identity()
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(private_pem)
    write_public(public_path, public_pem)
    key_id = load_recipient(public_pem).key_id
    if args.json:
        print_json({"identity": str(private_path), "recipient": str(public_path), "key_id": key_id})
        return 0
    print(f"identity (private key, 0600; keep it OFF central's machine): {private_path}")
    print(f"recipient (public key, for `central backup --recipient`): {public_path}  {key_id}")
    for line in public_pem.decode().splitlines():
        print(line)
    return 0


# -- backup -------------------------------------------------------------------------------------------------------


def scheduled_name(now: float) -> str:
    stamp = dt.datetime.fromtimestamp(now, tz=dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"central-{stamp}{BACKUP_SUFFIX}"


def backups_to_prune(names: list[str], keep: int, written: str = "") -> list[str]:
    """Of the scheduled backups' names in a directory (others are never touched), those past the newest `keep`.
    The one just `written` is always kept and counted first: a clock set back must not make it look the oldest."""
    scheduled = sorted((n for n in names if _SCHEDULED_NAME.fullmatch(n) and n != written), reverse=True)
    return scheduled[keep - (1 if written else 0) :]


def _prune(directory: Path, name: str) -> bool:
    """Delete a scheduled backup; False (left alone) unless it is a regular file that starts as a backup does:
    a directory, a link or another program's file of the same name is not ours to delete."""
    from central.backup.archive import MAGIC

    path = directory / name
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)  # NONBLOCK: a FIFO would wait for a writer
        try:
            ours = stat.S_ISREG(os.fstat(fd).st_mode) and os.read(fd, len(MAGIC)) == MAGIC
        finally:
            os.close(fd)
        if ours:
            path.unlink()
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # a symbolic link: O_NOFOLLOW refused to open it
            return False
        raise BackupError(f"the backup was written, but deleting the older {path} failed: {exc.strerror}") from None
    return ours


def _backup(args) -> int:
    from central import datadir
    from central.backup.snapshot import BackupSource, take_backup

    if not args.data_dir:
        raise BackupUsageError("give --data-dir DIR, central's data dir")
    if (args.out is None) == (args.out_dir is None):
        raise BackupUsageError("give --out FILE, or --out-dir DIR for a time-named file there")
    if args.keep is not None and args.out_dir is None:
        raise BackupUsageError("--keep goes with --out-dir")
    sealer = _sealer(args)
    paths = datadir.CentralPaths(Path(args.data_dir).expanduser().resolve())
    now = time.time()
    out = args.out if args.out is not None else args.out_dir / scheduled_name(now)
    source = BackupSource(paths.root, datadir.store_spec(paths, args.store), args.blobs, not args.without_blobs)
    result = take_backup(source, out, sealer, now, __version__, progress=_progress())
    pruned = []
    if args.keep is not None:
        for name in backups_to_prune(os.listdir(args.out_dir), args.keep, result.path.name):
            if _prune(args.out_dir, name):
                pruned.append(name)
    manifest = result.manifest
    included = sum(1 for b in manifest.blobs if b.included)
    if args.json:
        print_json(
            {
                "path": str(result.path),
                "backup_id": result.backup_id,
                "created_at": iso_seconds(manifest.created_at),
                "store": manifest.store_kind,
                "archive_bytes": result.archive_bytes,
                "seconds": round(result.seconds, 3),
                "counts": vars(manifest.counts),
                "audit_head": {"sequence": manifest.audit_head_sequence, "hash": manifest.audit_head_hash},
                "blobs": {"listed": len(manifest.blobs), "included": included},
                "sealed_for": "passphrase" if args.recipient is None else str(args.recipient),
                "pruned": pruned,
            }
        )
        return 0
    c = manifest.counts
    print(f"backup {result.backup_id} written to {result.path} in {result.seconds:.1f} s")
    print(f"  {result.archive_bytes} bytes; store {manifest.store_kind} as of {iso_seconds(manifest.created_at)}")
    print(f"  {c.nodes} nodes, {c.reports} reports, {c.audit_entries} audit entries, {c.models} models")
    print(f"  audit head: entry {manifest.audit_head_sequence} ({manifest.audit_head_hash[:16]}...)")
    blobs = f"{included} of {len(manifest.blobs)} blobs included"
    print(f"  {blobs}" + ("; the rest must be backed up with the blob store" if included < len(manifest.blobs) else ""))
    for name in pruned:
        print(f"  deleted the older backup {name} (--keep {args.keep})")
    print(f"check it with: edgefleet central backup verify {result.path} (with the same passphrase or --identity)")
    return 0


# -- verify -------------------------------------------------------------------------------------------------------


def _verify(args) -> int:
    from central.backup.verify import verify_file

    opener = _opener(args)
    with tempfile.TemporaryDirectory(prefix="edgefleet-verify-") as scratch:
        report = verify_file(args.file, opener, Path(scratch), _progress())
    m, c = report.manifest, report.manifest.counts
    included = sum(1 for b in m.blobs if b.included)
    if args.json:
        print_json(
            {
                "file": str(args.file),
                "backup_id": report.backup_id,
                "ok": True,
                "created_at": iso_seconds(m.created_at),
                "central_version": m.central_version,
                "store": m.store_kind,
                "ca_fingerprint": m.ca_fingerprint,
                "signing_key_id": m.signing_key_id,
                "audit_head": {"sequence": m.audit_head_sequence, "hash": m.audit_head_hash},
                "counts": vars(c),
                "files": len(m.files),
                "blobs": {"listed": len(m.blobs), "included": included, "checked": report.blobs_read},
                "chunks": report.chunks,
                "archive_bytes": report.archive_bytes,
                "store_check": report.snapshot.integrity,
                "audit_entries_checked": report.snapshot.audit_entries_checked,
                "seconds": round(report.seconds, 3),
            }
        )
        return 0
    print(f"backup {report.backup_id}: OK")
    print(
        f"  taken {iso_seconds(m.created_at)} ({relative(m.created_at - time.time())}) by edgefleet"
        f" {m.central_version}; store {m.store_kind}"
    )
    print(f"  CA {m.ca_fingerprint}; signing key {m.signing_key_id}")
    print(f"  {c.nodes} nodes, {c.reports} reports, {c.audit_entries} audit entries, {c.models} models")
    print(
        f"  {report.chunks} chunks authenticated; {len(m.files)} files and {report.blobs_read} of {len(m.blobs)}"
        " blobs match their sha256"
    )
    print(f"  store: {report.snapshot.integrity}")
    anchor = f", from the anchor at {report.snapshot.anchor_sequence}" if report.snapshot.anchor_sequence else ""
    print(
        f"  audit chain intact up to entry {m.audit_head_sequence}"
        f" ({report.snapshot.audit_entries_checked} entries checked{anchor})"
    )
    print(f"  {report.archive_bytes} bytes, verified in {report.seconds:.1f} s")
    return 0


# -- restore ------------------------------------------------------------------------------------------------------


def _restore(args) -> int:
    from central.backup.restore import RestoreTarget, restore_file

    opener = _opener(args)
    root = Path(args.data_dir).expanduser().resolve()
    result = restore_file(args.file, opener, RestoreTarget(root, args.store, args.blobs), time.time(), _progress())
    m = result.manifest
    age = result.restored_at - m.created_at
    serve = f"edgefleet central serve --data-dir {root}" + (f" --blobs {args.blobs}" if args.blobs else "")
    if args.json:
        print_json(
            {
                "data_dir": str(root),
                "store": result.store,
                "backup_id": result.backup_id,
                "backup_at": iso_seconds(m.created_at),
                "restored_at": iso_seconds(result.restored_at),
                "recovery_point_age_s": round(age, 3),
                "audit_head": {"sequence": m.audit_head_sequence, "hash": m.audit_head_hash},
                "restored_entry": {"sequence": result.audit_entry.sequence, "action": result.audit_entry.action},
                "counts": vars(m.counts),
                "blobs_restored": result.blobs_restored,
                "seconds": round(result.seconds, 3),
                "next": serve,
            }
        )
        return 0
    print(f"restored backup {result.backup_id} into {root} in {result.seconds:.1f} s")
    print(f"  store: {result.store} ({result.snapshot.integrity}); {result.blobs_restored} blobs restored")
    print(
        f"  audit: entry {result.audit_entry.sequence} central.restored, chained after the backup's head"
        f" (entry {m.audit_head_sequence})"
    )
    print(f"what this restore loses (RPO): the store is as it was at {iso_seconds(m.created_at)}, {relative(-age)}")
    print("  - operator actions after that are lost: tokens, labels, assignments, rollouts started or changed,")
    print("    models pushed, operators added; revoke again any node or operator revoked after it")
    print("  - nodes' heartbeats and reports since then come back from their spools as they reconnect;")
    print("    nodes enrolled, renewed or assigned after it are adopted as they call in")
    print("  - `edgefleet central restore-report` lists all of it, and the reports no spool still held")
    print(f"  - key rotations after it are not taken back: this central has CA {m.ca_fingerprint[:23]}... and")
    print(f"    signing key {m.signing_key_id[:24]}...; boxes that moved to a newer CA or key (edge-agent status")
    print("    shows theirs) do not trust it and must enroll again: restore a backup taken after the rotation")
    print("next:")
    print(f"  {serve}")
    print("  if central's address changed, on each box: edge-agent central-addresses set HOST:PORT")
    print("  (or serve the old name); operators: --central HOST:PORT, or the credential's `central`")
    return 0
