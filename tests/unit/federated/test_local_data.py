"""federated.local_data: a node's labeled examples (examples.jsonl) and usage figures (usage.json), and the
usage counters that write them."""

import json
import re
import stat
from pathlib import Path

import pytest

from federated import local_data
from federated.tasks import TaskError


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
