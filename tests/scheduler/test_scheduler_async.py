"""Asynchronous scheduling: while a decode step runs, the scheduler plans the next one, whose
items feed the tokens the running step samples (BatchItem.follows; the fake executor, as the
real one, puts in the token it sampled last for the sequence and refuses such a step when the
one before it did not run). The same requests must produce the same tokens as with one step at
a time, and the scheduler's books (cells, positions, slots) must match the executor's cache.
"""

from __future__ import annotations

import math

from test_scheduler_policy import EOS, Harness, prompt

from ipc.protocol import FinishReason, StepPlan


class AsyncHarness(Harness):
    """The scheduler loop's order with one executor: a full plan when it is idle, then, while
    a plan runs, the plan behind it; the executor runs them in order."""

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.queue: list[StepPlan] = []

    def step(self) -> list[StepPlan]:
        fake = self.fakes[0]
        if not self.queue:
            plan = self.sched.next_plan(fake.id)
            if plan is None:
                return []
            self.queue.append(plan)
        follow = self.sched.next_follow_plan(fake.id)
        if follow is not None:
            self.queue.append(follow)
        plan = self.queue.pop(0)
        self.sched.step_result(fake.run(plan))
        self._collect()
        return [plan]

    def followed(self) -> int:
        """Steps planned ahead so far."""
        return sum(any(item.follows for item in plan.items) for plan in self.fakes[0].plans)

    def assert_books_match(self) -> None:
        ex, fake = self.sched.executors[0], self.fakes[0]
        for slot, tokens in zip(ex.slots, fake.kv):
            assert slot.tokens == tokens[: len(slot.tokens)]  # named, and what the cache holds
        assert ex.n_ctx - ex.free_cells == fake.cells_used


def run_both(setup, **kw) -> tuple[Harness, AsyncHarness]:
    plain, ahead = Harness(**kw), AsyncHarness(**kw)
    for h in (plain, ahead):
        setup(h)
        h.run_until_idle()
    return plain, ahead


def test_steady_decodes_are_planned_ahead_and_give_the_same_tokens() -> None:
    def setup(h: Harness) -> None:
        for i in range(3):
            h.add(f"r{i}", prompt(8, 100 * (i + 1)), max_tokens=30)

    plain, ahead = run_both(setup, n_slots=4)
    assert ahead.followed() >= 20  # nearly every decode step after the first
    for i in range(3):
        assert ahead.tokens(f"r{i}") == plain.tokens(f"r{i}") and len(ahead.tokens(f"r{i}")) == 30
        assert ahead.final(f"r{i}").finish_reason == FinishReason.LENGTH
    ahead.assert_books_match()
    assert len(ahead.fakes[0].plans) < len(plain.fakes[0].plans) + 2
    assert ahead.sched.stats().steps_planned_ahead_total == ahead.followed()


def test_a_request_stopping_while_a_step_is_planned_ahead_outputs_nothing_more() -> None:
    def setup(h: Harness) -> None:
        h.add("stops", prompt(8), max_tokens=40, stop_token_ids=[7 + 20])  # the fake samples 7 + len % 50
        h.add("goes", prompt(9, 300), max_tokens=40)

    plain, ahead = run_both(setup, n_slots=2)
    assert ahead.tokens("stops") == plain.tokens("stops") and ahead.final("stops").finish_reason == FinishReason.STOP
    assert ahead.tokens("goes") == plain.tokens("goes")
    runs = [sum(item.seq_id == 0 for plan in h.fakes[0].plans for item in plan.items) for h in (plain, ahead)]
    assert runs[1] == runs[0] + 1  # the step planned ahead fed its stop token: wasted, not output
    ahead.assert_books_match()


def test_a_request_ending_with_the_running_step_is_left_out_of_the_step_behind_it() -> None:
    def setup(h: Harness) -> None:
        h.add("long", prompt(8), max_tokens=30)
        h.add("short", prompt(9, 300), max_tokens=10)

    plain, ahead = run_both(setup, n_slots=2)
    for name in ("long", "short"):
        assert ahead.tokens(name) == plain.tokens(name)
        assert ahead.final(name).finish_reason == FinishReason.LENGTH
    runs = [sum(item.seq_id == 1 for plan in h.fakes[0].plans for item in plan.items) for h in (plain, ahead)]
    assert runs[1] == runs[0]  # no token of "short" computed past its max_tokens
    # the pipeline did not drain when "short" ended: the step behind its last carried "long" alone
    plans = ahead.fakes[0].plans
    last = max(i for i, plan in enumerate(plans) if any(item.seq_id == 1 for item in plan.items))
    assert [(item.seq_id, item.follows) for item in plans[last + 1].items] == [(0, True)]
    ahead.assert_books_match()


def test_the_first_decode_is_planned_ahead_of_the_prompt_step() -> None:
    def setup(h: Harness) -> None:
        h.add("a", prompt(8), max_tokens=6)
        h.add("b", prompt(40, 300), max_tokens=6)

    plain, ahead = run_both(setup, n_slots=2, n_batch=16)  # b's prompt takes three chunks
    for name in ("a", "b"):
        assert ahead.tokens(name) == plain.tokens(name) and len(ahead.tokens(name)) == 6
    plans = ahead.fakes[0].plans
    last_chunk = max(i for i, plan in enumerate(plans)
                     if any(item.seq_id == 1 and len(item.token_ids) > 1 for item in plan.items))
    assert any(item.seq_id == 1 and item.follows for item in plans[last_chunk + 1].items)
    ahead.assert_books_match()
    # the prompt steps' tokens count although a step was planned behind them
    assert [ex.prompt_tokens_total for ex in ahead.sched.stats().executors] == [8 + 40]


