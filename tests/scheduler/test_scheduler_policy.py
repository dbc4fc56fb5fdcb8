"""Scheduler policy and state machine, driven by a fake executor that simulates the KV cache.

The fake checks every plan the way llama.cpp would (contiguous positions per sequence, batch
size, copies only into empty sequences) and samples deterministic tokens, so these tests pin
down the batching policy without a model: token budget, decode priority, chunked prefill,
fairness, prefix reuse and eviction, aborts and failures.
"""

from __future__ import annotations

import msgspec

from ipc.protocol import (
    AddRequest,
    EndReasoning,
    EngineError,
    ErrorCode,
    ExecutorInfo,
    FinishReason,
    KvOp,
    KvOpKind,
    PromptLogprobs,
    ReasoningBudget,
    RequestOutput,
    Sample,
    SamplingParams,
    SeqFailure,
    SlotFileResult,
    StepPlan,
    StepResult,
    TokenLogprob,
)
from scheduler.core import Scheduler
from ggserve.tokens import common_prefix_len

EOS = 1
VOCAB = 10_000


def info(n_slots: int = 4, n_ctx: int = 4096, n_swa: int = 0, executor_id: int = 0,
         can_shift: bool = True, device: str = "cpu", save_run_seconds: float = 0.0) -> ExecutorInfo:
    return ExecutorInfo(
        executor_id=executor_id, model_path="fake.gguf", model_desc="fake", n_params=1,
        model_size_bytes=1, n_vocab=VOCAB, n_ctx=n_ctx, n_ctx_train=n_ctx, n_swa=n_swa,
        n_slots=n_slots, n_batch=512, kv_bytes=0, eog_token_ids=[EOS], can_shift=can_shift,
        n_ubatch=512, vision=True, device=device, save_run_seconds=save_run_seconds,
    )  # fmt: skip


class FakeExecutor:
    """Applies plans to a simulated KV cache and samples 7, 8, 9...

    Each sequence is a list of tokens and of the cells holding them: a copy shares cells, as in
    llama.cpp's unified cache, and a batch that needs more cells than are free gets
    ``no_kv_room`` (llama_decode's 1), so the scheduler's cell accounting is checked too.
    """

    def __init__(self, executor_id: int, n_slots: int, n_batch: int, n_ctx: int = 1 << 30) -> None:
        self.id = executor_id
        self.n_batch = n_batch
        self.n_ctx = n_ctx
        self.kv: list[list[int]] = [[] for _ in range(n_slots)]
        self.cells: list[list[int]] = [[] for _ in range(n_slots)]
        self.next_cell = 0
        self.no_room = 0  # batches refused for lack of cells
        self.host: dict[int, list[int]] = {}  # --cache-ram entries: their tokens
        self.files: dict[str, list[int]] = {}  # slot files (--slot-save-path): their tokens
        self.samplers: set[int] = set()
        self.plans: list[StepPlan] = []
        self.last_samples: dict[int, int] | None = {}  # what a step planned ahead feeds (None: refused)
        self.refuse_next = False  # a test's way to make the next step find no KV room

    @property
    def cells_used(self) -> int:
        return len(set().union(*self.cells))

    def run(self, plan: StepPlan) -> StepResult:
        self.plans.append(plan)
        for seq in plan.ends:
            self.samplers.discard(seq)
        files = []
        for op in plan.kv_ops:
            if op.kind == KvOpKind.SAVE_FILE:
                assert op.tokens == self.kv[op.seq_id], "a save names the tokens the sequence holds"
                self.files[op.path] = list(op.tokens)
                files.append(SlotFileResult(op.seq_id, 100 * len(op.tokens)))
            elif op.kind == KvOpKind.LOAD_FILE:
                assert not self.kv[op.seq_id], "a load goes into an emptied sequence"
                tokens = self.files.get(op.path)
                if tokens is None:
                    files.append(SlotFileResult(op.seq_id, error=EngineError(ErrorCode.NOT_FOUND, "no such file")))
                    continue
                assert len(tokens) <= op.pos and self.cells_used + len(tokens) <= self.n_ctx
                self.kv[op.seq_id] = list(tokens)
                self.cells[op.seq_id] = list(range(self.next_cell, self.next_cell + len(tokens)))
                self.next_cell += len(tokens)
                files.append(SlotFileResult(op.seq_id, 100 * len(tokens), tokens=list(tokens)))
            elif op.kind == KvOpKind.SAVE:
                self.host[op.entry_id] = list(self.kv[op.seq_id])
            elif op.kind == KvOpKind.DROP:
                del self.host[op.entry_id]
            elif op.kind == KvOpKind.RESTORE:
                tokens = self.host[op.entry_id]
                self.kv[op.seq_id] = list(tokens)
                self.cells[op.seq_id] = list(range(self.next_cell, self.next_cell + len(tokens)))
                self.next_cell += len(tokens)
            elif op.kind == KvOpKind.CLEAR:
                self.kv[op.seq_id], self.cells[op.seq_id] = [], []
            elif op.kind == KvOpKind.TRUNCATE:
                del self.kv[op.seq_id][op.pos :], self.cells[op.seq_id][op.pos :]
            elif op.kind == KvOpKind.SHIFT:  # a cell has one position: moved cells must not be shared
                end = op.pos + op.n_discard
                shared = set().union(*(c for s, c in enumerate(self.cells) if s != op.seq_id))
                assert not shared & set(self.cells[op.seq_id][end:]), "a shift moved cells another sequence holds"
                del self.kv[op.seq_id][op.pos : end], self.cells[op.seq_id][op.pos : end]
            else:
                assert len(self.kv[op.src_seq_id]) >= op.pos and not self.kv[op.seq_id]
                self.kv[op.seq_id] = self.kv[op.src_seq_id][: op.pos]
                self.cells[op.seq_id] = self.cells[op.src_seq_id][: op.pos]
        for start in plan.starts:
            self.samplers.add(start.seq_id)
        refused = self.refuse_next or any(i.follows for i in plan.items) and self.last_samples is None
        self.refuse_next = False
        for item in plan.items:  # the executor's half of asynchronous scheduling
            if item.follows and not refused:
                assert not item.token_ids and item.seq_id in self.last_samples
                item.token_ids = [self.last_samples[item.seq_id]]
        assert sum(len(i.token_ids) for i in plan.items) <= self.n_batch
        assert len({i.seq_id for i in plan.items}) == len(plan.items)
        if refused or self.cells_used + sum(len(i.token_ids) for i in plan.items) > self.n_ctx:
            self.no_room += 1
            self.last_samples = None
            return StepResult(plan.step_id, self.id, [], [0 if kv else -1 for kv in self.kv], no_kv_room=True)
        samples, prompt_logprobs = [], []
        for item in plan.items:
            if item.logprob_targets:
                lps = [TokenLogprob(t, -1.0) for t in item.logprob_targets]
                prompt_logprobs.append(PromptLogprobs(item.seq_id, lps))
            assert item.pos == len(self.kv[item.seq_id]), "positions must continue the sequence"
            self.kv[item.seq_id].extend(item.token_ids)
            self.cells[item.seq_id].extend(range(self.next_cell, self.next_cell + len(item.token_ids)))
            self.next_cell += len(item.token_ids)
            if item.sample:
                assert item.seq_id in self.samplers
                samples.append(Sample(item.seq_id, 7 + len(self.kv[item.seq_id]) % 50))
        pos_min = [0 if kv else -1 for kv in self.kv]
        self.last_samples = {sample.seq_id: sample.token_id for sample in samples}
        return StepResult(
            plan.step_id, self.id, samples, pos_min, 0.01, prompt_logprobs=prompt_logprobs, slot_files=files
        )


