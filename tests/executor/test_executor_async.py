"""The executor's half of asynchronous scheduling, in process on the tiny llama model: an item
planned before the previous step's result (BatchItem.follows) feeds the token that step sampled
for its sequence; a sequence the previous step sampled nothing for fails alone; and a step that
follows one that did not run is refused (no_kv_room) without touching the cache. Within one step
the same holds for its KV edits: a prefix that cannot be restored from host memory fails its
sequence and every sequence the step copies it to, instead of letting them decode without it."""

from __future__ import annotations

import llama_cpp
import pytest
from tiny_models import tiny_llama

from executor.engine import ModelEngine
from ggserve.config import ServeConfig, cpu_has_amx
from ipc.protocol import BatchItem, KvOp, KvOpKind, SamplingParams, SeqStart, StepPlan

PROMPT = list(range(1000, 1012))
GREEDY = SamplingParams(temperature=0)


@pytest.fixture(scope="module")
def engine():
    cfg = ServeConfig(model=tiny_llama(), n_parallel=3, ctx_size=256, threads=2, repack=not cpu_has_amx())
    eng = ModelEngine(cfg, 0)
    yield eng
    eng.close()


def start(step_id: int, seq: int) -> StepPlan:
    """A fresh greedy sequence ``seq`` prefilling PROMPT (emptied first)."""
    return StepPlan(step_id, [KvOp(KvOpKind.CLEAR, seq)], [SeqStart(seq, GREEDY)], [seq],
                    [BatchItem(seq, PROMPT, 0, True)])


def token(engine: ModelEngine, plan: StepPlan, seq: int) -> int:
    result = engine.step(plan)
    assert result.error is None and not result.failures and not result.no_kv_room
    return next(s.token_id for s in result.samples if s.seq_id == seq)


def test_a_following_item_feeds_the_token_the_step_before_sampled(engine) -> None:
    first = token(engine, start(1, 0), 0)
    followed = token(engine, StepPlan(2, items=[BatchItem(0, [], len(PROMPT), True, follows=True)]), 0)
    # the same two steps with the token spelled out, on another sequence
    assert token(engine, start(3, 1), 1) == first
    spelled = token(engine, StepPlan(4, items=[BatchItem(1, [first], len(PROMPT), True)]), 1)
    assert followed == spelled
    memory = llama_cpp.llama_get_memory(engine.ctx)
    assert llama_cpp.llama_memory_seq_pos_max(memory, 0) == len(PROMPT)  # the followed token is cached


def test_a_sequence_the_step_before_did_not_sample_fails_alone(engine) -> None:
    token(engine, start(5, 0), 0)
    result = engine.step(StepPlan(6, starts=[SeqStart(2, GREEDY)], items=[
        BatchItem(0, [], len(PROMPT), True, follows=True),
        BatchItem(2, [], 0, True, follows=True),  # seq 2 sampled nothing in step 5
    ]))
    assert [f.seq_id for f in result.failures] == [2]
    assert [s.seq_id for s in result.samples] == [0] and result.error is None


def test_a_step_following_one_that_did_not_run_is_refused(engine) -> None:
    token(engine, start(7, 0), 0)
    memory = llama_cpp.llama_get_memory(engine.ctx)
    broken = engine.step(StepPlan(8, items=[BatchItem(0, [5], len(PROMPT) + 3, True)]))  # a gap in positions
    assert broken.error is not None
    before = llama_cpp.llama_memory_seq_pos_max(memory, 0)
    refused = engine.step(StepPlan(9, items=[BatchItem(0, [], len(PROMPT), True, follows=True)]))
    assert refused.no_kv_room and not refused.samples
    assert llama_cpp.llama_memory_seq_pos_max(memory, 0) == before  # nothing decoded
    # a plan with its tokens spelled out runs again, and what it samples can be followed
    assert token(engine, StepPlan(10, items=[BatchItem(0, [5], len(PROMPT), True)]), 0) >= 0
    assert token(engine, StepPlan(11, items=[BatchItem(0, [], len(PROMPT) + 1, True, follows=True)]), 0) >= 0


def test_a_failed_restore_fails_the_sequences_copying_from_it_in_the_same_step(engine) -> None:
    after = len(PROMPT)
    result = engine.step(StepPlan(
        1,
        kv_ops=[KvOp(KvOpKind.CLEAR, 2),
                KvOp(KvOpKind.RESTORE, 1, entry_id=99),  # no such entry in host memory
                KvOp(KvOpKind.COPY, 0, after, 1)],
        starts=[SeqStart(0, GREEDY), SeqStart(1, GREEDY), SeqStart(2, GREEDY)],
        items=[BatchItem(1, [7], after, True), BatchItem(0, [8], after, True), BatchItem(2, PROMPT, 0, True)],
    ))
    assert result.error is None
    assert sorted(f.seq_id for f in result.failures) == [0, 1]
    assert [s.seq_id for s in result.samples] == [2]  # the sequence beside them runs
    memory = llama_cpp.llama_get_memory(engine.ctx)
    assert llama_cpp.llama_memory_seq_pos_max(memory, 0) == -1  # nothing decoded at a position it lacks
