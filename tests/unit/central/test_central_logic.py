"""Pure parts of central and the agent's control loop: audit chain, tokens, labels, durations, liveness, PKI
checks, backoff and state."""

import datetime as dt
from dataclasses import replace

import pytest

from central import audit, liveness, tokens
from central.labels import LabelError, format_labels, parse_labels
from central.store import NodeRecord, TokenRecord
from edge_agent.control import policy
from edgefleet import pki
from edgefleet.backoff import backoff_delay
from edgefleet.durations import format_duration, parse_duration


def _entries(n):
    out, previous = [], audit.GENESIS_HASH
    for i in range(1, n + 1):
        h = audit.entry_hash(i, float(i), "admin:a", "act", "t", audit.ALLOWED, "d", "p", previous)
        out.append(audit.AuditEntry(i, float(i), "admin:a", "act", "t", audit.ALLOWED, "d", "p", previous, h))
        previous = h
    return out


def test_audit_chain_intact_and_each_kind_of_tampering():
    entries = _entries(4)
    assert audit.verify_chain(entries) == audit.ChainCheck(True, 4)
    assert audit.verify_chain([]).intact
    edited = [*entries[:2], replace(entries[2], detail="edited"), *entries[3:]]
    assert audit.verify_chain(edited).first_bad_sequence == 3
    removed = entries[:1] + entries[2:]
    assert "missing or reordered" in audit.verify_chain(removed).problem
    relinked = [*entries[:3], replace(entries[3], previous_hash="0" * 64)]
    assert "does not link" in audit.verify_chain(relinked).problem


def test_tokens_shape_and_refusals():
    token_id, secret = tokens.new_token()
    assert tokens.parse_token(f" {token_id}.{secret}\n") == (token_id, secret)
    for bad in ("", "abc", f"{token_id}{secret}", f"{token_id}.{secret}x", f"{token_id.upper()}.{secret}"):
        assert tokens.parse_token(bad) is None
    record = TokenRecord(token_id, tokens.hash_secret(secret), {}, 0.0, 100.0, 2, 1, False, "admin:a")
    assert tokens.token_refusal(record, secret, 50.0) is None
    assert tokens.token_refusal(record, "x" * 32, 50.0) == "unknown bootstrap token"
    assert tokens.token_refusal(None, secret, 50.0) == "unknown bootstrap token"
    assert "expired" in tokens.token_refusal(record, secret, 100.0)
    assert "used up" in tokens.token_refusal(replace(record, uses_left=0), secret, 50.0)
    assert "revoked" in tokens.token_refusal(replace(record, revoked=True), secret, 50.0)


def test_labels_parse_validate_and_format():
    assert parse_labels("region=eu, site=fra") == {"region": "eu", "site": "fra"}
    assert parse_labels("") == {}
    assert format_labels({"site": "fra", "region": "eu"}) == "region=eu,site=fra"
    for bad, message in [
        ("region", "key=value"),
        ("Region=eu", "lowercase"),
        ("a=b,a=c", "twice"),
        ("region=e u", "value"),
        ("region=", "value"),
        ("x=" + "v" * 64, "value"),
    ]:
        with pytest.raises(LabelError, match=message):
            parse_labels(bad)


def test_durations():
    assert parse_duration("500ms") == 0.5
    assert parse_duration("1h30m") == 5400
    assert parse_duration("30d") == 30 * 86400
    for bad in ("", "10", "1x", "-1s", "0s", "1h 2m", "s"):
        with pytest.raises(ValueError):
            parse_duration(bad)
    assert format_duration(45) == "45s" and format_duration(7200) == "2h"


def test_node_liveness():
    node = NodeRecord("n", {}, "h", 0.0, "t", "s", 0.0)
    assert liveness.node_state(node, 15, 100) == liveness.ENROLLED
    seen = replace(node, last_seen_at=100.0)
    assert liveness.node_state(seen, 15, 145) == liveness.ONLINE
    assert liveness.node_state(seen, 15, 145.1) == liveness.OFFLINE
    assert liveness.node_state(replace(seen, revoked_at=120.0), 15, 121) == liveness.REVOKED


def test_identity_uris():
    assert pki.parse_identity_uri("spiffe://edgefleet/node/node-1") == pki.Identity("node", "node-1")
    assert pki.Identity("admin", "ops").uri == "spiffe://edgefleet/admin/ops"
    for bad in (
        "spiffe://other/node/x",
        "spiffe://edgefleet/root/x",
        "spiffe://edgefleet/node/",
        "spiffe://edgefleet/node/a/b",
        "https://edgefleet/node/x",
    ):
        assert pki.parse_identity_uri(bad) is None


def test_certificates_carry_the_identity_and_fingerprints_normalize():
    ca_key, ca = pki.create_ca()
    key = pki.generate_key()
    now = pki.utcnow()
    cert = pki.issue_certificate(
        ca_key, ca, key.public_key(), pki.Identity("node", "n1"), not_before=now, not_after=now + dt.timedelta(days=30)
    )
    assert pki.identity_of(cert) == pki.Identity("node", "n1")
    fp = pki.fingerprint(ca)
    colons = "SHA256:" + ":".join(fp[7:][i : i + 2].upper() for i in range(0, 64, 2))
    assert pki.normalize_fingerprint(colons) == fp
    for bad in ("md5:abc", "sha256:xyz", fp[:-2]):
        with pytest.raises(pki.PkiError):
            pki.normalize_fingerprint(bad)
    assert pki.public_key_from_csr(pki.make_csr(key)).public_numbers() == key.public_key().public_numbers()


def test_renewal_is_due_at_two_thirds_of_the_lifetime():
    start = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    end = start + dt.timedelta(days=30)
    assert not pki.renewal_due(start, end, start + dt.timedelta(days=19))
    assert pki.renewal_due(start, end, start + dt.timedelta(days=20))


def test_backoff_grows_with_jitter_and_is_capped():
    assert backoff_delay(1, 1.0, 60.0, 0.0) == 0.5
    assert backoff_delay(1, 1.0, 60.0, 0.999) < 1.0
    assert backoff_delay(4, 1.0, 60.0, 0.0) == 4.0
    assert backoff_delay(50, 1.0, 60.0, 0.999) <= 60.0
    assert backoff_delay(50, 1.0, 60.0, 0.0) == 30.0
    assert policy.heartbeat_delay(15.0, 0.0) >= 13.5 and policy.heartbeat_delay(15.0, 0.999) < 16.5


def test_control_state():
    assert policy.control_state(False, 0, False) == policy.CONNECTING
    assert policy.control_state(True, 0, False) == policy.CONNECTED
    assert policy.control_state(True, 2, False) == policy.OFFLINE
    assert policy.control_state(False, 2, False) == policy.OFFLINE
    assert policy.control_state(True, 1, True) == policy.REFUSED


def test_probation_breach_needs_enough_requests_and_names_the_limit():
    assert policy.probation_breach(9, 9, 0.0, 0.05, 1000) is None, "too few requests to judge"
    assert "error rate 20.0%" in policy.probation_breach(10, 2, 0.0, 0.05, 1000)
    assert policy.probation_breach(100, 5, 999.0, 0.05, 1000) is None, "at the limits is within them"
    assert "p99 1500 ms" in policy.probation_breach(100, 0, 1500.0, 0.05, 1000)


def test_memory_shortfall_for_loading_beside_the_current_model():
    gib = 1 << 30
    assert policy.memory_shortfall(4 * gib, gib) == 0
    assert policy.memory_shortfall(gib, gib) == int(gib * 1.3) + policy.LOAD_MARGIN_BYTES - gib
