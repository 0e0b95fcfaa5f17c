"""Pure parts of federated learning: node data files, the two tasks, the SuperLink guard, the SuperNode
argv, the FAB, run reports, Flower keys, central's run config and status, and the agent's [federated] table."""

import asyncio
import hashlib
import importlib
import importlib.util
import io
import ipaddress
import json
import re
import stat
import sys

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib
import itertools
import zipfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from hypothesis import given, settings
from hypothesis import strategies as st

from central import federation
from central.errors import InvalidArgument
from edge_agent.config import ConfigError, load_config, parse_config
from edgefleet import featurize, pki
from edgefleet.featurize import DIMENSIONS
from edgefleet.nodekeys import generate_node_key
from federated import control, fab, local_data, results, superlink, supernode
from federated.tasks import TaskError, get_task, sensitivity, task_names, usage_stats
from federated.tasks.sensitivity import SensitivityTask
from federated.tasks.usage_stats import UsageStatsTask

# flwr 1.42 installs on Python 3.11+ only; on 3.10 (JetPack 6) federated learning is off and these cannot run.
needs_flwr = pytest.mark.skipif(
    importlib.util.find_spec("flwr") is None, reason="flwr 1.42 needs Python 3.11+; federated learning is off here"
)

SENSITIVE = [
    "my password is hunter2 please remember it",
    "my social security number is 123-45-6789",
    "credit card 4111 1111 1111 1111 expires 09/27",
    "patient record: diagnosis of diabetes, DOB 1970",
    "my bank account number is 000123456 at chase",
    "here is my passport number X1234567",
]
PUBLIC = [
    "what is the capital of france",
    "write a haiku about spring rain",
    "how do I sort a list in python",
    "explain photosynthesis to a child",
    "recommend a good science fiction novel",
    "what time zone is tokyo in",
]


def _usage_dict(hours=None, latency=None, cache=(0, 0)):
    return {
        "requests_per_hour": list(hours if hours is not None else [0] * 24),
        "latency_buckets": list(latency if latency is not None else [0] * 9),
        "cache": list(cache),
    }


