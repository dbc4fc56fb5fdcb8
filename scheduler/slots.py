"""Slots: the sequences of an executor's KV cache, and what each one holds."""

from __future__ import annotations

from dataclasses import dataclass, field

from scheduler.request import Request


@dataclass(eq=False)
class Slot:
    executor_id: int
    seq_id: int
    request: Request | None = None
    last_request: Request | None = None  # the running request, else the one that ran last (for /slots)
    # Tokens whose KV this sequence holds, from position 0. Kept after the request ends: that is
    # the prefix cache.
    tokens: list[int] = field(default_factory=list)
    last_used: float = 0.0
    # Lowest position still in the cache for this sequence (llama_memory_seq_pos_min), -1 empty.
    pos_min: int = -1

    @property
    def busy(self) -> bool:
        return self.request is not None


def common_prefix_len(a: list[int], b: list[int]) -> int:
    """Length of the longest common prefix, by binary search over C-speed slice comparisons."""
    hi = min(len(a), len(b))
    if a[:hi] == b[:hi]:
        return hi
    lo = 0  # a[:lo] == b[:lo] holds, a[:hi] == b[:hi] does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid
    return lo


def distinct_prefix_tokens(sequences: list[list[int]]) -> int:
    """Tokens of ``sequences`` with every shared prefix counted once (the nodes of their prefix
    tree): the KV cells they need when shared prefixes are copied, not recomputed. In sorted
    order, what a sequence shares with all before it is what it shares with its predecessor."""
    ordered = sorted(sequences)
    shared = sum(common_prefix_len(a, b) for a, b in zip(ordered, ordered[1:]))
    return sum(len(s) for s in ordered) - shared
