"""The FleetStore contract, run against every implementation: SQLite, and PostgreSQL on a fresh database
per test (tests/postgres_db.py: skipped when no server is reachable, failed under CI=true)."""

import sqlite3
import threading
from dataclasses import replace

import pytest

from central.audit import GENESIS_HASH, sign_anchor, verify_chain
from central.routing import RoutingReport
from central.store import (
    AuditEvent,
    LeaderLock,
    LeaderRecord,
    ModelRecord,
    NodeHealth,
    NodeRecord,
    ReplicaRecord,
    ReportRecord,
    SqliteFleetStore,
    StoreError,
    TokenRecord,
)
from postgres_db import fleet_stores


def _token(token_id="abc123", uses=1, expires_at=1000.0, revoked=False):
    return TokenRecord(token_id, "hash", {"region": "eu"}, 0.0, expires_at, uses, uses, revoked, "admin:a")


def _node(node_id="node-1", labels=None):
    return NodeRecord(
        node_id=node_id,
        labels=labels or {"region": "eu"},
        hostname="box",
        enrolled_at=10.0,
        token_id="abc123",
        certificate_serial="ff",
        certificate_expires_at=2000.0,
    )


class FleetStoreContract:
    """Subclass with a `store` fixture returning a fresh, empty store."""

    def test_token_round_trip_and_duplicate(self, store):
        store.add_token(_token())
        assert store.get_token("abc123") == _token()
        with pytest.raises(StoreError, match="already exists"):
            store.add_token(_token())
        assert store.get_token("nope") is None

    def test_enroll_spends_a_use_and_adds_the_node_together(self, store):
        store.add_token(_token(uses=1))
        assert store.enroll("abc123", _node("node-1"), now=5.0)
        assert store.get_token("abc123").uses_left == 0
        assert not store.enroll("abc123", _node("node-2"), now=5.0), "no use left"
        assert [n.node_id for n in store.list_nodes()] == ["node-1"]

    @pytest.mark.parametrize("token, now", [(_token(expires_at=5.0), 5.0), (_token(revoked=True), 1.0)])
    def test_enroll_refused_for_expired_or_revoked_token_writes_nothing(self, store, token, now):
        store.add_token(token)
        assert not store.enroll(token.token_id, _node(), now=now)
        assert store.list_nodes() == []
        assert store.get_token(token.token_id).uses_left == 1

    def test_racing_enrollments_cannot_both_spend_the_last_use(self, store):
        store.add_token(_token(uses=3))
        results = []
        threads = [
            threading.Thread(target=lambda i=i: results.append(store.enroll("abc123", _node(f"n{i}"), 1.0)))
            for i in range(12)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results.count(True) == 3 and len(store.list_nodes()) == 3

    def test_heartbeats_update_known_unrevoked_nodes_only(self, store):
        store.add_token(_token(uses=2))
        store.enroll("abc123", _node("node-1"), 1.0)
        store.enroll("abc123", _node("node-2"), 1.0)
        desired = store.heartbeat_target("node-1")
        assert desired.config_generation == 0 and desired.model == {}
        assert store.heartbeat_target("ghost") is None
        store.record_heartbeats({"node-1": (20.0, b"one"), "node-2": (21.0, b"two"), "ghost": (22.0, b"x")})
        assert (store.get_node("node-1").last_seen_at, store.get_node("node-1").status) == (20.0, b"one")
        assert store.get_node("node-2").status == b"two"
        assert store.get_node("ghost") is None
        store.revoke_node("node-1", 30.0)
        assert store.heartbeat_target("node-1") is None
        store.record_heartbeats({"node-1": (40.0, b"later")})
        assert store.get_node("node-1").status == b"one", "nothing written for a revoked node"

    def test_the_first_ca_bound_to_the_store_stays(self, store):
        assert store.bind_ca("sha256:aa") == "sha256:aa"
        assert store.bind_ca("sha256:bb") == "sha256:aa", "another fleet's CA cannot take the store over"
        assert store.bind_ca("sha256:aa") == "sha256:aa"

    def test_heartbeat_targets_reads_many_nodes_at_once_like_one_at_a_time(self, store):
        store.add_token(_token(uses=700))
        for i in range(600):  # past SQLite's chunk of 500 bound parameters
            store.enroll("abc123", _node(f"node-{i:03}"), 1.0)
        model = ModelRecord("chat", "1.0.0", "gguf", "b" * 64, 5, {}, 1.0, "admin:a", b"{}", "sig")
        store.add_model(model)
        store.assign_model("node-007", model)
        store.revoke_node("node-008", 2.0)
        asked = [f"node-{i:03}" for i in range(600)] + ["ghost", "node-007"]
        targets = store.heartbeat_targets(asked)
        assert set(targets) == {f"node-{i:03}" for i in range(600)} - {"node-008"}
        for node_id in ("node-000", "node-007", "node-599"):
            assert targets[node_id] == store.heartbeat_target(node_id)
        assert targets["node-007"].model["version"] == "1.0.0" and targets["node-007"].config_generation == 1
        assert store.heartbeat_targets([]) == {}

    def test_heartbeats_keep_the_health_decoded_from_the_status_beside_it(self, store):
        store.add_token(_token(uses=2))
        store.enroll("abc123", _node("node-1"), 1.0)
        store.enroll("abc123", _node("node-2"), 1.0)
        health = NodeHealth(
            active_sha256="a" * 64,
            activation_sha256="b" * 64,
            activation_state="WARMING",
            activation_reason="warming up",
            activation_since=19.5,
            requests=10,
            errors=1,
            latency_p99_ms=42.0,
        )
        store.record_heartbeats({"node-1": (20.0, b"one"), "node-2": (21.0, b"two")}, {"node-1": health})
        assert store.get_node("node-1").health == health
        assert store.get_node("node-2").health is None, "a status without health leaves none"
        assert store.list_nodes()[0].health == health
        store.record_heartbeats({"node-1": (22.0, b"later")})
        assert store.get_node("node-1").health is None, "health always describes the latest status"

    def test_revoke_is_idempotent_and_keeps_the_first_time(self, store):
        store.add_token(_token())
        store.enroll("abc123", _node(), 1.0)
        assert store.revoke_node("node-1", 30.0).revoked_at == 30.0
        assert store.revoke_node("node-1", 99.0).revoked_at == 30.0
        assert store.revoke_node("ghost", 1.0) is None

    def test_labels_and_selector(self, store):
        store.add_token(_token(uses=2))
        store.enroll("abc123", _node("a", {"region": "eu"}), 1.0)
        store.enroll("abc123", _node("b", {"region": "us"}), 1.0)
        store.set_labels("b", {"region": "eu", "site": "fra"})
        assert [n.node_id for n in store.list_nodes({"region": "eu"})] == ["a", "b"]
        assert [n.node_id for n in store.list_nodes({"site": "fra"})] == ["b"]
        assert store.set_labels("ghost", {}) is None

    def test_list_nodes_pages_by_id(self, store):
        store.add_token(_token(uses=5))
        for i in range(5):
            store.enroll("abc123", _node(f"n{i}", {"even": str(i % 2 == 0).lower()}), 1.0)
        assert [n.node_id for n in store.list_nodes(after_node_id="n1", limit=2)] == ["n2", "n3"]
        assert [n.node_id for n in store.list_nodes({"even": "true"}, after_node_id="n0")] == ["n2", "n4"]
        assert store.list_nodes(after_node_id="n4") == []

    def test_reports_dedupe_bound_and_dropped_count(self, store):
        store.add_token(_token())
        store.enroll("abc123", _node(), 1.0)
        reports = [ReportRecord(i, float(i), "event", b"e%d" % i) for i in range(1, 6)]
        assert store.add_reports("node-1", reports, dropped_count=2, keep=3) == 5
        assert store.add_reports("node-1", reports[-2:], dropped_count=0, keep=3) == 5, "a retried flush is idempotent"
        assert [r.sequence for r in store.recent_reports("node-1", 10)] == [3, 4, 5]
        assert store.get_node("node-1").dropped_reports == 2

    def test_audit_appends_a_verifiable_chain(self, store):
        first = store.append_audit(1.0, "admin:a", "token.create", "t1", "allowed", "made", "ipv4:127.0.0.1:1")
        second = store.append_audit(2.0, "node:n", "fleet.heartbeat", "n", "refused", "revoked", "ipv4:127.0.0.1:2")
        assert first.previous_hash == GENESIS_HASH and second.previous_hash == first.hash
        assert store.list_audit(after_sequence=1) == [second]
        assert verify_chain(store.iter_audit()).intact

    def test_routing_totals_add_up_and_keep_the_newest_head(self, store):
        store.add_token(_token(uses=2))
        store.enroll("abc123", _node("node-1"), 1.0)
        store.enroll("abc123", _node("node-2"), 1.0)
        assert store.routing_totals() == []
        store.add_routing(
            {
                "node-1": (10.0, RoutingReport({("public", "local"): 3, ("restricted", "refused"): 1}, 4, "h4")),
                "ghost": (10.0, RoutingReport({("public", "local"): 9}, 9, "h9")),
            }
        )
        store.add_routing(
            {"node-1": (20.0, RoutingReport({("public", "local"): 2, ("public", "upstream:cloud"): 5}, 11, "h11"))}
        )
        # A report spooled while central was away arrives after newer beats: its counts add, its head is older.
        store.add_routing(
            {
                "node-1": (30.0, RoutingReport({("public", "local"): 1}, 7, "h7")),
                "node-2": (30.0, RoutingReport({}, 0, "")),
            }
        )
        one, two = store.routing_totals()
        assert one.node_id == "node-1" and one.hostname == "box"
        assert one.counts == [("public", "local", 6), ("public", "upstream:cloud", 5), ("restricted", "refused", 1)]
        assert (one.audit_sequence, one.audit_head_hash, one.updated_at) == (11, "h11", 30.0)
        assert (two.node_id, two.counts, two.audit_sequence) == ("node-2", [], 0)
        assert [n.node_id for n in store.routing_totals("node-2")] == ["node-2"]
        assert store.routing_totals("ghost") == [], "unknown nodes are skipped"

    def test_routing_in_spooled_reports_is_counted_once(self, store):
        store.add_token(_token())
        store.enroll("abc123", _node(), 1.0)
        reports = [ReportRecord(i, float(i), "status", b"s%d" % i) for i in range(1, 4)]
        routing = {
            1: RoutingReport({("public", "local"): 2}, 2, "h2"),
            3: RoutingReport({("public", "local"): 5}, 7, "h7"),
        }
        assert store.add_reports("node-1", reports[:2], 0, routing=routing) == 2
        assert store.add_reports("node-1", reports, 0, routing=routing) == 3, "a retried flush with one new report"
        [totals] = store.routing_totals("node-1")
        assert totals.counts == [("public", "local", 7)] and totals.audit_sequence == 7

    def test_remote_says_whether_calls_leave_the_process(self, store):
        assert type(store).remote is (not isinstance(store, SqliteFleetStore))

    def test_advance_rollout_compares_and_sets_with_its_audit_events(self, store):
        store.add_rollout("r1", "{}", "step-0", 1.0)
        event = AuditEvent(2.0, "central:leader", "rollout.step", "r1", "allowed", "step 1", "")
        assert store.advance_rollout("r1", "step-0", "step-1", [event, event])
        assert store.get_rollout("r1") == ("{}", "step-1", 1.0)
        assert [e.sequence for e in store.iter_audit()] == [1, 2]
        assert not store.advance_rollout("r1", "step-0", "step-1", [event]), "a late second promotion"
        assert not store.advance_rollout("ghost", "step-0", "step-1", [event])
        assert store.get_rollout("r1")[1] == "step-1" and len(store.list_audit()) == 2, "nothing written"
        assert store.advance_rollout("r1", "step-1", "done")
        assert verify_chain(store.iter_audit()).intact

    def test_replicas_are_upserted_listed_by_id_and_forgotten(self, store):
        assert store.list_replicas() == []
        b = ReplicaRecord("b", "10.0.0.2:7443", "10.0.0.2:7444", 1.0, 1.0)
        a = ReplicaRecord("a", "10.0.0.1:7443", "10.0.0.1:7444", 2.0, 2.0)
        store.announce_replica(b)
        store.announce_replica(a)
        later = ReplicaRecord("b", "10.0.0.3:7443", "10.0.0.3:7444", 1.0, 5.0)
        store.announce_replica(later)
        assert store.list_replicas() == [a, later]
        store.forget_replica("a")
        store.forget_replica("ghost")
        assert store.list_replicas() == [later]

    def test_each_leadership_claim_gets_the_next_term(self, store):
        assert store.leadership() is None
        assert store.claim_leadership("a", 1.0) == 1
        assert store.claim_leadership("b", 2.0) == 2
        assert store.claim_leadership("b", 3.0) == 3
        assert store.leadership() == LeaderRecord("b", 3, 3.0)

    def test_leader_lock_excludes_a_second_holder_until_released(self, store):
        first, second = store.leader_lock(), store.leader_lock()
        assert isinstance(first, LeaderLock) and not first.held()
        assert first.try_acquire() and first.held()
        assert first.try_acquire(), "taking a lock already held is a no-op"
        assert not second.try_acquire() and not second.held()
        first.release()
        assert not first.held()
        assert second.try_acquire() and second.held()
        second.release()
        second.release()

    # -- audit retention (issue 16): prune only behind a signed anchor ----------------------------------

    def test_prune_behind_an_anchor_keeps_a_chain_verify_proves(self, store):
        entries = [store.append_audit(float(i), "admin:a", "x", f"t{i}", "allowed", "", "") for i in range(1, 6)]
        key, public_pem = _signing_key()
        assert store.audit_anchor() is None
        anchor = sign_anchor(3, entries[2].hash, 9.0, key)
        assert store.prune_audit(anchor) == 3
        assert store.audit_anchor() == anchor
        assert [e.sequence for e in store.iter_audit()] == [4, 5]
        check = verify_chain(store.iter_audit(), store.audit_anchor(), public_pem)
        assert check.intact and check.entries_checked == 2
        # The chain goes on from the kept head; a later prune moves the anchor on.
        assert store.append_audit(6.0, "admin:a", "x", "", "allowed", "", "").sequence == 6
        later = sign_anchor(4, entries[3].hash, 10.0, key)
        assert store.prune_audit(later) == 1 and store.audit_anchor() == later
        assert verify_chain(store.iter_audit(), later, public_pem).intact

    def test_prune_refuses_an_anchor_off_the_chain_or_behind_and_changes_nothing(self, store):
        entries = [store.append_audit(float(i), "admin:a", "x", "", "allowed", "", "") for i in range(1, 5)]
        key, _ = _signing_key()
        with pytest.raises(StoreError, match="not in the log"):
            store.prune_audit(sign_anchor(2, "f" * 64, 9.0, key))
        with pytest.raises(StoreError, match="newest audit entry is never pruned"):
            store.prune_audit(sign_anchor(4, entries[3].hash, 9.0, key))
        store.prune_audit(sign_anchor(2, entries[1].hash, 9.0, key))
        with pytest.raises(StoreError, match="pruned up to 2 already"):
            store.prune_audit(sign_anchor(2, entries[1].hash, 9.0, key))
        assert [e.sequence for e in store.iter_audit()] == [3, 4]

    def test_the_database_refuses_deleting_entries_past_the_anchor_or_anchors(self, store):
        entries = [store.append_audit(float(i), "admin:a", "x", "", "allowed", "", "") for i in range(1, 5)]
        key, _ = _signing_key()
        store.prune_audit(sign_anchor(2, entries[1].hash, 9.0, key))
        refused = ("DELETE FROM audit WHERE sequence = 3", "DELETE FROM audit_anchors", "UPDATE audit_anchors SET at=0")
        for sql in refused:
            with pytest.raises(Exception, match="append-only"):
                _raw_sql(store, sql)
        assert [e.sequence for e in store.iter_audit()] == [3, 4]

    def test_verify_from_an_anchor_catches_a_forged_anchor_and_a_broken_link(self, store):
        entries = [store.append_audit(float(i), "admin:a", "x", "", "allowed", "", "") for i in range(1, 5)]
        key, public_pem = _signing_key()
        store.prune_audit(sign_anchor(2, entries[1].hash, 9.0, key))
        _, other_pem = _signing_key()
        forged = verify_chain(store.iter_audit(), store.audit_anchor(), other_pem)
        assert not forged.intact and "not signed" in forged.problem
        moved = replace(store.audit_anchor(), hash="e" * 64)  # a signature over other fields no longer holds
        assert not verify_chain(store.iter_audit(), moved, public_pem).intact


def _signing_key():
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return key, pem


def _raw_sql(store, sql):
    """Run SQL past the store's methods, as someone with the database file or a database login could."""
    if isinstance(store, SqliteFleetStore):
        store._conn.execute(sql)
        return
    with store._pool.connection() as conn:
        conn.execute(sql)


class TestFleetStore(FleetStoreContract):
    @pytest.fixture(params=["sqlite", "postgres"])
    def store(self, request, tmp_path):
        yield from fleet_stores(request.param, tmp_path)


# -- operators (issue 16): who may call AdminService, with which one certificate ------------------------


def _operator(name="alice", role="admin", serial="a1", created_by="admin:root"):
    from central.store import OperatorRecord

    return OperatorRecord(name, role, serial, 5000.0, 10.0, created_by)


class OperatorStoreContract:
    """The operators' part of the contract; subclass with a `store` fixture returning a fresh, empty store."""

    def test_operator_round_trip_listed_by_name_and_names_never_reused(self, store):
        store.add_operator(_operator("bob", "viewer", "b1"))
        store.add_operator(_operator("alice"))
        assert store.get_operator("alice") == _operator("alice")
        assert [o.name for o in store.list_operators()] == ["alice", "bob"]
        assert store.get_operator("carol") is None
        with pytest.raises(StoreError, match="operator alice already exists"):
            store.add_operator(_operator("alice", "viewer", "zz"))
        store.revoke_operator("bob", 20.0)
        with pytest.raises(StoreError, match="operator bob already exists"):
            store.add_operator(_operator("bob"))

    def test_the_first_operator_is_added_only_to_an_empty_table(self, store):
        assert store.add_first_operator(_operator("root", created_by="central:init"))
        assert not store.add_first_operator(_operator("root", serial="other"))
        assert not store.add_first_operator(_operator("someone-else"))
        assert [(o.name, o.serial) for o in store.list_operators()] == [("root", "a1")]

    def test_revocation_is_kept_once_and_never_takes_the_last_admin(self, store):
        store.add_operator(_operator("alice"))
        store.add_operator(_operator("viewer-1", "viewer", "v1"))
        kept = store.revoke_operator("alice", 20.0)
        assert kept == _operator("alice") and kept.revoked_at is None, "the last admin stays"
        store.add_operator(_operator("bob", serial="b1"))
        assert store.revoke_operator("alice", 20.0).revoked_at == 20.0
        assert store.revoke_operator("alice", 30.0).revoked_at == 20.0, "the first revocation is kept"
        assert store.revoke_operator("bob", 40.0).revoked_at is None, "bob is the last admin now"
        assert store.revoke_operator("viewer-1", 50.0).revoked_at == 50.0, "viewers never count"
        assert store.revoke_operator("ghost", 1.0) is None

    def test_admins_revoking_each_other_at_once_leave_one(self, store):
        for i in range(4):
            store.add_operator(_operator(f"admin-{i}", serial=f"s{i}"))
        barrier = threading.Barrier(4)

        def revoke(name):
            barrier.wait()
            store.revoke_operator(name, 1.0)

        threads = [threading.Thread(target=revoke, args=(f"admin-{i}",)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert [o.name for o in store.list_operators() if o.revoked_at is None] != []
        assert sum(o.revoked_at is None for o in store.list_operators()) == 1

    def test_renewal_compares_the_serial_and_sets_the_new_one(self, store):
        store.add_operator(_operator("alice", serial="s1"))
        renewed = store.renew_operator("alice", "s1", "s2", 9000.0)
        assert (renewed.serial, renewed.expires_at) == ("s2", 9000.0)
        assert store.renew_operator("alice", "s1", "s3", 9500.0) is None, "s1 is no longer alice's"
        assert store.get_operator("alice").serial == "s2"
        assert store.renew_operator("ghost", "s1", "s2", 1.0) is None
        store.add_operator(_operator("bob", serial="b1"))
        store.revoke_operator("alice", 20.0)
        assert store.renew_operator("alice", "s2", "s4", 1.0) is None, "a revoked operator is not renewed"

    def test_heartbeat_targets_carry_the_serial_central_last_issued(self, store):
        store.add_token(_token(uses=2))
        store.enroll("abc123", _node("node-1"), 1.0)
        store.enroll("abc123", _node("node-2"), 1.0)
        store.set_certificate("node-1", "beef", 3000.0)
        assert store.heartbeat_target("node-1").certificate_serial == "beef"
        targets = store.heartbeat_targets(["node-1", "node-2"])
        assert (targets["node-1"].certificate_serial, targets["node-2"].certificate_serial) == ("beef", "ff")


class TestOperatorStore(OperatorStoreContract):
    store = TestFleetStore.store


# -- least privilege on reports (issue 16): spool epochs, bounded reports and routing pairs, live rollouts ----


class ReportBoundsStoreContract:
    """Spool epochs, reports bounded in count and bytes, routing pairs bounded per node and read in pages, and
    the live rollouts read apart; subclass with a `store` fixture returning a fresh, empty store."""

    def _enrolled(self, store, *node_ids):
        store.add_token(_token(uses=len(node_ids) or 1))
        for node_id in node_ids or ("node-1",):
            store.enroll("abc123", _node(node_id), 1.0)

    def test_a_restarted_spool_is_numbered_after_what_is_held_and_audited_once(self, store):
        self._enrolled(store)
        old = [ReportRecord(i, float(i), "event", b"old%d" % i) for i in range(1, 6)]
        assert store.add_reports("node-1", old, 0, epoch="e1") == 5
        assert store.spool_epoch("node-1") == "e1"
        restart = AuditEvent(2.0, "node:node-1", "fleet.report_event", "node-1", "allowed", "restarted", "peer")
        new = [ReportRecord(i, 10.0 + i, "event", b"new%d" % i) for i in range(1, 4)]
        assert store.add_reports("node-1", new, 0, epoch="e2", restart_events=[restart]) == 3, "the agent's numbering"
        assert store.add_reports("node-1", new, 0, epoch="e2", restart_events=[restart]) == 3, "a retry: idempotent"
        held = store.recent_reports("node-1", 20)
        assert [r.payload for r in held] == [b"old1", b"old2", b"old3", b"old4", b"old5", b"new1", b"new2", b"new3"]
        assert [r.sequence for r in held] == list(range(1, 9)), "stored after what was held"
        assert [e.detail for e in store.iter_audit()] == ["restarted"], "audited once, with the switch"
        assert store.spool_epoch("node-1") == "e2" and store.spool_epoch("ghost") == ""

    def test_an_agent_without_epochs_is_deduplicated_as_before(self, store):
        self._enrolled(store)
        reports = [ReportRecord(i, float(i), "event", b"e%d" % i) for i in range(1, 4)]
        assert store.add_reports("node-1", reports, 0) == 3
        assert store.add_reports("node-1", reports[:1], 0) == 3, "an old sequence again is a duplicate"
        assert store.spool_epoch("node-1") == ""

    def test_a_first_epoch_that_continues_the_numbering_is_adopted_without_a_restart(self, store):
        self._enrolled(store)
        store.add_reports("node-1", [ReportRecord(i, float(i), "event", b"e") for i in range(1, 4)], 0)
        restart = AuditEvent(2.0, "node:node-1", "fleet.report_event", "node-1", "allowed", "restarted", "peer")
        upgraded = [ReportRecord(4, 4.0, "event", b"e4")]
        assert store.add_reports("node-1", upgraded, 0, epoch="e1", restart_events=[restart]) == 4
        assert [r.sequence for r in store.recent_reports("node-1", 10)] == [1, 2, 3, 4]
        assert list(store.iter_audit()) == [] and store.spool_epoch("node-1") == "e1"

    def test_reports_are_bounded_in_bytes_as_well_as_in_count(self, store):
        self._enrolled(store)
        reports = [ReportRecord(i, float(i), "status", bytes(1000)) for i in range(1, 11)]
        assert store.add_reports("node-1", reports, 0, keep=8, keep_bytes=3500) == 10
        assert [r.sequence for r in store.recent_reports("node-1", 20)] == [8, 9, 10], "3 KB of 3.5 KB kept"
        store.add_reports("node-1", [ReportRecord(11, 11.0, "status", bytes(5000))], 0, keep=8, keep_bytes=3500)
        assert [r.sequence for r in store.recent_reports("node-1", 20)] == [11], "the newest always stays"

    def test_routing_pairs_past_the_bound_are_folded_into_the_overflow_pair(self, store):
        from central.routing import MAX_PAIRS_PER_NODE, OVERFLOW

        self._enrolled(store)
        many = {(f"class{i:03}", "local"): 1 for i in range(MAX_PAIRS_PER_NODE + 10)}
        store.add_routing({"node-1": (1.0, RoutingReport(many, 1, "h1"))})
        store.add_routing({"node-1": (2.0, RoutingReport({("class000", "local"): 5, ("new", "local"): 7}, 2, "h2"))})
        [totals] = store.routing_totals("node-1")
        assert len(totals.counts) == MAX_PAIRS_PER_NODE
        assert sum(c for *_, c in totals.counts) == MAX_PAIRS_PER_NODE + 10 + 12, "every request still counted"
        by_pair = {(d, r): c for d, r, c in totals.counts}
        assert by_pair[("class000", "local")] == 6 and ("new", "local") not in by_pair
        assert by_pair[OVERFLOW] == 11 + 7

    def test_routing_totals_page_by_node_id(self, store):
        self._enrolled(store, "n1", "n2", "n3", "n4")
        store.add_routing(
            {n: (1.0, RoutingReport({("public", "local"): i}, i, "h")) for i, n in enumerate(["n1", "n2", "n4"], 1)}
        )
        assert [t.node_id for t in store.routing_totals(limit=2)] == ["n1", "n2"]
        [last] = store.routing_totals(after_node_id="n2", limit=2)
        assert (last.node_id, last.counts) == ("n4", [("public", "local", 3)])
        assert store.routing_totals(after_node_id="n4") == []
        assert [t.node_id for t in store.routing_totals("n2", after_node_id="n1")] == ["n2"]

    def test_live_rollouts_are_read_by_phase(self, store):
        store.add_rollout("r1", "{}", '{"phase": "COMPLETED"}', 1.0)
        store.add_rollout("r2", "{}", '{"phase": "RUNNING"}', 2.0)
        store.add_rollout("r3", "{}", '{"phase": "PAUSED"}', 3.0)
        store.add_rollout("r4", "{}", "not json", 4.0)
        assert [r[0] for r in store.list_rollouts_in_phases(["RUNNING", "PAUSED"])] == ["r3", "r2"]
        assert store.advance_rollout("r2", '{"phase": "RUNNING"}', '{"phase": "ABORTED"}')
        assert [r[0] for r in store.list_rollouts_in_phases(["RUNNING", "PAUSED"])] == ["r3"]
        assert store.list_rollouts_in_phases([]) == []


class TestReportBoundsStore(ReportBoundsStoreContract):
    store = TestFleetStore.store


def test_sqlite_reads_live_rollouts_through_the_phase_index(tmp_path):
    store = SqliteFleetStore(tmp_path / "central.db")
    conn = sqlite3.connect(tmp_path / "central.db")
    try:
        from central.store.sqlite import _ROLLOUT_PHASE

        plan = conn.execute(
            f"EXPLAIN QUERY PLAN SELECT rollout_id FROM rollouts WHERE {_ROLLOUT_PHASE} IN ('RUNNING', 'PAUSED')"
        ).fetchall()
        assert any("rollouts_phase" in row[-1] for row in plan), plan
    finally:
        conn.close()
        store.close()


def test_sqlite_audit_rows_cannot_be_updated_or_deleted(tmp_path):
    store = SqliteFleetStore(tmp_path / "central.db")
    store.append_audit(1.0, "admin:a", "x", "", "allowed", "", "")
    store.close()
    conn = sqlite3.connect(tmp_path / "central.db")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("UPDATE audit SET detail = 'edited'")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("DELETE FROM audit")
    conn.close()


def test_tampering_past_the_triggers_is_caught_by_verify(tmp_path):
    path = tmp_path / "central.db"
    store = SqliteFleetStore(path)
    for i in range(5):
        store.append_audit(float(i), "admin:a", "token.create", f"t{i}", "allowed", "made", "")
    store.close()
    conn = sqlite3.connect(path)  # an attacker with the file drops the guard and rewrites history
    conn.execute("DROP TRIGGER audit_no_update")
    conn.execute("UPDATE audit SET actor = 'admin:someone-else' WHERE sequence = 3")
    conn.commit()
    conn.close()
    store = SqliteFleetStore(path)
    check = verify_chain(store.iter_audit())
    store.close()
    assert not check.intact and check.first_bad_sequence == 3 and "altered" in check.problem


def test_unreadable_store_is_a_clear_error_not_a_silent_reset(tmp_path):
    path = tmp_path / "central.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="restore it from a backup"):
        SqliteFleetStore(path)
    assert path.read_bytes().startswith(b"this is not"), "the file is left for the operator"


def test_a_store_from_before_routing_totals_is_migrated_in_place(tmp_path):
    from central.store.sqlite import _MIGRATIONS
    from edgefleet.sqlitedb import apply_migrations

    path = tmp_path / "central.db"
    conn = sqlite3.connect(path, isolation_level=None)
    apply_migrations(conn, [m for m in _MIGRATIONS if m[0] <= 4])
    conn.execute(
        "INSERT INTO nodes (node_id, labels, hostname, enrolled_at, token_id, certificate_serial,"
        " certificate_expires_at) VALUES ('node-1', '{}', 'old-box', 1.0, 't', 'ff', 2.0)"
    )
    conn.close()
    store = SqliteFleetStore(path)
    try:
        versions = [r[0] for r in store._conn.execute("SELECT version FROM schema_migrations ORDER BY version")]
        assert versions == [v for v, _ in _MIGRATIONS], "5 and every migration after it applied"
        store.add_routing({"node-1": (5.0, RoutingReport({("public", "local"): 1}, 1, "h1"))})
        assert store.routing_totals()[0].hostname == "old-box"
    finally:
        store.close()


def test_a_store_from_before_node_health_is_migrated_and_waits_for_the_next_beat(tmp_path):
    from central.store.sqlite import _MIGRATIONS
    from edgefleet.sqlitedb import apply_migrations

    path = tmp_path / "central.db"
    conn = sqlite3.connect(path, isolation_level=None)
    apply_migrations(conn, [m for m in _MIGRATIONS if m[0] <= 5])
    conn.execute(
        "INSERT INTO nodes (node_id, labels, hostname, enrolled_at, token_id, certificate_serial,"
        " certificate_expires_at, last_seen_at, status) VALUES ('node-1', '{}', 'old-box', 1.0, 't', 'ff',"
        " 2.0, 3.0, x'0a01')"
    )
    conn.close()
    store = SqliteFleetStore(path)
    try:
        node = store.get_node("node-1")
        assert (node.status, node.health) == (b"\n\x01", None), "the status is kept; health comes with the next beat"
        store.record_heartbeats({"node-1": (4.0, b"new")}, {"node-1": NodeHealth(active_sha256="c" * 64)})
        assert store.get_node("node-1").health.active_sha256 == "c" * 64
    finally:
        store.close()


def test_heartbeat_buffer_adds_routing_counts_and_keeps_them_across_a_failed_flush(tmp_path):
    from central.heartbeats import HeartbeatBuffer

    store = SqliteFleetStore(tmp_path / "central.db")
    store.add_token(_token())
    store.enroll("abc123", _node(), 1.0)
    buffer = HeartbeatBuffer(store)
    buffer.record("node-1", 10.0, b"a", RoutingReport({("public", "local"): 2}, 2, "h2"))
    buffer.record("node-1", 11.0, b"b")
    buffer.record("node-1", 12.0, b"c", RoutingReport({("public", "local"): 1, ("x", "refused"): 1}, 4, "h4"))
    buffer.flush()
    [totals] = store.routing_totals()
    assert totals.counts == [("public", "local", 3), ("x", "refused", 1)] and totals.audit_sequence == 4
    buffer.record("node-1", 13.0, b"d", RoutingReport({("public", "local"): 5}, 9, "h9"))
    # The beats are written, the routing write fails (as on a full disk) and rolls back whole.
    store._conn.execute("CREATE TRIGGER fail BEFORE INSERT ON routing_heads BEGIN SELECT RAISE(ABORT, 'full'); END")
    with pytest.raises(sqlite3.IntegrityError, match="full"):
        buffer.flush()
    assert store.get_node("node-1").status == b"d"
    assert store.routing_totals()[0].counts[0] == ("public", "local", 3)
    buffer.record("node-1", 14.0, b"e", RoutingReport({("public", "local"): 1}, 10, "h10"))
    store._conn.execute("DROP TRIGGER fail")
    buffer.flush()
    [totals] = store.routing_totals()
    assert totals.counts == [("public", "local", 9), ("x", "refused", 1)], "nothing lost, nothing twice"
    assert (totals.audit_sequence, totals.audit_head_hash) == (10, "h10")
    store.close()


def test_heartbeat_buffer_keeps_the_latest_beat_and_survives_a_failed_flush(tmp_path):
    from central.heartbeats import HeartbeatBuffer

    store = SqliteFleetStore(tmp_path / "central.db")
    store.add_token(_token())
    store.enroll("abc123", _node(), 1.0)
    buffer = HeartbeatBuffer(store)
    buffer.record("node-1", 10.0, b"old")
    buffer.record("node-1", 11.0, b"new")
    assert len(buffer) == 1
    buffer.flush()
    assert store.get_node("node-1").status == b"new" and len(buffer) == 0
    buffer.record("node-1", 12.0, b"kept")
    store.close()  # the next write fails
    with pytest.raises(sqlite3.ProgrammingError):
        buffer.flush()
    assert len(buffer) == 1, "a failed flush keeps the beats for the next one"
