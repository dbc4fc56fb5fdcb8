"""Token-list helpers shared by the scheduler (prefix cache) and the executor (draft model)."""

from __future__ import annotations


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
