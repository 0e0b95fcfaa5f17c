"""Pure logic of issue 16's least privilege on reports: spool epochs' numbering, pruning by count and bytes,
routing pairs folded past a node's bound, and which artifact a node may fetch."""

import pytest

from central import reports, routing
from central.services.fleet import is_sha256, may_fetch
from central.store import NodeRecord

# -- spool epochs (central.reports.next_base) ----------------------------------------------------------------


def test_no_epoch_or_the_held_one_changes_nothing():
    assert reports.next_base("", 0, 50, "", 1) == (0, False), "an agent from before epochs"
    assert reports.next_base("e1", 30, 50, "e1", 1) == (30, False)
    assert reports.next_base("e1", 30, 50, "", 1) == (30, False), "a downgraded agent keeps the numbering"


def test_a_new_epoch_restarts_the_numbering_after_what_is_held():
    assert reports.next_base("e1", 0, 50, "e2", 1) == (50, True)
    assert reports.next_base("e2", 50, 80, "e3", 1) == (80, True)


def test_a_first_epoch_continuing_the_numbering_is_an_upgrade_not_a_restart():
    assert reports.next_base("", 0, 50, "e1", 51) == (0, False)
    assert reports.next_base("", 0, 50, "e1", 1) == (50, True), "a spool rebuilt by an upgraded agent"
    assert reports.next_base("", 0, 0, "e1", 1) == (0, False), "a new node"


def test_the_restart_is_told_with_both_epochs():
    assert reports.restart_detail("n1", "e1", "e2") == (
        "node n1's spool restarted (epoch e2, was e1): its reports are numbered after those held"
    )
    assert "was" not in reports.restart_detail("n1", "", "e2")


# -- pruning (central.reports.prune_through) -------------------------------------------------------------------


@pytest.mark.parametrize(
    "sizes, keep, keep_bytes, through",
    [
        ([(5, 10), (4, 10), (3, 10)], 3, 100, None),
        ([(5, 10), (4, 10), (3, 10)], 2, 100, 3),
        ([(5, 10), (4, 10), (3, 10)], 10, 20, 3),
        ([(5, 10), (4, 10), (3, 10)], 10, 19, 4),
        ([(5, 500)], 10, 20, None),  # the newest always stays
        ([], 10, 20, None),
    ],
)
def test_prune_keeps_the_newest_within_count_and_bytes(sizes, keep, keep_bytes, through):
    assert reports.prune_through(sizes, keep, keep_bytes) == through


# -- routing pairs per node (central.routing.fold) -------------------------------------------------------------


def test_fold_keeps_held_pairs_and_new_ones_while_there_is_room():
    held = {("a", "local")}
    assert routing.fold(held, {("a", "local"): 2, ("b", "local"): 3}, cap=3) == {("a", "local"): 2, ("b", "local"): 3}


def test_fold_sends_new_pairs_past_the_bound_to_the_overflow_pair():
    held = {("a", "local"), ("b", "local")}
    folded = routing.fold(held, {("a", "local"): 1, ("c", "local"): 4, ("d", "local"): 5}, cap=3)
    assert folded == {("a", "local"): 1, routing.OVERFLOW: 9}
    assert sum(folded.values()) == 10, "every request counted once"


def test_fold_takes_new_pairs_in_sorted_order_and_counts_the_overflow_pair_in_the_bound():
    assert routing.fold(set(), {("z", "r"): 1, ("a", "r"): 1, ("m", "r"): 1}, cap=3) == {
        ("a", "r"): 1,
        ("m", "r"): 1,
        routing.OVERFLOW: 1,
    }
    assert routing.fold({routing.OVERFLOW}, {routing.OVERFLOW: 2}, cap=1) == {routing.OVERFLOW: 2}


# -- artifacts (central.services.fleet.may_fetch) --------------------------------------------------------------


def _node(desired_sha256=""):
    desired = {"name": "m", "version": "1", "sha256": desired_sha256} if desired_sha256 else {}
    return NodeRecord("n1", {}, "box", 1.0, "t", "ff", 2.0, desired_model=desired)


def test_a_node_may_fetch_only_the_model_it_is_assigned():
    assert may_fetch(_node("a" * 64), "a" * 64)
    assert not may_fetch(_node("a" * 64), "b" * 64)
    assert not may_fetch(_node(), "a" * 64), "nothing assigned, nothing to fetch"
    assert not may_fetch(_node(), "")


def test_a_digest_is_64_lowercase_hex_digits():
    assert is_sha256("0123456789abcdef" * 4)
    assert not is_sha256("A" * 64) and not is_sha256("a" * 63) and not is_sha256("../" + "a" * 61)