class Harness:
    def __init__(self, n_slots: int = 4, n_batch: int = 64, n_executors: int = 1, **kw) -> None:
        self.sched = Scheduler(n_executors, max_queue=kw.pop("max_queue", 64), n_batch=n_batch,
                               ctx_per_request=kw.pop("ctx_per_request", 0),
                               cache_ram_bytes=kw.pop("cache_ram_bytes", 0),
                               context_shift=kw.pop("context_shift", False))
        self.fakes = []
        for e in range(n_executors):
            self.sched.executor_ready(info(n_slots=n_slots, executor_id=e, **kw))
            self.fakes.append(FakeExecutor(e, n_slots, n_batch, kw.get("n_ctx", 4096)))
        self.outputs: dict[str, list[RequestOutput]] = {}

    def add(self, rid: str, prompt: list[int], max_tokens: int = 4, **kw) -> None:
        params = SamplingParams(temperature=0)
        self.sched.add_request(AddRequest(rid, prompt, max_tokens, params, **kw), b"peer")
        self._collect()

    def step(self) -> list[StepPlan]:
        """One step of every executor that has work; returns the plans run."""
        plans = []
        for fake in self.fakes:
            plan = self.sched.next_plan(fake.id)
            if plan is not None:
                plans.append(plan)
                self.sched.step_result(fake.run(plan))
        self._collect()
        return plans

    def run_until_idle(self, max_steps: int = 500) -> int:
        for n in range(max_steps):
            if not self.step():
                return n
        raise AssertionError("the scheduler never went idle")

    def _collect(self) -> None:
        for outs in self.sched.take_outputs().values():
            for out in outs:
                self.outputs.setdefault(out.request_id, []).append(out)

    def final(self, rid: str) -> RequestOutput:
        last = self.outputs[rid][-1]
        assert last.finish_reason is not None
        return last

    def final_or_none(self, rid: str) -> RequestOutput | None:
        """The request's terminal output, or None while it runs or waits."""
        outs = self.outputs.get(rid) or [RequestOutput(rid)]
        return outs[-1] if outs[-1].finish_reason is not None else None

    def tokens(self, rid: str) -> list[int]:
        return [t for out in self.outputs[rid] for t in out.token_ids]


def prompt(n: int, start: int = 100) -> list[int]:
    return list(range(start, start + n))


def test_common_prefix_len_matches_a_plain_scan() -> None:
    a = prompt(100)
    for cut in (0, 1, 37, 99, 100):
        b = a[:cut] + [5] * 10
        assert common_prefix_len(a, b) == cut
    assert common_prefix_len(a, a[:50]) == 50
    assert common_prefix_len([], a) == 0


def test_every_request_finishes_with_exactly_max_tokens() -> None:
    h = Harness(n_slots=2)
    for i in range(5):  # more requests than slots: the rest wait in the queue
        h.add(f"r{i}", prompt(10, 100 * (i + 1)), max_tokens=6)
    h.run_until_idle()
    for i in range(5):
        final = h.final(f"r{i}")
        assert final.finish_reason == FinishReason.LENGTH
        assert len(h.tokens(f"r{i}")) == 6
        assert final.stats.n_generated_tokens == 6
        assert sum(1 for o in h.outputs[f"r{i}"] if o.finish_reason is not None) == 1


def test_decodes_come_first_and_prefill_gets_the_rest_of_the_token_budget() -> None:
    h = Harness(n_slots=4, n_batch=32)
    for i in range(3):
        h.add(f"d{i}", prompt(5, 100 * (i + 1)), max_tokens=50)
    h.step()  # the three prompts prefill together
    h.add("long", prompt(100, 500), max_tokens=2)
    (plan,) = h.step()
    assert [len(i.token_ids) for i in plan.items] == [1, 1, 1, 29]
    assert all(i.sample for i in plan.items[:3]) and not plan.items[3].sample


def test_long_prompt_is_prefilled_in_chunks_and_sampled_once_complete() -> None:
    h = Harness(n_slots=1, n_batch=32)
    h.add("p", prompt(100), max_tokens=1)
    chunks = []
    while True:
        plans = h.step()
        if not plans or not plans[0].items:
            break
        chunks += [(len(i.token_ids), i.sample) for i in plans[0].items]
    assert chunks == [(32, False), (32, False), (32, False), (4, True)]
    assert h.final("p").stats.n_evaluated_prompt_tokens == 100


def test_oldest_prefill_advances_first_and_no_request_starves() -> None:
    h = Harness(n_slots=2, n_batch=16)
    h.add("old", prompt(40, 100), max_tokens=3)
    h.add("new", prompt(40, 300), max_tokens=3)
    (plan,) = h.step()
    assert [i.seq_id for i in plan.items] == [0]  # the whole budget goes to the oldest prompt
    # a steady stream of arrivals: every request still finishes, in bounded steps
    for i in range(20):
        h.add(f"s{i}", prompt(12, 1000 + 20 * i), max_tokens=5)
        h.step()
    h.run_until_idle()
    for rid in ["old", "new"] + [f"s{i}" for i in range(20)]:
        assert h.final(rid).finish_reason == FinishReason.LENGTH


