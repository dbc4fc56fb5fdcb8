"""The executor's media path in process, on the embedded model with the tiny Gemma 3 projector:
a chunk's embeddings are decoded in a decode of their own and the sequence goes on from them,
encoded chunks are kept by hash, a chunk that cannot run fails its sequence alone, and one that
finds no KV room leaves the step to be planned again."""

from __future__ import annotations

import hashlib

import llama_cpp
import numpy as np
import pytest
from mmproj_models import IMAGE_TOKENS, png, tiny_vision_mmproj

from executor.engine import ModelEngine
from ggserve.config import ServeConfig, cpu_has_amx
from ggserve.models.resolve import resolve_model
from ipc.protocol import (
    ArrayRef, BatchItem, KvOp, KvOpKind, MediaChunk, SamplingParams, SeqStart, StepPlan, media_token_id,
)
from ipc.shm import Arena

HEAD = [2, 9259, 255999]  # BOS "Hello" <start_of_image>
TAIL = [256000, 1902]  # <end_of_image> " world"


@pytest.fixture(scope="module")
def engine():
    cfg = ServeConfig(model=resolve_model(None), mmproj=tiny_vision_mmproj(), n_parallel=4, ctx_size=1024,
                      threads=2, repack=not cpu_has_amx())
    eng = ModelEngine(cfg, 0)
    yield eng
    eng.close()


def chunk(arena: Arena, data: bytes, digest: str | None = None) -> MediaChunk:
    ref = arena.put(np.frombuffer(data, dtype=np.uint8))
    return MediaChunk(len(HEAD), IMAGE_TOKENS, digest or hashlib.sha256(data).hexdigest(), ref)


def run_prompt(engine: ModelEngine, seq: int, media: MediaChunk, step: int) -> list:
    """Prefill HEAD, the picture, TAIL on ``seq`` as the scheduler plans them; the samples and failures."""
    mid = [media_token_id(media.sha256)] * media.n_tokens
    plans = [
        StepPlan(step, starts=[SeqStart(seq, SamplingParams(temperature=0), media=[media])],
                 items=[BatchItem(seq, HEAD, 0, False)]),
        StepPlan(step + 1, items=[BatchItem(seq, mid, len(HEAD), False)]),
        StepPlan(step + 2, items=[BatchItem(seq, TAIL, len(HEAD) + media.n_tokens, True)]),
    ]
    return [engine.step(plan) for plan in plans]


def test_the_picture_is_decoded_and_the_sequence_goes_on(engine, arena, monkeypatch):
    media = chunk(arena, png(40, 30, 1))
    results = run_prompt(engine, 0, media, 10)
    assert all(r.error is None and not r.failures for r in results)
    assert len(results[-1].samples) == 1
    assert list(engine.media.cache) == [(media.sha256, 0)]
    # the same picture on another sequence comes from the cache: the encoder does not run again
    monkeypatch.setattr(engine.media, "_encode", lambda *_: pytest.fail("encoded twice"))
    again = run_prompt(engine, 1, chunk(arena, png(40, 30, 1)), 20)
    assert all(r.error is None and not r.failures for r in again)
    assert len(again[-1].samples) == 1


def test_a_chunk_that_cannot_run_fails_its_sequence_alone(engine, arena):
    data = png(24, 24, 2)
    wrong = chunk(arena, data, digest=hashlib.sha256(b"another file").hexdigest())
    mid = [media_token_id(wrong.sha256)] * IMAGE_TOKENS
    engine.step(StepPlan(30, starts=[SeqStart(2, SamplingParams(temperature=0), media=[wrong]),
                                     SeqStart(3, SamplingParams(temperature=0))],
                         items=[BatchItem(2, HEAD, 0, False)]))
    result = engine.step(StepPlan(31, items=[BatchItem(2, mid, len(HEAD), False), BatchItem(3, HEAD, 0, True)]))
    assert result.error is None
    assert [f.seq_id for f in result.failures] == [2] and "changed" in result.failures[0].error.message
    assert [s.seq_id for s in result.samples] == [3]  # the other sequence sampled in the same step
    misplaced = engine.step(StepPlan(32, items=[BatchItem(3, mid, len(HEAD) + 1, False)]))
    assert [f.seq_id for f in misplaced.failures] == [3] and "no media chunk" in misplaced.failures[0].error.message


