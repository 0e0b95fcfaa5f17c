"""An agent asks central how far it holds its spool with an empty report (edge_agent.control.spool.rewind): central's
answer in the agent's numbering, 0 when the spool it holds is another epoch's. A real data dir and store (SQLite,
and PostgreSQL when one is reachable), the node's caller as the TLS layer builds it."""

from __future__ import annotations

import pytest

from central.services import fleet
from central.services.base import Caller, CentralSettings
from central.store import ReportRecord
from central_handlers import STORES, central_with_callers, enroll
from edgefleet import pki

T0 = 1_900_000_000.0
NODE = "n-probe"


@pytest.fixture(params=STORES)
def setup(request, tmp_path):
    for central, _admin, _viewer in central_with_callers(tmp_path, request.param, CentralSettings(), T0):
        enroll(central, NODE, {})
        yield central, Caller(pki.Identity("node", NODE), "test", "ff")  # "ff": the serial enroll() records


def _reports(*sequences: int) -> list[ReportRecord]:
    return [ReportRecord(s, T0 - 60 + s, "event", b"") for s in sequences]


def test_an_empty_report_answers_how_far_central_holds_the_spool(setup):
    central, node = setup
    assert fleet.report(central, node, NODE, [], 0, spool_epoch="e1") == 0, "nothing held yet"
    assert fleet.report(central, node, NODE, _reports(1, 2, 3), 0, spool_epoch="e1") == 3
    assert fleet.report(central, node, NODE, [], 0, spool_epoch="e1") == 3
    assert central.store.recent_reports(NODE, 10)[-1].sequence == 3, "the question stored nothing"


def test_an_empty_report_from_another_spool_epoch_is_told_none_of_it_is_held(setup):
    central, node = setup
    fleet.report(central, node, NODE, _reports(1, 2, 3), 0, spool_epoch="e1")
    assert fleet.report(central, node, NODE, [], 0, spool_epoch="e2") == 0
    assert fleet.report(central, node, NODE, [], 2, spool_epoch="e2") == 0, "with drops to report: they count"
    assert central.store.get_node(NODE).dropped_reports == 2
    # That spool's reports, sent again from 1, are kept after those held (a spool restart), as before.
    assert fleet.report(central, node, NODE, _reports(1, 2), 0, spool_epoch="e2") == 2
    assert [r.sequence for r in central.store.recent_reports(NODE, 10)] == [1, 2, 3, 4, 5]


def test_a_node_whose_reports_came_before_epochs_is_answered_in_its_one_numbering(setup):
    central, node = setup
    fleet.report(central, node, NODE, _reports(1, 2, 3, 4), 0)  # an agent from before spool epochs
    assert fleet.report(central, node, NODE, [], 0, spool_epoch="e1") == 4
