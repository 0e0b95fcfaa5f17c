"""The agent's routing audit on real SQLite files: the chain, its bound, the keyed prompt hash, the summary
for heartbeats, and a disk that misbehaves. Tampering is done on the file itself, as someone with the box would."""

import hashlib
import json
import sqlite3
import subprocess
import sys
import threading

import pytest

from edge_agent.routing_audit import (
    RouteCount,
    RoutingAudit,
    RoutingAuditError,
    RoutingRecord,
    audit_path,
    read_entries,
    row_hash,
    verify_file,
)
from edgefleet.hashchain import GENESIS_HASH


def _record(audit, i=0, data_class="public", route="local", detectors=(), text=None):
    audit.record(
        RoutingRecord(
            1_800_000_000.0 + i / 8,
            "tenant-a",
            "chat",
            data_class,
            detectors,
            route,
            "local" if route == "local" else "queue_full",
            200,
            audit.prompt_hash(text if text is not None else f"prompt {i}"),
        )
    )


@pytest.fixture
def path(tmp_path):
    return audit_path(tmp_path / "data")


@pytest.fixture
def audit(path):
    a = RoutingAudit(path)
    yield a
    a.close()


def _tamper(path, *statements):
    conn = sqlite3.connect(path)
    for sql in statements:
        conn.execute(sql)
    conn.commit()
    conn.close()


def test_the_chain_continues_across_reopen(path):
    first = RoutingAudit(path)
    for i in range(5):
        _record(first, i)
    head = first.head
    first.close()
    assert head[0] == 5
    second = RoutingAudit(path)
    try:
        assert second.head == head, "a reopened file continues from its last row"
        for i in range(5, 8):
            _record(second, i)
        assert second.flush()
        rows = second.entries(0, 100)
        assert [r.sequence for r in rows] == list(range(1, 9))
        assert rows[0].previous_hash == GENESIS_HASH and rows[5].previous_hash == head[1]
        assert second.verify().intact and second.verify().entries_checked == 8
        assert [r.sequence for r in second.entries(after_sequence=6, limit=1)] == [7]
    finally:
        second.close()


def test_rows_hold_the_decision_and_never_the_prompt(audit, path):
    _record(audit, 1, "restricted", "refused", detectors=("pii.ssn", "custom.project"), text="my SSN is 078-05-1120")
    audit.flush()
    [row] = audit.entries()
    assert (row.tenant, row.endpoint, row.data_class, row.route, row.status) == (
        "tenant-a",
        "chat",
        "restricted",
        "refused",
        200,
    )
    assert row.detectors == ("custom.project", "pii.ssn"), "sorted"
    assert b"078-05-1120" not in path.read_bytes() + path.with_name(path.name + "-wal").read_bytes()


@pytest.mark.parametrize(
    "statements, bad, problem",
    [
        (["UPDATE routing SET route = 'local' WHERE sequence = 3"], 3, "altered"),
        (["UPDATE routing SET detectors = 'not json' WHERE sequence = 3"], 3, "altered"),
        (["UPDATE routing SET status = x'00' WHERE sequence = 3"], 3, "altered"),
        (["DELETE FROM routing WHERE sequence = 3"], 4, "missing or reordered"),
        # Rows 2 and 3 swap places: row 3's content now comes second and links to row 2's hash, not row 1's.
        (
            [
                "UPDATE routing SET sequence = CASE sequence WHEN 2 THEN -3 ELSE -2 END WHERE sequence IN (2, 3)",
                "UPDATE routing SET sequence = -sequence WHERE sequence < 0",
            ],
            2,
            "does not link",
        ),
    ],
)
def test_verify_finds_edited_deleted_and_reordered_rows(path, statements, bad, problem):
    audit = RoutingAudit(path)
    for i in range(6):
        _record(audit, i, route="upstream:cloud")
    audit.close()
    assert verify_file(path).intact
    _tamper(path, *statements)
    check = verify_file(path)
    assert not check.intact and check.first_bad_sequence == bad and problem in check.problem
    assert check.entries_checked == (2 if bad == 4 else bad - 1), "the rows before the damage still check"


