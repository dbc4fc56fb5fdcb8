"""KV cells as one pool per executor: how many a set of slots holds, with shared prefixes once.

llama.cpp's unified KV cache stores a cell once however many sequences use it: a prefix copied
with ``llama_memory_seq_cp`` costs no new cells, and a cell lives as long as one sequence uses
it. Here a cell is named by where it was written: (origin, position), where a slot takes a new
origin whenever it starts writing after an edit of its cache. A slot's cells are a list of
segments [origin, start, end); a copy takes the donor's segments up to its length. Segments of
one origin all start where that origin began, so the pool's use is, over origins, the furthest
end any slot still holds minus that start.

A context shift drops a slot's cells [keep, keep + n_discard) and moves the ones after down to
position ``keep``: the moved cells must be the slot's alone (a cell has one position, whatever
sequences share it), so they take a new origin at their new positions.

Every change of a slot's cached tokens goes through this module so the segments stay exact.
"""

from __future__ import annotations

from scheduler.slots import Slot, new_origin

# The id booked for a token whose id is not known yet: a draft model's token (drafted in the
# executor) or the token a running step samples, fed by the step planned behind it.
UNNAMED = -1


def cells_used(slots: list[Slot], truncated: dict[Slot, int] | None = None) -> int:
    """Cells the slots hold; ``truncated`` counts some slots as if cut to that many tokens."""
    start: dict[int, int] = {}
    end: dict[int, int] = {}
    for slot in slots:
        segments = slot.segments if truncated is None or slot not in truncated else _clip(slot.segments, truncated[slot])
        for origin, first, last in segments:
            start[origin] = first
            end[origin] = max(end.get(origin, 0), last)
    return sum(end[o] - start[o] for o in end)


def append(slot: Slot, tokens: list[int]) -> None:
    """``slot`` writes ``tokens`` into new cells after the ones it holds."""
    n = len(slot.tokens)
    slot.tokens.extend(tokens)
    slot.writes += 1
    last = slot.segments[-1] if slot.segments else None
    if last is not None and last[0] == slot.origin and last[2] == n:
        last[2] = n + len(tokens)
    else:
        slot.segments.append([slot.origin, n, n + len(tokens)])


def copy_prefix(slot: Slot, donor: Slot, n: int) -> None:
    """``slot`` (empty) now holds the first ``n`` cells of ``donor``, shared with it."""
    slot.tokens = donor.tokens[:n]
    slot.segments = _clip(donor.segments, n)
    slot.writes = donor.writes
    slot.origin = new_origin()
    slot.shift_keep = donor.shift_keep if 0 <= donor.shift_keep < n else -1


def truncate(slot: Slot, n: int) -> None:
    """``slot`` keeps its first ``n`` tokens (0: cleared); cells other slots share live on."""
    if n >= len(slot.tokens):
        return
    del slot.tokens[n:]
    slot.segments = _clip(slot.segments, n)
    if n == 0:
        slot.writes = 0
    slot.origin = new_origin()  # what it writes next is not the cells it gave up
    if n <= slot.shift_keep:
        slot.shift_keep = -1  # what is left was computed as it stands


def shift(slot: Slot, keep: int, n_discard: int) -> None:
    """``slot`` drops its tokens [keep, keep + n_discard) and the ones after move down to
    ``keep`` (their cells must be the slot's alone: see ``shared_end``)."""
    tail = slot.tokens[keep + n_discard :]
    truncate(slot, keep)
    append(slot, tail)
    slot.shift_keep = keep if slot.shift_keep < 0 else min(keep, slot.shift_keep)


def name_tokens(slot: Slot, start: int, tokens: list[int]) -> None:
    """The cells from ``start`` on hold these tokens (booked as UNNAMED before their ids were known)."""
    slot.tokens[start : start + len(tokens)] = tokens


def shared_end(slot: Slot, other: Slot) -> int:
    """The position after the last of ``slot``'s cells that ``other`` holds too (0: none)."""
    mine = {origin: last for origin, _, last in slot.segments}
    return max((min(last, mine[origin]) for origin, _, last in other.segments if origin in mine), default=0)


def _clip(segments: list[list[int]], n: int) -> list[list[int]]:
    return [[origin, first, min(last, n)] for origin, first, last in segments if first < n]
