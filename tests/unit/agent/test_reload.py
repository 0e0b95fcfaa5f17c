"""SIGHUP reloads (edge_agent.reload): which changes apply live, which need a restart, and the STATUS= lines."""

import asyncio
import logging

import pytest

from central.server import status_line as central_status_line
from edge_agent.cache import ResponseCache
from edge_agent.config import ConfigError, parse_config
from edge_agent.daemon import status_line
from edge_agent.policy.classify import PromptClassifier
from edge_agent.reload import Change, Reloader, changes, is_live, plan
from edge_agent.scheduler import SchedulerStats

BASE = {
    "log_level": "info",
    "cache": {"max_bytes": 1000, "ttl_s": 60.0},
    "model": {"n_parallel": 8},
    "policy": {"custom": [{"name": "project", "data_class": "restricted", "keywords": ["bluebird"]}]},
}


def config(**sections):
    raw = {k: dict(v) if isinstance(v, dict) else v for k, v in BASE.items()}
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    return parse_config(raw)


def test_changes_are_named_by_their_dotted_keys():
    found = changes(config(), config(log_level="debug", model={"n_parallel": 4}))
    assert found == [Change("log_level", "info", "debug"), Change("model.n_parallel", 8, 4)]
    assert found[1].describe() == "model.n_parallel changed (8 -> 4)"
    upstream = parse_config({"upstreams": [{"name": "eu", "url": "https://eu.example/v1", "jurisdiction": "eu"}]})
    assert [c.describe() for c in changes(parse_config({}), upstream)] == ["upstreams changed"]


def test_live_changes_apply_and_the_rest_waits_for_a_restart():
    new = config(
        log_level="debug",
        cache={"max_bytes": 10, "ttl_s": 5.0, "enabled": False},
        model={"n_parallel": 4},
        server={"listen": "127.0.0.1:9000"},
        scheduler={"max_queue": 3},
        policy={"custom": [{"name": "project", "data_class": "internal", "keywords": ["zanzibar"]}]},
        upstreams=[{"name": "eu", "url": "https://eu.example/v1", "models": ["gpt-4o-mini"]}],
    )
    p = plan(config(), new)
    assert sorted(c.key for c in p.live) == ["cache.max_bytes", "cache.ttl_s", "log_level", "policy.custom"]
    assert sorted(c.key for c in p.needs_restart) == [
        "cache.enabled",
        "model.n_parallel",
        "scheduler.max_queue",
        "server.listen",
        "upstreams",
    ]
    running = p.running
    assert (running.log_level, running.cache.max_bytes, running.cache.ttl_s) == ("debug", 10, 5.0)
    assert running.policy.custom == new.policy.custom
    # What needs a restart keeps running as it started.
    assert running.cache.enabled and running.model.n_parallel == 8 and running.server.listen == config().server.listen
    assert running.upstreams == ()  # the model names upstreams serve change with a restart
    assert plan(running, new).live == ()  # the next reload of the same file applies nothing again


def test_renamed_data_classes_hold_the_whole_policy_back():
    classes = [{"name": "open", "jurisdictions": ["*"]}, {"name": "restricted"}]
    new = config(
        policy={
            "classes": classes,
            "default_class": "open",
            "detectors": {"email": "restricted", "phone": "restricted"},
        }
    )
    p = plan(config(), new)
    assert "data class names changed" in p.held_back
    assert p.running.policy == config().policy
    assert not p.policy_changed and {"policy.classes", "policy.default_class"} <= {c.key for c in p.needs_restart}


class FakeGateway:
    """Stands in for edge_agent.gateway.Gateway: records the classifiers swapped in."""

    def __init__(self):
        self.swapped = []

    def reload_policy(self, classifier):
        self.swapped.append(classifier)


