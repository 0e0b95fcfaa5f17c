"""The pure residency decisions: a prompt's data class, and where its answer may come from."""

import pytest

from edge_agent.config import CustomDetector, DataClassRule, PolicyConfig, parse_config
from edge_agent.policy.routing import (
    LOCAL,
    NOT_READY,
    QUEUE_FULL,
    REFUSED,
    TOKEN_PROMPT,
    UNKNOWN_MODEL,
    UPSTREAM,
    DataClassPolicy,
    classify_findings,
    decide_route,
    jurisdiction_allowed,
)

POLICY = DataClassPolicy.from_config(
    PolicyConfig(custom=(CustomDetector("codename", "restricted", keywords=("aurora",)),))
)
PUBLIC, INTERNAL, RESTRICTED = (POLICY.rule(n) for n in ("public", "internal", "restricted"))
EU_INTERNAL = DataClassRule("internal", ("eu",), redact=True)


@pytest.mark.parametrize(
    "fired, score, expected_class",
    [
        (set(), None, "public"),
        ({"email"}, None, "internal"),
        ({"email", "card"}, None, "restricted"),  # the most sensitive wins
        ({"phone", "iban"}, None, "restricted"),
        ({"codename"}, None, "restricted"),  # a custom detector's class
        (set(), 0.49, "public"),  # under the classifier's threshold
        (set(), 0.5, "internal"),  # at it
        ({"card"}, 0.9, "restricted"),  # the classifier never lowers a class
    ],
)
def test_a_prompt_takes_the_most_sensitive_class_any_detector_gives(fired, score, expected_class):
    c = classify_findings(POLICY, fired, score)
    assert c.data_class == expected_class
    assert set(c.detectors) == fired | ({"classifier"} if score is not None and score >= 0.5 else set())


def test_a_detector_turned_off_does_not_classify():
    policy = DataClassPolicy.from_config(parse_config({"policy": {"detectors": {"email": ""}}}).policy)
    assert "email" not in policy.detector_classes
    assert classify_findings(policy, {"email"}).data_class == "public"


def test_an_operator_class_order_decides_sensitivity():
    raw = {
        "policy": {
            "classes": [
                {"name": "open", "jurisdictions": ["*"]},
                {"name": "pii", "jurisdictions": ["ch"]},
                {"name": "secret"},
            ],
            "default_class": "open",
            "detectors": {"email": "pii", "phone": "pii", "card": "secret", "iban": "secret", "us_ssn": ""},
        }
    }
    policy = DataClassPolicy.from_config(parse_config(raw).policy)
    assert classify_findings(policy, {"email", "card"}).data_class == "secret"
    assert classify_findings(policy, {"us_ssn"}).data_class == "open"


def test_local_first_whatever_the_class():
    for rule in (PUBLIC, INTERNAL, RESTRICTED):
        assert decide_route(rule, None, ["cloud"]).route == LOCAL


def test_public_overflows_to_the_upstreams_in_priority_order():
    d = decide_route(PUBLIC, QUEUE_FULL, ["a", "b"])
    assert (d.route, d.upstreams, d.reason) == (UPSTREAM, ("a", "b"), QUEUE_FULL)


@pytest.mark.parametrize("problem, status", [(QUEUE_FULL, 429), (UNKNOWN_MODEL, 404)])
def test_restricted_never_leaves_and_is_told_why(problem, status):
    d = decide_route(RESTRICTED, problem, ["cloud"])
    assert d.route == REFUSED and d.status == status and d.upstreams == ()
    assert "'restricted' never leaves this box" in d.message


def test_not_ready_waits_locally_when_nothing_else_may_answer():
    assert decide_route(RESTRICTED, NOT_READY, ["cloud"]).route == LOCAL
    assert decide_route(PUBLIC, NOT_READY, []).route == LOCAL
    assert decide_route(PUBLIC, NOT_READY, ["cloud"]).route == UPSTREAM


def test_no_usable_upstream_is_a_refusal_naming_where_the_class_may_go():
    d = decide_route(EU_INTERNAL, QUEUE_FULL, [])
    assert (d.route, d.status, d.reason) == (REFUSED, 429, "no_upstream_available")
    assert "upstreams in eu" in d.message


def test_a_token_id_prompt_never_leaves():
    d = decide_route(PUBLIC, TOKEN_PROMPT, ["cloud"])
    assert d.route == REFUSED and d.status == 429 and "token ids" in d.message


def test_jurisdictions():
    assert jurisdiction_allowed(PUBLIC, "us") and jurisdiction_allowed(PUBLIC, "")
    assert jurisdiction_allowed(EU_INTERNAL, "eu")
    assert not jurisdiction_allowed(EU_INTERNAL, "us") and not jurisdiction_allowed(EU_INTERNAL, "")
    assert not jurisdiction_allowed(RESTRICTED, "eu")
