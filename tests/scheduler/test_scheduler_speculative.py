"""Speculative decoding in the scheduler: n-gram drafts, their lengths, and the bookkeeping of
accepted and rejected draft tokens, driven by a fake executor whose "model" writes a fixed
sequence (the token at position p is ``target(p)``) and verifies drafts against it as the real
executor does: it accepts draft tokens while they equal the target and then samples one more.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from test_scheduler_policy import EOS, Harness

from ipc.protocol import AddRequest, FinishReason, KvOpKind, Sample, SamplingParams, Speculation, StepPlan, StepResult
from scheduler.speculative.allocation import StepCost, allocate
from scheduler.speculative.drafter import PROBE_EVERY, PROBE_EVERY_MAX, Acceptance, Drafter, SpecSettings

NGRAM = SpecSettings("ngram", n_max=16, n_min=0, size_n=6, min_hits=1)
SIMPLE = SpecSettings("ngram-simple", n_max=16, n_min=0, size_n=4, min_hits=1)
PERIOD = 12


def periodic(p: int) -> int:
    """A text that repeats every PERIOD tokens (a copy workload)."""
    return 1000 + p % PERIOD


class SpecHarness(Harness):
    """A Harness whose fake executor samples ``target(position)`` and verifies drafts."""

    def __init__(self, target: Callable[[int], int] = periodic, spec: SpecSettings = NGRAM,
                 step_seconds: Callable[[int], float] | None = None, **kw) -> None:
        super().__init__(**kw)
        self.sched.spec = spec
        self.target = target
        self.step_seconds = step_seconds  # the step's time by its tokens (None: the fake's)
        for fake in self.fakes:
            run = fake.run
            fake.run = lambda plan, run=run: self._verify(plan, run(plan))

    def _verify(self, plan: StepPlan, result: StepResult) -> StepResult:
        if result.no_kv_room:
            return result
        samples = []
        for item in plan.items:
            if not item.sample:
                continue
            first = item.pos + len(item.token_ids) - item.draft  # the position the first sampled row predicts
            accepted = 0
            while accepted < item.draft and item.token_ids[-item.draft + accepted] == self.target(first + accepted):
                accepted += 1
            samples.append(Sample(item.seq_id, self.target(first + accepted), n_accepted=accepted))
        result.samples = samples
        if self.step_seconds is not None:
            result.step_seconds = self.step_seconds(sum(len(item.token_ids) for item in plan.items))
        return result

    def add(self, rid: str, tokens: list[int], max_tokens: int = 4, **kw) -> None:
        self.sched.add_request(AddRequest(rid, tokens, max_tokens, SamplingParams(temperature=0), **kw), b"peer")
        self._collect()

    def drafts(self) -> list[int]:
        return [item.draft for fake in self.fakes for plan in fake.plans for item in plan.items if item.draft]


def copy_prompt(n: int) -> list[int]:
    return [periodic(p) for p in range(n)]


def test_ngram_simple_drafts_what_followed_the_last_earlier_match() -> None:
    d = Drafter([1, 2, 3, 4, 5, 6, 9, 9, 1, 2, 3, 4])
    assert d.propose(SIMPLE, 10) == [5, 6, 9, 9, 1, 2, 3, 4, 5, 6]  # past the history's end: again
    assert d.propose(SIMPLE, 3) == [5, 6, 9]
    assert Drafter([1, 2, 3, 4, 7, 1, 2, 3]).propose(SIMPLE, 5) == []  # only 3 tokens match
    d.extend([5, 8])
    assert d.propose(SIMPLE, 4) == []  # "3 4 5 8" never appeared before


def test_a_loop_is_drafted_whole_by_repeating_its_period() -> None:
    assert Drafter([7, 1, 2, 2, 2, 2, 2]).propose(SIMPLE, 6) == [2] * 6  # one token, again and again
    assert Drafter([9, 3, 4, 3, 4, 3, 4, 3]).propose(SIMPLE, 5) == [4, 3, 4, 3, 4]


def test_ggserve_ngram_backs_off_to_the_longest_shorter_match() -> None:
    d = Drafter([1, 2, 3, 4, 7, 1, 2, 3])
    assert d.propose(NGRAM, 5) == [4, 7, 1, 2, 3]  # "1 2 3" matched
    assert Drafter([5, 6, 7]).propose(NGRAM, 5) == []


def test_a_match_must_be_token_aligned_and_min_hits_counts_earlier_occurrences() -> None:
    d = Drafter([0, 1, 0, 0, 0, 1, 0])
    assert d.propose(SpecSettings("ngram-simple", 8, 0, 2, 1), 3) == [0, 0, 1]
    # 256 is bytes 00 01 00 00: [1, 0]'s bytes (01 00 00 00 00 00 00 00) lie across [256, 0, 0] unaligned
    assert Drafter([256, 0, 0, 7, 1, 0]).propose(SpecSettings("ngram-simple", 8, 0, 2, 1), 3) == []
    twice = SpecSettings("ngram-simple", 8, 0, 2, 2)
    assert Drafter([1, 2, 5, 1, 2, 6, 1, 2]).propose(twice, 1) == [6]  # the latest of two
    assert Drafter([1, 2, 5, 3, 3, 1, 2]).propose(twice, 1) == []  # seen once only


def test_step_cost_follows_the_measured_curve_and_goes_on_past_it() -> None:
    cost = StepCost()
    for n in (1, 2, 4, 8, 16, 3, 5, 256) * 30:
        cost.observe(n, 0.020 + 0.004 * min(n, 16) + 0.001 * max(0, n - 16))  # cheaper per token past 16
    assert abs(cost.seconds(8) - 0.052) < 0.004
    assert 0.084 < cost.seconds(100) < cost.seconds(256) < 0.35
    assert cost.seconds(512) > cost.seconds(256) > cost.seconds(16)
    fresh = StepCost()
    fresh.observe(1, 0.02)
    assert fresh.seconds(2) > fresh.seconds(1) == 0.02  # the prior slope


def test_drafts_are_long_when_tokens_are_cheap_and_stop_when_the_batch_is_compute_bound() -> None:
    cheap, bound = StepCost(), StepCost()
    for n in (1, 2, 4, 8, 16, 32) * 30:
        cheap.observe(n, 0.020 + 0.0002 * n)  # a GPU-like step: the weights' read dominates
        bound.observe(n, 0.001 + 0.010 * n)  # every token costs nearly a whole step
    assert allocate([(0, 0.9, 16)], 1, cheap, 100) == {0: 16}
    assert allocate([(0, 0.9, 16)], 1, bound, 100) == {}
    assert allocate([(0, 0.9, 16)], 1, cheap, 5) == {0: 5}  # the step's spare tokens bound it
    lengths = allocate([(0, 0.95, 16), (1, 0.3, 16)], 2, cheap, 100)
    assert lengths[0] > lengths.get(1, 0)  # the request that agrees more drafts more
    assert allocate([(0, 0.9, 16)], 1, cheap, 100, extra_per_token=0.02) == {}  # a draft model as slow as the target


def test_a_concave_step_cost_gets_long_drafts_where_a_first_token_alone_would_not_pay() -> None:
    cost = StepCost()
    for n, seconds in [(1, 0.018), (4, 0.040), (9, 0.074), (18, 0.110), (480, 1.0)] * 20:  # 2 CPU cores
        cost.observe(n, seconds)
    # beside 8 decodes a first draft token costs 7 ms of a 68 ms step (worth 0.8 tokens: not
    # alone), but 32 of them cost 69 ms more and bring 2.6 tokens per request
    lengths = allocate([(i, 0.8, 48) for i in range(8)], 8, cost, 504)
    assert sum(lengths.values()) >= 24 and len(lengths) == 8
    assert allocate([(i, 0.5, 48) for i in range(8)], 8, cost, 504) == {}  # too unreliable to pay at all


def test_acceptance_follows_recent_verifications() -> None:
    a = Acceptance()
    for _ in range(20):
        a.update(8, 8)
    assert a.alpha > 0.9
    for _ in range(30):
        a.update(8, 0)
    assert a.alpha < 0.2


def test_probes_of_a_request_whose_drafts_fail_come_ever_later_until_one_is_accepted() -> None:
    drafter = Drafter([1, 2, 3])

    def steps_to_probe() -> int:
        n = 1
        while not drafter.wants_probe():
            n += 1
        drafter.drafted()
        return n

    waits = []
    for _ in range(5):
        waits.append(steps_to_probe())
        drafter.verified(1, 0)
    assert waits == [PROBE_EVERY, 2 * PROBE_EVERY, 4 * PROBE_EVERY, PROBE_EVERY_MAX, PROBE_EVERY_MAX]
    drafter.verified(1, 1)  # accepted: back to the short wait
    assert steps_to_probe() == PROBE_EVERY


def test_a_copy_is_drafted_accepted_and_output_in_order() -> None:
    h = SpecHarness(n_slots=1)
    h.add("r", copy_prompt(3 * PERIOD), max_tokens=40)
    steps = h.run_until_idle()
    tokens = h.tokens("r")
    assert tokens == [periodic(3 * PERIOD + i) for i in range(40)]  # what the target writes, nothing lost
    stats = h.final("r").stats
    assert stats.n_draft_tokens > 0 and stats.n_draft_accepted == stats.n_draft_tokens
    assert steps < 40 / 2  # several tokens per step
    stats_all = h.sched.stats()
    assert stats_all.spec_accepted_tokens_total == stats.n_draft_accepted
    assert stats_all.spec_accepted_per_pos[0] == stats_all.spec_drafts_total


def cpu_step_seconds(n_tokens: int) -> float:
    """2 CPU cores: a first token beside a decode costs 12 ms, later ones ~5 ms (measured)."""
    return 0.017 if n_tokens == 1 else 0.025 + 0.0047 * n_tokens


def test_a_new_request_starts_from_the_acceptance_of_the_requests_before_it() -> None:
    # where a draft pays only if it is likely accepted (a 50% prior does not)
    h = SpecHarness(n_slots=1, step_seconds=cpu_step_seconds)
    h.add("first", copy_prompt(3 * PERIOD), max_tokens=60)
    h.run_until_idle()
    assert h.sched.spec_pool.alpha > 0.9
    first_drafts = len(h.drafts())
    h.add("next", copy_prompt(3 * PERIOD + 5), max_tokens=30)
    h.step()  # its prompt
    h.step()  # its first decode: drafts at once, at the copy workload's rate
    assert len(h.drafts()) == first_drafts + 1 and h.drafts()[-1] > 1
    h.run_until_idle()
    # free text: one of four tokens at random, which a draft guesses a quarter of the time
    failing = SpecHarness(target=lambda p: 1000 + random.Random(p).randrange(4), n_slots=1)
    failing.add("r", copy_prompt(3 * PERIOD), max_tokens=300)
    failing.run_until_idle()
    assert failing.sched.spec_pool.alpha < 0.4


def test_a_partly_accepted_draft_keeps_the_accepted_tokens_and_drops_the_rest() -> None:
    # the target copies the period except at positions that are multiples of 30
    target = lambda p: 5 if p % 30 == 0 else periodic(p)  # noqa: E731
    h = SpecHarness(target=target, n_slots=1)
    h.add("r", copy_prompt(2 * PERIOD + 1), max_tokens=60)
    h.run_until_idle()
    start = 2 * PERIOD + 1
    assert h.tokens("r") == [target(start + i) for i in range(60)]
    stats = h.final("r").stats
    assert 0 < stats.n_draft_accepted < stats.n_draft_tokens
    assert any(op.kind == KvOpKind.TRUNCATE for plan in h.fakes[0].plans for op in plan.kv_ops)
    slot, kv = h.sched.executors[0].slots[0], h.fakes[0].kv[0]
    assert slot.tokens == kv[: len(slot.tokens)] and len(kv) - len(slot.tokens) <= 16  # a last truncate is queued


def test_a_stop_token_inside_an_accepted_draft_ends_the_request_there() -> None:
    target = lambda p: EOS if p == 45 else periodic(p)  # noqa: E731
    h = SpecHarness(target=target, n_slots=1)
    h.add("r", copy_prompt(3 * PERIOD), max_tokens=100)
    h.run_until_idle()
    assert h.tokens("r") == [periodic(p) for p in range(3 * PERIOD, 45)]
    assert h.final("r").finish_reason == FinishReason.STOP


def test_drafts_never_pass_max_tokens_or_the_slot_context() -> None:
    h = SpecHarness(n_slots=1)
    h.add("r", copy_prompt(3 * PERIOD), max_tokens=7)
    h.run_until_idle()
    assert len(h.tokens("r")) == 7 and all(d <= 6 for d in h.drafts())
    h = SpecHarness(n_slots=1, ctx_per_request=3 * PERIOD + 10)
    h.add("c", copy_prompt(3 * PERIOD), max_tokens=-1)
    h.run_until_idle()
    assert len(h.tokens("c")) == 10 and h.final("c").finish_reason == FinishReason.LENGTH


def test_a_request_can_turn_speculation_off_or_ask_for_a_minimum() -> None:
    h = SpecHarness(n_slots=2)
    h.add("off", copy_prompt(3 * PERIOD), max_tokens=20, speculative=Speculation(n_max=0))
    h.run_until_idle()
    assert not h.drafts() and h.final("off").stats.n_draft_tokens == 0
    h = SpecHarness(n_slots=1)
    h.add("min", copy_prompt(3 * PERIOD), max_tokens=30, speculative=Speculation(n_min=5, n_max=8))
    h.run_until_idle()
    assert h.drafts() and all(5 <= d <= 8 for d in h.drafts())


def test_speculating_and_plain_requests_share_steps_within_the_token_budget() -> None:
    h = SpecHarness(n_slots=4, n_batch=24)
    for i in range(2):
        h.add(f"s{i}", copy_prompt(3 * PERIOD), max_tokens=30)
        h.add(f"p{i}", copy_prompt(3 * PERIOD), max_tokens=30, speculative=Speculation(n_max=0))
    h.run_until_idle()
    for i in range(2):
        assert h.tokens(f"s{i}") == h.tokens(f"p{i}") == [periodic(3 * PERIOD + k) for k in range(30)]
        assert h.final(f"s{i}").stats.n_draft_tokens > 0 and h.final(f"p{i}").stats.n_draft_tokens == 0
    assert all(sum(len(i.token_ids) for i in plan.items) <= 24 for plan in h.fakes[0].plans)
    ex, fake = h.sched.executors[0], h.fakes[0]
    h.step()  # the last truncations run
    assert ex.n_ctx - ex.free_cells == fake.cells_used


def test_a_draft_never_holds_a_media_placeholder() -> None:
    # negative ids stand for image or audio positions in a prompt (multimodal): never fed as tokens
    d = Drafter([1, 2, 3, -7, -7, 4, 1, 2, 3])
    assert d.propose(SIMPLE, 5) == []  # the 3-token match is shorter than size_n 4
    assert d.propose(NGRAM, 5) == []  # what followed "1 2 3" starts with media
    assert Drafter([1, 2, 5, -7, 1, 2]).propose(NGRAM, 5) == [5]
    assert Drafter([5, 1, 6, 5, 1, 6, -7, 5, 1]).propose(SIMPLE, 5) == []  # "6 5 1" is followed by media
    assert Drafter([5, -7, 6, 5, 1, 6, 5, 1]).propose(NGRAM, 5) == [6, 5, 1, 6, 5]  # a loop clear of it


def test_debug_logs_trace_each_step_with_its_drafts_and_accepted_tokens(caplog) -> None:
    h = SpecHarness(n_slots=1)
    h.add("r", copy_prompt(3 * PERIOD), max_tokens=40)
    with caplog.at_level("DEBUG", logger="scheduler"):
        h.run_until_idle()
    lines = [r.getMessage() for r in caplog.records if " step " in r.getMessage()]
    assert len(lines) == sum(1 for fake in h.fakes for plan in fake.plans if plan.items)  # decoding steps
    assert f"{3 * PERIOD} prompt" in lines[0]
    drafted = sum(int(line.split(" drafted")[0].rsplit(" ", 1)[1]) for line in lines)
    accepted = sum(int(line.split(" accepted")[0].rsplit(" ", 1)[1]) for line in lines)
    stats = h.final("r").stats
    assert (drafted, accepted) == (stats.n_draft_tokens, stats.n_draft_accepted)