def test_reloader_applies_live_changes_and_keeps_the_running_config_on_a_bad_file(tmp_path, caplog):
    cache = ResponseCache(tmp_path / "cache.db", 1000, 60.0)
    cache.put("a", "sha", b"x" * 400)
    cache.put("b", "sha", b"y" * 400)
    gateway = FakeGateway()
    files = {
        "next": config(
            log_level="debug",
            cache={"max_bytes": 500},
            model={"n_parallel": 4},
            policy={"custom": [{"name": "project", "data_class": "internal", "keywords": ["zanzibar"]}]},
        )
    }

    def load():
        if isinstance(files["next"], Exception):
            raise files["next"]
        return files["next"]

    root = logging.getLogger()
    level = root.level
    reloader = Reloader(config(), load, gateway, cache, PromptClassifier)
    try:
        with caplog.at_level(logging.INFO):
            assert asyncio.run(reloader.reload())
            assert root.level == logging.DEBUG
        assert cache.stats().bytes <= 500 and cache.get("b") is not None  # the least recently used went first
        (classifier,) = gateway.swapped
        assert classifier.classify(["ship it to zanzibar"]).data_class == "internal"
        assert "SIGHUP: model.n_parallel changed (8 -> 4) but needs a restart" in caplog.text
        assert "SIGHUP: cache.max_bytes changed (1000 -> 500): applied" in caplog.text

        files["next"] = ConfigError("cache.max_bytes: expected a positive number, got 0")
        caplog.clear()
        assert not asyncio.run(reloader.reload())
        assert "keeping the running configuration" in caplog.text
        assert reloader.running.cache.max_bytes == 500 and len(gateway.swapped) == 1
    finally:
        root.setLevel(level)
        cache.close()


def test_a_policy_that_cannot_be_built_leaves_the_running_one(tmp_path, caplog):
    gateway = FakeGateway()
    bad = config(policy={"classifier_model": str(tmp_path / "missing.onnx")}, cache={"max_bytes": 900})
    reloader = Reloader(config(), lambda: bad, gateway, None, PromptClassifier)
    with caplog.at_level(logging.INFO):
        assert asyncio.run(reloader.reload())
    assert gateway.swapped == []
    assert reloader.running.policy == config().policy and reloader.running.cache.max_bytes == 900
    assert "keeping the running policy" in caplog.text


def test_status_lines_read_for_a_person():
    stats = SchedulerStats(queue_depth=0, inflight=2, slots=8)
    assert status_line("smollm2-135m-instruct", "127.0.0.1:8080", stats, {"eu-cloud": "closed"}, "connected") == (
        "serving smollm2-135m-instruct on 127.0.0.1:8080: 2 in flight, 0 queued, upstreams eu-cloud (closed), "
        "central connected"
    )
    assert status_line("m", "h:1", stats, {}, None) == "serving m on h:1: 2 in flight, 0 queued"
    assert central_status_line("0.0.0.0:7443", "0.0.0.0:7444", "", 1, 3) == (
        "serving fleet API on 0.0.0.0:7443, enrollment on 0.0.0.0:7444; 1 node online (of 3)"
    )
    assert central_status_line("h:7443", "h:7444", "h:7445", 2, 2, "follower") == (
        "serving fleet API on h:7443, enrollment on h:7444, SuperLink on h:7445; 2 nodes online (of 2); follower"
    )


@pytest.mark.parametrize("key", ["data_dir", "auth.keys_file", "federated.enabled", "fleet.probation_s"])
def test_what_the_issue_names_as_restart_only_is(key):
    assert not is_live(key)


def test_a_pattern_re2_cannot_take_is_refused_on_sighup_naming_the_key(tmp_path, caplog):
    """Tried: a file whose custom pattern has a backreference (catastrophic in a backtracking engine) written
    after the agent started; the reload refuses it, names the key, and keeps the running policy."""
    path = tmp_path / "agent.toml"
    path.write_text('[[policy.custom]]\nname = "dup"\ndata_class = "restricted"\npattern = "(a+)+\\\\1$"\n')
    gateway = FakeGateway()

    def load():
        from edge_agent.config import load_config

        return load_config(path)

    reloader = Reloader(config(), load, gateway, None, PromptClassifier)
    with caplog.at_level(logging.INFO):
        assert not asyncio.run(reloader.reload())
    assert "policy.custom[0].pattern: RE2 cannot compile" in caplog.text
    assert gateway.swapped == [] and reloader.running == config()
