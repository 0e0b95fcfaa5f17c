"""The FAB central hands the SuperLink (federated.fab), and the run reports the ServerApp writes
(federated.results)."""

import hashlib
import importlib
import importlib.util
import io
import zipfile

import numpy as np
import pytest

from federated import fab, results

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib


# flwr 1.42 installs on Python 3.11+ only; on 3.10 (JetPack 6) federated learning is off and these cannot run.
needs_flwr = pytest.mark.skipif(
    importlib.util.find_spec("flwr") is None, reason="flwr 1.42 needs Python 3.11+; federated learning is off here"
)


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
