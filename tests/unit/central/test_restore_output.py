"""What `edgefleet central restore` tells the operator, in-process on a real data dir and backup: besides what the
restore loses, that key rotations after the backup are not taken back, with the CA and signing key it restored
(what to compare with `edge-agent status` on a box before pointing the fleet at it)."""

from __future__ import annotations

from central import cli
from central.datadir import initialize
from edgefleet import pki
from edgefleet import trust as edgefleet_trust


def test_restore_names_the_keys_it_brings_back(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("EDGEFLEET_BACKUP_PASSPHRASE", raising=False)
    paths = initialize(tmp_path / "central", "127.0.0.1:7443")
    passphrase = tmp_path / "passphrase"
    passphrase.write_text("a passphrase of some length\n")
    passphrase.chmod(0o600)
    backup = tmp_path / "central.edgefleet-backup"
    flags = ["--passphrase-file", str(passphrase)]
    assert cli.main(["central", "backup", "--data-dir", str(paths.root), "--out", str(backup), *flags]) == 0
    capsys.readouterr()
    assert cli.main(["central", "restore", str(backup), "--data-dir", str(tmp_path / "restored"), *flags]) == 0
    out = " ".join(capsys.readouterr().out.split())
    ca = pki.fingerprint(pki.load_certificate(paths.ca_cert.read_bytes()))
    key_id = edgefleet_trust.key_id(paths.signing_public_key.read_bytes())
    assert "key rotations after it are not taken back" in out
    assert f"this central has CA {ca[:23]}... and signing key {key_id[:24]}..." in out
    assert "must enroll again: restore a backup taken after the rotation" in out
