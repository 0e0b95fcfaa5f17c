"""The restores part of the FleetStore contract (issue 18), on SQLite and on PostgreSQL (a fresh database per test,
skipped when no server is reachable, failed under CI=true): a restore recorded, its findings once per node and kind,
and the adoptions' compare-and-set writes."""

import threading

import pytest

from central.restore_state import RestorePoint, record_restore
from central.store import ModelRecord, NodeRecord, RestoreFinding, TokenRecord
from postgres_db import fleet_stores

POINT = RestorePoint("ab" * 32, 1000.0, 5000.0, 42, "cd" * 32, "sha256:" + "ef" * 32)


def _node(node_id="node-1", serial="s1", expires_at=9000.0):
    return NodeRecord(node_id, {"region": "eu"}, "box", 10.0, "t1", serial, expires_at)


def _finding(kind="node_enrolled_after_backup", node_id="node-1", detail="d", at=6000.0, action="adopted"):
    return RestoreFinding(kind, node_id, detail, at, action)


def _enroll(store, node):
    store.add_token(TokenRecord(f"tok-{node.node_id}", "h", {}, 0.0, 1e12, 1, 1, False, "admin:a"))
    assert store.enroll(f"tok-{node.node_id}", node, now=1.0)


def _model(version="2.0.0", sha="aa" * 32):
    return ModelRecord("chat", version, "gguf", sha, 3, {}, 1.0, "admin:a", b"{}", "sig")


