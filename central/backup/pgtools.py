"""PostgreSQL's own tools for a backup: pg_dump takes the store, pg_restore lists, reads and restores it.

A store URL may carry a password; it never goes on a command line (other local users read argv): the tools get
the URL's other parts as a conninfo string and the password as PGPASSWORD in their environment. The backup
passphrase, when it came from the environment, is not passed on to them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from central.backup import PASSPHRASE_ENV, BackupError
from central.store import display_store

# The audit tables in the dump, which verify reads without restoring it (with schema_migrations).
AUDIT_TABLES = ("audit", "audit_anchors")


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise BackupError(
            f"{name} is not installed: a PostgreSQL store is backed up and restored with PostgreSQL's client tools"
            " (Debian: apt-get install postgresql-client, of the server's major version or newer)"
        )
    return path


def conninfo_and_env(url: str) -> tuple[str, dict[str, str]]:
    """A conninfo string without the password, and the environment the tool runs with (the URL's password as
    PGPASSWORD, else the PGPASSWORD psycopg used too)."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    try:
        params = conninfo_to_dict(url)
    except Exception as exc:  # noqa: BLE001 - psycopg raises ProgrammingError for a malformed URL
        raise BackupError(f"malformed PostgreSQL URL {display_store(url)}: {exc}") from None
    password = params.pop("password", None)
    env = tool_env()
    if password is not None:
        env["PGPASSWORD"] = str(password)
    return make_conninfo("", **params), env


def tool_env() -> dict[str, str]:
    """The environment a PostgreSQL tool runs with: ours (PGPASSWORD, PGSSLMODE, ... as psycopg uses them), less
    the backup passphrase."""
    return {k: v for k, v in os.environ.items() if k != PASSPHRASE_ENV}


def _run(argv: list[str], env: dict[str, str], doing: str, url: str = "") -> subprocess.CompletedProcess:
    try:
        result = subprocess.run(argv, env=env, capture_output=True, check=False)
    except OSError as exc:
        raise BackupError(f"{doing}: cannot run {argv[0]}: {exc}") from None
    if result.returncode != 0:
        lines = result.stderr.decode(errors="replace").strip().splitlines()
        reason = " | ".join(lines[-5:]) or f"exit status {result.returncode}"
        where = f" ({display_store(url)})" if url else ""
        raise BackupError(f"{doing}{where} failed: {reason}")
    return result


def dump(url: str, snapshot_id: str, out: Path) -> None:
    """pg_dump --format=custom of the database at `url` as of the exported snapshot `snapshot_id` (held open by
    the caller), into `out`."""
    conninfo, env = conninfo_and_env(url)
    argv = [_tool("pg_dump"), "--format=custom", "--no-owner", "--no-privileges", f"--snapshot={snapshot_id}"]
    _run([*argv, f"--file={out}", f"--dbname={conninfo}"], env, "pg_dump of the store", url)


def list_contents(dump_file: Path) -> list[str]:
    """pg_restore --list: the dump's table of contents; refuses a file pg_restore cannot read."""
    result = _run([_tool("pg_restore"), "--list", str(dump_file)], tool_env(), "reading the PostgreSQL dump")
    return result.stdout.decode(errors="replace").splitlines()


def table_rows(dump_file: Path, tables: tuple[str, ...]) -> dict[str, list[Row]]:
    """The rows of `tables` in the dump, as text fields, read with pg_restore --data-only without a database.

    A dump's data is compressed: rows that decompress to more than MAX_ROWS_RATIO times the whole dump file
    (plus MAX_ROWS_SLACK) are refused before they fill memory. pg_dump's own audit rows come to about 3 times
    their compressed size (their hashes are hex), and they are a part of the dump."""
    argv = [_tool("pg_restore"), "--data-only", *(f"--table={t}" for t in tables), "--file=-", str(dump_file)]
    limit = MAX_ROWS_RATIO * dump_file.stat().st_size + MAX_ROWS_SLACK
    return copy_rows(_output_capped(argv, tool_env(), "reading the PostgreSQL dump", limit).decode("utf-8"))


