"""Counting what bursting to an upstream used: its usage where it sent one (a body, a stream's usage chunk), else
counted locally; the prices of [[upstreams]] and their validation."""

import json

import pytest

from edge_agent.config import ConfigError, UpstreamConfig, parse_config
from edge_agent.upstream_usage import ReplyTokens, StreamTap, body_tokens, usage_entry, usage_of


def _sse(*objects) -> bytes:
    return b"".join(b"data: " + json.dumps(o).encode() + b"\n\n" for o in objects) + b"data: [DONE]\n\n"


CHUNKS = [
    {"choices": [{"index": 0, "delta": {"role": "assistant"}}]},
    {"choices": [{"index": 0, "delta": {"content": "Hel"}}], "usage": None},
    {"choices": [{"index": 0, "delta": {"content": "lo"}, "finish_reason": "stop"}], "usage": None},
    {"choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 2, "total_tokens": 14}},
]


def test_usage_of_takes_only_non_negative_integers():
    assert usage_of({"usage": {"prompt_tokens": 3, "completion_tokens": 4}}) == (3, 4)
    assert usage_of({"usage": None}) == (None, None)
    assert usage_of({"usage": {"prompt_tokens": -1, "completion_tokens": True}}) == (None, None)
    assert usage_of({"usage": {"prompt_tokens": 2.5, "completion_tokens": "3"}}) == (None, None)
    assert usage_of([1, 2]) == (None, None)


def test_body_tokens_of_chat_and_completion_answers():
    chat = {"choices": [{"message": {"content": "hi there"}}], "usage": {"prompt_tokens": 5, "completion_tokens": 2}}
    assert body_tokens(json.dumps(chat).encode()) == ReplyTokens(5, 2, "hi there")
    completion = {"choices": [{"text": "a"}, {"text": "b"}]}
    assert body_tokens(json.dumps(completion).encode()) == ReplyTokens(None, None, "ab")
    assert body_tokens(b"not json") == ReplyTokens(None, None, "")


def test_stream_tap_keeps_the_usage_chunk_from_a_client_that_did_not_ask():
    tap = StreamTap(relay_usage=False)
    relayed = tap.lines(_sse(*CHUNKS))
    assert tap.tokens() == ReplyTokens(12, 2, "Hello")
    events = [line for line in relayed.split(b"\n") if line.startswith(b"data: ")]
    assert len(events) == len(CHUNKS)  # three chunks and [DONE]: the usage-only chunk is gone
    assert b'"prompt_tokens"' not in relayed and events[-1] == b"data: [DONE]"


def test_stream_tap_relays_everything_to_a_client_that_asked():
    tap = StreamTap(relay_usage=True)
    stream = _sse(*CHUNKS)
    # Fed in whole lines, as StreamBudget hands them over, in two parts.
    cut = stream.index(b"\n", len(stream) // 2) + 1
    assert tap.lines(stream[:cut]) + tap.lines(stream[cut:]) == stream
    assert tap.tokens() == ReplyTokens(12, 2, "Hello")


def test_stream_tap_reads_usage_on_the_final_content_chunk_and_streams_without_usage():
    tap = StreamTap(relay_usage=False)
    final = {"choices": [{"text": "x", "finish_reason": "stop"}], "usage": {"prompt_tokens": 7, "completion_tokens": 1}}
    stream = _sse({"choices": [{"text": "ab"}]}, final)
    assert tap.lines(stream) == stream  # a chunk with choices is never dropped
    assert tap.tokens() == ReplyTokens(7, 1, "abx")
    bare = StreamTap(relay_usage=False)
    bare.lines(_sse({"choices": [{"text": "ab"}]}))
    assert bare.tokens() == ReplyTokens(None, None, "ab")


PRICED = UpstreamConfig(
    name="cloud", url="https://x/v1", price_per_1k_prompt_tokens=0.5, price_per_1k_completion_tokens=1.5, currency="EUR"
)


def test_usage_entry_uses_the_upstreams_figures_and_prices():
    entry = usage_entry(PRICED, "acme", "public", ReplyTokens(1000, 2000, "x"), _never, _never)
    assert (entry.requests, entry.prompt_tokens, entry.completion_tokens, entry.locally_counted) == (1, 1000, 2000, 0)
    assert entry.cost == pytest.approx(0.5 + 3.0) and entry.currency == "EUR"


def test_usage_entry_counts_locally_what_the_upstream_did_not_say():
    entry = usage_entry(PRICED, "acme", "public", ReplyTokens(None, None, "four"), lambda: 9, len)
    assert (entry.prompt_tokens, entry.completion_tokens, entry.locally_counted) == (9, 4, 1)
    half = usage_entry(PRICED, "acme", "public", ReplyTokens(5, None, "ab"), _never, len)
    assert (half.prompt_tokens, half.completion_tokens, half.locally_counted) == (5, 2, 1)


def test_an_unpriced_upstream_has_no_cost_and_no_currency():
    plain = UpstreamConfig(name="free", url="https://x/v1")
    entry = usage_entry(plain, "", "public", ReplyTokens(10, 10, ""), _never, _never)
    assert (entry.cost, entry.currency) == (0.0, "")
    usd = UpstreamConfig(name="c", url="https://x/v1", price_per_1k_completion_tokens=2.0)
    assert usd.cost_currency == "USD" and usd.cost(1000, 500) == pytest.approx(1.0)


def _never(*args):
    raise AssertionError("counted locally although the upstream gave its usage")


def _upstream(**extra):
    return parse_config({"upstreams": [{"name": "c", "url": "https://x/v1", **extra}]}).upstreams[0]


def test_prices_and_currency_load_from_the_config():
    u = _upstream(price_per_1k_prompt_tokens=1, price_per_1k_completion_tokens=0.25, currency="CHF")
    assert (u.price_per_1k_prompt_tokens, u.price_per_1k_completion_tokens, u.cost_currency) == (1.0, 0.25, "CHF")
    assert _upstream(price_per_1k_prompt_tokens=0).cost_currency == "USD"  # free, but priced
    assert _upstream().price_per_1k_prompt_tokens is None


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"price_per_1k_prompt_tokens": -0.1}, "upstreams[0].price_per_1k_prompt_tokens: expected a non-negative"),
        ({"price_per_1k_completion_tokens": float("inf")}, "price_per_1k_completion_tokens: expected a non-negative"),
        ({"price_per_1k_prompt_tokens": float("nan")}, "price_per_1k_prompt_tokens: expected a non-negative"),
        ({"price_per_1k_prompt_tokens": "1"}, "price_per_1k_prompt_tokens: expected float"),
        ({"price_per_1k_prompt_tokens": 1, "currency": "euro"}, "upstreams[0].currency: expected an ISO 4217 code"),
        ({"price_per_1k_prompt_tokens": 1, "currency": "eur"}, "currency: expected an ISO 4217 code"),
        ({"currency": "EUR"}, "currency: 'EUR' is set but neither price"),
    ],
)
def test_bad_prices_are_refused_naming_the_key(extra, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")):
        _upstream(**extra)