def test_eos_stops_unless_ignore_eos() -> None:
    h = Harness(n_slots=2)
    # the fake samples 7 + len(kv) % 50: a 44-token prompt makes the first token 7 + 44 + ... EOS
    # needs 7 + n % 50 == EOS, impossible, so use a stop token id instead
    h.add("stop", prompt(10), max_tokens=10, stop_token_ids=[7 + 12])
    h.add("ignore", prompt(10, 500), max_tokens=10, ignore_eos=True)
    h.run_until_idle()
    assert h.final("stop").finish_reason == FinishReason.STOP
    assert h.tokens("stop") == [17, 18]  # the stop token is not output
    assert len(h.tokens("ignore")) == 10


def test_prefix_of_a_finished_request_is_reused_in_its_slot() -> None:
    h = Harness(n_slots=2)
    system = prompt(50)
    h.add("a", system + [7, 8], max_tokens=3)
    h.run_until_idle()
    h.add("b", system + [9, 9, 9], max_tokens=3)
    h.run_until_idle()
    stats = h.final("b").stats
    assert stats.n_cached_tokens == 50
    assert stats.n_evaluated_prompt_tokens == 3
    assert stats.slot_id == h.final("a").stats.slot_id


def test_prefix_of_a_running_request_is_copied_into_a_free_slot() -> None:
    h = Harness(n_slots=2)
    system = prompt(50)
    h.add("a", system + [7], max_tokens=40)
    h.step()
    h.step()
    h.add("b", system + [9, 9], max_tokens=3)
    (plan,) = h.step()
    copies = [op for op in plan.kv_ops if op.kind == KvOpKind.COPY]
    assert len(copies) == 1 and copies[0].pos == 50 and copies[0].src_seq_id == 0
    h.run_until_idle()
    assert h.final("b").stats.n_cached_tokens == 50


def test_whole_prompt_cached_still_evaluates_its_last_token() -> None:
    h = Harness(n_slots=1)
    h.add("a", prompt(20), max_tokens=2)
    h.run_until_idle()
    h.add("b", prompt(20), max_tokens=2)
    h.run_until_idle()
    assert h.final("b").stats.n_cached_tokens == 19
    assert h.final("b").stats.n_evaluated_prompt_tokens == 1


def test_sliding_window_prefix_whose_cells_are_gone_is_not_reused() -> None:
    h = Harness(n_slots=1, n_swa=8)
    h.add("a", prompt(40), max_tokens=2)
    h.run_until_idle()
    h.sched.executors[0].slots[0].pos_min = 30  # llama.cpp overwrote old window cells
    h.add("b", prompt(20) + [5, 5], max_tokens=2)  # would continue at 20: needs cells >= 12
    h.run_until_idle()
    assert h.final("b").stats.n_cached_tokens == 0


def test_least_recently_used_cached_prefix_is_evicted_first() -> None:
    h = Harness(n_slots=2)
    h.add("old", prompt(30, 100), max_tokens=2)
    h.run_until_idle()
    h.add("recent", prompt(30, 300), max_tokens=2)
    h.run_until_idle()
    old_slot = h.final("old").stats.slot_id
    h.add("new", prompt(30, 600), max_tokens=2)
    h.run_until_idle()
    assert h.final("new").stats.slot_id == old_slot
    h.add("again", prompt(30, 300) + [1, 2], max_tokens=2)  # "recent" is still cached
    h.run_until_idle()
    assert h.final("again").stats.n_cached_tokens == 30


def test_cache_prompt_false_evaluates_everything() -> None:
    h = Harness(n_slots=1)
    h.add("a", prompt(20), max_tokens=2)
    h.run_until_idle()
    h.add("b", prompt(20) + [3], max_tokens=2, cache_prompt=False)
    h.run_until_idle()
    assert h.final("b").stats.n_evaluated_prompt_tokens == 21


def test_abort_frees_the_slot_for_the_next_step() -> None:
    h = Harness(n_slots=1)
    h.add("long", prompt(10), max_tokens=100)
    h.step()
    h.add("next", prompt(10, 500), max_tokens=2)
    h.sched.abort(["long"])
    h._collect()
    assert h.final("long").finish_reason == FinishReason.ABORT
    (plan,) = h.step()
    assert plan.ends == [0] and plan.starts and plan.starts[0].seq_id == 0
    h.run_until_idle()
    assert h.final("next").finish_reason == FinishReason.LENGTH


def test_a_request_the_frontend_ended_with_a_stop_string_counts_as_finished() -> None:
    h = Harness(n_slots=2)
    h.add("stopped", prompt(10), max_tokens=100)
    h.add("left", prompt(10, 500), max_tokens=100)
    h.step()
    h.sched.abort(["stopped"], FinishReason.STOP)  # the frontend matched a stop string
    h.sched.abort(["left"])  # the client went away
    h._collect()
    assert h.final("stopped").finish_reason == FinishReason.STOP
    assert (h.sched.counters["finished"], h.sched.counters["aborted"]) == (1, 1)  # /metrics' counts


def test_abort_while_queued_and_unknown_ids_are_harmless() -> None:
    h = Harness(n_slots=1)
    h.add("running", prompt(10), max_tokens=5)
    h.add("queued", prompt(10, 500), max_tokens=5)
    h.sched.abort(["queued", "nope"])
    h._collect()
    assert h.final("queued").finish_reason == FinishReason.ABORT
    h.run_until_idle()
    assert h.final("running").finish_reason == FinishReason.LENGTH


def test_full_queue_rejects_with_overloaded() -> None:
    """--max-queue counts the requests no slot will take: the idle slots' requests do not wait."""
    h = Harness(n_slots=1, max_queue=2)
    for i in range(4):
        h.add(f"r{i}", prompt(5, 100 * (i + 1)))
    assert not any(h.final_or_none(f"r{i}") for i in range(3))  # one for the slot, two waiting
    final = h.final("r3")
    assert final.finish_reason == FinishReason.ERROR
    assert final.error.code == ErrorCode.OVERLOADED


