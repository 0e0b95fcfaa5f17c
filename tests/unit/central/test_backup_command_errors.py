"""`edgefleet central backup|backup verify|restore` refusing bad input, in-process on a real data dir: one line
naming the file or flag at fault, exit 1, never a traceback or a library's own wording."""

from __future__ import annotations

import pytest

from central import cli
from central.datadir import initialize


@pytest.fixture
def setup(tmp_path, monkeypatch):
    monkeypatch.delenv("EDGEFLEET_BACKUP_PASSPHRASE", raising=False)
    data_dir = tmp_path / "central"
    initialize(data_dir, "127.0.0.1:7443")
    passphrase = tmp_path / "passphrase"
    passphrase.write_text("correct horse\n")
    passphrase.chmod(0o600)  # else a warning line joins the refusal
    assert cli.main(["central", "backup", "keygen", "--out", str(tmp_path / "id.key")]) == 0
    return tmp_path, data_dir, passphrase


def _refusal(capsys, argv) -> str:
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_a_file_that_is_not_a_backup_is_named(setup, capsys):
    tmp_path, _, passphrase = setup
    capsys.readouterr()
    other = tmp_path / "notes.txt"
    other.write_text("not a backup\n")
    for argv in (
        ["central", "backup", "verify", str(other), "--passphrase-file", str(passphrase)],
        ["central", "restore", str(other), "--data-dir", str(tmp_path / "new"), "--passphrase-file", str(passphrase)],
    ):
        err = _refusal(capsys, argv)
        assert f"edgefleet: {other}: it is not an edgefleet backup" in err
    assert not (tmp_path / "new").exists()


def test_a_key_file_of_the_wrong_kind_names_the_flag_and_what_to_give(setup, capsys):
    """The private key given as --recipient, the public one as --identity, a CA certificate: cryptography's own
    reason (PEM delimiters, a link to its FAQ) is not shown, the keygen file to give is."""
    tmp_path, data_dir, _ = setup
    out = tmp_path / "b.edgefleet-backup"
    capsys.readouterr()
    for wrong in (tmp_path / "id.key", data_dir / "ca.crt"):
        err = _refusal(
            capsys, ["central", "backup", "--data-dir", str(data_dir), "--out", str(out), "--recipient", str(wrong)]
        )
        assert f"--recipient {wrong}: the recipient is not a PEM public key (give the FILE.pub" in err
        assert "http" not in err and "delimiters" not in err
    assert not out.exists()
    assert (
        cli.main(
            [
                "central",
                "backup",
                "--data-dir",
                str(data_dir),
                "--out",
                str(out),
                "--recipient",
                str(tmp_path / "id.key.pub"),
            ]
        )
        == 0
    )
    capsys.readouterr()
    err = _refusal(capsys, ["central", "backup", "verify", str(out), "--identity", str(tmp_path / "id.key.pub")])
    assert f"--identity {tmp_path / 'id.key.pub'}: the identity is not an unencrypted PEM private key" in err
    assert "not FILE.pub" in err and "http" not in err
