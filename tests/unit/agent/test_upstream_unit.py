"""The circuit breaker's state machine on a fake clock, the pool's candidate filter, and the body rewrite."""

import logging

import pytest

from edge_agent.config import UpstreamConfig
from edge_agent.errors import AgentError
from edge_agent.upstream import CircuitBreaker, UpstreamError, UpstreamPool, sse_error, upstream_body, upstream_model


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock():
    return FakeClock()


def open_breaker(clock, threshold=3, open_s=10.0):
    breaker = CircuitBreaker(threshold, open_s, clock, name="cloud-a")
    for _ in range(threshold):
        breaker.record_failure("connection refused")
    assert breaker.state == "open"
    return breaker


def test_closed_until_the_threshold_of_consecutive_failures(clock):
    breaker = CircuitBreaker(3, 10.0, clock)
    assert breaker.state == "closed" and breaker.allow()
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state == "closed" and breaker.allow() and breaker.failures == 2
    breaker.record_failure()
    assert breaker.state == "open"
    assert not breaker.allow() and not breaker.available()


def test_a_success_resets_the_failure_count(clock):
    breaker = CircuitBreaker(3, 10.0, clock)
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()
    assert breaker.failures == 0
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state == "closed"
    breaker.record_failure()
    assert breaker.state == "open"


def test_stays_open_for_open_s_then_half_open(clock):
    breaker = open_breaker(clock, open_s=10.0)
    clock.now += 9.99
    assert breaker.state == "open" and not breaker.allow()
    clock.now += 0.01
    assert breaker.state == "half_open"


def test_half_open_allows_exactly_one_trial_at_a_time(clock):
    breaker = open_breaker(clock)
    clock.now += 10
    assert breaker.available()
    assert breaker.allow()
    assert breaker.state == "half_open"
    assert not breaker.allow() and not breaker.available()
    clock.now += 100  # still one trial, however long it takes
    assert not breaker.allow()


def test_trial_success_closes(clock):
    breaker = open_breaker(clock)
    clock.now += 10
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state == "closed" and breaker.failures == 0
    assert breaker.allow() and breaker.allow()


def test_trial_failure_reopens_for_open_s(clock):
    breaker = open_breaker(clock, open_s=10.0)
    clock.now += 10
    assert breaker.allow()
    clock.now += 3
    breaker.record_failure("HTTP 503")
    assert breaker.state == "open" and not breaker.allow()
    clock.now += 9.9
    assert breaker.state == "open"
    clock.now += 0.1
    assert breaker.state == "half_open" and breaker.allow()


def test_a_trial_released_without_verdict_lets_another_through(clock):
    breaker = open_breaker(clock)
    clock.now += 10
    assert breaker.allow() and not breaker.allow()
    breaker.release()
    assert breaker.state == "half_open" and breaker.allow()


def test_a_failure_while_open_starts_the_open_period_again_and_a_success_changes_nothing(clock):
    breaker = open_breaker(clock, open_s=10.0)
    clock.now += 8
    breaker.record_failure("health check: connection refused")
    breaker.record_success()
    clock.now += 8
    assert breaker.state == "open"
    clock.now += 2
    assert breaker.state == "half_open"


def test_a_threshold_of_one_opens_on_the_first_failure(clock):
    breaker = CircuitBreaker(1, 1.0, clock)
    breaker.record_failure()
    assert breaker.state == "open"
    with pytest.raises(ValueError):
        CircuitBreaker(0, 1.0, clock)


def test_transitions_are_logged_with_name_and_reason(clock, caplog):
    with caplog.at_level(logging.WARNING, logger="edge_agent.upstream"):
        breaker = open_breaker(clock, threshold=2)
        clock.now += 10
        assert breaker.state == "half_open"
        breaker.allow()
        breaker.record_success("a health check succeeded")
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 3
    assert "cloud-a" in messages[0] and "open" in messages[0] and "connection refused" in messages[0]
    assert "half-open" in messages[1]
    assert "closed" in messages[2] and "a health check succeeded" in messages[2]


def up(name, jurisdiction, **kwargs):
    return UpstreamConfig(name=name, url=f"http://{name}.example/v1", jurisdiction=jurisdiction, **kwargs)


