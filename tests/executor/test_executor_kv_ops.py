"""A step's KV edits in the executor, in process on the tiny llama model: a prefix that cannot be
restored from host memory fails its sequence, and every sequence the same step copies it to,
instead of letting them decode without it."""

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


def test_a_failed_restore_fails_the_sequences_copying_from_it_in_the_same_step(engine) -> None:
    after = len(PROMPT)
    result = engine.step(StepPlan(
        1,
        kv_ops=[KvOp(KvOpKind.RESTORE, 1, entry_id=99),  # no such entry in host memory
                KvOp(KvOpKind.COPY, 0, after, 1)],
        starts=[SeqStart(0, GREEDY), SeqStart(1, GREEDY), SeqStart(2, GREEDY)],
        items=[BatchItem(1, [7], after, True), BatchItem(0, [8], after, True), BatchItem(2, PROMPT, 0, True)],
    ))
    assert result.error is None
    assert sorted(f.seq_id for f in result.failures) == [0, 1]
    assert [s.seq_id for s in result.samples] == [2]  # the sequence beside them runs
    memory = llama_cpp.llama_get_memory(engine.ctx)
    assert llama_cpp.llama_memory_seq_pos_max(memory, 0) == -1  # nothing decoded at a position it lacks
