"""The agent's trust state (edge_agent.control.trust_state) on real files in a fleet directory: bundles applied
(a CA rotation through a cross certificate, a signing-key rotation through a statement), refused whole when
anything in them does not verify (each test says what was tried), persisted, and what they make the agent do
(renew onto the newest CA, accept manifests signed by a rotated-in key, keep slots verifiable)."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json

import pytest

from edge_agent.control.artifacts import ArtifactError, ModelSlots
from edge_agent.control.identity import FleetFiles, FleetIdentity
from edge_agent.control.status import describe, gather, trust_lines, trust_report
from edge_agent.control.trust_state import (
    OfferedTrust,
    TrustFiles,
    apply_bundle,
    renewal_wanted,
    trusted_issuer,
)
from edgefleet import manifest, pki
from edgefleet.trust import SigningStatement, TrustError, cross_sign, key_id, sign_statement

NOW = 1_800_000_000.0
DAY = 86_400.0
OLD_CA_NAME = "edgefleet fleet CA"
NEW_CA_NAME = "edgefleet fleet CA 2027-01-15T08:00Z"


class Fleet:
    """Central's side, made here: two CAs, two signing keys, and the statements and cross certificate between."""

    def __init__(self):
        self.old_ca_key, self.old_ca = pki.create_ca(OLD_CA_NAME)
        self.new_ca_key, self.new_ca = pki.create_ca(NEW_CA_NAME)
        self.cross = cross_sign(self.old_ca_key, self.old_ca, self.new_ca)
        self.old_signing = pki.generate_signing_key()
        self.new_signing = pki.generate_signing_key()
        self.old_pub = pki.public_key_pem(self.old_signing)
        self.new_pub = pki.public_key_pem(self.new_signing)

    def node_cert(self, ca_key, ca):
        now = pki.utcnow()
        key = pki.generate_key()
        return pki.issue_certificate(
            ca_key,
            ca,
            key.public_key(),
            pki.Identity("node", "n1"),
            not_before=now - dt.timedelta(minutes=1),
            not_after=now + dt.timedelta(days=30),
        )

    def rotate_statement(self, overlap_s=DAY, signer=None, new_pub=None):
        new_pub = new_pub or self.new_pub
        statement = SigningStatement(
            kind="rotate",
            key_id=key_id(new_pub),
            previous_key_id=key_id(self.old_pub),
            issued_at=NOW,
            previous_valid_until=NOW + overlap_s,
            public_key_pem=new_pub.decode(),
        )
        body, signature = sign_statement(statement, self.old_signing)
        if signer is not None:  # a forgery: the old key's statement, signed by another key
            signature = base64.b64encode(signer.sign(body)).decode()
        return body, signature

    def retire_statement(self, at):
        statement = SigningStatement(
            kind="retire",
            key_id=key_id(self.new_pub),
            previous_key_id=key_id(self.old_pub),
            issued_at=at,
            previous_valid_until=at,
        )
        return sign_statement(statement, self.new_signing)

    def bundle(self, version=2, cas=None, cross=None, statements=None, renew_now=False) -> OfferedTrust:
        pem = lambda c: pki.certificate_pem(c).decode()  # noqa: E731
        return OfferedTrust(
            version=version,
            ca_certificates_pem=tuple(pem(c) for c in (cas if cas is not None else [self.new_ca, self.old_ca])),
            cross_certificates_pem=tuple(pem(c) for c in (cross if cross is not None else [self.cross])),
            statements=tuple(statements if statements is not None else [self.rotate_statement()]),
            renew_now=renew_now,
        )


@pytest.fixture(scope="module")
def fleet():
    return Fleet()


@pytest.fixture
def files(tmp_path, fleet):
    """A fleet directory as enrollment leaves it: the old CA in ca.crt, the old signing key in signing.pub."""
    root = tmp_path / "fleet"
    root.mkdir()
    (root / "ca.crt").write_bytes(pki.certificate_pem(fleet.old_ca))
    (root / "signing.pub").write_bytes(fleet.old_pub)
    return TrustFiles(root)


def _fps(*cas):
    return [pki.fingerprint(c) for c in cas]


def test_before_any_bundle_the_node_trusts_what_enrollment_pinned(files, fleet):
    trust = files.load()
    assert trust.ca_fingerprints() == _fps(fleet.old_ca)
    assert [k.key_id for k in trust.signing_keys] == [key_id(fleet.old_pub)]
    assert trust.version == 0 and not files.state.exists()
    assert files.signing_keys() == [fleet.old_pub]