def _write_usage(data_dir: Path, raw) -> None:
    path = local_data.usage_path(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(raw if isinstance(raw, str) else json.dumps(raw))


def _write_examples(data_dir: Path, text: str) -> Path:
    path = local_data.examples_path(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# --- local_data: examples -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line, message",
    [
        ("{not json", "row 7: not JSON"),
        ('["text", "public"]', "row 7: expected an object"),
        ('"just a string"', "row 7: expected an object"),
        ('{"text": "", "label": "public"}', "row 7: text must be a non-empty string"),
        ('{"text": "  \\n\\t ", "label": "public"}', "row 7: text must be a non-empty string"),
        ('{"text": 42, "label": "public"}', "row 7: text must be a non-empty string"),
        ('{"label": "public"}', "row 7: text must be a non-empty string"),
        ('{"text": "hello", "label": "secret"}', "row 7: label must be one of public, sensitive, got 'secret'"),
        ('{"text": "hello", "label": 1}', "row 7: label must be one of"),
        ('{"text": "hello"}', "row 7: label must be one of"),
    ],
)
def test_parse_example_refuses_each_bad_row_naming_where(line, message):
    with pytest.raises(TaskError, match=message.replace("(", r"\(").replace(")", r"\)")):
        local_data.parse_example(line, "row 7")


def test_parse_example_text_length_limit():
    at_limit = "a" * local_data.MAX_TEXT_CHARS
    assert local_data.parse_example(json.dumps({"text": at_limit, "label": "public"}), "w").text == at_limit
    over = "a" * (local_data.MAX_TEXT_CHARS + 1)
    with pytest.raises(TaskError, match=f"w: text is {local_data.MAX_TEXT_CHARS + 1} characters, more than"):
        local_data.parse_example(json.dumps({"text": over, "label": "public"}), "w")


def test_parse_example_valid_rows_map_labels():
    sensitive = local_data.parse_example('{"text": "my pin is 1234", "label": "sensitive", "source": "x"}', "w")
    public = local_data.parse_example('{"text": "hi", "label": "public"}', "w")
    assert sensitive == local_data.Example("my pin is 1234", 1)
    assert public == local_data.Example("hi", 0)


def test_read_examples_missing_file(tmp_path):
    with pytest.raises(TaskError, match=r"no labeled examples on this node: .*examples\.jsonl does not exist"):
        local_data.read_examples(tmp_path)


def test_read_examples_empty_or_blank_file(tmp_path):
    _write_examples(tmp_path, "")
    with pytest.raises(TaskError, match=re.escape("examples.jsonl is empty")):
        local_data.read_examples(tmp_path)
    _write_examples(tmp_path, "\n   \n\t\n")
    with pytest.raises(TaskError, match=re.escape("examples.jsonl is empty")):
        local_data.read_examples(tmp_path)


def test_read_examples_reports_malformed_row_with_path_and_line(tmp_path):
    path = _write_examples(tmp_path, '{"text": "ok", "label": "public"}\n\n{"text": "x", "label": "maybe"}\n')
    with pytest.raises(TaskError) as caught:
        local_data.read_examples(tmp_path)
    assert str(caught.value).startswith(f"{path}:3: label must be one of")


def test_read_examples_skips_blank_lines(tmp_path):
    _write_examples(tmp_path, '\n{"text": "a", "label": "public"}\n   \n\n{"text": "b", "label": "sensitive"}\n\n')
    assert local_data.read_examples(tmp_path) == [local_data.Example("a", 0), local_data.Example("b", 1)]


def test_read_examples_non_utf8_bytes(tmp_path):
    path = local_data.examples_path(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(b'{"text": "ok", "label": "public"}\n{"text": "caf\xe9 \xff", "label": "public"}\n')
    with pytest.raises(TaskError, match="not UTF-8 text"):
        local_data.read_examples(tmp_path)


def test_read_examples_refuses_a_row_with_a_lone_surrogate_escape(tmp_path):
    """`{"text": "hi \\ud800"}` is valid ASCII JSON but no UTF-8 text: the featurizer cannot hash it, so the
    row must be refused with its line number (today it is accepted and local_update dies with
    UnicodeEncodeError)."""
    path = _write_examples(tmp_path, '{"text": "fine", "label": "public"}\n{"text": "hi \\ud800", "label": "public"}\n')
    with pytest.raises(TaskError, match=f"{path}:2"):
        local_data.read_examples(tmp_path)


def test_append_example_appends_rows_with_mode_0600(tmp_path):
    local_data.append_example(tmp_path, "my pin is 1234", "sensitive", "operator")
    local_data.append_example(tmp_path, "café ☕ menu", "public", "detector")
    path = local_data.examples_path(tmp_path)
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert rows == [
        {"text": "my pin is 1234", "label": "sensitive", "source": "operator"},
        {"text": "café ☕ menu", "label": "public", "source": "detector"},
    ]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert local_data.read_examples(tmp_path) == [
        local_data.Example("my pin is 1234", 1),
        local_data.Example("café ☕ menu", 0),
    ]


def test_append_example_text_with_newline_stays_one_row(tmp_path):
    local_data.append_example(tmp_path, "line one\nline two\r\nthree", "public", "operator")
    assert local_data.read_examples(tmp_path) == [local_data.Example("line one\nline two\r\nthree", 0)]


@pytest.mark.parametrize(
    "text, label",
    [("hello", "secret"), ("   ", "public"), ("", "sensitive"), ("x" * (local_data.MAX_TEXT_CHARS + 1), "public")],
)
def test_append_example_refuses_invalid_rows_leaving_file_unchanged(tmp_path, text, label):
    with pytest.raises(TaskError):
        local_data.append_example(tmp_path, text, label, "operator")
    assert not local_data.examples_path(tmp_path).exists()
    local_data.append_example(tmp_path, "kept", "public", "operator")
    before = local_data.examples_path(tmp_path).read_bytes()
    with pytest.raises(TaskError):
        local_data.append_example(tmp_path, text, label, "operator")
    assert local_data.examples_path(tmp_path).read_bytes() == before


def test_append_example_refuses_lone_surrogate_text_with_task_error(tmp_path):
    """`edge-agent label $'\\xff'` hands append_example "\\udcff" (argv's surrogateescape): it must be a TaskError
    (the CLI catches only that) and leave no file behind; today it raises UnicodeEncodeError after creating
    an empty examples.jsonl."""
    with pytest.raises(TaskError):
        local_data.append_example(tmp_path, "bad \udcff byte", "public", "operator")
    assert not local_data.examples_path(tmp_path).exists()


# --- local_data: usage ----------------------------------------------------------------------------------


def test_parse_usage_valid():
    usage = local_data.parse_usage(_usage_dict(hours=range(24), latency=[1] * 9, cache=(3, 5)), "u")
    assert usage == local_data.Usage(tuple(range(24)), (1,) * 9, 3, 5)


@pytest.mark.parametrize(
    "raw, message",
    [
        ([1, 2, 3], "u: expected a JSON object"),
        ({**_usage_dict(), "requests_per_hour": [0] * 23}, "requests_per_hour must be a list of 24"),
        ({**_usage_dict(), "requests_per_hour": [0] * 25}, "requests_per_hour must be a list of 24"),
        ({**_usage_dict(), "latency_buckets": [0] * 8}, "latency_buckets must be a list of 9"),
        ({**_usage_dict(), "cache": [1]}, "cache must be a list of 2"),
        (
            {**_usage_dict(), "requests_per_hour": [0] * 23 + [-1]},
            "requests_per_hour must be a list of 24 non-negative",
        ),
        ({**_usage_dict(), "latency_buckets": [0] * 8 + [1.5]}, "latency_buckets must be a list of 9"),
        ({**_usage_dict(), "requests_per_hour": [True] * 24}, "requests_per_hour must be a list of 24"),
        ({**_usage_dict(), "cache": [False, True]}, "cache must be a list of 2"),
        ({**_usage_dict(), "cache": "3/5"}, "cache must be a list of 2"),
        ({"latency_buckets": [0] * 9, "cache": [0, 0]}, "requests_per_hour must be a list"),
        (_usage_dict(cache=(6, 5)), r"u: cache hits \(6\) exceed lookups \(5\)"),
    ],
)
def test_parse_usage_refusals(raw, message):
    with pytest.raises(TaskError, match=message):
        local_data.parse_usage(raw, "u")


def test_read_usage_missing_invalid_and_valid(tmp_path):
    with pytest.raises(TaskError, match=r"no usage figures on this node: .*usage\.json does not exist"):
        local_data.read_usage(tmp_path)
    _write_usage(tmp_path, '{"requests_per_hour": [')
    with pytest.raises(TaskError, match=re.escape("usage.json: not valid JSON")):
        local_data.read_usage(tmp_path)
    local_data.usage_path(tmp_path).write_bytes(b"\xff\xfe{}")
    with pytest.raises(TaskError, match=re.escape("usage.json: not valid JSON")):
        local_data.read_usage(tmp_path)
    _write_usage(tmp_path, _usage_dict(cache=(1, 0)))
    with pytest.raises(TaskError, match=f"{local_data.usage_path(tmp_path)}: cache hits"):
        local_data.read_usage(tmp_path)
    _write_usage(tmp_path, _usage_dict(hours=[2] * 24, cache=(1, 4)))
    assert local_data.read_usage(tmp_path).requests_per_hour == (2,) * 24


@pytest.mark.parametrize(
    "latency_ms, bucket",
    [
        (0, 0),
        (50, 0),
        (50.1, 1),
        (100, 1),
        (100.5, 2),
        (250, 2),
        (999.9, 4),
        (1000, 4),
        (10000, 7),
        (10000.01, 8),
        (1e9, 8),
    ],
)
def test_latency_bucket_boundaries(latency_ms, bucket):
    assert local_data.latency_bucket(latency_ms) == bucket


def test_usage_counters_flush_writes_then_adds_totals(tmp_path):
    counters = local_data.UsageCounters(tmp_path)
    counters.record_request(0.030, at_unix=5 * 3600 + 10)  # 05:00 UTC, 30 ms
    counters.record_request(0.200, at_unix=29 * 3600)  # next day 05:00, 200 ms
    counters.record_request(12.0, at_unix=23 * 3600 + 3599)  # 23:59, slower than every bound
    counters.record_cache(True)
    counters.record_cache(False)
    counters.flush()
    first = json.loads(local_data.usage_path(tmp_path).read_text())
    hours = [0] * 24
    hours[5], hours[23] = 2, 1
    assert first == {"requests_per_hour": hours, "latency_buckets": [1, 0, 1, 0, 0, 0, 0, 0, 1], "cache": [1, 2]}
    assert local_data.read_usage(tmp_path).cache_lookups == 2

    counters.record_request(0.050, at_unix=0)
    counters.record_cache(True)
    counters.flush()
    second = json.loads(local_data.usage_path(tmp_path).read_text())
    hours[0] = 1
    assert second == {"requests_per_hour": hours, "latency_buckets": [2, 0, 1, 0, 0, 0, 0, 0, 1], "cache": [2, 3]}
    assert not local_data.usage_path(tmp_path).with_suffix(".tmp").exists()


def test_usage_counters_flush_with_nothing_recorded_writes_nothing(tmp_path):
    counters = local_data.UsageCounters(tmp_path)
    counters.flush()
    assert not local_data.usage_path(tmp_path).exists()
    counters.record_cache(False)
    counters.flush()
    written = local_data.usage_path(tmp_path).read_bytes()
    counters.flush()  # the recorded counts were reset by the first flush
    assert local_data.usage_path(tmp_path).read_bytes() == written
    assert json.loads(written)["cache"] == [0, 1]


@pytest.mark.parametrize("corrupt", ["{broken", json.dumps(_usage_dict(cache=(9, 1))), "[]"])
def test_usage_counters_corrupt_file_starts_again_from_zero(tmp_path, corrupt, caplog):
    _write_usage(tmp_path, corrupt)
    counters = local_data.UsageCounters(tmp_path)
    counters.record_request(0.07, at_unix=3 * 3600)
    with caplog.at_level("WARNING", logger="federated.local_data"):
        counters.flush()
    hours = [0] * 24
    hours[3] = 1
    assert json.loads(local_data.usage_path(tmp_path).read_text()) == {
        "requests_per_hour": hours,
        "latency_buckets": [0, 1, 0, 0, 0, 0, 0, 0, 0],
        "cache": [0, 0],
    }
    assert "starting usage totals again" in caplog.text


# --- tasks ----------------------------------------------------------------------------------------------


def test_get_task_unknown_name_lists_known_tasks():
    with pytest.raises(TaskError, match=r"unknown task 'nope'; known tasks: sensitivity, usage-stats"):
        get_task("nope")
    assert task_names() == ["sensitivity", "usage-stats"]
    assert isinstance(get_task("sensitivity"), SensitivityTask)
    assert isinstance(get_task("usage-stats"), UsageStatsTask)


def test_featurize_deterministic_unit_norm_and_distinct():
    a = featurize.featurize("My card number is 4111 1111 1111 1111")
    assert a.shape == (DIMENSIONS,) and a.dtype == np.float32
    np.testing.assert_array_equal(a, featurize.featurize("My card number is 4111 1111 1111 1111"))
    assert abs(float(np.linalg.norm(a)) - 1.0) < 1e-6
    np.testing.assert_array_equal(a, featurize.featurize("my CARD number is 4111 1111 1111 1111"))  # lowercased
    b = featurize.featurize("write a haiku about spring")
    assert abs(float(np.linalg.norm(b)) - 1.0) < 1e-6
    assert not np.array_equal(a, b)
    assert float(a @ b) < 0.5


def test_featurize_empty_text_is_zeros():
    empty = featurize.featurize("")
    assert empty.shape == (DIMENSIONS,) and not empty.any()
    assert featurize.featurize_all([]).shape == (0, DIMENSIONS)


def _logistic_loss(weights, bias, features, labels):
    p = np.clip(sensitivity.predict(weights, bias, features), 1e-12, 1 - 1e-12)
    return float(-np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p)))


