from edge_agent.engines.prefix import common_prefix_len, pick_slot, reusable_prefix


def test_common_prefix():
    assert common_prefix_len([1, 2, 3], [1, 2, 4]) == 2
    assert common_prefix_len([], [1]) == 0
    assert common_prefix_len([1, 2], [1, 2, 3]) == 2


def test_at_least_one_prompt_token_is_decoded_again():
    assert reusable_prefix([1, 2, 3, 9, 9], [1, 2, 3]) == 2
    assert reusable_prefix([1, 2, 3], [1, 2, 3, 4]) == 3
    assert reusable_prefix([5], [1]) == 0


def test_slot_with_the_longest_shared_prefix_wins():
    cached = {0: [1, 2], 1: [1, 2, 3, 4], 2: [7]}
    assert pick_slot([0, 1, 2], cached, [1, 2, 3, 4, 5]) == 1


def test_without_a_shared_prefix_the_emptiest_slot_is_taken():
    cached = {0: [1, 2, 3], 1: [], 2: [4, 5]}
    assert pick_slot([0, 1, 2], cached, [9, 9]) == 1
    assert pick_slot([0, 2], cached, [9, 9]) == 2