def test_idle_slots_take_requests_beyond_the_queue_limit() -> None:
    h = Harness(n_slots=4, max_queue=2)
    for i in range(7):  # four for the idle slots, two waiting, the seventh refused
        h.add(f"r{i}", prompt(5, 100 * (i + 1)))
    assert [h.final_or_none(f"r{i}") is not None for i in range(7)] == [False] * 6 + [True]
    none_waits = Harness(n_slots=2, max_queue=0)  # --max-queue 0: a request runs only where a slot is free
    for i in range(3):
        none_waits.add(f"r{i}", prompt(5, 100 * (i + 1)))
    assert none_waits.final_or_none("r1") is None and none_waits.final("r2").error.code == ErrorCode.OVERLOADED


def test_a_calls_choices_are_queued_together_or_refused_together() -> None:
    """The queue's limit counts the requests waiting before a call, not the call's own n
    choices: an idle server takes n above --max-queue, a full one refuses every choice."""
    h = Harness(n_slots=1, max_queue=2)
    params = SamplingParams(temperature=0)
    h.sched.add_requests([AddRequest(f"a-{i}", prompt(5), 4, params) for i in range(5)], b"peer")
    h._collect()
    assert len(h.sched.waiting) == 5 and not h.outputs  # all five queued, none refused
    h.sched.add_requests([AddRequest(f"b-{i}", prompt(5, 300), 4, params) for i in range(2)], b"peer")
    h._collect()
    assert [h.final(f"b-{i}").error.code for i in range(2)] == [ErrorCode.OVERLOADED] * 2
    assert len(h.sched.waiting) == 5  # none of the refused call's choices stayed
    h.run_until_idle()
    assert all(h.final(f"a-{i}").finish_reason == FinishReason.LENGTH for i in range(5))


def test_a_bad_request_refuses_its_whole_call() -> None:
    h = Harness(n_slots=2)
    params = SamplingParams(temperature=0)
    h.sched.add_requests([AddRequest("c-0", prompt(5), 4, params), AddRequest("c-1", [], 4, params)], b"peer")
    h._collect()
    assert [h.final(r).error.code for r in ("c-0", "c-1")] == [ErrorCode.INVALID_REQUEST] * 2
    assert not h.sched.waiting


def test_prompt_longer_than_the_per_request_context_is_rejected() -> None:
    h = Harness(n_slots=4, n_ctx=256, ctx_per_request=64)
    h.add("big", prompt(64))
    assert h.final("big").error.code == ErrorCode.INVALID_REQUEST
    h.add("fits", prompt(60), max_tokens=-1)
    h.run_until_idle()
    assert len(h.tokens("fits")) == 4  # generation stops when the request's context is full


def test_one_request_may_use_the_whole_pool_while_other_slots_idle() -> None:
    h = Harness(n_slots=4, n_ctx=1024)  # llama-server's c / np would allow 256
    h.add("long", prompt(900), max_tokens=-1)
    h.run_until_idle()
    assert h.final("long").finish_reason == FinishReason.LENGTH
    assert len(h.tokens("long")) == 1024 - 900
    h.add("too long", prompt(1024))
    assert h.final("too long").error.code == ErrorCode.INVALID_REQUEST


def test_executor_failure_fails_its_running_requests_and_the_queue_waits_for_its_restart() -> None:
    h = Harness(n_slots=1)
    h.add("running", prompt(10), max_tokens=50)
    plan = h.sched.next_plan(0)
    h.add("queued", prompt(10, 500))
    h.sched.executor_failed(0, "killed")
    h._collect()
    assert h.final("running").error.code == ErrorCode.EXECUTOR_FAILED
    assert "queued" not in h.outputs and not h.step()  # waits: no executor is alive
    h.add("also queued", prompt(10, 700))
    assert "also queued" not in h.outputs  # accepted into the queue, not refused
    # The old process's result arrives late: ignored.
    h.sched.step_result(h.fakes[0].run(plan))
    # The restarted executor: empty slots and cache; the queue runs on it.
    h.sched.executor_ready(info(n_slots=1, executor_id=0))
    h.fakes[0] = FakeExecutor(0, 1, 512)
    h.run_until_idle()
    assert [h.final(r).finish_reason for r in ("queued", "also queued")] == [FinishReason.LENGTH] * 2
    assert len(h.tokens("queued")) == 4


def test_while_draining_the_queue_fails_at_once_when_no_executor_is_left() -> None:
    """No executor is restarted while the server stops: queued requests would otherwise wait for
    the whole --shutdown-timeout."""
    h = Harness(n_slots=1)
    h.add("running", prompt(10), max_tokens=50)
    h.sched.next_plan(0)
    h.add("queued", prompt(10, 500))
    h.sched.draining = True
    h.sched.executor_failed(0, "killed")
    h._collect()
    assert h.final("running").error.code == ErrorCode.EXECUTOR_FAILED
    assert h.final("queued").error.code == ErrorCode.SHUTTING_DOWN


def test_news_of_a_replaced_executor_process_is_ignored() -> None:
    h = Harness(n_slots=1)
    h.sched.executor_ready(msgspec.structs.replace(info(n_slots=1), pid=200))
    h.add("a", prompt(10), max_tokens=3)
    h.sched.executor_failed(0, "exited", pid=100)  # the predecessor's death, reported late
    h.run_until_idle()
    assert h.final("a").finish_reason == FinishReason.LENGTH


def test_a_sequence_that_fails_alone_ends_only_its_request_and_drops_its_cache() -> None:
    h = Harness(n_slots=3)
    for rid in ("a", "b", "c"):
        h.add(rid, prompt(10, 100 * len(rid) + ord(rid)), max_tokens=3)
    plan = h.sched.next_plan(0)
    result = h.fakes[0].run(plan)
    bad = plan.items[1].seq_id
    result.samples = [s for s in result.samples if s.seq_id != bad]
    result.failures = [SeqFailure(bad, EngineError(ErrorCode.INVALID_REQUEST, "grammar rejected"))]
    h.sched.step_result(result)
    h._collect()
    failed = [r for r in ("a", "b", "c") if r in h.outputs and h.outputs[r][-1].finish_reason == FinishReason.ERROR]
    assert len(failed) == 1 and h.final(failed[0]).error.message == "grammar rejected"
    (plan,) = h.step()
    assert KvOp(KvOpKind.CLEAR, bad) in plan.kv_ops and bad in plan.ends
    h.run_until_idle()
    assert sum(h.final(r).finish_reason == FinishReason.LENGTH for r in ("a", "b", "c")) == 2