def test_candidates_filter_by_jurisdiction_in_priority_order(clock):
    pool = UpstreamPool(
        [up("eu-1", "eu"), up("us-1", "us"), up("eu-2", "eu"), up("ch-1", "ch")], clock=clock, environ={}
    )
    assert pool.names() == ["eu-1", "us-1", "eu-2", "ch-1"]
    assert pool.candidates(("*",)) == ["eu-1", "us-1", "eu-2", "ch-1"]
    assert pool.candidates(("eu",)) == ["eu-1", "eu-2"]
    assert pool.candidates(("ch", "us")) == ["us-1", "ch-1"]
    assert pool.candidates(()) == []
    assert pool.candidates(("jp",)) == []


def test_candidates_leave_out_open_circuits_and_a_busy_half_open_one(clock):
    pool = UpstreamPool([up("a", "eu", failure_threshold=1, open_s=5.0), up("b", "eu")], clock=clock, environ={})
    breaker = pool._upstreams["a"].breaker
    breaker.record_failure("connection refused")
    assert pool.states() == {"a": "open", "b": "closed"}
    assert pool.candidates(("*",)) == ["b"]
    clock.now += 5
    assert pool.candidates(("*",)) == ["a", "b"]  # half-open: a trial may go
    assert pool.candidates(("*",)) == ["a", "b"]  # asking takes no trial
    assert breaker.allow()
    assert pool.candidates(("*",)) == ["b"]  # the trial is under way
    assert pool.states() == {"a": "half_open", "b": "closed"}


def test_candidates_leave_out_an_upstream_whose_last_health_check_failed(clock):
    pool = UpstreamPool([up("a", "eu"), up("b", "eu")], clock=clock, environ={})
    assert pool.health() == {"a": None, "b": None}
    pool._upstreams["a"].healthy = False
    assert pool.candidates(("eu",)) == ["b"]
    pool._upstreams["a"].healthy = True
    assert pool.candidates(("eu",)) == ["a", "b"]


def test_pool_takes_the_bearer_key_from_the_environment(clock):
    pool = UpstreamPool(
        [up("a", "eu", api_key_env="A_KEY"), up("b", "eu", api_key_env="B_KEY"), up("c", "eu")],
        clock=clock,
        environ={"A_KEY": "sk-a"},
    )
    assert pool._upstreams["a"].headers == {"Authorization": "Bearer sk-a"}
    assert pool._upstreams["b"].headers == {}
    assert pool._upstreams["c"].headers == {}


def test_pool_rejects_duplicate_and_unknown_names(clock):
    with pytest.raises(ValueError):
        UpstreamPool([up("a", "eu"), up("a", "us")], clock=clock, environ={})
    pool = UpstreamPool([up("a", "eu")], clock=clock, environ={})
    with pytest.raises(ValueError, match="no upstream named 'zz'"):
        pool._get("zz")


