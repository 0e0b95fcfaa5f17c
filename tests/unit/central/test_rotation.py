"""central.rotation on a real data dir: each step's files, and a stop at each point of a step finished or dropped
at the next load (the states are made the way a stop would leave them: some files written, the rest not)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import time

import pytest

from central import rotation
from central.datadir import CentralPaths, initialize, require_private
from central.rotation import RotationError
from edgefleet import pki, trust

T0 = 1_800_000_000.0


@pytest.fixture()
def paths(tmp_path) -> CentralPaths:
    return initialize(tmp_path / "central", "127.0.0.1:7443")


def _fp(path) -> str:
    return pki.fingerprint(pki.load_certificate(path.read_bytes()))


def test_a_data_dir_from_before_rotation_loads_with_one_key_and_version_1(paths):
    state = rotation.load_trust(paths)
    assert state.version == 1 and not state.renew_now and state.previous_ca is None
    assert [k.state for k in state.history.keys] == ["current"]
    assert state.history.current.key_id == trust.key_id(paths.signing_public_key.read_bytes())
    assert json.loads(paths.trust_file.read_text())["version"] == 1
    assert not paths.signing_history.exists()  # written at the first rotation, not before
    assert rotation.load_trust(paths).version == 1  # nothing changed: same version


def test_ca_rotation_files_chain_and_finish(paths):
    old_fp = _fp(paths.ca_cert)
    old_key = paths.ca_key.read_bytes()
    state = rotation.rotate_ca(paths, time.time(), renew_now=True)
    assert state.renew_now and state.version == 2
    assert _fp(paths.ca_previous_cert) == old_fp != state.authority.fingerprint
    assert state.authority.certificate.subject != state.previous_ca.subject
    state.cross.verify_directly_issued_by(state.previous_ca)
    server = pki.load_certificate(paths.server_cert.read_bytes())
    assert server.issuer == state.authority.certificate.subject
    # The old CA's key is kept, owner-only, and the data dir still passes the private-files check.
    kept = paths.retired / f"ca-{old_fp.split(':')[1][:16]}.key"
    assert kept.read_bytes() == old_key and stat.S_IMODE(kept.stat().st_mode) == 0o600
    require_private(paths)
    # Chains: the cross certificate before the new root; enrollment adds the previous CA last.
    certs = state.fleet_chain_pem.split(b"-----END CERTIFICATE-----")
    assert len([c for c in certs if c.strip()]) == 3
    assert state.enroll_chain_pem.startswith(state.fleet_chain_pem)
    assert state.enroll_chain_pem.endswith(pki.certificate_pem(state.previous_ca))
    with pytest.raises(RotationError, match="finish it first"):
        rotation.rotate_ca(paths, time.time())

    finished, retired = rotation.finish_ca_rotation(paths)
    assert pki.fingerprint(retired) == old_fp and finished.previous_ca is None and not finished.renew_now
    assert not paths.ca_previous_cert.exists() and not paths.ca_cross_cert.exists()
    assert finished.version == 3
    with pytest.raises(RotationError, match="no CA rotation to finish"):
        rotation.finish_ca_rotation(paths)


def test_signing_rotation_history_and_finish(paths):
    old_id = trust.key_id(paths.signing_public_key.read_bytes())
    state = rotation.rotate_signing_key(paths, T0, overlap_s=3600)
    new_id = state.history.current.key_id
    assert trust.key_id(paths.signing_public_key.read_bytes()) == new_id != old_id
    assert [(k.key_id, k.state, k.valid_until) for k in state.history.keys] == [
        (old_id, "previous", T0 + 3600),
        (new_id, "current", None),
    ]
    assert (paths.retired / f"signing-{old_id.split(':')[1][:16]}.key").exists()
    with pytest.raises(RotationError, match="still in its overlap"):
        rotation.rotate_signing_key(paths, T0 + 10, 3600)
    # Once the overlap passed, a new rotation needs no finish.
    later = rotation.rotate_signing_key(paths, T0 + 7200, 3600)
    assert [k.state for k in later.history.keys] == ["retired", "previous", "current"]
    # The chain takes a node that trusts only the first key to the newest.
    first = trust.TrustedKey(old_id, later.history.keys[0].public_key_pem.encode())
    walked = trust.walk_signing_keys([first], list(later.history.statements), T0 + 7201)
    assert [k.key_id for k in walked] == [new_id, later.history.current.key_id]
    finished, retired = rotation.finish_signing_rotation(paths, T0 + 7300)
    assert retired.key_id == new_id and [k.state for k in finished.history.keys] == ["retired", "retired", "current"]
    with pytest.raises(RotationError, match="no signing key rotation to finish"):
        rotation.finish_signing_rotation(paths, T0 + 7400)
    assert rotation.parse_history(paths.signing_history.read_bytes()) == finished.history


def test_a_stop_before_the_ca_rotation_committed_leaves_the_old_ca(paths, tmp_path):
    before = {p.name: p.read_bytes() for p in paths.root.iterdir() if p.is_file()}
    spare = initialize(tmp_path / "spare", "127.0.0.1:7443")
    # What rotate_ca writes before its commit file: previous, cross, staged CA and server certificates.
    shutil.copy(paths.ca_cert, paths.ca_previous_cert)
    shutil.copy(spare.ca_cert, paths.ca_cross_cert)
    shutil.copy(spare.ca_cert, paths.ca_next_cert)
    shutil.copy(spare.server_cert, paths.server_next_cert)
    state = rotation.load_trust(paths)
    assert state.previous_ca is None and state.authority.fingerprint == pki.fingerprint(
        pki.load_certificate(before["ca.crt"])
    )
    for name in ("ca-previous.crt", "ca-cross.crt", "ca-next.crt", "server-next.crt"):
        assert not (paths.root / name).exists()


def test_a_stop_after_the_ca_rotation_committed_finishes_it(paths):
    old_fp = _fp(paths.ca_cert)
    done = rotation.rotate_ca(paths, time.time())
    # Put the pre-rename state back: the new files staged, ca-next.key (the commit) written, nothing renamed.
    os.replace(paths.ca_key, paths.ca_next_key)
    os.replace(paths.ca_cert, paths.ca_next_cert)
    os.replace(paths.server_cert, paths.server_next_cert)
    shutil.copy(paths.ca_previous_cert, paths.ca_cert)
    shutil.copy(paths.retired / f"ca-{old_fp.split(':')[1][:16]}.key", paths.ca_key)
    state = rotation.load_trust(paths)
    assert state.authority.fingerprint == done.authority.fingerprint and _fp(paths.ca_previous_cert) == old_fp
    assert not paths.ca_next_key.exists() and state.version == done.version


def test_a_stop_inside_ca_finish_completes_it(paths):
    rotation.rotate_ca(paths, time.time())
    paths.ca_previous_cert.unlink()  # finish removes this first, then retires the cross certificate
    state = rotation.load_trust(paths)
    assert state.previous_ca is None and not paths.ca_cross_cert.exists()
    assert any(p.name.startswith("ca-cross-") for p in paths.retired.iterdir())


def test_a_stop_inside_a_signing_rotation(paths):
    old_id = trust.key_id(paths.signing_public_key.read_bytes())
    staged = pki.generate_signing_key()
    # Before the commit: a staged key the history does not name is dropped.
    pki.write_private(paths.signing_next_key, pki.private_key_pem(staged))
    assert rotation.load_trust(paths).history.current.key_id == old_id and not paths.signing_next_key.exists()
    # After it: the history names the staged key, which replaces signing.key (and signing.pub follows).
    history = rotation.rotated_history(
        rotation.load_history(paths),
        pki.load_private_key(paths.signing_key.read_bytes()),
        pki.public_key_pem(staged),
        T0,
        3600,
    )
    pki.write_private(paths.signing_next_key, pki.private_key_pem(staged))
    pki.write_public(paths.signing_history, history.to_json())
    state = rotation.load_trust(paths)
    assert state.history.current.key_id == trust.key_id(pki.public_key_pem(staged))
    assert paths.signing_public_key.read_bytes() == pki.public_key_pem(staged)


def test_files_that_disagree_are_refused_with_what_is_wrong(paths, tmp_path):
    spare = initialize(tmp_path / "spare", "127.0.0.1:7443")
    original_key = paths.signing_key.read_bytes()
    shutil.copy(spare.signing_key, paths.signing_key)
    # signing.key swapped for another fleet's; the history still names the original.
    pki.write_public(
        paths.signing_history,
        rotation.SigningHistory(
            (
                rotation.SigningKeyInfo(
                    trust.key_id(pki.public_key_pem(pki.load_private_key(original_key))),
                    pki.public_key_pem(pki.load_private_key(original_key)).decode(),
                    T0,
                    None,
                    "current",
                ),
            ),
            (),
        ).to_json(),
    )
    with pytest.raises(RotationError, match="signing files disagree"):
        rotation.load_trust(paths)
    paths.signing_history.write_text("{not json")
    with pytest.raises(RotationError, match="malformed"):
        rotation.load_trust(paths)
    paths.signing_history.unlink()
    paths.trust_file.write_text('{"version": "x"}')
    with pytest.raises(RotationError, match=r"trust\.json is malformed"):
        rotation.load_trust(paths)
    paths.trust_file.unlink()
    shutil.copy(spare.ca_key, paths.ca_key)
    with pytest.raises(RotationError, match="CA files disagree"):
        rotation.load_trust(paths)


@pytest.mark.parametrize(
    ("history", "reason"),
    [
        ({"keys": [], "statements": []}, "only\\) one current"),
        ({"keys": [{"key_id": "x"}], "statements": []}, "malformed"),
    ],
)
def test_malformed_histories_are_refused(history, reason):
    with pytest.raises(RotationError, match=reason):
        rotation.parse_history(json.dumps(history).encode())


def test_ca_names_never_repeat_a_taken_subject():
    _, ca = pki.create_ca(rotation.ca_common_name(T0))
    assert rotation.ca_common_name(T0, [ca]) != rotation.ca_common_name(T0)
    assert rotation.ca_common_name(T0).startswith("edgefleet fleet CA 20")


def test_the_version_follows_the_content(paths):
    v1 = rotation.load_trust(paths).version
    rotation.rotate_signing_key(paths, T0, 3600)
    v2 = rotation.load_trust(paths).version
    assert v2 == v1 + 1 and rotation.load_trust(paths).version == v2
    # trust.json lost (or copied from elsewhere): the version goes on from what it holds, never back to a seen one.
    data = json.loads(paths.trust_file.read_text())
    paths.trust_file.write_text(json.dumps({**data, "digest": "stale"}))
    assert rotation.load_trust(paths).version == v2 + 1