MAX_ROWS_RATIO = 16
MAX_ROWS_SLACK = 64 << 20


def _output_capped(argv: list[str], env: dict[str, str], doing: str, limit: int) -> bytes:
    """A tool's stdout, refused (and the tool killed) once it passes `limit` bytes."""
    with tempfile.TemporaryFile() as errors:  # a file, not a pipe: it cannot fill up while stdout is read
        try:
            process = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=errors)
        except OSError as exc:
            raise BackupError(f"{doing}: cannot run {argv[0]}: {exc}") from None
        parts, size = [], 0
        assert process.stdout is not None
        with process:
            while part := process.stdout.read(1 << 20):
                size += len(part)
                if size > limit:
                    process.kill()
                    raise BackupError(
                        f"{doing}: its audit rows decompress to more than {limit >> 20} MiB, far more than the dump"
                        " holds: not a dump pg_dump wrote of a central store"
                    )
                parts.append(part)
        if process.returncode != 0:
            errors.seek(0)
            lines = errors.read().decode(errors="replace").strip().splitlines()
            raise BackupError(f"{doing} failed: {' | '.join(lines[-5:]) or f'exit status {process.returncode}'}")
    return b"".join(parts)


def restore(url: str, dump_file: Path) -> None:
    """pg_restore into the (empty) database at `url`, in one transaction: all of it or nothing."""
    conninfo, env = conninfo_and_env(url)
    argv = [_tool("pg_restore"), "--no-owner", "--no-privileges", "--exit-on-error", "--single-transaction"]
    _run([*argv, f"--dbname={conninfo}", str(dump_file)], env, "pg_restore of the store", url)


# -- COPY text, as pg_restore prints a table's data ----------------------------------------------------------------

_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\"}


Row = dict[str, "str | None"]


def copy_rows(script: str) -> dict[str, list[Row]]:
    """Rows of every `COPY schema.table (col, ...) FROM stdin;` block in a SQL script, keyed by the bare table
    name, each a dict by column. Fields are COPY's text format unescaped; NULL (\\N) is None."""
    tables: dict[str, list[Row]] = {}
    rows: list[Row] | None = None
    columns: list[str] = []
    lines = script.split("\n")  # not splitlines(): it also splits at characters COPY leaves as they are
    if lines[-1] == "":
        lines.pop()
    for line in lines:
        if rows is None:
            if line.startswith("COPY ") and line.endswith(") FROM stdin;"):
                name, _, listed = line[5 : -len(") FROM stdin;")].partition(" (")
                columns = [c.strip().strip('"') for c in listed.split(",")]
                rows = tables.setdefault(name.split(".")[-1].strip('"'), [])
            continue
        if line == "\\.":
            rows = None
            continue
        fields = [None if f == "\\N" else _unescape(f) for f in line.split("\t")]
        if len(fields) != len(columns):
            raise BackupError(f"the PostgreSQL dump has a row of {len(fields)} fields for {len(columns)} columns")
        rows.append(dict(zip(columns, fields, strict=True)))
    if rows is not None:
        raise BackupError("the PostgreSQL dump's data ends inside a table")
    return tables


def _unescape(field: str) -> str:
    if "\\" not in field:
        return field
    out, i = [], 0
    while i < len(field):
        c = field[i]
        if c != "\\" or i + 1 == len(field):
            out.append(c)
            i += 1
            continue
        nxt = field[i + 1]
        if nxt in _ESCAPES:
            out.append(_ESCAPES[nxt])
            i += 2
        elif nxt == "x" and i + 2 < len(field) and field[i + 2] in "0123456789abcdefABCDEF":
            digits = field[i + 2 : i + 4]
            digits = digits if len(digits) == 2 and all(d in "0123456789abcdefABCDEF" for d in digits) else digits[0]
            out.append(chr(int(digits, 16)))
            i += 2 + len(digits)
        elif nxt in "01234567":
            end = i + 2
            while end < len(field) and end < i + 4 and field[end] in "01234567":
                end += 1
            out.append(chr(int(field[i + 1 : end], 8)))
            i = end
        else:
            out.append(nxt)
            i += 2
    return "".join(out)
