"""The two learning tasks (federated.tasks): sensitivity, a federated logistic regression exported to ONNX, and
usage-stats, fleet sums through SecAgg+."""

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest

from edgefleet import featurize
from edgefleet.featurize import DIMENSIONS
from federated import local_data
from federated.tasks import TaskError, get_task, sensitivity, task_names, usage_stats
from federated.tasks.sensitivity import SensitivityTask
from federated.tasks.usage_stats import UsageStatsTask

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


# --- tasks ----------------------------------------------------------------------------------------------


def test_get_task_unknown_name_lists_known_tasks():
    with pytest.raises(TaskError, match=r"unknown task 'nope'; known tasks: sensitivity, usage-stats"):
        get_task("nope")
    assert task_names() == ["sensitivity", "usage-stats"]
    assert isinstance(get_task("sensitivity"), SensitivityTask)
    assert isinstance(get_task("usage-stats"), UsageStatsTask)


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