def test_train_decreases_logistic_loss_on_separable_toy_set():
    features = np.array([[1.0, 0.1], [0.9, 0.0], [0.8, 0.2], [0.0, 1.0], [0.1, 0.9], [0.2, 0.8]])
    labels = np.array([1.0, 1.0, 1.0, 0.0, 0.0, 0.0])
    start = np.zeros(2)
    before = _logistic_loss(start, 0.0, features, labels)
    weights, bias = sensitivity.train(start, 0.0, features, labels, epochs=50, learning_rate=1.0, l2=0.0)
    after = _logistic_loss(weights, bias, features, labels)
    assert before == pytest.approx(np.log(2))
    assert after < before * 0.5
    assert np.array_equal((sensitivity.predict(weights, bias, features) >= 0.5), labels == 1)
    assert not start.any()  # the start weights are not modified in place


def _labeled_data_dir(tmp_path) -> Path:
    for text in SENSITIVE:
        local_data.append_example(tmp_path, text, "sensitive", "operator")
    for text in PUBLIC:
        local_data.append_example(tmp_path, text, "public", "operator")
    return tmp_path


def test_sensitivity_local_update_learns_separable_examples(tmp_path):
    task = SensitivityTask()
    data_dir = _labeled_data_dir(tmp_path)
    update = task.local_update(data_dir, task.initial_arrays({}), {})
    assert update.weight == 1
    assert [a.shape for a in update.arrays] == [(DIMENSIONS,), (1,)]
    assert all(a.dtype == np.float32 for a in update.arrays)
    assert all(np.abs(a).max() <= task.clipping_range for a in update.arrays)
    assert update.local_metrics["examples"] == 12.0
    assert update.local_metrics["train_accuracy"] == 1.0
    assert update.local_metrics["clipped_values"] == 0.0
    weights, bias = update.arrays[0], float(update.arrays[1][0])
    probs = sensitivity.predict(weights, bias, featurize.featurize_all(SENSITIVE + PUBLIC))
    assert (probs[:6] >= 0.5).all() and (probs[6:] < 0.5).all()


def test_sensitivity_local_update_clips_to_clipping_range(tmp_path):
    """A huge learning rate pushes weights past +-8: they come back clipped and counted."""
    task = SensitivityTask()
    data_dir = _labeled_data_dir(tmp_path)
    update = task.local_update(data_dir, task.initial_arrays({}), {"learning-rate": 1e4, "local-epochs": 3, "l2": 0.0})
    largest = max(float(np.abs(a).max()) for a in update.arrays)
    assert largest == task.clipping_range
    assert update.local_metrics["clipped_values"] > 0


