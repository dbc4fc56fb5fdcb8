"""The scheduler's embedding requests, without processes: packing inputs of several requests
into shared steps, one terminal output each with every input's vectors in order, failures,
aborts and rejections."""

from __future__ import annotations

import numpy as np

from ipc.protocol import (
    AddRequest,
    EmbedPlan,
    EmbedRequest,
    EmbedResult,
    EngineError,
    ErrorCode,
    ExecutorInfo,
    FinishReason,
    SeqFailure,
    Vectors,
)
from scheduler.core import Scheduler

DIM = 4
PEER = b"frontend"


def embedding_scheduler(n_slots: int = 8, n_batch: int = 64, n_ctx_train: int = 512) -> Scheduler:
    core = Scheduler(n_executors=1, max_queue=16, n_batch=n_batch)
    core.executor_ready(ExecutorInfo(
        executor_id=0, model_path="fake.gguf", model_desc="fake", n_params=1, model_size_bytes=1, n_vocab=100,
        n_ctx=1024, n_ctx_train=n_ctx_train, n_swa=0, n_slots=n_slots, n_batch=n_batch, kv_bytes=0, pooling=1,
    ))  # fmt: skip
    return core


def run(core: Scheduler, plan: EmbedPlan, failed: frozenset[int] = frozenset(), executor_id: int = 0) -> None:
    """Answer a plan as an executor would: input i's vector is [first token, length, 0, 0]."""
    rows = [[item.token_ids[0], len(item.token_ids), 0, 0] for item in plan.items if item.seq_id not in failed]
    counts = [0 if item.seq_id in failed else 1 for item in plan.items]
    failures = [SeqFailure(s, EngineError(ErrorCode.INTERNAL, "boom")) for s in failed]
    data = np.array(rows, dtype="<f4").tobytes()
    core.embed_result(EmbedResult(plan.step_id, executor_id, Vectors(DIM, counts, data), failures=failures))


def drain(core: Scheduler) -> list[EmbedPlan]:
    plans = []
    while (plan := core.next_plan(0)) is not None:
        assert isinstance(plan, EmbedPlan)
        plans.append(plan)
        run(core, plan)
    return plans


def test_inputs_of_concurrent_requests_share_steps_and_come_back_in_order():
    core = embedding_scheduler(n_slots=16, n_batch=64)
    a = [[i + 1] * 10 for i in range(5)]  # 5 inputs of 10 tokens
    b = [[50 + i] * 3 for i in range(4)]
    core.add_embedding(EmbedRequest("a", a), PEER)
    core.add_embedding(EmbedRequest("b", b), PEER)
    plans = drain(core)
    # 64 tokens: a's five inputs (50) and four of b's (12) fit the first step; nothing is left
    assert [len(p.items) for p in plans] == [9]
    assert sorted(item.seq_id for item in plans[0].items) == list(range(9))
    outputs = {o.request_id: o for o in core.take_outputs()[PEER]}
    for rid, inputs in (("a", a), ("b", b)):
        out = outputs[rid]
        assert out.finish_reason == FinishReason.STOP and out.vectors is not None
        rows = np.frombuffer(out.vectors.data, "<f4").reshape(-1, DIM)
        assert rows[:, 0].tolist() == [t[0] for t in inputs] and out.vectors.counts == [1] * len(inputs)
        assert out.stats.n_prompt_tokens == sum(map(len, inputs))
    assert not core.embed.jobs and not core.has_work(0)


def test_the_sequence_limit_and_token_budget_split_steps():
    core = embedding_scheduler(n_slots=4, n_batch=32)
    core.add_embedding(EmbedRequest("a", [[7] * 10 for _ in range(10)]), PEER)
    plans = drain(core)
    assert [len(p.items) for p in plans] == [3, 3, 3, 1]  # 3 x 10 tokens fill 32; 4 sequences never reached
    core.add_embedding(EmbedRequest("b", [[7]] * 10), PEER)
    assert [len(p.items) for p in drain(core)] == [4, 4, 2]