def test_no_kv_room_retries_the_step_with_fewer_tokens_and_loses_nothing() -> None:
    h = Harness(n_slots=2, n_batch=64, device="cuda")  # one step takes both prompts (see the CPU's split)
    h.add("a", prompt(40), max_tokens=3)
    h.add("b", prompt(40, 500), max_tokens=3)
    plan = h.sched.next_plan(0)
    assert sum(len(i.token_ids) for i in plan.items) == 64
    h.fakes[0].samplers.update(start.seq_id for start in plan.starts)  # applied before the decode
    h.sched.step_result(StepResult(plan.step_id, 0, [], [-1, -1], no_kv_room=True))
    plan = h.sched.next_plan(0)
    assert sum(len(i.token_ids) for i in plan.items) == 32  # halved
    assert plan.items[0].pos == 0  # the failed step's tokens are planned again
    h.sched.step_result(h.fakes[0].run(plan))
    h.run_until_idle()
    assert [h.final(r).finish_reason for r in ("a", "b")] == [FinishReason.LENGTH] * 2
    assert len(h.tokens("a")) == len(h.tokens("b")) == 3


def test_after_no_kv_room_a_decode_step_that_fits_does_not_grow_the_prompt_chunks_back() -> None:
    """On a CPU decode and prompt steps alternate: the decode step after a refused prompt chunk
    says nothing of room for the chunk, so the next chunk is still the halved one (it was the
    refused size again, 26 times in a row in a soak test)."""
    h = Harness(n_slots=2, n_batch=256)
    h.add("old", prompt(4), max_tokens=40)
    h.step()
    h.add("new", prompt(700, 500), max_tokens=3)
    sizes: list[int] = []
    refused = False
    for _ in range(20):
        plan = h.sched.next_plan(0)
        chunk = sum(len(i.token_ids) for i in plan.items if len(i.token_ids) > 1)
        if chunk and not refused:
            h.fakes[0].samplers.update(start.seq_id for start in plan.starts)
            h.sched.step_result(StepResult(plan.step_id, 0, [], [0, 0], no_kv_room=True))
            refused = True
            continue
        if chunk:
            sizes.append(chunk)
        h.sched.step_result(h.fakes[0].run(plan))
        h._collect()
        if len(sizes) == 2:
            break
    assert sizes == [128, 256]  # halved; grown back once a chunk of that size fitted


def test_no_kv_room_for_a_single_token_fails_the_newest_request_only() -> None:
    h = Harness(n_slots=2)
    h.add("old", prompt(4), max_tokens=20)
    h.step()
    h.add("new", prompt(4, 500), max_tokens=20)
    h.step()
    for _ in range(10):
        plan = h.sched.next_plan(0)
        if sum(len(i.token_ids) for i in plan.items) == 1:
            break
        h.sched.step_result(StepResult(plan.step_id, 0, [], [0, 0], no_kv_room=True))
    h.sched.step_result(StepResult(plan.step_id, 0, [], [0, 0], no_kv_room=True))
    h._collect()
    assert h.final("new").error.code == ErrorCode.NO_KV_ROOM
    assert h.outputs["old"][-1].finish_reason is None  # still running


def test_a_copied_prefix_keeps_the_source_window_so_a_second_admission_does_not_overreach() -> None:
    h = Harness(n_slots=3, n_swa=64, n_batch=512, device="gpu:0")  # a step takes decodes and prompts alike
    long = prompt(300)
    h.add("a", long, max_tokens=50)
    h.step()
    h.sched.executors[0].slots[0].pos_min = 200  # the window slid: cells below 200 are gone
    h.add("b", long + [7], max_tokens=3)  # reuses all 300 (200 <= 300 - 64): copied from slot 0
    h.add("c", long[:150] + [9, 9], max_tokens=3)  # 150 tokens would need cells from 86 on
    plan = h.sched.next_plan(0)
    copies = [op for op in plan.kv_ops if op.kind == KvOpKind.COPY]
    assert [(op.src_seq_id, op.pos) for op in copies] == [(0, 300)]
    (c_item,) = [i for i in plan.items if i.token_ids[:1] == [100] and i.pos == 0]
    assert len(c_item.token_ids) == 152  # evaluated whole, not reused from b's copy


def test_on_a_cpu_decodes_and_a_long_prompt_take_turns_instead_of_sharing_a_step() -> None:
    for device, mixed in (("cpu", False), ("gpu:0", True)):
        h = Harness(n_slots=9, n_batch=512, device=device)
        for i in range(8):
            h.add(f"d{i}", prompt(20, 100 * (i + 1)), max_tokens=40)
        h.step()  # their prompts
        h.add("long", prompt(400, 5000), max_tokens=4)
        plans = [plan for _ in range(4) for plan in h.step()]
        kinds = [{"decode" if len(i.token_ids) == 1 else "prompt" for i in plan.items} for plan in plans[:2]]
        if mixed:
            assert kinds[0] == {"decode", "prompt"}
        else:  # a step of decodes, then the prompt alone: each decode still gets a token per two steps
            assert kinds == [{"decode"}, {"prompt"}], kinds
        h.run_until_idle()
        assert h.final("long").finish_reason == FinishReason.LENGTH
        assert all(len(h.tokens(f"d{i}")) == 40 for i in range(8))


def test_on_a_cpu_a_short_prompt_still_shares_the_decodes_step() -> None:
    h = Harness(n_slots=9, n_batch=512)
    for i in range(8):
        h.add(f"d{i}", prompt(20, 100 * (i + 1)), max_tokens=40)
    h.step()
    h.add("short", prompt(30, 5000), max_tokens=4)  # 8 + 30 rows: under a query tile
    (plan,) = h.step()
    assert len(plan.items) == 9