def test_upstream_body_replaces_the_model_in_a_copy():
    body = {"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    out = upstream_body(body, "gpt-4o-mini")
    assert out == {**body, "model": "gpt-4o-mini"}
    assert body["model"] == "smollm2-135m-instruct"


def test_the_model_asked_of_an_upstream_a_listed_entry_then_its_model_then_as_asked():
    listing = UpstreamConfig("a", "http://a/v1", models=("gpt-4o-mini", "big=gpt-4o", "box=box-in-the-cloud"))
    assert upstream_model(listing, "gpt-4o-mini") == "gpt-4o-mini"
    assert upstream_model(listing, "big") == "gpt-4o"
    assert upstream_model(listing, "box") == "box-in-the-cloud"  # the box's own model, renamed by an entry
    assert upstream_model(listing, "other") == "other"
    renaming = UpstreamConfig("b", "http://b/v1", model="cloud-small", models=("gpt-4o-mini", "big=gpt-4o"))
    assert upstream_model(renaming, "box") == "cloud-small"  # the box's model overflowing
    assert upstream_model(renaming, "gpt-4o-mini") == "gpt-4o-mini"  # a listed name is never renamed by `model`
    assert upstream_model(renaming, "big") == "gpt-4o"


def test_candidates_for_a_listed_model_are_only_the_upstreams_that_list_it(clock):
    pool = UpstreamPool(
        [up("a", "eu", models=("gpt-4o-mini",)), up("b", "us", models=("gpt-4o-mini", "big=gpt-4o")), up("c", "eu")],
        clock=clock,
        environ={},
    )
    assert pool.listed_models() == {"gpt-4o-mini": ("a", "b"), "big": ("b",)}
    assert pool.candidates(("*",), listed_model="gpt-4o-mini") == ["a", "b"]
    assert pool.candidates(("eu",), listed_model="gpt-4o-mini") == ["a"]  # the class's jurisdictions still hold
    assert pool.candidates(("eu",), listed_model="big") == []
    assert pool.candidates((), listed_model="gpt-4o-mini") == []
    assert pool.candidates(("*",), listed_model="unlisted") == []
    assert pool.candidates(("*",)) == ["a", "b", "c"]  # the box's own model overflowing: every allowed upstream


def test_upstream_error_is_an_agent_error_with_each_failure():
    err = UpstreamError("a: connection refused; b: HTTP 503", {"a": "connection refused", "b": "HTTP 503"})
    assert isinstance(err, AgentError)
    assert str(err) == "a: connection refused; b: HTTP 503"
    assert err.failures["b"] == "HTTP 503"


def test_sse_error_is_an_openai_error_event_then_done():
    events = sse_error("upstream a: broke", "upstream_error", "upstream_failed").split(b"\n\n")
    assert events[0].startswith(b'data: {"error":{"message":"upstream a: broke"')
    assert events[1] == b"data: [DONE]" and events[2] == b""


# -- StreamBudget: a streamed answer in whole lines, within its caps ------------------------------------------------


def test_stream_budget_relays_whole_lines_and_holds_the_unfinished_one():
    from edge_agent.upstream import StreamBudget

    budget = StreamBudget(max_total=1000, max_event=100)
    assert budget.feed(b'data: {"a"') == b""
    assert budget.feed(b": 1}\n\ndata: {") == b'data: {"a": 1}\n\n'
    assert budget.feed(b"}\r\n\r\n") == b"data: {}\r\n\r\n"
    assert budget.feed(b"data: [DONE]") == b""
    assert budget.rest() == b"data: [DONE]" and budget.rest() == b""
    assert budget.total == len(b'data: {"a": 1}\n\ndata: {}\r\n\r\ndata: [DONE]') and not budget.exceeded


def test_stream_budget_counts_each_event_apart():
    from edge_agent.upstream import StreamBudget

    budget = StreamBudget(max_total=10_000, max_event=20)
    for _ in range(50):  # many events, each under the event cap: fine
        assert budget.feed(b"data: 0123456789\n\n") == b"data: 0123456789\n\n"
    assert budget.feed(b"data: 0123456789\n") == b"data: 0123456789\n"
    assert budget.feed(b"data: 0123456789\n") is None  # two lines of one event: 34 bytes
    assert "one event of the stream passed 20 bytes (max_event_bytes)" in budget.exceeded


def test_stream_budget_cuts_a_line_that_never_ends():
    from edge_agent.upstream import StreamBudget

    budget = StreamBudget(max_total=10_000, max_event=100)
    assert budget.feed(b"data: " + b"x" * 90) == b""
    assert budget.feed(b"x" * 10) is None
    assert "max_event_bytes" in budget.exceeded


def test_stream_budget_caps_the_whole_stream():
    from edge_agent.upstream import StreamBudget

    budget = StreamBudget(max_total=95, max_event=100)
    assert budget.feed(b"data: 1\n\n" * 10) == b"data: 1\n\n" * 10  # 90 bytes
    assert budget.feed(b"data: 2\n\n") is None
    assert budget.exceeded == "the streamed answer passed 95 bytes (max_stream_bytes)"


def test_too_large_reply_is_a_502_in_openais_shape():
    import json

    from edge_agent.upstream import too_large_reply

    reply = too_large_reply("cloud", "the answer passed max_reply_bytes (10 bytes)")
    assert reply.status == 502 and reply.stream is None and reply.content_type == "application/json"
    error = json.loads(reply.body)["error"]
    assert error["code"] == "upstream_reply_too_large" and error["type"] == "upstream_error"
    assert error["message"].startswith("upstream cloud: the answer passed max_reply_bytes (10 bytes)")
