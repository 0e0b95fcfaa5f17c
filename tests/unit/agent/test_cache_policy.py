from edge_agent.cache_policy import cache_decision, cache_key

BASE = {"model": "m", "prompt": "hi", "max_tokens": 8, "temperature": 0.0, "seed": None, "stream": False, "user": None}


def test_greedy_requests_are_looked_up_and_stored():
    d = cache_decision(BASE, "")
    assert (d.lookup, d.store) == (True, True)


def test_sampled_request_with_seed_is_cached():
    d = cache_decision({**BASE, "temperature": 0.7, "seed": 3}, "")
    assert (d.lookup, d.store) == (True, True)


def test_sampled_request_without_seed_bypasses():
    d = cache_decision({**BASE, "temperature": 0.7}, "")
    assert (d.lookup, d.store) == (False, False)
    assert "not deterministic" in d.reason


def test_n_choices_without_seed_at_temperature_are_not_cached_and_say_why():
    d = cache_decision({**BASE, "temperature": 0.7, "n": 3}, "")
    assert (d.lookup, d.store) == (False, False)
    assert d.reason == "not deterministic (n > 1 without a seed at temperature > 0)"


def test_n_choices_greedy_or_seeded_are_cached():
    for params in ({**BASE, "n": 3}, {**BASE, "temperature": 0.7, "seed": 5, "n": 3}):
        d = cache_decision(params, "")
        assert (d.lookup, d.store, d.reason) == (True, True, "deterministic")


def test_key_differs_by_n_logprobs_response_format_and_tools():
    """The issue-19 fields are in the key when set (client_request.canonical adds them only then)."""
    base = cache_key("sha", "chat", BASE)
    variants = [
        {**BASE, "n": 2},
        {**BASE, "logprobs": 0},
        {**BASE, "logprobs": 3},
        {**BASE, "response_format": {"type": "json_object"}},
        {**BASE, "tools": [{"name": "f", "parameters": {"type": "object"}}], "tool_choice": "auto"},
    ]
    keys = {cache_key("sha", "chat", v) for v in variants}
    assert base not in keys and len(keys) == len(variants)


def test_no_cache_skips_lookup_but_stores_fresh_answer():
    d = cache_decision(BASE, "no-cache")
    assert (d.lookup, d.store) == (False, True)


def test_no_store_keeps_the_cache_out_even_among_other_directives():
    d = cache_decision(BASE, "max-age=0, No-Store")
    assert (d.lookup, d.store) == (False, False)


def test_disabled_cache_bypasses():
    assert cache_decision(BASE, "", enabled=False).lookup is False


def test_key_ignores_stream_and_user():
    a = cache_key("sha", "completions", BASE)
    b = cache_key("sha", "completions", {**BASE, "stream": True, "user": "alice", "include_usage": True})
    assert a == b


def test_key_depends_on_model_sha_endpoint_and_output_changing_fields():
    a = cache_key("sha1", "completions", BASE)
    assert a != cache_key("sha2", "completions", BASE)
    assert a != cache_key("sha1", "chat", BASE)
    assert a != cache_key("sha1", "completions", {**BASE, "max_tokens": 9})
    assert a != cache_key("sha1", "completions", {**BASE, "prompt": "hi "})


def test_key_is_independent_of_field_order():
    reordered = dict(reversed(list(BASE.items())))
    assert cache_key("s", "completions", BASE) == cache_key("s", "completions", reordered)