def test_sensitivity_local_update_without_examples_is_task_error(tmp_path):
    task = SensitivityTask()
    with pytest.raises(TaskError, match="no labeled examples"):
        task.local_update(tmp_path, task.initial_arrays({}), {})


def test_sensitivity_finish_exports_onnx_matching_numpy(tmp_path):
    task = SensitivityTask()
    update = task.local_update(_labeled_data_dir(tmp_path), task.initial_arrays({}), {})
    outcome = task.finish(update.arrays, {}, nodes=3)
    assert outcome["kind"] == "onnx"
    assert outcome["onnx_max_difference"] < 1e-5
    session = onnxruntime.InferenceSession(outcome["onnx"], providers=["CPUExecutionProvider"])
    features = featurize.featurize_all(SENSITIVE[:2] + PUBLIC[:2])
    (probability,) = session.run(["probability"], {"features": features})
    assert probability.shape == (4,)
    assert (probability[:2] >= 0.5).all() and (probability[2:] < 0.5).all()
    assert sensitivity.check_onnx(outcome["onnx"], outcome["weights"], outcome["bias"], SENSITIVE) < 1e-5


@pytest.mark.parametrize(
    "arrays",
    [
        [np.zeros(DIMENSIONS, np.float32)],
        [np.zeros(10, np.float32), np.zeros(1, np.float32)],
        [np.zeros(DIMENSIONS, np.float32), np.zeros(2, np.float32)],
        [np.zeros(DIMENSIONS, np.float32), np.zeros(1, np.float32), np.zeros(1, np.float32)],
    ],
)
def test_sensitivity_finish_refuses_wrong_shapes(arrays):
    with pytest.raises(TaskError, match=r"sensitivity parameters must be \[\(16384,\), \(1,\)\]"):
        SensitivityTask().finish(arrays, {}, nodes=2)


def test_export_onnx_input_and_output_names():
    rng = np.random.default_rng(0)
    weights = rng.normal(size=DIMENSIONS).astype(np.float32)
    model_bytes = sensitivity.export_onnx(weights, -0.25)
    model = onnx.load_from_string(model_bytes)
    assert [i.name for i in model.graph.input] == ["features"]
    assert [o.name for o in model.graph.output] == ["probability"]
    assert {p.key: p.value for p in model.metadata_props}["edgefleet.featurizer"] == "hashed-ngrams-crc32-16384"
    session = onnxruntime.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    assert inp.name == "features" and inp.shape[1] == DIMENSIONS
    assert [o.name for o in session.get_outputs()] == ["probability"]
    assert sensitivity.check_onnx(model_bytes, weights, -0.25, sensitivity.PROBE_TEXTS) < 1e-5


def test_usage_stats_local_update_divides_by_scale_and_clips(tmp_path):
    hours = [10 * h for h in range(24)]  # up to 230: over 8 x 10 from hour 9 on
    _write_usage(tmp_path, _usage_dict(hours=hours, latency=[5] * 9, cache=(20, 40)))
    update = UsageStatsTask().local_update(tmp_path, UsageStatsTask().initial_arrays({}), {"usage-scale": 10})
    (vector,) = update.arrays
    assert vector.shape == (usage_stats.LENGTH,) == (35,)
    expected = np.minimum(np.array([*hours, *[5] * 9, 20, 40], dtype=np.float64) / 10, 8.0)
    np.testing.assert_array_equal(vector, expected)
    assert update.weight == 1
    assert update.local_metrics["requests"] == float(sum(hours))
    assert update.local_metrics["clipped_values"] == 15.0  # hours 9..23


def test_usage_stats_finish_turns_three_nodes_mean_into_exact_sums(tmp_path):
    rng = np.random.default_rng(7)
    task = UsageStatsTask()
    vectors, totals = [], np.zeros(usage_stats.LENGTH, dtype=np.int64)
    for node in range(3):
        hours = rng.integers(0, 50_000, 24)
        latency = rng.integers(0, 50_000, 9)
        lookups = int(rng.integers(1, 80_000))
        cache = (int(rng.integers(0, lookups)), lookups)
        data_dir = tmp_path / f"node{node}"
        _write_usage(data_dir, _usage_dict(hours=hours.tolist(), latency=latency.tolist(), cache=cache))
        vectors.append(task.local_update(data_dir, task.initial_arrays({}), {}).arrays[0])
        totals += np.array([*hours, *latency, *cache], dtype=np.int64)
    mean = np.mean(vectors, axis=0)
    outcome = task.finish([mean], {}, nodes=3)
    assert outcome["kind"] == "report" and outcome["nodes"] == 3
    assert outcome["requests_per_hour"] == totals[:24].tolist()
    assert outcome["latency_counts"] == totals[24:33].tolist()
    assert outcome["latency_upper_ms"] == [50, 100, 250, 500, 1000, 2500, 5000, 10000, None]
    assert (outcome["cache_hits"], outcome["cache_lookups"]) == (int(totals[33]), int(totals[34]))
    assert outcome["cache_hit_rate"] == pytest.approx(totals[33] / totals[34])


def test_usage_stats_finish_no_lookups_and_wrong_shape():
    task = UsageStatsTask()
    outcome = task.finish([np.zeros(usage_stats.LENGTH)], {}, nodes=4)
    assert outcome["cache_hit_rate"] is None and outcome["requests_per_hour"] == [0] * 24
    with pytest.raises(TaskError, match=r"usage-stats parameters must be \(35,\), got \(34,\)"):
        task.finish([np.zeros(34)], {}, nodes=4)


@pytest.mark.parametrize("scale", [0, -5.0])
def test_usage_stats_refuses_non_positive_scale(tmp_path, scale):
    _write_usage(tmp_path, _usage_dict())
    task = UsageStatsTask()
    with pytest.raises(TaskError, match="usage-scale must be positive"):
        task.local_update(tmp_path, task.initial_arrays({}), {"usage-scale": scale})
    with pytest.raises(TaskError, match="usage-scale must be positive"):
        task.finish([np.zeros(usage_stats.LENGTH)], {"usage-scale": scale}, nodes=3)


