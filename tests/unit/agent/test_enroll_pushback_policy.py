"""How long `edge-agent enroll` waits when central's enrollment port is over its rate limit."""

import pytest

from edge_agent.control import policy


@pytest.mark.parametrize(
    ("metadata", "waited_s", "expected"),
    [
        ((("grpc-retry-pushback-ms", "2500"),), 0.0, 2.5),
        ((("other", "x"), ("grpc-retry-pushback-ms", b"100")), 10.0, 0.1),
        ((), 0.0, None),  # no trailer: central did not say to wait, so don't
        ((("grpc-retry-pushback-ms", "soon"),), 0.0, None),  # unreadable
        ((("grpc-retry-pushback-ms", "-5"),), 0.0, None),  # negative
        ((("grpc-retry-pushback-ms", "2000"),), policy.ENROLL_PUSHBACK_BUDGET_S - 1, None),  # budget spent
    ],
)
def test_pushback_is_taken_from_the_trailer_within_the_budget(metadata, waited_s, expected):
    assert policy.enroll_pushback_s(metadata, waited_s) == expected
