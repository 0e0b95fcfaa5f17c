"""Enrollment's refusals (central.services.enrollment) with a real data dir and SQLite store: each refusal names a
reason from a fixed set and writes nothing itself; the gate admits by the bucket and the cap before the store is
read, and turns a window's refusals into a bounded number of audit entries."""

import pytest

from central.datadir import Authority, initialize
from central.services import enrollment
from central.services.base import Caller, Central, CentralSettings
from central.store import SqliteFleetStore, TokenRecord
from central.tokens import hash_secret, new_token
from edgefleet import pki


class Clock:
    def __init__(self, now=1_900_000_000.0):
        self.now = now

    def __call__(self):
        return self.now


@pytest.fixture
def central(tmp_path):
    paths = initialize(tmp_path / "central", "127.0.0.1:7443")
    store = SqliteFleetStore(paths.store)
    settings = CentralSettings(enroll_rate_per_s=1.0, enroll_burst=2, enroll_max_concurrent=2)
    yield Central(store, Authority.load(paths), settings, "", Clock())
    store.close()


def _token(central, uses=1, ttl_s=3600.0):
    token_id, secret = new_token()
    now = central.clock()
    central.store.add_token(TokenRecord(token_id, hash_secret(secret), {}, now, now + ttl_s, uses, uses, False, "t"))
    return f"{token_id}.{secret}", token_id


def _csr():
    return pki.make_csr(pki.generate_key()).decode()


def _refusal(central, token, csr="junk"):
    with pytest.raises(enrollment.Refusal) as caught:
        enrollment.enroll(central, Caller(None, "ipv4:10.0.0.9:5000"), token, csr, "box")
    return caught.value


def test_each_refusal_names_a_fixed_reason_and_writes_nothing(central):
    good, token_id = _token(central)
    revoked, revoked_id = _token(central)
    central.store.revoke_token(revoked_id)
    expired, expired_id = _token(central, ttl_s=-1)
    cases = [
        ("not-a-token", enrollment.MALFORMED_TOKEN, ""),
        ("abcdef." + "a" * 32, enrollment.UNKNOWN_TOKEN, ""),
        (good.split(".")[0] + "." + "b" * 32, enrollment.UNKNOWN_TOKEN, ""),  # a wrong secret names no token
        (revoked, enrollment.REVOKED_TOKEN, revoked_id),
        (expired, enrollment.EXPIRED_TOKEN, expired_id),
    ]
    for token, reason, target in cases:
        refusal = _refusal(central, token, _csr())
        assert (refusal.reason, refusal.target) == (reason, target), token
        assert refusal.reason in enrollment.REASONS
    invalid = _refusal(central, good, "not a CSR")
    assert (invalid.reason, invalid.target) == (enrollment.INVALID_CSR, token_id)
    enrollment.enroll(central, Caller(None, "p"), good, _csr(), "box")
    used = _refusal(central, good, _csr())
    assert (used.reason, used.target) == (enrollment.USED_UP_TOKEN, token_id)
    assert [e.action for e in central.store.iter_audit()] == ["node.enroll"], "only the enrollment is audited"


def test_gate_admits_by_bucket_and_cap_before_anything_else():
    ticks = iter([0.0, 0.0, 0.0, 0.0, 0.5, 1.0, 1.0])
    gate = enrollment.EnrollmentGate(
        CentralSettings(enroll_rate_per_s=1.0, enroll_burst=2, enroll_max_concurrent=2), lambda: next(ticks)
    )
    assert gate.admit("a") is None and gate.admit("a") is None
    limited = gate.admit("a")
    assert limited is not None and limited.reason == enrollment.RATE_LIMITED
    assert "retry in 1.0 s" in str(limited.error)
    busy = gate.admit("b")  # b has its own bucket, but two calls are in flight
    assert busy is not None and busy.reason == enrollment.TOO_MANY_IN_FLIGHT
    gate.leave()
    assert gate.admit("c") is None


def test_gate_writes_a_window_of_refusals_as_a_few_entries(central):
    gate = enrollment.EnrollmentGate(central.settings)
    refusal = _refusal(central, "not-a-token")
    at_once = [gate.refused(central, "10.0.0.9", refusal) for _ in range(10_000)]
    first = at_once[0]
    assert first is not None and all(e is None for e in at_once[1:])
    assert (first.actor, first.action, first.outcome, first.peer) == ("anonymous", "node.enroll", "refused", "10.0.0.9")
    assert gate.drain(central) == [], "the window has not ended"
    central.clock.now += 60
    (summary,) = gate.drain(central)
    assert summary.peer == "10.0.0.9" and summary.detail.startswith("9999 more refused (malformed token)")
    enrollment.write_audit(central, [first, summary])
    assert len(list(central.store.iter_audit())) == 2
