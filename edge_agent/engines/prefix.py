"""Prompt-prefix reuse across requests in the same sequence slot: pure decisions.

A finished sequence leaves its tokens in the slot's KV cells. A new prompt
that starts with the same tokens (a shared system prompt, a repeated
instruction, a conversation that grew by one turn) keeps those cells and
only the rest is decoded, as llama.cpp's own server does with its prompt cache.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def common_prefix_len(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def reusable_prefix(cached: Sequence[int], prompt: Sequence[int]) -> int:
    """Tokens of ``prompt`` whose KV cells can be kept. At least one prompt
    token is always decoded again: its logits give the first new token."""
    return min(common_prefix_len(cached, prompt), max(len(prompt) - 1, 0))


def pick_slot(free_slots: Sequence[int], cached: Mapping[int, Sequence[int]], prompt: Sequence[int]) -> int:
    """The free slot sharing the longest prefix with ``prompt``; with no
    shared prefix, the emptiest slot, so useful caches are kept longest."""
    best = max(free_slots, key=lambda s: (reusable_prefix(cached.get(s, ()), prompt), -len(cached.get(s, ()))))
    return best
