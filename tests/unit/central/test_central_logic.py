"""Pure parts of central: the audit chain, tokens, labels, durations and liveness. The agent's control decisions
are in tests/unit/agent/test_control_policy.py, certificates in tests/unit/edgefleet/test_pki.py."""

from dataclasses import replace

import pytest

from central import audit, liveness, tokens
from central.labels import LabelError, format_labels, parse_labels
from central.store import NodeRecord, TokenRecord
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