def test_a_waiting_request_is_admitted_between_planned_ahead_steps() -> None:
    h = AsyncHarness(n_slots=2)
    h.add("a", prompt(8), max_tokens=30)
    for _ in range(6):
        h.step()
    assert h.followed() > 0
    h.add("b", prompt(8, 500), max_tokens=5)  # a free slot: the pipeline drains to admit it
    h.run_until_idle()
    assert len(h.tokens("a")) == 30 and len(h.tokens("b")) == 5
    h.assert_books_match()


def test_no_kv_room_under_a_planned_ahead_step_undoes_both_and_loses_nothing() -> None:
    def setup(h: Harness) -> None:
        for i in range(3):
            h.add(f"r{i}", prompt(8, 100 * (i + 1)), max_tokens=25)

    plain = Harness(n_slots=3)
    setup(plain)
    plain.run_until_idle()
    h = AsyncHarness(n_slots=3)
    setup(h)
    for _ in range(8):
        h.step()
    assert h.queue and h.queue[0].items[0].follows  # a step is planned behind the running one
    h.fakes[0].refuse_next = True  # the running one finds no room: the one behind cannot run
    h.step()
    h.run_until_idle()
    for i in range(3):
        assert h.tokens(f"r{i}") == plain.tokens(f"r{i}") and h.final(f"r{i}").finish_reason == FinishReason.LENGTH
    assert h.fakes[0].no_room == 2  # the refused step and the one planned behind it
    h.assert_books_match()


def test_nothing_is_planned_ahead_past_max_tokens_or_beside_a_prompt() -> None:
    h = AsyncHarness(n_slots=2, n_batch=16)
    h.add("short", prompt(8), max_tokens=1)
    h.run_until_idle()
    assert len(h.tokens("short")) == 1 and h.followed() == 0  # its prompt step is its last
    h.add("a", prompt(8, 200), max_tokens=20)
    h.add("long", prompt(100, 400), max_tokens=2)  # prefilled in chunks beside a's decodes
    h.run_until_idle()
    for plan in h.fakes[0].plans:
        if any(item.follows for item in plan.items):
            assert all(item.follows and len(item.token_ids) == 1 for item in plan.items)
    assert len(h.tokens("a")) == 20 and len(h.tokens("long")) == 2
    h.assert_books_match()


def test_a_request_aborted_before_a_refused_step_keeps_a_true_cached_prefix() -> None:
    h = AsyncHarness(n_slots=3)
    for i in range(3):
        h.add(f"r{i}", prompt(8, 100 * (i + 1)), max_tokens=25)
    for _ in range(8):
        h.step()
    h.sched.abort(["r1"])  # its tokens in the running step and the one behind it are booked
    h.fakes[0].refuse_next = True
    h.step()
    h.run_until_idle()
    assert h.final("r1").finish_reason == FinishReason.ABORT
    assert len(h.tokens("r0")) == len(h.tokens("r2")) == 25
    h.assert_books_match()  # the aborted slot claims no cell the cache lacks


def test_a_request_aborted_while_its_first_decode_is_planned_ahead_leaves_true_books() -> None:
    h = AsyncHarness(n_slots=2, n_batch=16)
    h.add("a", prompt(8), max_tokens=20)
    h.add("b", prompt(40, 300), max_tokens=20)  # three prompt chunks
    while not any(item.seq_id == 1 and item.follows for plan in h.queue for item in plan.items):
        h.step()  # until b's last chunk ran, its first decode queued behind it
    h.sched.abort(["b"])  # the queued decode's cell is booked
    h.add("c", prompt(40, 300)[:30] + prompt(6, 900), max_tokens=5)  # reuses b's cached prompt
    h.run_until_idle()
    assert h.final("b").finish_reason == FinishReason.ABORT and len(h.tokens("b")) == 1
    assert len(h.tokens("a")) == 20 and len(h.tokens("c")) == 5
    assert h.final("c").stats.n_cached_tokens == 30
    h.assert_books_match()


def test_min_tokens_bans_the_ending_tokens_until_then_and_no_step_ahead_crosses_the_switch() -> None:
    h = AsyncHarness(n_slots=2)
    h.add("r", prompt(8), max_tokens=20, min_tokens=6, stop_token_ids=[3])
    h.run_until_idle()
    plans = h.fakes[0].plans
    starts = [(i, start) for i, plan in enumerate(plans) for start in plan.starts]
    assert len(starts) == 2  # the request's sampler, then the same without the ban
    (_, banned), (switch, lifted) = starts
    assert {t for t, bias in banned.sampling.logit_bias if bias == -math.inf} == {EOS, 3}
    assert lifted.sampling.logit_bias == [] and len(lifted.history) == 6
    # exactly the first six tokens were sampled under the ban, steps planned ahead included
    assert sum(item.sample for plan in plans[:switch] for item in plan.items) == 6
    assert h.followed() > 0 and len(h.tokens("r")) == 20