# --- superlink guard ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path, client, server, expected",
    [
        ("/v1/fleet/PullMessages", "203.0.113.9", "10.0.0.1", True),
        ("/health", "203.0.113.9", "10.0.0.1", True),
        ("/v1/control/StartRun", "203.0.113.9", "10.0.0.1", False),
        ("/v1/runtime/PullMessages", "203.0.113.9", "10.0.0.1", False),
        ("/v1/control/StartRun", "127.0.0.1", "10.0.0.1", True),
        ("/v1/control/StartRun", "127.8.9.10", "10.0.0.1", True),
        ("/v1/runtime/PushMessages", "::1", "::", True),
        ("/v1/control/StartRun", "10.0.0.1", "10.0.0.1", True),
        ("/v1/control/StartRun", "fd00::5", "fd00::5", True),
        ("/v1/control/StartRun", "testclient", "testclient", False),
        ("/v1/control/StartRun", None, "10.0.0.1", False),
        ("/v1/control/StartRun", "", "10.0.0.1", False),
        ("/v1/control/StartRun", "10.0.0.2", None, False),
    ],
)
def test_superlink_allowed(path, client, server, expected):
    assert superlink.allowed(path, client, server) is expected


def test_is_same_host_refuses_non_ip_client_even_when_it_matches():
    assert superlink.is_same_host("localhost", "localhost") is False
    assert superlink.is_same_host("::1", None) is True
    assert superlink.is_same_host("192.168.1.5", "192.168.1.6") is False


def _call_middleware(scope):
    inner_calls, sent = [], []

    async def inner(scope, receive, send):
        inner_calls.append(scope)
        await send({"type": "http.response.start", "status": 200, "headers": []})

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    asyncio.run(superlink.FleetOnlyFromElsewhere(inner)(scope, receive, send))
    return inner_calls, sent


def _http_scope(path, client, server=("10.0.0.1", 9092)):
    return {"type": "http", "method": "POST", "path": path, "client": client, "server": server, "headers": []}


def test_middleware_refuses_remote_control_with_json_403():
    inner_calls, sent = _call_middleware(_http_scope("/v1/control/StartRun", ("203.0.113.9", 40000)))
    assert inner_calls == []
    start, body = sent
    assert start["type"] == "http.response.start" and start["status"] == 403
    headers = dict(start["headers"])
    assert headers[b"content-type"] == b"application/json"
    assert body["type"] == "http.response.body"
    assert int(headers[b"content-length"]) == len(body["body"])
    assert json.loads(body["body"]) == {"detail": "only the Fleet API is served to other hosts"}


def test_middleware_refuses_control_when_scope_has_no_client():
    scope = _http_scope("/v1/runtime/PullMessages", None)
    inner_calls, sent = _call_middleware(scope)
    assert inner_calls == [] and sent[0]["status"] == 403


def test_middleware_passes_remote_fleet_and_local_control():
    scope = _http_scope("/v1/fleet/PullMessages", ("203.0.113.9", 40000))
    inner_calls, sent = _call_middleware(scope)
    assert inner_calls == [scope] and sent[0]["status"] == 200
    scope = _http_scope("/v1/control/ListRuns", ("127.0.0.1", 40000))
    inner_calls, sent = _call_middleware(scope)
    assert inner_calls == [scope] and sent[0]["status"] == 200


def test_middleware_passes_lifespan_scope_through():
    scope = {"type": "lifespan", "asgi": {"version": "3.0"}}
    inner_calls, _ = _call_middleware(scope)
    assert inner_calls == [scope]


# --- supernode argv -------------------------------------------------------------------------------------


def _flags(argv):
    return {flag: value for flag, value in itertools.pairwise(argv) if flag.startswith("--")}