def test_decode_error_fails_the_step_requests_and_clears_their_cache() -> None:
    h = Harness(n_slots=2)
    h.add("a", prompt(10), max_tokens=5)
    plan = h.sched.next_plan(0)
    h.fakes[0].run(plan)
    h.sched.step_result(StepResult(plan.step_id, 0, [], [0, -1], error="llama_decode returned -3"))
    h._collect()
    assert h.final("a").error.code == ErrorCode.EXECUTOR_FAILED
    (plan,) = h.step()
    assert [op.kind for op in plan.kv_ops] == [KvOpKind.CLEAR]


def test_two_executors_share_the_load_and_prefixes_attract() -> None:
    h = Harness(n_slots=2, n_executors=2)
    for i in range(4):
        h.add(f"r{i}", prompt(30, 100 * (i + 1)), max_tokens=3)
    h.run_until_idle()
    assert {h.final(f"r{i}").stats.executor_id for i in range(4)} == {0, 1}
    home = h.final("r3").stats.executor_id
    h.add("follow-up", prompt(30, 400) + [1, 2, 3], max_tokens=2)
    h.run_until_idle()
    assert h.final("follow-up").stats.executor_id == home
    assert h.final("follow-up").stats.n_cached_tokens == 30


def test_prompt_logprobs_cover_every_prompt_token_after_the_first_in_small_chunks() -> None:
    h = Harness(n_slots=1, n_batch=512)
    h.add("warm", prompt(150), max_tokens=1)
    h.run_until_idle()
    h.add("lp", prompt(150), max_tokens=1, prompt_logprobs=0)
    sizes = []
    while plans := h.step():
        sizes += [len(i.token_ids) for i in plans[0].items]
    assert sizes[0] <= 64  # logits rows per step stay bounded
    lps = [lp for out in h.outputs["lp"] for lp in out.prompt_logprobs]
    assert [lp.token_id for lp in lps] == prompt(150)[1:]
    assert h.final("lp").stats.n_cached_tokens == 0  # positions need their own logits


def test_requests_that_together_outgrow_the_pool_all_finish_through_preemption() -> None:
    solo = Harness(n_slots=1, n_ctx=1024)
    solo.add("alone", prompt(50), max_tokens=60, ignore_eos=True)
    solo.run_until_idle()
    h = Harness(n_slots=4, n_ctx=256)  # 4 x (50 + 60) cells are needed at the end
    for i in range(4):
        h.add(f"r{i}", prompt(50), max_tokens=60, ignore_eos=True, cache_prompt=False)
    h.run_until_idle()
    assert h.sched.counters["preempted"] > 0
    for i in range(4):
        assert h.final(f"r{i}").finish_reason == FinishReason.LENGTH
        assert h.tokens(f"r{i}") == solo.tokens("alone")  # resumed where it was preempted
    assert h.fakes[0].no_room == 0  # the scheduler never planned more than the free cells


def test_requests_with_prompt_logprobs_that_outgrow_the_pool_finish_through_preemption() -> None:
    # Each reports its prompt's log-probabilities once; decoding, it may be preempted and resumes
    # without asking for them again (a pool full of such requests used to stall for good).
    h = Harness(n_slots=2, n_ctx=64)
    for name, start in (("a", 0), ("b", 500)):
        h.add(name, prompt(20, start), max_tokens=40, ignore_eos=True, prompt_logprobs=0)
    h.run_until_idle()
    assert h.sched.counters["preempted"] > 0
    for name, start in (("a", 0), ("b", 500)):
        assert h.final(name).finish_reason == FinishReason.LENGTH and len(h.tokens(name)) == 40
        lps = [lp for out in h.outputs[name] for lp in out.prompt_logprobs]
        assert [lp.token_id for lp in lps] == prompt(20, start)[1:]


def test_a_resumed_request_feeds_its_sampler_what_it_generated_before() -> None:
    h = Harness(n_slots=2, n_ctx=128)
    h.add("a", prompt(40), max_tokens=50, ignore_eos=True, cache_prompt=False)
    h.add("b", prompt(40, 500), max_tokens=50, ignore_eos=True, cache_prompt=False)
    h.run_until_idle()
    resumed = [s for plan in h.fakes[0].plans for s in plan.starts if s.history]
    assert resumed and all(len(s.history) > 0 for s in resumed)
    assert [len(h.tokens(r)) for r in ("a", "b")] == [50, 50]


def test_n_copies_of_one_prompt_evaluate_it_once() -> None:
    h = Harness(n_slots=4, n_ctx=512, n_batch=512)
    for i in range(4):
        h.add(f"c{i}", prompt(100), max_tokens=5)
    h.run_until_idle()
    evaluated = sum(len(item.token_ids) for plan in h.fakes[0].plans for item in plan.items
                    if not (len(item.token_ids) == 1 and item.pos >= 100))
    assert evaluated == 100 + 3  # one prefill; each copy evaluates only the last prompt token
    copies = [op for plan in h.fakes[0].plans for op in plan.kv_ops if op.kind == KvOpKind.COPY]
    assert len(copies) == 3 and all(op.pos == 99 for op in copies)
    assert [h.final(f"c{i}").finish_reason for i in range(4)] == [FinishReason.LENGTH] * 4


def test_shared_prefixes_are_counted_once_in_the_pool() -> None:
    h = Harness(n_slots=3, n_ctx=320, n_batch=512)
    h.add("a", prompt(200), max_tokens=50, ignore_eos=True)
    h.step()
    h.add("b", prompt(200) + [5], max_tokens=20, ignore_eos=True)  # copies 200 cells from a
    h.run_until_idle()  # 200 + 50 + 1 + 20 cells fit only if the copy is counted once
    assert h.sched.counters["preempted"] == 0 and h.fakes[0].no_room == 0
    assert [len(h.tokens(r)) for r in ("a", "b")] == [50, 20]
    assert h.sched.executors[0].free_cells == 320 - h.fakes[0].cells_used


def test_idle_cached_prefixes_are_evicted_when_the_pool_needs_their_cells() -> None:
    h = Harness(n_slots=4, n_ctx=256)
    for i in range(3):
        h.add(f"old{i}", prompt(60, 1000 * (i + 1)), max_tokens=4)
    h.run_until_idle()
    assert h.sched.executors[0].free_cells < 256 - 180  # their prefixes stay cached
    h.add("big", prompt(200), max_tokens=10)
    h.run_until_idle()
    assert h.final("big").finish_reason == FinishReason.LENGTH and h.sched.counters["preempted"] == 0
    assert h.fakes[0].no_room == 0


