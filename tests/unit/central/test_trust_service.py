"""central.services.trust's handlers without gRPC, on SQLite and PostgreSQL: a real data dir and store, callers as
the TLS layer builds them. The same over real mTLS, with real gRPC clients, is tests/integration/test_key_rotation.py.
"""

from __future__ import annotations

import json
import time

import pytest

from central import audit, rotation
from central.datadir import CentralPaths, DataDirError, initialize, require_fleet_ca
from central.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from central.rotation import RotationError
from central.services import audit as audit_service
from central.services import trust
from central.services.base import CentralSettings
from central.store import ModelRecord
from central_handlers import STORES, central_with_callers, enroll
from edgefleet import manifest, pki
from edgefleet import trust as edgefleet_trust


@pytest.fixture(params=STORES)
def fleet(request, tmp_path):
    gen = central_with_callers(tmp_path, request.param, CentralSettings(), time.time())
    central, admin, viewer = next(gen)
    trust.apply(central, rotation.load_trust(CentralPaths(tmp_path / "central")))
    trust.reconcile_store(central.store, central.trust)
    yield central, admin, viewer
    gen.close()


def _refusals(central, action):
    return [e for e in central.store.list_audit(0, 10_000) if e.action == action and e.outcome == audit.REFUSED]


def _push(central, name, version):
    body, signature = manifest.sign(
        manifest.Manifest(name=name, version=version, format="gguf", sha256="ab" * 32, size=10), central.signing_key
    )
    record = ModelRecord(name, version, "gguf", "ab" * 32, 10, {}, 1.0, "admin:admin", body, signature)
    central.store.add_model(record)
    return record


def test_ca_rotation_names_who_is_still_on_the_previous_ca(fleet):
    central, admin, viewer = fleet
    enroll(central, "n1", {})
    enroll(central, "n2", {})
    old_fp = central.authority.fingerprint
    current, previous = trust.rotate_ca(central, admin, renew_now=False)
    assert previous.fingerprint == old_fp and current.fingerprint == central.authority.fingerprint != old_fp
    assert central.store.bind_ca("sha256:" + "0" * 64) == current.fingerprint  # the store moved with it
    view = trust.get_trust(central, viewer)  # viewers may read
    assert [ca.state for ca in view.cas] == ["current", "previous"]
    assert sorted(view.on_previous_ca) == ["admin:admin", "node:n1", "node:n2", "viewer:val"]
    # n1 renews (a new serial), val is revoked: neither is holding the finish up any more.
    central.store.set_certificate("n1", "beef", time.time() + 3600)
    central.store.revoke_operator("val", time.time())
    held = trust.get_trust(central, admin).on_previous_ca
    assert sorted(held) == ["admin:admin", "node:n2"]
    with pytest.raises(FailedPrecondition, match="still holding only a certificate from the previous CA: 2 "):
        trust.finish_ca_rotation(central, admin, force=False)
    assert _refusals(central, "ca.finish")
    retired, stranded = trust.finish_ca_rotation(central, admin, force=True)
    assert retired.fingerprint == old_fp and sorted(stranded) == ["admin:admin", "node:n2"]
    assert central.trust.previous_ca is None and central.store.fleet_value(trust.PREVIOUS_CA_HOLDERS) is None
    with pytest.raises(FailedPrecondition, match="no CA rotation to finish"):
        trust.finish_ca_rotation(central, admin, force=True)


def test_viewers_may_not_rotate(fleet):
    central, _, viewer = fleet
    for call in (
        lambda: trust.rotate_ca(central, viewer, False),
        lambda: trust.finish_ca_rotation(central, viewer, True),
        lambda: trust.rotate_signing_key(central, viewer, 3600),
        lambda: trust.finish_signing_rotation(central, viewer),
    ):
        with pytest.raises(PermissionDenied, match="may read but not change"):
            call()


def test_signing_rotation_resigns_models_and_assigned_nodes(fleet):
    central, admin, _ = fleet
    enroll(central, "n1", {})
    model = _push(central, "chat", "1.0.0")
    central.store.assign_model("n1", model)
    generation = central.store.heartbeat_target("n1").config_generation
    old_pem = central.signing_public_key_pem.encode()
    with pytest.raises(InvalidArgument, match="overlap must be from"):
        trust.rotate_signing_key(central, admin, 1.0)
    rotated = trust.rotate_signing_key(central, admin, 0)  # 0: the default overlap, 24 h
    assert rotated.manifests_resigned == 1
    assert rotated.previous.valid_until == pytest.approx(rotated.current.created_at + 24 * 3600)
    new_pem = central.signing_public_key_pem.encode()
    assert edgefleet_trust.key_id(new_pem) == rotated.current.key_id
    stored = central.store.get_model("chat", "1.0.0")
    manifest.verify(stored.manifest, stored.signature, new_pem)
    with pytest.raises(manifest.ManifestError):
        manifest.verify(stored.manifest, stored.signature, old_pem)
    desired = central.store.heartbeat_target("n1")
    assert desired.model["signature"] == stored.signature and desired.config_generation == generation
    assert central.store.fleet_value(trust.SIGNING_KEY_ID) == rotated.current.key_id
    with pytest.raises(FailedPrecondition, match="still in its overlap"):
        trust.rotate_signing_key(central, admin, 3600)
    retired = trust.finish_signing_rotation(central, admin)
    assert retired.key_id == rotated.previous.key_id
    assert [k.state for k in trust.get_trust(central, admin).signing_keys] == ["current", "retired"]