def test_supernode_command_flower(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    argv = supernode.supernode_command(
        "flower", "central.example:9092", Path("fleet/ca.pem"), Path("fleet/flower.key"), Path("data"), 9094
    )
    assert argv[0] == str(Path(sys.executable).parent / "flower-supernode")
    assert _flags(argv) == {
        "--superlink": "central.example:9092",
        "--root-certificates": "fleet/ca.pem",
        "--auth-supernode-private-key": "fleet/flower.key",
        "--node-config": f"data-dir='{(tmp_path / 'data').resolve()}'",
        "--port": "9094",
        "--host": "127.0.0.1",
    }


def test_supernode_command_fast(tmp_path):
    argv = supernode.supernode_command("fast", "c:9092", tmp_path / "ca.pem", tmp_path / "k", tmp_path / "d" / "..", 0)
    assert argv[:3] == [sys.executable, "-m", "federated.fast_supernode"]
    assert "--port" not in argv and "--host" not in argv
    assert _flags(argv)["--node-config"] == f"data-dir='{tmp_path.resolve()}'"
    assert _flags(argv)["--superlink"] == "c:9092"


def test_supernode_command_refuses_unknown_kind_and_quoted_paths(tmp_path):
    with pytest.raises(ValueError, match=re.escape("federated.supernode must be one of flower, fast, got 'grpc'")):
        supernode.supernode_command("grpc", "c:1", tmp_path, tmp_path, tmp_path, 1)
    for name in ("it's", 'say "hi"'):
        with pytest.raises(ValueError, match="cannot contain quotes"):
            supernode.supernode_command("flower", "c:1", tmp_path, tmp_path, tmp_path / name, 1)


# --- FAB ------------------------------------------------------------------------------------------------


@needs_flwr
def test_fab_holds_only_config_naming_the_flower_apps():
    fab_bytes, sha = fab.build()
    assert sha == hashlib.sha256(fab_bytes).hexdigest()
    archive = zipfile.ZipFile(io.BytesIO(fab_bytes))
    assert sorted(archive.namelist()) == [".info/CONTENT", "pyproject.toml"]
    pyproject_bytes = archive.read("pyproject.toml")
    assert archive.read(".info/CONTENT").decode() == (
        f"pyproject.toml,{hashlib.sha256(pyproject_bytes).hexdigest()},{len(pyproject_bytes) * 8}"
    )
    app = tomllib.loads(pyproject_bytes.decode())["tool"]["flwr"]["app"]
    assert app["components"] == {
        "serverapp": "federated.flower_app:server_app",
        "clientapp": "federated.flower_app:client_app",
    }
    assert app["config"] == fab.DEFAULT_RUN_CONFIG
    from flwr.clientapp import ClientApp
    from flwr.serverapp import ServerApp

    kinds = {"serverapp": ServerApp, "clientapp": ClientApp}
    for component, reference in app["components"].items():
        module, attribute = reference.split(":")
        assert isinstance(getattr(importlib.import_module(module), attribute), kinds[component])


# --- run reports ----------------------------------------------------------------------------------------


def test_run_report_lifecycle(tmp_path):
    results_dir = tmp_path / "results"
    report = results.RunReport(results_dir, 7, {"task": "sensitivity"})
    written = results.read_report(results_dir, 7)
    assert (results_dir / "run-7.json").is_file()
    assert written["status"] == "starting" and written["task"] == "sensitivity" and written["run_id"] == 7
    assert written["rounds"] == [] and written["error"] is None
    report.update(status="running")
    assert results.read_report(results_dir, 7)["status"] == "running"
    report.round_done(1, 1.23456)
    assert results.read_report(results_dir, 7)["rounds"] == [{"round": 1, "seconds": 1.235}]
    report.fail("node 3 went away")
    failed = results.read_report(results_dir, 7)
    assert failed["status"] == "failed" and failed["error"] == "node 3 went away" and "finished_at" in failed
    assert results.read_report(results_dir, 8) is None
    assert [p.name for p in results_dir.iterdir()] == ["run-7.json"]  # no temp files left


def test_run_report_complete_with_onnx_outcome(tmp_path):
    report = results.RunReport(tmp_path, 3, {"task": "sensitivity"})
    arrays = [np.arange(4, dtype=np.float32), np.array([0.5], np.float32)]
    outcome = {"kind": "onnx", "onnx": b"ONNX-BYTES", "weights": arrays[0], "bias": 0.5, "onnx_max_difference": 1e-7}
    report.complete(outcome, arrays, rounds=2, node_errors={12: "boom"})
    state = results.read_report(tmp_path, 3)
    assert state["status"] == "completed"
    assert state["outcome"] == {"kind": "onnx", "onnx_max_difference": 1e-7, "onnx": "run-3.onnx"}
    assert state["node_errors"] == {"12": "boom"}
    assert results.onnx_path(tmp_path, 3).read_bytes() == b"ONNX-BYTES"
    saved = np.load(results.aggregate_path(tmp_path, 3))
    np.testing.assert_array_equal(saved["arr_0"], arrays[0])
    np.testing.assert_array_equal(saved["arr_1"], arrays[1])


def test_run_report_complete_with_report_outcome_writes_no_onnx(tmp_path):
    report = results.RunReport(tmp_path, 4, {"task": "usage-stats"})
    report.complete({"kind": "report", "nodes": 3, "cache_hits": 1}, [np.zeros(35)], rounds=1, node_errors={})
    assert results.read_report(tmp_path, 4)["outcome"] == {"kind": "report", "nodes": 3, "cache_hits": 1}
    assert not results.onnx_path(tmp_path, 4).exists()
    assert results.aggregate_path(tmp_path, 4).exists()


# --- Flower keys ----------------------------------------------------------------------------------------


def _ed25519_openssh() -> bytes:
    return (
        ed25519.Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    )


def test_generate_node_key_is_openssh_p384():
    private, public = generate_node_key()
    assert private.startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----")
    key = serialization.load_ssh_private_key(private, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp384r1"
    assert public.startswith(b"ecdsa-sha2-nistp384 ")
    assert serialization.load_ssh_public_key(public).public_numbers() == key.public_key().public_numbers()


@needs_flwr
def test_public_key_bytes_accepts_p384_and_refuses_others():
    _, public = generate_node_key()
    stored = control.public_key_bytes(public.decode() + "\n")
    from flwr.supercore.primitives.asymmetric import bytes_to_public_key

    assert bytes_to_public_key(stored).public_numbers() == serialization.load_ssh_public_key(public).public_numbers()
    assert control.public_key_bytes(public) == stored
    with pytest.raises(control.FlowerControlError, match="ECDSA key on a NIST curve"):
        control.public_key_bytes(_ed25519_openssh())
    for garbage in (b"garbage", "ecdsa-sha2-nistp384 AAAA!!!", b""):
        with pytest.raises(control.FlowerControlError, match="not an OpenSSH public key"):
            control.public_key_bytes(garbage)


@pytest.mark.parametrize("line", ["not a key", "foo AAAAB3NzaC1yc2E="])
def test_public_key_bytes_refuses_unknown_key_type_with_flower_control_error(line):
    """A line whose first word is no SSH key type: today cryptography's UnsupportedAlgorithm escapes."""
    with pytest.raises(control.FlowerControlError, match="not an OpenSSH public key"):
        control.public_key_bytes(line)


def test_validate_flower_key():
    _, public = generate_node_key()
    federation.validate_flower_key(public.decode())
    federation.validate_flower_key("  " + public.decode() + "\n")
    p256 = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    )
    federation.validate_flower_key(p256.decode())
    with pytest.raises(InvalidArgument, match="must be ECDSA on a NIST curve"):
        federation.validate_flower_key(_ed25519_openssh().decode())
    for garbage in ("garbage", "", "ssh-rsa AAAA"):
        with pytest.raises(InvalidArgument, match="not an OpenSSH public key"):
            federation.validate_flower_key(garbage)


@pytest.mark.parametrize("line", ["not a key", "foo AAAAB3NzaC1yc2E="])
def test_validate_flower_key_refuses_unknown_key_type_as_invalid_argument(line):
    """An enrolling agent's flower_public_key of "not a key": central must refuse it as InvalidArgument (audited
    by enroll); today cryptography's UnsupportedAlgorithm escapes enroll's except clause."""
    with pytest.raises(InvalidArgument, match="not an OpenSSH public key"):
        federation.validate_flower_key(line)


# --- central: run config, status, names -----------------------------------------------------------------


def _request(**fields):
    base = {"task": "sensitivity", "rounds": 3, "min_nodes": 3}
    return federation.RunRequest(**{**base, **fields})


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"task": "nope"}, "unknown task 'nope'; known tasks: sensitivity, usage-stats"),
        ({"rounds": 0}, "--rounds must be between 1 and 1000, got 0"),
        ({"rounds": federation.MAX_ROUNDS + 1}, "--rounds must be between 1 and 1000, got 1001"),
        ({"min_nodes": 1, "secagg": False}, "--min-nodes must be at least 2"),
        ({"min_nodes": 2}, r"SecAgg\+ needs at least 3 nodes"),
        ({"min_nodes": 5, "secagg_shares": 2}, "--secagg-shares must be between 3 and --min-nodes \\(5\\), got 2"),
        ({"min_nodes": 5, "secagg_shares": 6}, "--secagg-shares must be between 3 and --min-nodes \\(5\\), got 6"),
        ({"min_nodes": 2, "secagg_shares": 3}, "--secagg-shares must be between 3 and --min-nodes \\(2\\)"),
        ({"min_nodes": 5, "secagg_threshold": 5}, "--secagg-threshold must be at least 2 and below the shares \\(5\\)"),
        ({"min_nodes": 5, "secagg_shares": 4, "secagg_threshold": 4}, "below the shares \\(4\\), got 4"),
        ({"min_nodes": 5, "secagg_threshold": 1}, "--secagg-threshold must be at least 2"),
        ({"secagg": False, "secagg_shares": 3}, "--secagg-shares and --secagg-threshold need SecAgg"),
        ({"secagg": False, "secagg_threshold": 2}, "--secagg-shares and --secagg-threshold need SecAgg"),
        ({"clip": -1.0}, "--clip and --noise cannot be negative"),
        ({"clip": 1.0, "noise": -0.1}, "--clip and --noise cannot be negative"),
        ({"noise": 0.5}, "--noise needs --clip"),
        ({"stage_timeout_s": -1.0}, "timeouts cannot be negative"),
        ({"wait_nodes_s": -0.5}, "timeouts cannot be negative"),
    ],
)
def test_run_config_refusals(fields, message, tmp_path):
    with pytest.raises(InvalidArgument, match=message):
        federation.run_config(_request(**fields), tmp_path)