def test_an_evicted_prefix_is_restored_from_host_memory_instead_of_recomputed() -> None:
    h = Harness(n_slots=2, n_ctx=256, n_batch=512, cache_ram_bytes=10**6)
    system = prompt(150)
    h.add("first", system + [1, 2], max_tokens=4)
    h.run_until_idle()
    h.add("other", prompt(200, 5000), max_tokens=4)  # needs the cells: first's prefix is evicted
    h.run_until_idle()
    saves = [op for plan in h.fakes[0].plans for op in plan.kv_ops if op.kind == KvOpKind.SAVE]
    assert len(saves) == 1 and h.fakes[0].host[saves[0].entry_id][:150] == system
    h.add("again", system + [3, 4], max_tokens=4)
    plan = h.sched.next_plan(0)
    kinds = [op.kind for op in plan.kv_ops]
    assert KvOpKind.RESTORE in kinds
    (item,) = plan.items
    assert item.pos == 150 and item.token_ids == [3, 4]  # only what follows the shared prefix
    h.sched.step_result(h.fakes[0].run(plan))
    h.run_until_idle()
    assert h.final("again").stats.n_cached_tokens == 150
    assert h.fakes[0].no_room == 0


def test_host_memory_entries_past_the_budget_are_dropped_least_recently_used_first() -> None:
    h = Harness(n_slots=1, n_ctx=256, n_batch=512, cache_ram_bytes=1)  # bytes per token: 0 here
    h.sched.executors[0].host_cache.bytes_per_token = 1.0
    h.sched.executors[0].host_cache.budget_bytes = 250
    for i in range(4):  # each evicts the previous one's 100-token prefix
        h.add(f"r{i}", prompt(100, 1000 * (i + 1)), max_tokens=2)
        h.run_until_idle()
    entries = h.sched.executors[0].host_cache.entries
    assert len(entries) == 2 and sum(e.nbytes for e in entries) <= 250
    assert set(h.fakes[0].host) == {e.entry_id for e in entries}  # the executor dropped the rest


def test_the_prefix_being_restored_is_not_dropped_by_the_saves_that_make_room_for_it() -> None:
    h = Harness(n_slots=2, n_ctx=256, n_batch=512, cache_ram_bytes=1)
    h.sched.executors[0].host_cache.bytes_per_token = 1.0
    h.sched.executors[0].host_cache.budget_bytes = 250
    system = prompt(100, 1000)
    h.add("first", system, max_tokens=2)
    h.run_until_idle()
    h.add("long", prompt(200, 2000), max_tokens=2)  # first's prefix goes to host memory (102 bytes)
    h.run_until_idle()
    # Restoring it needs long's cells, whose save (202 bytes) cannot fit beside it: long's prefix
    # is evicted unsaved, where the save used to drop the entry the restore then missed.
    h.add("again", system + [1, 2], max_tokens=2)
    h.run_until_idle()
    assert h.final("again").finish_reason == FinishReason.LENGTH
    assert h.final("again").stats.n_cached_tokens == 100 and h.sched.counters["host_cache_unsaved"] == 1
    entries = h.sched.executors[0].host_cache.entries
    assert sum(e.nbytes for e in entries) <= 250 and set(h.fakes[0].host) == {e.entry_id for e in entries}


def test_a_prefix_slower_to_save_than_to_recompute_is_evicted_unsaved() -> None:
    # a GPU: each run of cells of a save is a device copy, recomputing the prefix is quick
    h = Harness(n_slots=1, n_ctx=512, n_batch=512, cache_ram_bytes=10**6)
    fake = h.fakes[0]
    run = fake.run

    def timed(plan: StepPlan) -> StepResult:
        result = run(plan)
        result.save_seconds = 0.5 * sum(op.kind == KvOpKind.SAVE for op in plan.kv_ops)  # steps: 10 ms
        result.step_seconds += result.save_seconds
        return result

    fake.run = timed
    for i in range(4):  # each evicts the previous one's prefix: 100 prompt tokens, 8 decoded one by one
        h.add(f"r{i}", prompt(100, 1000 * (i + 1)), max_tokens=8)
        h.run_until_idle()
    saves = [op for plan in fake.plans for op in plan.kv_ops if op.kind == KvOpKind.SAVE]
    assert len(saves) == 1  # the first save measured the cost; the next prefixes were not worth it
    assert h.sched.counters["host_cache_saved"] == 1 and h.sched.counters["host_cache_unsaved"] == 2
    cost = h.sched.executors[0].step_cost
    assert cost.seconds(100) < 0.1  # the save's time is not the step's: recomputing stays cheap


def test_a_save_timed_costly_at_start_up_keeps_even_the_first_prefix_unsaved() -> None:
    # the executor timed a save at start-up (a GPU: a device copy per run of cells), so no
    # eviction has to stall a step to learn what saving costs
    h = Harness(n_slots=1, n_ctx=512, n_batch=512, cache_ram_bytes=10**6, save_run_seconds=0.5)
    for i in range(4):
        h.add(f"r{i}", prompt(100, 1000 * (i + 1)), max_tokens=8)
        h.run_until_idle()
    assert not [op for plan in h.fakes[0].plans for op in plan.kv_ops if op.kind == KvOpKind.SAVE]
    assert h.sched.counters["host_cache_saved"] == 0 and h.sched.counters["host_cache_unsaved"] == 3


def test_a_prefix_that_is_cheap_to_save_is_kept_in_host_memory_each_time() -> None:
    h = Harness(n_slots=1, n_ctx=512, n_batch=512, cache_ram_bytes=10**6)
    fake = h.fakes[0]
    run = fake.run

    def timed(plan: StepPlan) -> StepResult:  # a CPU: a save is memcpys
        result = run(plan)
        result.save_seconds = 1e-5 * sum(op.kind == KvOpKind.SAVE for op in plan.kv_ops)
        return result

    fake.run = timed
    for i in range(4):
        h.add(f"r{i}", prompt(100, 1000 * (i + 1)), max_tokens=8)
        h.run_until_idle()
    assert h.sched.counters["host_cache_saved"] == 3 and h.sched.counters["host_cache_unsaved"] == 0