def test_a_rotation_bundle_is_applied_persisted_and_logged(files, fleet):
    own = fleet.node_cert(fleet.old_ca_key, fleet.old_ca)
    update = files.update(files.load(), fleet.bundle(), own, NOW)
    assert not update.refused and update.ca_changed
    assert update.trust.ca_fingerprints() == _fps(fleet.new_ca, fleet.old_ca)  # newest first
    assert any("trusts CA" in s and NEW_CA_NAME in s for s in update.said)
    assert any(s == f"trusts signing key {key_id(fleet.new_pub)}" for s in update.said)
    assert any(s.startswith(f"trusts signing key {key_id(fleet.old_pub)} until") for s in update.said)
    # ca.crt is now a bundle of both, newest first; trust.json holds both keys and the history.
    assert files.ca.read_bytes() == pki.certificate_pem(fleet.new_ca) + pki.certificate_pem(fleet.old_ca)
    reread = files.load()
    assert reread.ca_fingerprints() == update.trust.ca_fingerprints()
    assert {(k.key_id, k.valid_until) for k in reread.signing_keys} == {
        (key_id(fleet.old_pub), NOW + DAY),
        (key_id(fleet.new_pub), None),
    }
    assert reread.version == 2 and len(reread.history) == len(update.said)
    # signing.pub is what enrollment pinned, untouched.
    assert (files.root / "signing.pub").read_bytes() == fleet.old_pub


def test_the_same_bundle_again_changes_nothing_and_writes_nothing(files, fleet):
    own = fleet.node_cert(fleet.old_ca_key, fleet.old_ca)
    applied = files.update(files.load(), fleet.bundle(), own, NOW).trust
    before = files.state.stat().st_mtime_ns, files.state.read_bytes()
    again = files.update(applied, fleet.bundle(), own, NOW + 60)
    assert again.trust == applied and not again.said and not again.refused and not again.ca_changed
    assert (files.state.stat().st_mtime_ns, files.state.read_bytes()) == before


@pytest.mark.parametrize(
    "tried, reason",
    [
        ("the new CA offered with no cross certificate", "no cross certificate"),
        ("the new CA's cross certificate signed by a CA the node never trusted", "no cross certificate"),
        ("a rotate statement signed by a key other than the one it names", "not signed by"),
        ("a CA certificate that is not PEM", "cannot be read"),
        ("no CA certificate at all", "lists no CA"),
    ],
)
def test_a_bundle_that_does_not_verify_is_refused_whole_and_nothing_changes(files, fleet, tried, reason):
    own = fleet.node_cert(fleet.old_ca_key, fleet.old_ca)
    if tried.startswith("the new CA offered with no cross"):
        offered = fleet.bundle(cross=[])
    elif tried.startswith("the new CA's cross"):
        stranger_key, stranger = pki.create_ca("someone else's CA")
        offered = fleet.bundle(cross=[cross_sign(stranger_key, stranger, fleet.new_ca)])
    elif tried.startswith("a rotate statement"):
        offered = fleet.bundle(statements=[fleet.rotate_statement(signer=pki.generate_signing_key())])
    elif tried.startswith("a CA certificate that"):
        offered = OfferedTrust(2, ("not a certificate",), (), ())
    else:
        offered = OfferedTrust(2, (), (), (fleet.rotate_statement(),))
    before = files.load()
    update = files.update(before, offered, own, NOW)
    assert reason in update.refused, tried
    assert update.trust == before and not update.said
    assert not files.state.exists() and files.ca.read_bytes() == pki.certificate_pem(fleet.old_ca), tried
    with pytest.raises(TrustError):
        apply_bundle(before, offered, own, NOW)


def test_a_fork_of_the_signing_key_is_refused(files, fleet):
    """Tried: the chain the node applied, then a bundle whose statement gives the old key a second successor."""
    own = fleet.node_cert(fleet.old_ca_key, fleet.old_ca)
    applied = files.update(files.load(), fleet.bundle(), own, NOW).trust
    other_pub = pki.public_key_pem(pki.generate_signing_key())
    forked = fleet.bundle(version=3, statements=[fleet.rotate_statement(new_pub=other_pub)])
    update = files.update(applied, forked, own, NOW)
    assert update.refused and update.trust == applied
    assert key_id(other_pub) not in {k.key_id for k in files.load().signing_keys}


