import re

import pytest

from edge_agent.config import AgentConfig, ConfigError, load_config, parse_config, with_overrides


def test_defaults_are_valid_and_listen_on_loopback():
    config = load_config(None)
    assert config.server.listen == "127.0.0.1:8080"
    assert config.model.name == "smollm2-135m-instruct"


def test_documented_example_config_loads():
    config = load_config("packaging/edge-agent.example.toml")
    assert isinstance(config, AgentConfig)


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"server": {"listen": "localhost"}}, "server.listen: expected HOST:PORT"),
        ({"server": {"listen": "127.0.0.1:99999"}}, "server.listen"),
        ({"server": {"max_body_bytes": "1MB"}}, "server.max_body_bytes: expected int, got str"),
        ({"model": {"n_ctx": 0}}, "model.n_ctx: expected a positive number"),
        ({"model": {"n_parallel": 1000}}, "model.n_parallel: expected 1..256"),
        ({"model": {"n_gpu_layers": -2}}, "model.n_gpu_layers"),
        ({"model": {"nctx": 10}}, "model.nctx: unknown key"),
        ({"cache": {"enabled": "yes"}}, "cache.enabled: expected bool"),
        ({"cache": {"max_bytes": True}}, "cache.max_bytes: expected int, got a boolean"),
        ({"embeddings": {"engine": "tensorflow"}}, "embeddings.engine"),
        ({"embeddings": {"engine": "onnx"}}, "embeddings.onnx_model and embeddings.onnx_tokenizer"),
        ({"model": "smollm2"}, "model: expected a table"),
        ({"log_level": "loud"}, "log_level: expected one of"),
        ({"colour": 1}, "colour: unknown key"),
        ({"policy": {"default_class": "secret"}}, "policy.default_class: 'secret' is not a data class"),
        ({"policy": {"classes": []}}, "policy.classes: at least one data class"),
        ({"policy": {"classes": [{"name": "a"}, {"name": "a"}]}}, "policy.classes: names must be unique"),
        ({"policy": {"classes": [{"name": "a", "jurisdictions": ["*", "eu"]}]}}, r"policy.classes\[0\].jurisdictions"),
        ({"policy": {"classes": [{"name": "a", "jurisdictions": "eu"}]}}, "expected a list of strings"),
        ({"policy": {"classes": {"name": "a"}}}, r"policy.classes: expected an array of tables"),
        ({"policy": {"detectors": {"email": "secret"}}}, "policy.detectors.email: 'secret' is not a data class"),
        ({"policy": {"detectors": {"fax": "public"}}}, "policy.detectors.fax: unknown key"),
        ({"policy": {"custom": [{"name": "x", "data_class": "public"}]}}, r"policy.custom\[0\]: set pattern"),
        (
            {"policy": {"custom": [{"name": "email", "data_class": "public", "keywords": ["a"]}]}},
            "unique among detectors",
        ),
        (
            {"policy": {"custom": [{"name": "x", "data_class": "public", "pattern": "("}]}},
            r"policy.custom\[0\].pattern: RE2 cannot compile",
        ),
        (
            {"policy": {"custom": [{"name": "x", "data_class": "public", "pattern": r"(a)\1"}]}},
            r"policy.custom\[0\].pattern: RE2 cannot compile .*backreferences",
        ),
        (
            {"policy": {"custom": [{"name": "x", "data_class": "public", "pattern": r"(?<=x)y"}]}},
            r"policy.custom\[0\].pattern: RE2 cannot compile",
        ),
        ({"policy": {"phone_regions": ["XX"]}}, r"policy.phone_regions: 'XX' is not a region code"),
        ({"policy": {"custom": [{"name": "x", "data_class": "public", "pattern": "a?"}]}}, "matches the empty string"),
        ({"policy": {"custom": [{"name": "x", "data_class": "public", "keywords": [" "]}]}}, "empty keywords"),
        ({"policy": {"classifier_model": "m.onnx", "classifier_class": "x"}}, "policy.classifier_class"),
        ({"policy": {"classifier_threshold": 0}}, "policy.classifier_threshold"),
        ({"upstreams": [{"name": "a b", "url": "https://x/v1"}]}, r"upstreams\[0\].name"),
        ({"upstreams": [{"name": "a", "url": "https://x/v1"}, {"name": "a", "url": "https://y/v1"}]}, "used twice"),
        ({"upstreams": [{"name": "a", "url": "x.example.com/v1"}]}, r"upstreams\[0\].url"),
        ({"upstreams": [{"name": "a", "url": "https://x/v1", "timeout_s": 0}]}, r"upstreams\[0\].timeout_s"),
        ({"upstreams": [{"name": "a", "url": "https://x/v1", "retries": -1}]}, r"upstreams\[0\].retries"),
        ({"upstreams": [{"name": "a", "url": "https://x/v1", "api_key_env": "my key"}]}, "api_key_env"),
        ({"upstreams": {"name": "a"}}, "upstreams: expected an array of tables"),
        (
            {"upstreams": [{"name": "a", "url": "https://x/v1", "models": ["gpt 4"]}]},
            r"upstreams\[0\].models\[0\]: expected",
        ),
        ({"upstreams": [{"name": "a", "url": "https://x/v1", "models": ["a=b=c"]}]}, r"upstreams\[0\].models\[0\]"),
        ({"upstreams": [{"name": "a", "url": "https://x/v1", "models": ["=b"]}]}, r"upstreams\[0\].models\[0\]"),
        ({"upstreams": [{"name": "a", "url": "https://x/v1", "models": ["a="]}]}, r"upstreams\[0\].models\[0\]"),
        (
            {"upstreams": [{"name": "a", "url": "https://x/v1", "models": ["m", "m=n"]}]},
            r"upstreams\[0\].models\[1\]: 'm' is listed twice",
        ),
        (
            {"upstreams": [{"name": "a", "url": "https://x/v1", "models": "gpt-4o"}]},
            r"upstreams\[0\].models: expected a list",
        ),
        ({"auth": {"allow_open_non_loopback": "yes"}}, "auth.allow_open_non_loopback: expected bool"),
    ],
)
def test_invalid_values_name_the_key(raw, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(raw)


def test_integer_is_accepted_for_a_float_key():
    assert parse_config({"cache": {"ttl_s": 60}}).cache.ttl_s == 60.0


def test_missing_and_malformed_files_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[server\nlisten = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_flags_override_the_file():
    config = parse_config({"server": {"listen": "127.0.0.1:9000"}, "model": {"name": "gemma-3-270m"}})
    out = with_overrides(config, listen="127.0.0.1:0", model="/models/x.gguf", data_dir="/tmp/d")
    assert out.server.listen == "127.0.0.1:0"
    assert out.model.path == "/models/x.gguf" and out.model.name == ""
    assert str(out.data_path) == "/tmp/d"
    assert with_overrides(config, model="smollm2-135m-instruct").model.name == "smollm2-135m-instruct"
    with pytest.raises(ConfigError, match=re.escape("server.listen")):
        with_overrides(config, listen="nonsense")


def test_upstream_model_names_plain_or_renamed():
    config = parse_config(
        {
            "upstreams": [
                {"name": "a", "url": "https://x/v1", "models": ["gpt-4o-mini", "big=gpt-4o", "meta-llama/Llama-3.1-8B"]}
            ]
        }
    )
    assert config.upstreams[0].model_map == {
        "gpt-4o-mini": "gpt-4o-mini",
        "big": "gpt-4o",
        "meta-llama/Llama-3.1-8B": "meta-llama/Llama-3.1-8B",
    }
    assert parse_config({"upstreams": [{"name": "a", "url": "https://x/v1"}]}).upstreams[0].model_map == {}


def test_the_removed_upstream_unknown_models_says_what_replaces_it():
    for value in (True, False):
        with pytest.raises(ConfigError) as info:
            parse_config({"policy": {"upstream_unknown_models": value}})
        message = str(info.value)
        assert message.startswith("policy.upstream_unknown_models: removed")
        assert "[[upstreams]] models" in message and "model_not_found" in message


def _upstream(url: str, **extra) -> dict:
    return {"upstreams": [{"name": "cloud", "url": url, **extra}]}


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/v1",
        "http://127.3.4.5/v1",
        "http://localhost:8000/v1",
        "http://LOCALHOST/v1",
        "http://[::1]:8000/v1",
        "https://api.example.com/v1",
        "https://10.0.0.5/v1",
    ],
)
def test_plain_http_is_taken_on_loopback_and_https_anywhere(url):
    assert parse_config(_upstream(url)).upstreams[0].url == url


@pytest.mark.parametrize(
    "url",
    ["http://10.0.0.5:8000/v1", "http://api.example.com/v1", "http://localhost.example.com/v1", "http://[fe80::1]/v1"],
)
def test_plain_http_off_loopback_is_refused_naming_the_upstream_the_url_and_the_key(url):
    with pytest.raises(ConfigError) as info:
        parse_config(_upstream(url))
    message = str(info.value)
    assert message.startswith("upstreams[0].url: upstream 'cloud'")
    assert url in message and "upstreams[0].allow_plain_http = true" in message and "https://" in message
    assert parse_config(_upstream(url, allow_plain_http=True)).upstreams[0].allow_plain_http


def test_upstream_reply_caps_default_and_must_be_positive():
    u = parse_config(_upstream("https://x/v1")).upstreams[0]
    assert (u.max_reply_bytes, u.max_stream_bytes, u.max_event_bytes) == (8 * 2**20, 64 * 2**20, 2**20)
    for key in ("max_reply_bytes", "max_stream_bytes", "max_event_bytes"):
        with pytest.raises(ConfigError, match=re.escape(f"upstreams[0].{key}: expected a positive number")):
            parse_config(_upstream("https://x/v1", **{key: 0}))