def test_a_request_naming_its_slot_waits_for_it_without_holding_up_others() -> None:
    h = Harness(n_slots=2, n_executors=2)
    h.add("busy", prompt(10), max_tokens=20, id_slot=3)  # executor 1, its second slot
    h.step()
    h.add("pinned", prompt(10, 500), max_tokens=2, id_slot=3)
    h.add("free", prompt(10, 900), max_tokens=2)
    for _ in range(4):
        h.step()
    assert h.final("free").finish_reason == FinishReason.LENGTH  # went ahead of the waiting one
    assert "pinned" not in h.outputs or h.outputs["pinned"][-1].finish_reason is None
    h.run_until_idle()
    for rid in ("busy", "pinned"):
        stats = h.final(rid).stats
        assert (stats.executor_id, stats.slot_id) == (1, 1)
    h.add("nowhere", prompt(10), id_slot=4)
    assert h.final("nowhere").error.code == ErrorCode.INVALID_REQUEST


def test_progress_is_reported_when_the_prefill_starts_and_after_each_step() -> None:
    h = Harness(n_slots=1, n_batch=16)
    h.add("r", prompt(40), max_tokens=1, return_progress=True)
    h.run_until_idle()
    progress = [o.progress for o in h.outputs["r"] if o.progress is not None]
    assert [p.processed for p in progress] == [0, 16, 32, 40] and all(p.total == 40 for p in progress)
    assert progress[0].time_ms == 0  # llama-server's 0% update, as the request gets its slot
    first_token = next(i for i, o in enumerate(h.outputs["r"]) if o.token_ids or o.finish_reason is not None)
    assert all(o.progress is not None for o in h.outputs["r"][:first_token])


def test_penalty_context_is_the_prompt_tail_the_repetition_samplers_look_at() -> None:
    h = Harness(n_slots=1)
    sched = h.sched
    sched.add_request(AddRequest("p", prompt(100), 2, SamplingParams(repeat_penalty=1.3, repeat_last_n=8)), b"peer")
    sched.add_request(AddRequest("q", prompt(100), 2, SamplingParams()), b"peer")
    (plan,) = h.step()
    assert plan.starts[0].penalty_context == prompt(100)[-8:]
    h.run_until_idle()
    (plan,) = [p for p in h.fakes[0].plans if p.starts][1:2]
    assert plan.starts[0].penalty_context == []  # no penalty: nothing to send


def test_end_reasoning_reaches_the_running_choices_of_a_call_that_armed_it() -> None:
    """POST /v1/chat/completions/control: the call's running choices get their seq ids in the next
    step, once; a call that is not running, or did not arm reasoning control, gets llama-server's
    reasons."""
    h = Harness(n_slots=3)
    budget = ReasoningBudget(-1, "<think>", ["</think>"], [5], control=True)
    for start, (rid, armed) in enumerate((("call-0", True), ("call-1", True), ("plain-0", False))):
        params = SamplingParams(temperature=0, reasoning_budget=budget if armed else None)
        h.sched.add_request(AddRequest(rid, prompt(8, 100 * start + 100), 50, params), b"peer")
    h.step()
    h.step()
    for request_id, token in (("call", 1), ("plain", 2), ("nobody", 3)):
        h.sched.end_reasoning(EndReasoning(token, request_id), b"peer")
    replies = {reply.token: reply for _, reply in h.sched.take_replies()}
    assert (replies[1].ended, replies[1].error) == (2, "")
    assert replies[2].error == "reasoning control not enabled for this completion" and not replies[2].ended
    assert replies[3].error == "no active completion for this id"
    seq_of = {req.id: req.slot.seq_id for req in h.sched.executors[0].running}
    (plan,) = h.step()
    assert sorted(plan.end_reasoning) == sorted([seq_of["call-0"], seq_of["call-1"]])
    (plan,) = h.step()
    assert plan.end_reasoning == []


def test_on_a_cpu_a_burst_of_prompts_is_prefilled_in_halves() -> None:
    """A CPU step costs its tokens: no new prompt starts once a step holds half the batch, so the
    first half of a burst gets its first tokens a step sooner; the oldest prompt's chunk still
    takes the whole budget. A GPU step takes every prompt that fits."""
    for device, firsts in (("cpu", [4, 4]), ("cuda", [8])):
        h = Harness(n_slots=8, n_batch=256, device=device)
        for i in range(8):
            h.add(f"r{i}", prompt(32, 100 * i + 100), max_tokens=2)
        prefilled = []
        while len(sum(prefilled, [])) < 8:
            (plan,) = h.step()
            prefilled.append([item.seq_id for item in plan.items if item.sample and len(item.token_ids) == 32])
        assert [len(p) for p in prefilled if p] == firsts
    h = Harness(n_slots=2, n_batch=256)
    h.add("long", prompt(600), max_tokens=2)
    h.add("short", prompt(32, 5000), max_tokens=2)
    (plan,) = h.step()
    assert [len(item.token_ids) for item in plan.items] == [256]


def test_a_cached_prefix_is_reused_only_with_the_same_cache_salt() -> None:
    h = Harness(n_slots=4)
    h.add("a", prompt(40), max_tokens=2, cache_salt="tenant-1")
    h.run_until_idle()
    for rid, salt in (("other", "tenant-2"), ("none", ""), ("same", "tenant-1")):
        h.add(rid, prompt(40) + [7], max_tokens=2, cache_salt=salt)
        h.run_until_idle()
    assert h.final("other").stats.n_cached_tokens == 0 and h.final("none").stats.n_cached_tokens == 0
    assert h.final("same").stats.n_cached_tokens == 40


def test_a_request_waits_to_copy_a_prefix_only_from_its_own_salt() -> None:
    h = Harness(n_slots=4)
    h.add("first", prompt(60), max_tokens=2, cache_salt="x")
    h.add("twin", prompt(60), max_tokens=2, cache_salt="y")  # no copy across salts: computed again
    h.add("sibling", prompt(60), max_tokens=2, cache_salt="x")
    h.run_until_idle()
    assert h.final("twin").stats.n_cached_tokens == 0
    assert h.final("sibling").stats.n_cached_tokens == 59  # copied from "first" (the last token is evaluated)