def test_run_config_valid_request(tmp_path):
    config = federation.run_config(
        _request(min_nodes=5, secagg_shares=4, secagg_threshold=3, clip=2, noise=0.1, record_received=True),
        tmp_path / "results",
    )
    assert config == {
        "task": "sensitivity",
        "rounds": 3,
        "min-nodes": 5,
        "secagg": True,
        "secagg-shares": 4,
        "secagg-threshold": 3,
        "clip": 2.0,
        "noise": 0.1,
        "results-dir": str(tmp_path / "results"),
        "record-received": True,
    }
    assert isinstance(config["clip"], float)
    assert set(config) <= set(fab.DEFAULT_RUN_CONFIG)
    timed = federation.run_config(
        _request(task="usage-stats", min_nodes=2, secagg=False, rounds=1000, stage_timeout_s=30, wait_nodes_s=5),
        tmp_path,
    )
    assert timed["timeout-s"] == 30.0 and timed["wait-nodes-s"] == 5.0
    assert timed["secagg"] is False and timed["rounds"] == 1000
    assert set(timed) <= set(fab.DEFAULT_RUN_CONFIG)


@pytest.mark.parametrize(
    "flower, sub, details, report, expected",
    [
        ("running", "", "", {"status": "completed"}, ("completed", "")),
        ("finished", "failed", "x", {"status": "completed"}, ("completed", "")),
        ("running", "", "", {"status": "failed", "error": "round 2: no nodes"}, ("failed", "round 2: no nodes")),
        ("running", "", "", {"status": "failed"}, ("failed", "the run failed")),
        ("finished", "completed", "", None, ("failed", "the ServerApp finished without writing its outcome")),
        (
            "finished",
            "completed",
            "",
            {"status": "running"},
            ("failed", "the ServerApp finished without writing its outcome"),
        ),
        ("finished", "failed", "ServerApp exited with code 1", None, ("failed", "ServerApp exited with code 1")),
        ("finished", "stopped", "", {"status": "running"}, ("failed", "the run stopped")),
        ("finished", "", "", None, ("failed", "the run stopped")),
        ("running", "", "", {"status": "waiting-for-nodes"}, ("waiting-for-nodes", "")),
        ("running", "", "", {"status": "running"}, ("running", "")),
        ("starting", "", "", {"status": "starting"}, ("pending", "")),
        ("pending", "", "", None, ("pending", "")),
    ],
)
def test_run_status(flower, sub, details, report, expected):
    assert federation.run_status(flower, sub, details, report) == expected


def test_last_line():
    trace = 'Traceback (most recent call last):\n  File "x.py", line 1\n    boom()\nTaskError: no examples  \n\n'
    assert federation.last_line(trace) == "TaskError: no examples"
    assert federation.last_line("") == "unknown error"
    assert federation.last_line(" \n\t\n") == "unknown error"
    assert federation.last_line("x" * 600) == "x" * 500


def test_superlink_names_wildcard_adds_fqdn(monkeypatch):
    monkeypatch.setattr(federation.socket, "getfqdn", lambda: "central-box.example.org")
    for listen in ("0.0.0.0", "::", ""):
        assert federation.superlink_names(listen, "") == [
            "central.edgefleet",
            "localhost",
            "127.0.0.1",
            "::1",
            "central-box.example.org",
        ]
    names = federation.superlink_names("0.0.0.0", "fl.example.org")
    assert names[:4] == ["central.edgefleet", "localhost", "127.0.0.1", "::1"]
    assert "fl.example.org" in names and names[-1] == "central-box.example.org"


def test_superlink_names_concrete_host_once():
    names = federation.superlink_names("10.1.2.3", "10.1.2.3")
    assert names == ["central.edgefleet", "localhost", "127.0.0.1", "::1", "10.1.2.3"]
    assert federation.superlink_names("10.1.2.3", "fl.example.org") == [
        "central.edgefleet",
        "localhost",
        "127.0.0.1",
        "::1",
        "fl.example.org",
        "10.1.2.3",
    ]
    assert federation.superlink_names("127.0.0.1", "central.edgefleet") == [
        "central.edgefleet",
        "localhost",
        "127.0.0.1",
        "::1",
    ]


# --- PKI: server certificate names ----------------------------------------------------------------------