class RestoreStoreContract:
    """Subclass with a `store` fixture returning a fresh, empty store."""

    def test_a_store_never_restored_has_no_point_and_takes_no_finding(self, store):
        assert store.latest_restore() is None
        assert store.restore_findings() == []
        assert not store.add_restore_finding(_finding()), "a finding needs a restore to belong to"

    def test_record_restore_keeps_the_point_and_lists_the_lost_operator_actions(self, store):
        record_restore(store, POINT)
        assert store.latest_restore() == POINT
        [lost] = store.restore_findings()
        assert (lost.kind, lost.node_id, lost.action, lost.found_at) == (
            "operator_actions_after_backup",
            "",
            "listed",
            POINT.restored_at,
        )
        assert "revoke again" in lost.detail

    def test_findings_are_kept_once_per_node_and_kind_in_the_order_made(self, store):
        store.add_restore(POINT)
        assert store.add_restore_finding(_finding("reports_lost", "n2", "first"))
        assert not store.add_restore_finding(_finding("reports_lost", "n2", "second")), "same node and kind"
        assert store.add_restore_finding(_finding("reports_lost", "n1"))
        assert store.add_restore_finding(_finding("model_missing", "n2"))
        found = store.restore_findings()
        assert [(f.kind, f.node_id, f.detail) for f in found] == [
            ("reports_lost", "n2", "first"),
            ("reports_lost", "n1", "d"),
            ("model_missing", "n2", "d"),
        ]
        assert store.restore_findings(limit=2) == found[:2]

    def test_a_later_restore_is_the_latest_and_has_its_own_findings(self, store):
        store.add_restore(POINT, [_finding("reports_lost", "n1")])
        later = RestorePoint("12" * 32, 7000.0, 8000.0, 50, "34" * 32, POINT.ca_fingerprint)
        store.add_restore(later)
        assert store.latest_restore() == later
        assert store.restore_findings() == []
        assert store.add_restore_finding(_finding("reports_lost", "n1")), "the earlier restore has its own"

    def test_a_long_detail_is_bounded(self, store):
        store.add_restore(POINT)
        store.add_restore_finding(_finding(detail="x" * 5000))
        [f] = store.restore_findings()
        assert len(f.detail) < 1100 and f.detail.endswith("(3976 more characters)")

    def test_adopt_node_adds_it_with_its_finding_unless_the_id_exists(self, store):
        store.add_restore(POINT)
        adopted = NodeRecord("node-9", {}, "", 5500.0, "", "s9", 9999.0)
        assert store.adopt_node(adopted, _finding(node_id="node-9"))
        assert store.get_node("node-9") == adopted
        assert store.heartbeat_target("node-9").certificate_serial == "s9"
        assert not store.adopt_node(adopted, _finding(node_id="node-9"))
        _enroll(store, _node("node-1"))
        store.revoke_node("node-1", 7.0)
        assert not store.adopt_node(NodeRecord("node-1", {}, "", 1.0, "", "x", 1.0), _finding()), "revoked stays"
        assert store.get_node("node-1").certificate_serial == "s1"
        assert [f.node_id for f in store.restore_findings()] == ["node-9"]

    def test_adopt_certificate_compares_and_sets_the_serial(self, store):
        store.add_restore(POINT)
        _enroll(store, _node("node-1", serial="old"))
        renewed = _finding("certificate_renewed_after_backup")
        assert not store.adopt_certificate("node-1", "not-the-live-one", "new", 9500.0, renewed)
        assert store.adopt_certificate("node-1", "old", "new", 9500.0, renewed)
        node = store.get_node("node-1")
        assert (node.certificate_serial, node.certificate_expires_at) == ("new", 9500.0)
        assert store.adopt_certificate("node-1", "new", "newer", 9600.0, renewed), "a second renewal after the backup"
        assert len(store.restore_findings()) == 1, "its finding once"
        store.revoke_node("node-1", 7.0)
        assert not store.adopt_certificate("node-1", "newer", "other", 9700.0, renewed), "never for a revoked node"
        assert not store.adopt_certificate("ghost", "", "other", 9700.0, renewed)

    def test_adopt_assignment_sets_the_model_and_generation_once_per_node_and_kind(self, store):
        store.add_restore(POINT)
        _enroll(store, _node("node-1"))
        model = _model()
        store.add_model(model)
        store.assign_model("node-1", model)  # generation 1
        v3 = _model("3.0.0", "bb" * 32)
        store.add_model(v3)
        assigned = _finding("assignment_after_backup")
        assert not store.adopt_assignment("node-1", 0, v3.desired, 8, assigned), "the generation moved on"
        assert store.restore_findings() == [], "nothing written"
        assert store.adopt_assignment("node-1", 1, v3.desired, 8, assigned)
        target = store.heartbeat_target("node-1")
        assert (target.config_generation, target.model) == (8, v3.desired)
        assert store.nodes_assigned(v3.sha256) == ["node-1"]
        assert store.delete_model("chat", "3.0.0") == ["node-1"], "an adopted assignment holds its version"
        assert not store.adopt_assignment("node-1", 8, {}, 12, assigned), "once per node and kind"
        assert store.heartbeat_target("node-1").config_generation == 8
        assert store.adopt_assignment("node-1", 8, {}, 12, _finding("model_missing", action="listed"))
        assert store.heartbeat_target("node-1").model == {}
        assert store.nodes_assigned(v3.sha256) == []

    def test_adopt_assignment_refuses_revoked_and_unknown_nodes(self, store):
        store.add_restore(POINT)
        _enroll(store, _node("node-1"))
        store.revoke_node("node-1", 7.0)
        assert not store.adopt_assignment("node-1", 0, {}, 3, _finding("assignment_after_backup"))
        assert not store.adopt_assignment("ghost", 0, {}, 3, _finding("assignment_after_backup", "ghost"))
        assert store.restore_findings() == []

    def test_racing_adoptions_of_one_node_write_once(self, store):
        store.add_restore(POINT)
        results = []
        node = NodeRecord("node-9", {}, "", 5500.0, "", "s9", 9999.0)
        threads = [
            threading.Thread(target=lambda: results.append(store.adopt_node(node, _finding(node_id="node-9"))))
            for _ in range(8)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results.count(True) == 1
        assert len(store.restore_findings()) == 1


class TestRestoreStore(RestoreStoreContract):
    @pytest.fixture(params=["sqlite", "postgres"])
    def store(self, request, tmp_path):
        yield from fleet_stores(request.param, tmp_path)