def test_the_old_ca_is_dropped_once_the_node_holds_a_certificate_from_the_new(files, fleet):
    old_cert = fleet.node_cert(fleet.old_ca_key, fleet.old_ca)
    during = files.update(files.load(), fleet.bundle(), old_cert, NOW).trust
    finished = fleet.bundle(version=3, cas=[fleet.new_ca], cross=[])
    # Still on the old CA's certificate (a node that could not renew): the old CA stays, or it could not connect.
    kept = apply_bundle(during, finished, old_cert, NOW)
    assert kept.ca_fingerprints() == _fps(fleet.new_ca, fleet.old_ca)
    new_cert = fleet.node_cert(fleet.new_ca_key, fleet.new_ca)
    update = files.update(during, finished, new_cert, NOW)
    assert update.trust.ca_fingerprints() == _fps(fleet.new_ca) and update.ca_changed
    assert any(s.startswith("no longer trusts CA") for s in update.said)
    assert files.ca.read_bytes() == pki.certificate_pem(fleet.new_ca)


def test_a_lower_version_from_a_restored_central_is_still_verified_and_applied(files, fleet):
    own = fleet.node_cert(fleet.old_ca_key, fleet.old_ca)
    applied = files.update(files.load(), fleet.bundle(version=7), own, NOW).trust
    restored = fleet.bundle(version=3, statements=[fleet.rotate_statement(), fleet.retire_statement(NOW + 10)])
    update = files.update(applied, restored, own, NOW + 20)
    assert not update.refused and update.trust.version == 3
    assert [k.key_id for k in update.trust.signing_keys] == [key_id(fleet.new_pub)]


def test_renewal_is_wanted_only_when_asked_and_not_yet_on_the_newest_ca(files, fleet):
    old_cert = fleet.node_cert(fleet.old_ca_key, fleet.old_ca)
    new_cert = fleet.node_cert(fleet.new_ca_key, fleet.new_ca)
    asked = apply_bundle(files.load(), fleet.bundle(renew_now=True), old_cert, NOW)
    not_asked = apply_bundle(files.load(), fleet.bundle(renew_now=False), old_cert, NOW)
    assert renewal_wanted(asked, old_cert)
    assert not renewal_wanted(asked, new_cert)
    assert not renewal_wanted(not_asked, old_cert)
    # A renewed certificate must come from a CA the node trusts.
    assert trusted_issuer(asked, new_cert) == fleet.new_ca
    stranger_key, stranger = pki.create_ca("someone else's CA")
    assert trusted_issuer(asked, fleet.node_cert(stranger_key, stranger)) is None
    # Same subject as the newest CA, signed by another key: names alone do not make an issuer.
    impostor_key, _ = pki.create_ca(NEW_CA_NAME)
    assert trusted_issuer(asked, fleet.node_cert(impostor_key, fleet.new_ca)) is None


def test_a_key_past_its_overlap_signs_nothing_even_before_a_bundle_drops_it(files, fleet):
    own = fleet.node_cert(fleet.old_ca_key, fleet.old_ca)
    trust = files.update(files.load(), fleet.bundle(), own, NOW).trust
    assert set(trust.signing_key_pems(NOW + 60)) == {fleet.old_pub, fleet.new_pub}
    assert trust.signing_key_pems(NOW + DAY + 1) == [fleet.new_pub]


def _manifest(data: bytes, version="1") -> manifest.Manifest:
    return manifest.Manifest("unit", version, "onnx", hashlib.sha256(data).hexdigest(), len(data))


def test_slots_verify_against_the_keys_trusted_now(files, fleet, tmp_path):
    slots = ModelSlots(tmp_path / "agent", files.signing_keys)
    by_new = manifest.sign(_manifest(b"x"), fleet.new_signing)
    by_stranger = manifest.sign(_manifest(b"x"), pki.generate_signing_key())
    with pytest.raises(ArtifactError, match="does not verify"):
        slots.verify_manifest(*by_new)  # not trusted yet
    own = fleet.node_cert(fleet.old_ca_key, fleet.old_ca)
    files.update(files.load(), fleet.bundle(), own, NOW)
    assert slots.verify_manifest(*by_new).version == "1"  # read from disk at each verification
    assert slots.verify_manifest(*manifest.sign(_manifest(b"x"), fleet.old_signing)).version == "1"
    with pytest.raises(ArtifactError, match="any of central's 2 trusted signing keys"):
        slots.verify_manifest(*by_stranger)