def test_server_certificate_extra_names_become_dns_and_ip_sans():
    ca_key, ca = pki.create_ca()
    key = pki.generate_key()
    cert = pki.issue_server_certificate(
        ca_key,
        ca,
        key.public_key(),
        extra_names=["central.edgefleet", "localhost", "127.0.0.1", "::1", "fl.example.org", "10.1.2.3"],
    )
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    dns = san.get_values_for_type(x509.DNSName)
    assert dns == ["central.edgefleet", "localhost", "fl.example.org"]
    assert dns.count("central.edgefleet") == 1
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
        ipaddress.ip_address("10.1.2.3"),
    ]
    assert all(isinstance(name, (x509.DNSName, x509.IPAddress)) for name in san)
    plain = pki.issue_server_certificate(ca_key, ca, key.public_key())
    assert plain.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName
    ) == ["central.edgefleet"]


# --- agent config: [federated] --------------------------------------------------------------------------


def test_federated_table_parses(tmp_path):
    path = tmp_path / "agent.toml"
    path.write_text('[federated]\nenabled = true\nsupernode = "fast"\nclientappio_port = 9094\n')
    config = load_config(path)
    assert (config.federated.enabled, config.federated.supernode, config.federated.clientappio_port) == (
        True,
        "fast",
        9094,
    )
    defaults = load_config(None).federated
    assert (defaults.enabled, defaults.supernode, defaults.clientappio_port) == (False, "fast", 0)


@pytest.mark.parametrize(
    "table, message",
    [
        ({"supernode": "grpc"}, "federated.supernode: expected 'flower' or 'fast', got 'grpc'"),
        ({"clientappio_port": 70000}, "federated.clientappio_port: expected 0..65535, got 70000"),
        ({"clientappio_port": -1}, "federated.clientappio_port: expected 0..65535"),
        ({"enabled": "yes"}, "federated.enabled: expected bool, got str 'yes'"),
        ({"clientappio_port": True}, "federated.clientappio_port: expected int, got a boolean"),
        ({"port": 1}, "federated.port: unknown key"),
    ],
)
def test_federated_table_bad_values_name_the_key(table, message):
    with pytest.raises(ConfigError, match=message):
        parse_config({"federated": table})


def test_key_actions_register_new_and_lost_keys_and_unregister_revoked_ones():
    """After a SuperLink restart (state in memory) it knows no key: every unrevoked key is registered again."""
    from central.federation import REGISTER, UNREGISTER, key_actions
    from central.store import FlowerKeyRecord

    new = FlowerKeyRecord("node-new", "ecdsa-sha2-nistp384 AAAA", 0, False, False)
    known = FlowerKeyRecord("node-known", "ecdsa-sha2-nistp384 BBBB", 11, False, False)
    lost = FlowerKeyRecord("node-lost", "ecdsa-sha2-nistp384 CCCC", 12, False, False)
    revoked = FlowerKeyRecord("node-revoked", "ecdsa-sha2-nistp384 DDDD", 13, True, False)
    done = FlowerKeyRecord("node-done", "ecdsa-sha2-nistp384 EEEE", 14, True, True)
    revoked_never_registered = FlowerKeyRecord("node-never", "ecdsa-sha2-nistp384 FFFF", 0, True, False)
    registered = {11: "online", 13: "online", 14: "unregistered"}
    actions = key_actions([new, known, lost, revoked, done, revoked_never_registered], registered)
    assert [(a, k.node_id) for a, k in actions] == [
        (REGISTER, "node-new"),
        (REGISTER, "node-lost"),
        (UNREGISTER, "node-revoked"),
    ]
    # A key the SuperLink lists as unregistered (not revoked here) is registered again too.
    assert key_actions([known], {11: "unregistered"}) == [(REGISTER, known)]


def test_run_status_of_a_run_the_restarted_superlink_lost():
    from central.federation import COMPLETED, FAILED, run_status

    assert run_status("", "", "", {"status": "running"}, lost=True)[0] == FAILED
    assert "restarted during the run" in run_status("", "", "", None, lost=True)[1]
    # A report that already says completed stands: the outcome was written before the restart.
    assert run_status("", "", "", {"status": "completed"}, lost=True) == (COMPLETED, "")


@needs_flwr
def test_fast_supernode_polls_fast_only_while_a_run_is_under_way():
    from federated.fast_supernode import poll_delay

    assert poll_delay(0.0, 0.2, 3.0, 60.0) == 0.2
    assert poll_delay(59.9, 0.2, 3.0, 60.0) == 0.2
    assert poll_delay(60.0, 0.2, 3.0, 60.0) == 3.0
    assert poll_delay(float("inf"), 0.2, 3.0, 60.0) == 3.0  # never handled a message: at rest


@needs_flwr
@pytest.mark.parametrize("flag", ["--poll-interval", "--idle-poll-interval", "--active-window"])
def test_fast_supernode_refuses_a_non_positive_interval(flag, capsys):
    from federated.fast_supernode import parse_args

    with pytest.raises(SystemExit):
        parse_args(["--superlink", "h:1", "--root-certificates", "ca", "--auth-supernode-private-key", "k", flag, "0"])
    assert f"{flag} must be positive" in capsys.readouterr().err


def _featurize_by_definition(text: str) -> np.ndarray:
    """The sensitivity features as defined: every feature string hashed with zlib.crc32, one at a time."""
    import zlib

    vector = np.zeros(DIMENSIONS, dtype=np.float32)
    lowered = text.lower()
    words = re.findall(r"\w+", lowered)
    padded = f" {lowered} "
    features = [f"w:{w}" for w in words] + [f"b:{a} {b}" for a, b in itertools.pairwise(words)]
    features += [f"c:{padded[i : i + 3]}" for i in range(len(padded) - 2)]
    for feature in features:
        vector[zlib.crc32(feature.encode("utf-8")) & (DIMENSIONS - 1)] += 1.0
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm else vector


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300) | st.text(alphabet=st.characters(max_codepoint=127), max_size=300))
def test_the_fast_featurizer_hashes_exactly_as_the_definition(text):
    fast = featurize.featurize(text)
    assert fast.dtype == np.float32
    assert np.array_equal(fast, _featurize_by_definition(text))


@pytest.mark.parametrize(
    "text",
    [
        "",
        "A",
        "my card 4111 1111 1111 1111",
        "naïve café, straße, 日本語",
        "x" * 4000,
        "tab\there\nnewline  double  space",
    ],
)
def test_the_fast_featurizer_on_edge_cases(text):
    assert np.array_equal(featurize.featurize(text), _featurize_by_definition(text))