def test_a_chunk_whose_shared_memory_is_gone_fails_its_sequence_alone(engine):
    # An HTTP worker that died took its segment with it before the executor read the picture.
    data = png(20, 20, 3)
    gone = MediaChunk(len(HEAD), IMAGE_TOKENS, hashlib.sha256(data).hexdigest(),
                      ArrayRef("ggserve-test-no-such-segment", 0, len(data), "uint8", (len(data),)))
    mid = [media_token_id(gone.sha256)] * IMAGE_TOKENS
    engine.step(StepPlan(40, kv_ops=[KvOp(KvOpKind.CLEAR, 2), KvOp(KvOpKind.CLEAR, 3)],
                         starts=[SeqStart(2, SamplingParams(temperature=0), media=[gone]),
                                     SeqStart(3, SamplingParams(temperature=0))],
                         items=[BatchItem(2, HEAD, 0, False)]))
    result = engine.step(StepPlan(41, items=[BatchItem(2, mid, len(HEAD), False), BatchItem(3, HEAD, 0, True)]))
    assert result.error is None
    assert [f.seq_id for f in result.failures] == [2] and "gone" in result.failures[0].error.message
    assert [s.seq_id for s in result.samples] == [3]


def test_a_chunk_without_kv_room_leaves_the_cache_as_it_was(engine, arena):
    """llama_decode's 1 for a chunk, or for the text batch after a chunk decoded in the same
    step, is the step's no_kv_room: no chunk of the step stays in the cache (the scheduler plans
    it all again), and nothing fails."""
    clear = [KvOp(KvOpKind.CLEAR, seq) for seq in range(4)]
    n_free = 14
    filler = [9259] * ((engine.info.n_ctx - n_free) // 2)  # two decodes of at most n_batch tokens
    starts = [SeqStart(seq, SamplingParams(temperature=0)) for seq in (1, 3)]
    engine.step(StepPlan(40, kv_ops=clear, starts=starts, items=[BatchItem(3, filler, 0, False)]))
    engine.step(StepPlan(41, items=[BatchItem(3, filler, len(filler), False)]))
    media = chunk(arena, png(32, 32, 4))
    mid = [media_token_id(media.sha256)] * IMAGE_TOKENS
    first = engine.step(StepPlan(42, starts=[SeqStart(0, SamplingParams(temperature=0), media=[media])],
                                 items=[BatchItem(0, HEAD, 0, False)]))
    assert first.error is None and not first.failures
    memory = llama_cpp.llama_get_memory(engine.ctx)
    # the chunk fits the free cells, the text beside it does not: the chunk leaves again
    crowded = engine.step(StepPlan(43, items=[BatchItem(0, mid, len(HEAD), False),
                                              BatchItem(1, [9259] * 12, 0, False)]))
    assert crowded.no_kv_room and not crowded.failures and crowded.error is None
    assert llama_cpp.llama_memory_seq_pos_max(memory, 0) == len(HEAD) - 1
    assert llama_cpp.llama_memory_seq_pos_max(memory, 1) == -1
    # now too few cells for the chunk itself
    engine.step(StepPlan(44, items=[BatchItem(1, [9259] * (n_free - len(HEAD) - IMAGE_TOKENS + 1), 0, False)]))
    alone = engine.step(StepPlan(45, items=[BatchItem(0, mid, len(HEAD), False)]))
    assert alone.no_kv_room and not alone.failures and alone.error is None
    assert llama_cpp.llama_memory_seq_pos_max(memory, 0) == len(HEAD) - 1
    # with room again (the filler gone), the same chunk runs where it was refused
    engine.step(StepPlan(46, kv_ops=[KvOp(KvOpKind.CLEAR, 3)], items=[]))
    ok = engine.step(StepPlan(47, items=[BatchItem(0, mid, len(HEAD), False)]))
    assert not ok.no_kv_room and not ok.failures
    assert llama_cpp.llama_memory_seq_pos_max(memory, 0) == len(HEAD) + IMAGE_TOKENS - 1
    engine.step(StepPlan(48, kv_ops=clear, ends=[0, 1, 3], items=[]))
