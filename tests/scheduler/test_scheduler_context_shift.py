"""Context shift in the scheduler, driven by the fake executor of test_scheduler_policy.

The fake applies SHIFT as llama.cpp does and refuses to move a cell another sequence holds (a
cell has one position); after every step the scheduler's count of used cells must equal the
fake's, so the accounting of dropped, moved and shared cells is checked as generation goes on.
"""

from __future__ import annotations

from test_scheduler_policy import Harness, prompt

from ipc.protocol import FinishReason, KvOpKind


def run_checked(h: Harness, max_steps: int = 2000) -> None:
    """Run until idle, checking the pool accounting against the fake's cells after each step
    (the scheduler counts its KV edits when it queues them: compared once they have run)."""
    for _ in range(max_steps):
        if not h.step():
            return
        ex, fake = h.sched.executors[0], h.fakes[0]
        if not ex.kv_ops:
            assert ex.n_ctx - ex.free_cells == fake.cells_used
    raise AssertionError("the scheduler never went idle")


def shifts(h: Harness) -> list[tuple[int, int, int]]:
    return [(op.seq_id, op.pos, op.n_discard) for plan in h.fakes[0].plans for op in plan.kv_ops
            if op.kind == KvOpKind.SHIFT]


def test_a_generation_past_its_context_shifts_keeps_n_keep_and_goes_on() -> None:
    h = Harness(n_slots=2, ctx_per_request=32, context_shift=True)
    h.add("r", prompt(10), max_tokens=100, n_keep=4)
    run_checked(h)
    final = h.final("r")
    assert final.finish_reason == FinishReason.LENGTH and len(h.tokens("r")) == 100
    assert final.stats.truncated
    assert shifts(h) and all(s == (0, 4, 14) for s in shifts(h))  # half of the 28 tokens after n_keep
    # past the kept tokens, its cache is no prompt's prefix
    slot = h.sched.executors[0].slots[0]
    assert slot.shift_keep == 4 and slot.tokens[:4] == prompt(4) == h.fakes[0].kv[0][:4]


def test_n_discard_sets_how_many_tokens_go() -> None:
    h = Harness(n_slots=1, ctx_per_request=32, context_shift=True)
    h.add("r", prompt(10), max_tokens=60, n_keep=2, n_discard=5)
    run_checked(h)
    assert len(h.tokens("r")) == 60 and set(shifts(h)) == {(0, 2, 5)}


def test_without_context_shift_or_on_a_model_that_cannot_shift_generation_stops_at_the_context() -> None:
    for h in (Harness(ctx_per_request=32), Harness(ctx_per_request=32, context_shift=True, can_shift=False)):
        assert not h.sched.context_shift
        h.add("open", prompt(10), max_tokens=-1)
        h.add("limited", prompt(10, 500), max_tokens=5)
        run_checked(h)
        assert len(h.tokens("open")) == 22 and h.final("open").stats.truncated
        assert len(h.tokens("limited")) == 5 and not h.final("limited").stats.truncated
        assert not shifts(h)


def test_a_shifted_sequence_is_a_prefix_only_up_to_n_keep() -> None:
    h = Harness(n_slots=2, ctx_per_request=32, context_shift=True)
    h.add("long", prompt(10), max_tokens=100, n_keep=4)
    while not shifts(h):
        h.step()
    donor = h.sched.executors[0].slots[0]
    assert donor.busy and donor.shift_keep == 4
    h.add("same", list(donor.tokens) + [5], max_tokens=2)  # the shifted content, token for token
    run_checked(h)
    assert h.final("same").stats.n_cached_tokens == 4


def test_cells_a_running_request_shares_are_dropped_not_moved() -> None:
    h = Harness(n_slots=2, ctx_per_request=32, context_shift=True)
    shared = prompt(25)
    h.add("a", shared, max_tokens=40, n_keep=2)
    h.add("b", shared, max_tokens=40, n_keep=2)  # copies a's 24 prompt cells
    run_checked(h)
    assert len(h.tokens("a")) == len(h.tokens("b")) == 40
    # a drops up to the end of what b shares (24) instead of the default 15; b, alone in its
    # cells by then, drops its 15
    assert shifts(h)[:2] == [(0, 2, 22), (1, 2, 15)]


def test_an_idle_prefix_sharing_the_moved_cells_is_cut_where_they_start() -> None:
    h = Harness(n_slots=2, ctx_per_request=32, context_shift=True)
    shared = prompt(25)
    h.add("donor", shared, max_tokens=3)
    h.step()
    h.add("long", shared + [9], max_tokens=40, n_keep=2)  # copies the donor's 24 cells
    run_checked(h)
    assert len(h.tokens("long")) == 40
    assert shifts(h)[0] == (1, 2, 15)
    donor = h.sched.executors[0].slots[0]
    assert donor.tokens == shared[:17] == h.fakes[0].kv[0]  # cut at 2 + 15, where the moved cells began


def test_a_shift_that_drops_prompt_tokens_leaves_the_count_of_prompt_tokens_evaluated() -> None:
    h = Harness(n_slots=1, ctx_per_request=32, context_shift=True)
    h.add("r", prompt(24), max_tokens=30, n_keep=0)
    run_checked(h)
    assert shifts(h)[0] == (0, 0, 16)  # the cache holds 16 tokens: fewer than the prompt
    assert h.final("r").stats.n_evaluated_prompt_tokens == 24  # timings' prompt_n


def test_a_preempted_shifted_request_resumes_with_what_its_sequence_held() -> None:
    solo = Harness(n_slots=1, ctx_per_request=32, context_shift=True)
    solo.add("r", prompt(10), max_tokens=80, n_keep=3)
    run_checked(solo)
    h = Harness(n_slots=3, n_ctx=64, ctx_per_request=32, context_shift=True)
    for i in range(3):  # three sequences of up to 32 cells in a pool of 64: preemption
        h.add(f"r{i}", prompt(10), max_tokens=80, n_keep=3, cache_prompt=False)
    run_checked(h)
    assert h.sched.counters["preempted"] > 0
    for i in range(3):  # the fake samples from positions: a wrong resume shows in the tokens
        assert h.tokens(f"r{i}") == solo.tokens("r")