def test_recomputing_an_edited_rows_hash_breaks_the_next_link(path):
    audit = RoutingAudit(path)
    for i in range(6):
        _record(audit, i, route="upstream:cloud")
    audit.close()
    [row] = [r for r in read_entries(path, 0, 10) if r.sequence == 3]
    forged = row_hash(
        3,
        row.at,
        row.tenant,
        row.endpoint,
        row.data_class,
        row.detectors,
        "local",
        row.reason,
        row.status,
        row.prompt_hash,
        row.previous_hash,
    )
    _tamper(path, f"UPDATE routing SET route = 'local', hash = '{forged}' WHERE sequence = 3")
    check = verify_file(path)
    assert not check.intact and check.first_bad_sequence == 4 and "does not link" in check.problem


def test_the_bound_keeps_max_entries_and_the_rest_verifies_from_the_anchor(path):
    audit = RoutingAudit(path, max_entries=10, batch_rows=4)
    for i in range(37):
        _record(audit, i)
        if i % 7 == 0:
            audit.flush()
    audit.close()
    rows = read_entries(path, 0, 100)
    assert [r.sequence for r in rows] == list(range(28, 38))
    check = verify_file(path)
    assert check.intact and check.entries_checked == 10
    reopened = RoutingAudit(path, max_entries=10)
    _record(reopened, 37)
    reopened.close()
    assert [r.sequence for r in read_entries(path, 0, 100)] == list(range(29, 39))
    assert verify_file(path).intact
    _tamper(path, "UPDATE routing SET tenant = 'someone-else' WHERE sequence = 29")
    assert verify_file(path).first_bad_sequence == 29, "the first kept row is checked against the anchor"
    _tamper(path, "DELETE FROM routing WHERE sequence = 29")
    assert verify_file(path).first_bad_sequence == 30, "dropping the oldest kept row by hand is a gap"


def test_the_prompt_hash_is_keyed_per_box_and_stable_on_it(tmp_path):
    box_a, box_b = RoutingAudit(audit_path(tmp_path / "a")), RoutingAudit(audit_path(tmp_path / "b"))
    try:
        text = "what is the dosage for patient 4471?"
        hash_a = box_a.prompt_hash(text)
        assert hash_a != box_b.prompt_hash(text), "another box's key"
        assert hash_a != hashlib.sha256(text.encode()).hexdigest(), "not a plain hash anyone can recompute"
        assert box_a.prompt_hash(text) == hash_a and box_a.prompt_hash(text + "!") != hash_a
        assert box_a.prompt_hash("\ud800 lone surrogate from JSON")  # never raises on the request path
        key = box_a.key_path
        assert key.stat().st_mode & 0o777 == 0o600 and len(key.read_bytes()) == 32
    finally:
        box_a.close()
        box_b.close()
    again = RoutingAudit(audit_path(tmp_path / "a"))
    try:
        assert again.prompt_hash(text) == hash_a, "the key survives a restart"
    finally:
        again.close()


def test_racing_processes_agree_on_one_key(tmp_path):
    path = audit_path(tmp_path / "data")
    audits = [RoutingAudit(path) for _ in range(6)]  # as if several processes started at once
    hashes = []
    threads = [threading.Thread(target=lambda a=a: hashes.append(a.prompt_hash("same"))) for a in audits]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for a in audits:
        a.close()
    assert len(set(hashes)) == 1


def test_summary_counts_since_the_last_take_and_restores(audit):
    for i in range(3):
        _record(audit, i, "public", "local")
    _record(audit, 3, "public", "upstream:cloud")
    _record(audit, 4, "restricted", "refused")
    assert audit.take_summary() == [
        RouteCount("public", "local", 3),
        RouteCount("public", "upstream:cloud", 1),
        RouteCount("restricted", "refused", 1),
    ]
    assert audit.take_summary() == [], "counts start again after each take"
    _record(audit, 5, "public", "local")
    audit.restore_summary([RouteCount("public", "local", 3)])
    assert audit.take_summary() == [RouteCount("public", "local", 4)]
    assert audit.head[0] == 6