def test_a_slot_takes_centrals_new_signature_of_the_same_manifest(files, fleet, tmp_path):
    """After a rotation central re-signs its manifests; the active slot keeps verifying once the old key is
    retired only if it stores the new signature."""
    data = b"model bytes"
    slots = ModelSlots(tmp_path / "agent", files.signing_keys)
    wanted = slots.verify_manifest(*manifest.sign(_manifest(data), fleet.old_signing))
    slots.download(wanted, lambda offset: iter([(0, data, len(data))]))
    slots.activate("a")
    own = fleet.node_cert(fleet.old_ca_key, fleet.old_ca)
    trust = files.update(files.load(), fleet.bundle(), own, NOW).trust
    body, new_signature = manifest.sign(_manifest(data), fleet.new_signing)
    # A signature from a key nobody trusts is not stored.
    assert slots.adopt_signature(body, manifest.sign(_manifest(data), pki.generate_signing_key())[1]) == []
    assert slots.adopt_signature(body, new_signature) == ["a"]
    assert json.loads((slots.slot_dir("a") / "manifest.json").read_text())["signature"] == new_signature
    assert slots.adopt_signature(body, new_signature) == []  # already there
    files.update(
        trust, fleet.bundle(version=3, statements=[fleet.rotate_statement(), fleet.retire_statement(NOW)]), own, NOW + 1
    )
    assert ModelSlots(tmp_path / "agent", files.signing_keys).active().manifest == wanted


def test_status_shows_the_trusted_cas_and_signing_keys(files, fleet):
    own = fleet.node_cert(fleet.old_ca_key, fleet.old_ca)
    trust = files.update(files.load(), fleet.bundle(), own, NOW).trust
    report = trust_report(trust, refused=2)
    assert report["ca_fingerprints"] == _fps(fleet.new_ca, fleet.old_ca)
    lines = trust_lines(report)
    assert lines[0] == f"trusted CA:  {pki.fingerprint(fleet.new_ca)}"
    assert lines[1] == f"             {pki.fingerprint(fleet.old_ca)}"
    assert lines[2] == f"signing key: {key_id(fleet.new_pub)}"
    assert lines[3].startswith(f"             {key_id(fleet.old_pub)} (until ")
    assert "2 update(s) from central refused" in lines[4]
    text = describe(
        {
            "data_dir": "/d",
            "enrolled": True,
            "daemon_running": False,
            "serving": {"running": False},
            "node_id": "n1",
            "labels": {},
            "central": "127.0.0.1:1",
            "certificate_expires_at": NOW + DAY,
            "certificate_issuer": f"CN={OLD_CA_NAME}",
            "trust": report,
        },
        now=NOW,
    )
    assert f"certificate: expires in 1.0 days (from CN={OLD_CA_NAME})" in text
    assert f"trusted CA:  {pki.fingerprint(fleet.new_ca)}" in text


def test_status_says_when_the_trust_files_cannot_be_read(tmp_path, fleet):
    """Tried: `edge-agent status` on a data dir whose ca.crt is not PEM: it reports the rest and says so."""
    cert = fleet.node_cert(fleet.old_ca_key, fleet.old_ca)
    identity = FleetIdentity(
        node_id="n1",
        labels={},
        central="127.0.0.1:1",
        enroll_address="127.0.0.1:2",
        enrolled_at=NOW,
        ca_pem=pki.certificate_pem(fleet.old_ca),
        certificate_pem=pki.certificate_pem(cert),
        key_pem=pki.private_key_pem(pki.generate_key()),
        signing_public_key_pem=fleet.old_pub,
    )
    files = FleetFiles(tmp_path)
    files.save(identity)
    report = gather(tmp_path)
    assert report["trust"]["ca_fingerprints"] == _fps(fleet.old_ca)
    files.ca.write_text("not a certificate")
    report = gather(tmp_path)
    assert report["node_id"] == "n1" and "the fleet CA bundle cannot be read" in report["trust"]["error"]
    assert "trust:       cannot be read (" in describe(report)


