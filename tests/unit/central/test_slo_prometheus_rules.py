"""`edgefleet slo rules`: its output for the example objective is the shipped packaging/prometheus file, it refuses
what PromQL cannot judge exactly, and promtool (Debian's prometheus package) accepts the shipped rules and proves
the page fires on a fast burn and not on a slow one (edgefleet-slo-example.test.yml).

promtool absent: the promtool tests skip with the reason, and fail under CI=true.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from contextlib import redirect_stdout
from pathlib import Path
from types import SimpleNamespace

import pytest

from central import slo, slo_commands, slo_rules
from central.client import AdminCallError
from central.convert import duration
from edgefleet.v1 import admin_pb2

ROOT = Path(__file__).resolve().parents[3]
PROMETHEUS = ROOT / "packaging" / "prometheus"
EXAMPLE = admin_pb2.Objective(
    name="eu-latency",
    selector={"region": "eu"},
    availability_percent=99.9,
    latency_threshold_ms=2000,
    latency_percent=99,
    window=duration(30 * 86400),
)


class FakeAdminClient:
    """A fake of central.client.AdminClient that answers ListObjectives with the objectives given (the real
    client over mTLS is in tests/integration/test_slo_cli.py)."""

    def __init__(self, *objectives: admin_pb2.Objective):
        self.objectives = objectives

    def call(self, method: str, request):
        assert method == "ListObjectives"
        return admin_pb2.ListObjectivesResponse(
            objectives=self.objectives, statuses=[admin_pb2.ObjectiveStatus() for _ in self.objectives]
        )


def _rules(*objectives, rollup_labels=("region", "site"), out=None) -> str:
    printed = io.StringIO()
    with redirect_stdout(printed):
        assert (
            slo_commands.HANDLERS[("slo", "rules")](
                FakeAdminClient(*objectives), SimpleNamespace(out=out, rollup_labels=rollup_labels)
            )
            == 0
        )
    return printed.getvalue()


def test_slo_rules_for_the_example_objective_is_the_shipped_file():
    assert _rules(EXAMPLE) == (PROMETHEUS / "edgefleet-slo-example.yml").read_text()


def test_slo_rules_writes_the_file_with_out(tmp_path):
    out = tmp_path / "rules" / "edgefleet-slo.yml"
    assert "wrote rules for 1 objective(s)" in _rules(EXAMPLE, out=out)
    assert out.read_text() == (PROMETHEUS / "edgefleet-slo-example.yml").read_text()


def test_no_objectives_give_an_empty_but_valid_file():
    assert _rules().endswith("groups: []\n")


def test_a_threshold_between_bounds_is_refused_naming_the_bounds_either_side(tmp_path):
    odd = admin_pb2.Objective()
    odd.CopyFrom(EXAMPLE)
    odd.name, odd.latency_threshold_ms = "odd", 1800
    out = tmp_path / "x.yml"
    with pytest.raises(AdminCallError) as refused:
        _rules(EXAMPLE, odd, out=out)
    assert refused.value.exit_code == 2
    assert "objective odd's latency threshold 1800 ms is not a bucket bound" in str(refused.value)
    assert "set it to 1500 or 2000 ms" in str(refused.value)
    assert not out.exists()  # nothing written, not even the good objective


def test_a_selector_key_central_does_not_export_is_refused():
    rack = slo.Objective("rack", {"rack": "r1"}, 99.0)
    with pytest.raises(slo_rules.RulesError, match="selects on rack, which central's metrics do not carry"):
        slo_rules.rules_yaml([rack])
    assert 'rack="r1"' in slo_rules.rules_yaml([rack], rollup_labels=("rack",))


def test_the_set_command_notes_a_threshold_that_is_not_a_bound():
    assert slo_commands.bound_note(2000) == ""
    assert slo_commands.bound_note(0) == ""
    assert "1500 or 2000 ms would be exact" in slo_commands.bound_note(1800)
    assert "120000 ms would be exact" in slo_commands.bound_note(200_000)


def test_an_availability_only_objective_has_no_latency_rules():
    text = slo_rules.rules_yaml([slo.Objective("avail", {}, 99.5)])
    assert "slo_slow_ratio" not in text and "sli: latency" not in text
    assert "sum(rate(edgefleet_fleet_request_errors_total[5m]))" in text  # no selector: no matchers
    assert text.count("- alert: ") == 2


# -- promtool ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool") or ("/usr/bin/promtool" if Path("/usr/bin/promtool").exists() else None)
    if found is None:
        reason = "promtool is not installed (Debian's prometheus package; `make system-packages`)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return found


@pytest.mark.parametrize("name", ["edgefleet-recording.yml", "edgefleet-slo-example.yml"])
def test_promtool_checks_the_shipped_rules(promtool, name):
    done = subprocess.run([promtool, "check", "rules", name], cwd=PROMETHEUS, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_promtool_proves_the_page_fires_on_a_fast_burn_and_not_on_a_slow_one(promtool):
    done = subprocess.run(
        [promtool, "test", "rules", "edgefleet-slo-example.test.yml"],
        cwd=PROMETHEUS,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_promtool_fails_the_rules_test_when_a_slow_burn_would_page(promtool, tmp_path):
    """The rules test has teeth: the same file with the slow case burning ten times faster fails."""
    for name in ("edgefleet-slo-example.yml", "edgefleet-slo-example.test.yml"):
        shutil.copy(PROMETHEUS / name, tmp_path / name)
    test = tmp_path / "edgefleet-slo-example.test.yml"
    text = test.read_text()
    assert text.count("values: '0+2x360'") == 1
    test.write_text(text.replace("values: '0+2x360'", "values: '0+20x360'"))
    done = subprocess.run([promtool, "test", "rules", test.name], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode != 0
    assert "EdgefleetSLOBurnFast" in done.stdout + done.stderr


def test_selector_keys_are_matched_under_the_label_names_central_exports():
    # central.fleet_metrics.label_names: "-" and "." become "_", a reserved name gets "label_".
    text = slo_rules.rules_yaml(
        [slo.Objective("dc", {"data-center": "fra1", "model": "m"}, 99.0)], rollup_labels=("data-center", "model")
    )
    assert 'edgefleet_fleet_requests_total{data_center="fra1",label_model="m"}[5m]' in text