def test_an_audit_anchor_signed_before_a_rotation_still_verifies(fleet):
    central, admin, viewer = fleet
    central.store.append_audit(time.time(), "admin:admin", "test.mark", "", audit.ALLOWED, "", "test")
    entries = central.store.list_audit(0, 100)  # the newest is never pruned: the anchor is at the one before
    anchor = audit.sign_anchor(entries[-2].sequence, entries[-2].hash, time.time(), central.signing_key)
    central.store.prune_audit(anchor)
    trust.rotate_signing_key(central, admin, 3600)
    trust.finish_signing_rotation(central, admin)
    check, kept = audit_service.verify(central, viewer)
    assert kept == anchor and check.intact, check.problem
    # A key central never had does not make it verify.
    assert not audit.verify_chain(
        central.store.iter_audit(), anchor, [pki.public_key_pem(pki.generate_signing_key())]
    ).intact


def test_a_start_brings_the_store_forward_or_refuses_a_lagging_data_dir(fleet, tmp_path):
    central, _, _ = fleet
    paths = central.trust.paths
    old_fp = central.authority.fingerprint
    # The files rotated, then a stop before the store's part: the next start moves the binding.
    state = rotation.rotate_ca(paths, time.time())
    notes = trust.reconcile_store(central.store, state)
    assert central.store.bind_ca(old_fp) == state.authority.fingerprint and any("binding moved" in n for n in notes)
    # A replica whose data dir was copied before that rotation: refused, saying which files to copy.
    lagging = rotation.TrustState(**{**state.__dict__, "authority": central.authority, "previous_ca": None})
    with pytest.raises(RotationError, match=r"copy ca\.key, ca\.crt"):
        trust.reconcile_store(central.store, lagging)
    # The store's manifests signed with a key this data dir never had.
    central.store.set_fleet_value(trust.SIGNING_KEY_ID, "ed25519:" + "1" * 64)
    with pytest.raises(RotationError, match=r"copy its signing\.key"):
        trust.reconcile_store(central.store, state)
    # The data dir ahead of the store's key (a stop before the re-signing): re-signed at start.
    model = _push(central, "chat", "1.0.0")
    central.store.set_fleet_value(trust.SIGNING_KEY_ID, state.history.current.key_id)
    newer = rotation.rotate_signing_key(paths, time.time(), 3600)
    notes = trust.reconcile_store(central.store, newer)
    assert any("re-signed 1 manifests" in n for n in notes)
    resigned = central.store.get_model(model.name, model.version)
    manifest.verify(resigned.manifest, resigned.signature, newer.signing_public_key_pem.encode())


def test_another_fleets_store_is_left_alone_for_the_data_dir_check_to_refuse(fleet, tmp_path):
    central, _, _ = fleet
    model = _push(central, "chat", "1.0.0")
    stranger = rotation.load_trust(initialize(tmp_path / "stranger", "127.0.0.1:7443"))
    assert trust.reconcile_store(central.store, stranger) == []  # not "lagging": a CA this fleet never had
    assert central.store.get_model("chat", "1.0.0").signature == model.signature  # nothing re-signed with its key
    with pytest.raises(DataDirError, match="belongs to the fleet whose CA is"):
        require_fleet_ca(central.store, stranger.authority.fingerprint, stranger.paths.root)


def test_the_holders_record_is_read_defensively(fleet):
    central, admin, _ = fleet
    trust.rotate_ca(central, admin, False)
    previous = pki.fingerprint(central.trust.previous_ca)
    central.store.set_fleet_value(trust.PREVIOUS_CA_HOLDERS, "{broken")
    assert trust.holders_on_previous_ca(central.store, previous) == []
    central.store.set_fleet_value(trust.PREVIOUS_CA_HOLDERS, json.dumps({"ca": "sha256:other", "nodes": {}}))
    assert trust.holders_on_previous_ca(central.store, previous) == []


def test_name_lists_are_bounded():
    names = [f"node:n{i}" for i in range(25)]
    assert trust.name_list(names).endswith("node:n19 and 5 more")
    assert trust.name_list(names[:2]) == "node:n0, node:n1"
