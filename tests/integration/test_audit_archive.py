"""Audit retention against a real central process: `edgefleet audit archive` saves old entries to a file and
central prunes them behind an anchor it signs; `audit verify` then proves the rest from the anchor, and the
file proves itself offline (`audit verify --archive`), against central's signing key."""

import json

import pytest

from central_process import create_token, edgefleet_cli, start_central
from edgefleet.v1 import admin_pb2


@pytest.fixture
def central(tmp_path):
    process = start_central(tmp_path / "central")
    yield process
    process.stop()


def _sequences(central):
    with central.admin() as admin:
        return [
            e.sequence for e in admin.call("ListAuditEntries", admin_pb2.ListAuditEntriesRequest(limit=1000)).entries
        ]


def test_archive_prunes_behind_a_signed_anchor_and_both_halves_verify(central, tmp_path):
    for _ in range(6):
        create_token(central)
    before = _sequences(central)
    assert len(before) >= 6 and before[0] == 1
    out = tmp_path / "audit-1.jsonl"

    printed = edgefleet_cli(central, "audit", "archive", "--before-sequence", "5", "--out", str(out))
    assert "archived entries 1..4" in printed and "pruned 4" in printed

    kept = _sequences(central)
    assert kept[0] == 5 and kept[-1] == before[-1] + 1, "entries 1-4 pruned; the archive itself is audited"
    with central.admin() as admin:
        last = admin.call("ListAuditEntries", admin_pb2.ListAuditEntriesRequest(after_sequence=kept[-2])).entries[0]
    assert last.action == "audit.archive" and "pruned 4 entries up to 4" in last.detail
    verified = json.loads(edgefleet_cli(central, "audit", "verify", "--json"))
    assert verified["intact"] and verified["anchor_sequence"] == 4
    assert verified["entries_checked"] == len(kept)

    key = str(central.paths.signing_public_key)
    offline = json.loads(
        edgefleet_cli(central, "audit", "verify", "--archive", str(out), "--signing-key", key, "--json")
    )
    assert offline == {"intact": True, "entries_checked": 4, "problem": ""}

    # A second archive starts where the first stopped, and the log still verifies after a restart.
    second = tmp_path / "audit-2.jsonl"
    edgefleet_cli(central, "audit", "archive", "--before-sequence", "7", "--out", str(second))
    assert json.loads(second.read_text().splitlines()[0])["after_sequence"] == 4
    central.restart()
    assert json.loads(edgefleet_cli(central, "audit", "verify", "--json"))["anchor_sequence"] == 6
    assert "2 entries chained" in edgefleet_cli(
        central, "audit", "verify", "--archive", str(second), "--signing-key", key
    )


def test_an_edited_archive_or_a_foreign_key_fails_offline_verification(central, tmp_path):
    from central.cli import main

    for _ in range(4):
        create_token(central)
    out = tmp_path / "audit.jsonl"
    edgefleet_cli(central, "audit", "archive", "--before-sequence", "4", "--out", str(out))
    lines = out.read_text().splitlines()
    entry = json.loads(lines[2])
    entry["actor"] = "admin:someone-else"
    edited = tmp_path / "edited.jsonl"
    edited.write_text("\n".join([lines[0], lines[1], json.dumps(entry), *lines[3:]]) + "\n")
    assert main(["audit", "verify", "--archive", str(edited)]) == 1

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    other = tmp_path / "other.pub"
    other.write_bytes(
        ed25519.Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    assert main(["audit", "verify", "--archive", str(out), "--signing-key", str(other)]) == 1
    assert main(["audit", "verify", "--archive", str(out), "--signing-key", str(central.paths.signing_public_key)]) == 0


def test_archive_refuses_what_it_cannot_prune(central, tmp_path, capsys):
    from central.cli import main

    create_token(central)
    head = _sequences(central)[-1]
    code = main(
        [
            "--credential",
            str(central.paths.admin_credential),
            "--central",
            central.fleet_address,
            "audit",
            "archive",
            "--before-sequence",
            str(head + 1),
            "--out",
            str(tmp_path / "all.jsonl"),
        ]
    )
    assert code != 0, "the newest entry is never pruned: the next one links to it"
    assert "the newest audit entry is never pruned" in capsys.readouterr().err
    assert not (tmp_path / "all.jsonl").exists() and not (tmp_path / "all.jsonl.partial").exists()
    assert _sequences(central)[0] == 1