def test_record_never_waits_on_the_disk(audit, path):
    _record(audit, 0)
    audit.flush()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another writer holds the file
    try:
        for i in range(1, 2001):
            _record(audit, i)
        assert audit.head[0] == 2001, "every decision is chained at once"
        assert not audit.flush(timeout_s=0.2), "none of them can be on disk yet"
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert audit.flush()
    assert audit.verify().entries_checked == 2001 and audit.dropped == 0


def test_a_read_only_file_is_logged_counted_and_survived(path, caplog):
    audit = RoutingAudit(path, batch_rows=2, max_backlog=3)
    try:
        _record(audit, 1)
        _record(audit, 2)
        assert audit.flush()
        # Tests run as root, where file modes are not enforced: make the writer's connection read-only instead.
        audit._conn.execute("PRAGMA query_only = ON")
        for i in range(3, 13):
            _record(audit, i)
        assert not audit.flush()
        assert audit.write_errors >= 1 and audit.dropped == 7, "the 3 newest wait for the disk, the rest are counted"
        assert "cannot write" in caplog.text
        audit._conn.execute("PRAGMA query_only = OFF")
        assert audit.flush(), "the writer outlived the errors"
        assert [r.sequence for r in audit.entries()] == [1, 2, 10, 11, 12]
        check = audit.verify()
        assert not check.intact and check.first_bad_sequence == 10, "the loss shows in the chain"
    finally:
        audit.close()


def test_an_unopenable_file_leaves_the_summary_working(path):
    path.mkdir(parents=True)  # a directory where the file should be
    audit = RoutingAudit(path)
    _record(audit, 1, "public", "local")
    assert audit.head[0] == 1 and not audit.flush()
    assert audit.take_summary() == [RouteCount("public", "local", 1)]
    audit.close()
    assert audit.dropped == 1
    _record(audit, 2)  # a request finishing during shutdown
    assert audit.dropped == 2


def test_a_corrupt_file_is_set_aside_and_a_new_chain_starts(path):
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a database" * 100)
    audit = RoutingAudit(path)
    try:
        assert audit.head == (0, GENESIS_HASH)
        _record(audit, 1)
        audit.flush()
        assert audit.verify().intact
    finally:
        audit.close()
    assert list(path.parent.glob("routing.db.corrupt-*"))


def test_the_cli_reads_the_file_while_the_agent_writes_it(audit, path):
    for i in range(5):
        _record(audit, i, route="upstream:cloud")
    audit.flush()
    data_dir = str(path.parent.parent)

    def cli(*args):
        return subprocess.run(
            [sys.executable, "-m", "edge_agent.cli", "audit", *args, "--data-dir", data_dir],
            capture_output=True,
            text=True,
            timeout=60,
        )

    verify = cli("verify", "--json")
    assert verify.returncode == 0, verify.stderr
    assert json.loads(verify.stdout)["entries_checked"] == 5
    listed = cli("list", "--after", "1", "--limit", "2", "--json")
    assert [r["sequence"] for r in json.loads(listed.stdout)] == [2, 3]
    table = cli("list").stdout
    assert "upstream:cloud" in table and table.count("\n") == 6
    _record(audit, 5)  # the agent keeps writing while it is read
    audit.flush()
    assert json.loads(cli("verify", "--json").stdout)["entries_checked"] == 6
    _tamper(path, "UPDATE routing SET reason = 'local' WHERE sequence = 2")
    broken = cli("verify")
    assert broken.returncode == 1 and "BROKEN at entry 2" in broken.stdout


def test_reading_a_data_dir_without_an_audit_is_a_clear_error(tmp_path):
    with pytest.raises(RoutingAuditError, match="no routing audit"):
        read_entries(audit_path(tmp_path), 0, 10)
    assert not audit_path(tmp_path).exists(), "reading creates nothing"