def test_the_same_bytes_switched_to_as_another_version_relabel_their_slot(files, fleet, tmp_path):
    """chat@2.0.0 pushed with chat@1.0.0's bytes is activated from the slot that holds them: the slot then holds
    2.0.0's manifest, so a restart serves chat@2.0.0 and the heartbeat's re-signed 2.0.0 manifest is adopted."""
    data = b"model bytes"
    slots = ModelSlots(tmp_path / "agent", files.signing_keys)
    first = slots.verify_manifest(*manifest.sign(_manifest(data, "1.0.0"), fleet.old_signing))
    slots.download(first, lambda offset: iter([(0, data, len(data))]))
    slots.activate("a")
    second = slots.verify_manifest(*manifest.sign(_manifest(data, "2.0.0"), fleet.old_signing))
    assert slots.download(second, lambda offset: iter(())) == slots.slot_dir("a") / "model.onnx"
    assert slots.activate("a", second).manifest == second
    assert ModelSlots(tmp_path / "agent", files.signing_keys).active().manifest == second
    own = fleet.node_cert(fleet.old_ca_key, fleet.old_ca)
    files.update(files.load(), fleet.bundle(), own, NOW)
    assert slots.adopt_signature(*manifest.sign(_manifest(data, "2.0.0"), fleet.new_signing)) == ["a"]
    other = slots.verify_manifest(*manifest.sign(_manifest(b"other bytes", "3.0.0"), fleet.new_signing))
    with pytest.raises(ArtifactError, match="holds other bytes"):
        slots.activate("a", other)


def test_a_pinned_key_that_is_not_one_trusts_nothing(files, fleet):
    """Tried: signing.pub emptied. The node still loads (it serves on), verifies no manifest and applies no
    signing-key statement."""
    files.signing_public_key.write_bytes(b"")
    trust = files.load()
    assert trust.signing_keys == () and files.signing_keys() == []
    own = fleet.node_cert(fleet.old_ca_key, fleet.old_ca)
    assert "no signing key is trusted" in files.update(trust, fleet.bundle(), own, NOW).refused


@pytest.mark.parametrize("restored_from", ["before the rotation", "during the overlap"])
def test_a_central_restored_from_before_a_finished_rotation_does_not_bring_old_trust_back(files, fleet, restored_from):
    """Tried: after a CA and a signing-key rotation were finished (the node on the new CA, trusting the new key
    only), a central restored from a backup taken before the rotation, or during its overlap, offers its older
    bundle (a lower version): the retired CA comes back only through a cross certificate for it, which no one has,
    and the retired key only through a statement its successor would sign, which no one does."""
    old_cert = fleet.node_cert(fleet.old_ca_key, fleet.old_ca)
    new_cert = fleet.node_cert(fleet.new_ca_key, fleet.new_ca)
    during = files.update(files.load(), fleet.bundle(version=5), old_cert, NOW).trust
    finished = fleet.bundle(version=6, cas=[fleet.new_ca], cross=[], statements=[
        fleet.rotate_statement(), fleet.retire_statement(NOW + 10)])  # fmt: skip
    after = files.update(during, finished, new_cert, NOW + 20).trust
    assert after.ca_fingerprints() == _fps(fleet.new_ca)
    assert [k.key_id for k in after.signing_keys] == [key_id(fleet.new_pub)]
    if restored_from == "before the rotation":
        restored = fleet.bundle(version=1, cas=[fleet.old_ca], cross=[], statements=[])
    else:
        restored = fleet.bundle(version=3)
    update = files.update(after, restored, new_cert, NOW + 30)
    assert update.refused and "no cross certificate from a trusted CA" in update.refused
    reread = files.load()
    assert reread.ca_fingerprints() == _fps(fleet.new_ca)
    assert [k.key_id for k in reread.signing_keys] == [key_id(fleet.new_pub)]
    assert files.signing_keys() == [fleet.new_pub]


def test_a_renewed_certificate_starting_in_this_nodes_future_is_taken():
    """Central's clock ahead of the node's (or a renewal answered in the next second): the certificate's start is
    later than the node's now. Central's clock decides validity, so only expiry is judged here."""
    from edge_agent.control.trust_state import AgentTrust, renewal_problem

    ca_key, ca = pki.create_ca()
    node_key = pki.generate_key()
    now = pki.utcnow()
    cert = pki.issue_certificate(
        ca_key, ca, node_key.public_key(), pki.Identity("node", "n1"),
        not_before=now + dt.timedelta(minutes=5), not_after=now + dt.timedelta(days=30),
    )  # fmt: skip
    trust = AgentTrust(ca_certificates=(ca,), signing_keys=())
    assert renewal_problem(trust, cert, node_key, "n1", now.timestamp()) is None
    assert "expired" in renewal_problem(trust, cert, node_key, "n1", (now + dt.timedelta(days=31)).timestamp())
