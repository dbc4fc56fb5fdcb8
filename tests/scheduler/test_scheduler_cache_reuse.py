"""n_cache_reuse in the scheduler: chunks of a slot's cache past a change in the prompt are moved
into place (KvOpKind.SHIFT) instead of evaluated again; driven by the fake executor, which
refuses to move a cell another sequence holds."""

from __future__ import annotations

from test_scheduler_context_shift import run_checked, shifts
from test_scheduler_policy import Harness, prompt

from scheduler.cache.reuse import chunk_cuts

A, B, C, D = prompt(20, 100), prompt(10, 300), prompt(20, 500), prompt(5, 700)


def test_chunks_past_the_shared_prefix_line_up_with_the_prompt() -> None:
    assert chunk_cuts(A + B + C, A + C + D, 20, 0, 8) == ([(20, 10)], 40)  # B dropped, C moved down
    assert chunk_cuts(A + B + C, A + C[:6] + D, 20, 0, 8) == ([], 20)  # chunks under 8 tokens stay
    assert chunk_cuts(A + B + C + D, A + C + D, 20, 0, 8) == ([(20, 10)], 45)
    assert chunk_cuts(A + C + B + D, A + D + C, 20, 0, 5) == ([(20, 30)], 25)  # only what comes next in order
    # cells before 25 are shared: B's first 5 tokens are dropped, not moved, and C still moves
    assert chunk_cuts(A + B + C, A + C, 20, 25, 8) == ([(20, 10)], 40)
    assert chunk_cuts(A + B + C, A + C, 20, 35, 8) == ([], 20)  # C's cells are shared: nothing moves
    assert chunk_cuts(A + C + D, A + C + B, 20, 0, 8) == ([], 40)  # in place already (past a shift_keep of 20)


def test_a_prompt_with_a_passage_removed_reuses_what_follows_it() -> None:
    h = Harness(n_slots=2)
    h.add("first", A + B + C, max_tokens=2)
    run_checked(h)
    h.add("edited", A + C + D, max_tokens=2, n_cache_reuse=8)
    run_checked(h)
    assert h.final("edited").stats.n_cached_tokens == 40 and h.final("edited").stats.n_evaluated_prompt_tokens == 5
    assert shifts(h) == [(0, 20, 10)]
    assert h.fakes[0].kv[0][:45] == A + C + D
    slot = h.sched.executors[0].slots[0]
    assert slot.shift_keep == 20  # C's cells were computed after B: no other prompt's prefix past A
    h.add("again", A + C + D + B, max_tokens=2, n_cache_reuse=8)  # what is in place is reused again
    run_checked(h)
    assert h.final("again").stats.n_cached_tokens == 45 and shifts(h) == [(0, 20, 10)]
    h.add("plain", A + C + D + B, max_tokens=2)  # without n_cache_reuse: the exact prefix only
    run_checked(h)
    assert h.final("plain").stats.n_cached_tokens == 20


def test_no_chunk_reuse_without_the_field_or_where_the_cache_cannot_shift() -> None:
    for h, n_cache_reuse in ((Harness(n_slots=1), 0), (Harness(n_slots=1, can_shift=False), 8)):
        h.add("first", A + B + C, max_tokens=2)
        run_checked(h)
        h.add("edited", A + C + D, max_tokens=2, n_cache_reuse=n_cache_reuse)
        run_checked(h)
        assert h.final("edited").stats.n_cached_tokens == 20 and not shifts(h)


def test_cells_another_slot_shares_are_not_moved() -> None:
    for edited, cached in ((A + C + D, 20), (A + C[10:] + D, 30)):
        h = Harness(n_slots=3)
        h.add("first", A + B + C, max_tokens=40)
        h.step()
        h.add("copy", A + B + C[:10] + D, max_tokens=2)  # copies 40 cells of first while it runs
        run_checked(h)
        h.add("edited", edited, max_tokens=2, n_cache_reuse=8)  # on first's slot (best prefix, oldest)
        run_checked(h)
        # the copy holds first's cells up to 40: C's first 10 cannot move, the 10 after can
        assert h.final("edited").stats.slot_id == 0
        assert h.final("edited").stats.n_cached_tokens == cached
