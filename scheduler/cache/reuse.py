"""KV cache reuse by shifting (llama-server's ``n_cache_reuse`` / ``--cache-reuse N``).

After the prefix a new prompt shares with a slot's cache, llama-server looks for chunks of at
least N tokens of the cache that appear next in the prompt, and moves their KV down to where
the prompt has them instead of evaluating them again: a prompt that lost or changed a passage
in the middle (an edited file, a trimmed chat) reuses what follows the change. The moved cells
were computed beside tokens the new prompt does not have, so this is an approximation the
client asks for; such a slot is a prefix only up to its first cut afterwards (``Slot.shift_keep``).

Here each move is a cut: drop ``n`` cached tokens at ``pos`` and move all after them down
(``KvOpKind.SHIFT``), so after the cuts the cache starts with the reused tokens in prompt order.
"""

from __future__ import annotations


def chunk_cuts(cached: list[int], prompt: list[int], n_past: int, first: int,
               min_chunk: int) -> tuple[list[tuple[int, int]], int]:
    """The cuts (pos, n) that line up chunks of at least ``min_chunk`` tokens of ``cached`` with
    ``prompt`` after their common prefix ``n_past``, in the order they apply, and how many leading
    prompt tokens the cache then holds (a chunk already in place needs no cut: past a slot's
    ``shift_keep`` the shared prefix is not counted in ``n_past``). Only cached tokens from
    ``first`` on may move (the cells before it are shared with other sequences: a cell has one
    position)."""
    cuts: list[tuple[int, int]] = []
    head_p = n_past  # prompt tokens lined up so far
    c = last = max(n_past, first)  # position in ``cached``; ``last``: after the last token kept
    if last > n_past:
        cuts.append((n_past, last - n_past))  # the shared cells before ``first`` are dropped, not moved
    while c < len(cached) and head_p < len(prompt):
        n = _match(cached, c, prompt, head_p)
        if n >= min_chunk:
            if c > last:
                cuts.append((head_p, c - last))
            head_p += n
            c = last = c + n
        else:
            c += 1
    if head_p == n_past:
        return [], n_past
    return _merged(cuts), head_p


def _match(a: list[int], i: int, b: list[int], j: int) -> int:
    n = 0
    while i + n < len(a) and j + n < len(b) and a[i + n] == b[j + n]:
        n += 1
    return n


def _merged(cuts: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Consecutive cuts at one position (a dropped shared range, then a gap) as one."""
    out: list[tuple[int, int]] = []
    for pos, n in cuts:
        if out and out[-1][0] == pos:
            out[-1] = (pos, out[-1][1] + n)
        else:
            out.append((pos, n))
    return out