def test_a_failed_input_fails_its_request_alone():
    core = embedding_scheduler()
    core.add_embedding(EmbedRequest("a", [[1], [2]]), PEER)
    core.add_embedding(EmbedRequest("b", [[3]]), PEER)
    plan = core.next_plan(0)
    run(core, plan, failed=frozenset({1}))  # a's second input
    outputs = {o.request_id: o for o in core.take_outputs()[PEER]}
    assert outputs["a"].finish_reason == FinishReason.ERROR and outputs["a"].vectors is None
    assert outputs["b"].finish_reason == FinishReason.STOP


def test_abort_and_executor_failure_end_requests_once():
    core = embedding_scheduler(n_slots=2)
    core.add_embedding(EmbedRequest("a", [[1], [2], [3]]), PEER)
    core.add_embedding(EmbedRequest("b", [[4]]), PEER)
    plan = core.next_plan(0)  # a's first two inputs
    core.abort(["a"])
    run(core, plan)  # results of an aborted request are dropped
    core.executor_failed(0, "gone")
    plan = core.next_plan(0)
    assert plan is None
    outputs = core.take_outputs()[PEER]
    assert [(o.request_id, o.finish_reason) for o in outputs] == [("a", FinishReason.ABORT)]
    assert "b" in core.embed.jobs  # still waiting for a live executor


def test_rejections_name_the_input():
    core = embedding_scheduler(n_batch=64, n_ctx_train=32)
    core.add_embedding(EmbedRequest("long", [[1], [1] * 33]), PEER)
    core.add_embedding(EmbedRequest("vocab", [[1, 100]]), PEER)
    core.add_embedding(EmbedRequest("empty", [[1], []]), PEER)
    core.add_request(AddRequest("generate", [1, 2], 4), PEER)
    errors = {o.request_id: o.error.message for o in core.take_outputs()[PEER]}
    assert errors["long"] == "input 1 has 33 tokens; an input may have at most 32"
    assert "input 0 has a token out of range" in errors["vocab"]
    assert errors["empty"] == "input 1 is empty"
    assert "embeddings only" in errors["generate"]


def test_inputs_in_flight_on_a_dead_executor_fail_their_request():
    core = embedding_scheduler(n_slots=1)
    core.add_embedding(EmbedRequest("a", [[1], [2]]), PEER)
    plan = core.next_plan(0)
    core.executor_failed(0, "killed")
    run(core, plan)  # a late result of the dead process changes nothing
    outputs = core.take_outputs()[PEER]
    assert [(o.request_id, o.finish_reason, o.error.code) for o in outputs] == [
        ("a", FinishReason.ERROR, ErrorCode.EXECUTOR_FAILED)]
    assert not core.embed.jobs and not core.embed.waiting


def test_drain_counts_embedding_requests_and_fail_all_ends_them():
    core = embedding_scheduler()
    core.add_embedding(EmbedRequest("a", [[1]]), PEER)
    assert core.n_unfinished == 1
    assert core.fail_all(EngineError(ErrorCode.SHUTTING_DOWN, "stopping")) == 1
    assert core.n_unfinished == 0 and core.take_outputs()[PEER][0].finish_reason == FinishReason.ERROR


def test_two_executors_share_one_queue_and_a_request_spans_both():
    core = Scheduler(n_executors=2, max_queue=16, n_batch=64)
    for executor_id in (0, 1):
        core.executor_ready(ExecutorInfo(
            executor_id=executor_id, model_path="fake.gguf", model_desc="fake", n_params=1, model_size_bytes=1,
            n_vocab=100, n_ctx=1024, n_ctx_train=512, n_swa=0, n_slots=2, n_batch=64, kv_bytes=0, pooling=1,
        ))  # fmt: skip
    core.add_embedding(EmbedRequest("a", [[1], [2], [3]]), PEER)
    first, second = core.next_plan(0), core.next_plan(1)
    assert [i.token_ids for i in first.items] == [[1], [2]] and [i.token_ids for i in second.items] == [[3]]
    run(core, second, executor_id=1)  # the later input comes back first
    assert not core.take_outputs()
    run(core, first)
    (out,) = core.take_outputs()[PEER]
    assert np.frombuffer(out.vectors.data, "<f4").reshape(-1, DIM)[:, 0].tolist() == [1, 2, 3]
