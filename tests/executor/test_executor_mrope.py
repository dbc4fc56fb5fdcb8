"""M-RoPE in the executor, in process: a tiny Qwen2-VL text model (tiny_models.tiny_qwen2vl) with a
tiny qwen2vl merger projector (mmproj_models), and with tiny Qwen2.5-VL and Qwen2-Audio encoders,
checked against llama.cpp's own mtmd helper path (mtmd_reference). A 300 x 100 picture makes an
11 x 4 grid: 44 embeddings (KV cells) that advance the sequence by 11 positions; the scheduler's
plans count cells and the executor maps them."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from mmproj_models import png, tiny_qwen2_audio_mmproj, tiny_qwen25vl_mmproj, tiny_qwen2vl_mmproj, wav
from mtmd_reference import next_logits
from tiny_models import tiny_qwen2vl

from executor.media import positions
from ggserve.llama import projector
from executor.engine import ModelEngine
from executor.sampling.sequence import logits_view
from ggserve.config import ServeConfig, cpu_has_amx
from ipc.protocol import (BatchItem, KvOp, KvOpKind, MediaChunk, SamplingParams, SeqStart, StepPlan,
                          media_token_id)
from ipc.shm import Arena

PROMPT = "A picture: <__media__> and what it shows is"
IMAGE = png(300, 100, 4)
GRID = (44, 11)  # embeddings, positions


@pytest.fixture(scope="module")
def engine():
    cfg = ServeConfig(model=tiny_qwen2vl(), mmproj=tiny_qwen2vl_mmproj(), n_parallel=4, ctx_size=1024,
                      threads=2, repack=not cpu_has_amx())
    eng = ModelEngine(cfg, 0)
    yield eng
    eng.close()


def split(engine: ModelEngine, arena: Arena, text: str, data: bytes) -> tuple[list[int], MediaChunk, list[int]]:
    """(head tokens, the file's chunk, tail tokens) as the frontend splits ``text``."""
    parts = []
    with projector.chunks_of(engine.media.mtmd, text.encode(), [data], add_special=True) as chunks:
        for c in chunks:
            parts.append(projector.text_tokens(c) if projector.is_text(c)
                         else (projector.n_embeddings(c), projector.n_positions(c)))
    head, (n, n_pos), tail = parts
    ref = arena.put(np.frombuffer(data, dtype=np.uint8))
    return head, MediaChunk(len(head), n, hashlib.sha256(data).hexdigest(), ref, n_pos), tail


@pytest.fixture(scope="module")
def prompt(engine, arena):
    head, chunk, tail = split(engine, arena, PROMPT, IMAGE)
    assert (chunk.n_tokens, chunk.n_pos) == GRID
    return head, chunk, tail


@pytest.fixture(scope="module")
def reference(engine):
    logits, _ = next_logits(engine.model, engine.media.mtmd, PROMPT, [IMAGE])
    return logits


def image_item(seq: int, chunk: MediaChunk) -> BatchItem:
    return BatchItem(seq, [media_token_id(chunk.sha256)] * chunk.n_tokens, chunk.start, False)


def run(engine: ModelEngine, plans: list[StepPlan]) -> np.ndarray:
    """Run the plans; the logits row the last one sampled from."""
    for plan in plans:
        result = engine.step(plan)
        assert result.error is None and not result.failures, (result.error, result.failures)
    assert len(result.samples) == 1
    return logits_view(engine.ctx, 1, engine.n_vocab)[0].copy()


def prefill(seq: int, prompt: tuple, step: int) -> list[StepPlan]:
    """A fresh request's prompt on ``seq``, emptied first."""
    head, chunk, tail = prompt
    return [
        StepPlan(step, kv_ops=[KvOp(KvOpKind.CLEAR, seq)],
                 starts=[SeqStart(seq, SamplingParams(temperature=0), media=[chunk])],
                 items=[BatchItem(seq, head, 0, False)]),
        StepPlan(step + 1, items=[image_item(seq, chunk)]),
        StepPlan(step + 2, items=[BatchItem(seq, tail, chunk.start + chunk.n_tokens, True)]),
    ]


def test_the_layout_maps_indices_to_positions():
    layout = positions.layout_of([MediaChunk(5, 44, "a", None, 11), MediaChunk(60, 4, "b", None, 4)])
    assert layout == ((5, 44, 11),)  # a chunk that takes as many positions as cells shifts nothing
    assert [positions.position(layout, i) for i in (0, 5, 49, 50)] == [0, 5, 16, 17]
    assert [positions.index_of(layout, p) for p in (-1, 0, 5, 16, 17)] == [-1, 0, 5, 49, 50]
    with pytest.raises(ValueError, match="inside a media chunk"):
        positions.position(layout, 6)


def test_the_prompt_predicts_what_llama_cpp_does(engine, prompt, reference):
    ours = run(engine, prefill(0, prompt, 10))
    np.testing.assert_allclose(ours, reference, atol=1e-3)


def test_ignoring_the_positions_would_predict_otherwise(engine, prompt, reference, monkeypatch):
    """The check above can fail: with cells counted as positions the text after the picture
    lands 33 positions later and the logits move far."""
    monkeypatch.setattr(engine.positions, "layouts", {})
    monkeypatch.setattr(engine.positions, "start", lambda *_: None)
    wrong = run(engine, prefill(3, prompt, 20))
    assert np.abs(wrong - reference).max() > 1.0


def test_copies_truncations_and_host_memory_keep_the_positions(engine, prompt, reference):
    head, chunk, tail = prompt
    after = chunk.start + chunk.n_tokens
    run(engine, prefill(0, prompt, 30))
    start = [SeqStart(1, SamplingParams(temperature=0), media=[chunk])]
    copied = run(engine, [StepPlan(40, kv_ops=[KvOp(KvOpKind.COPY, 1, after, 0)], starts=start,
                                   items=[BatchItem(1, tail, after, True)])])
    np.testing.assert_allclose(copied, reference, atol=1e-3)
    # text after the picture cut back (as after rejected draft tokens) and decoded again
    recut = run(engine, [StepPlan(45, kv_ops=[KvOp(KvOpKind.TRUNCATE, 1, after + 2)],
                                  items=[BatchItem(1, tail[2:], after + 2, True)])])
    np.testing.assert_allclose(recut, reference, atol=1e-3)
    # the whole prompt goes to host memory and comes back on another sequence, cut back to the
    # picture's start (its cells all sit at one position): the picture and the tail run again
    start = [SeqStart(2, SamplingParams(temperature=0), media=[chunk])]
    restored = run(engine, [
        StepPlan(50, kv_ops=[KvOp(KvOpKind.SAVE, 1, entry_id=7), KvOp(KvOpKind.CLEAR, 1),
                             KvOp(KvOpKind.RESTORE, 2, entry_id=7), KvOp(KvOpKind.TRUNCATE, 2, chunk.start)],
                 starts=start),
        StepPlan(51, items=[image_item(2, chunk)]),
        StepPlan(52, items=[BatchItem(2, tail, after, True)]),
    ])
    np.testing.assert_allclose(restored, reference, atol=1e-3)
    saved = engine.step(StepPlan(53, kv_ops=[KvOp(KvOpKind.SAVE, 2, entry_id=8)]))
    assert 0 < saved.save_seconds <= saved.step_seconds  # timed apart: the scheduler weighs saves by it
    result = engine.step(StepPlan(54, kv_ops=[KvOp(KvOpKind.DROP, entry_id=7), KvOp(KvOpKind.DROP, entry_id=8)]))
    assert result.pos_min[2] == 0 and result.pos_min[1] == -1


def test_a_kv_edit_inside_a_picture_is_a_bad_plan(engine, prompt, reference):
    _, chunk, _ = prompt
    run(engine, prefill(0, prompt, 60))
    result = engine.step(StepPlan(70, kv_ops=[KvOp(KvOpKind.TRUNCATE, 0, chunk.start + 3)]))
    assert "inside a media chunk" in result.error
    again = run(engine, prefill(0, prompt, 71))
    np.testing.assert_allclose(again, reference, atol=1e-3)


@pytest.mark.parametrize(("mmproj", "text", "data", "grid"), [
    # Qwen2.5-Omni's audio: one position per embedding, the same in all four sections (a 30 s window)
    (tiny_qwen2_audio_mmproj, "Listen: <__media__> and it says", wav(1.0, seed=3), (750, 750)),
    # Qwen2.5-VL's windowed vision tower: the same positions as Qwen2-VL's
    (tiny_qwen25vl_mmproj, "A picture: <__media__> and what it shows is", IMAGE, GRID),
], ids=["qwen2-audio", "qwen2.5-vl"])
def test_other_mrope_projectors_predict_what_llama_cpp_does(arena, mmproj, text, data, grid):
    cfg = ServeConfig(model=tiny_qwen2vl(), mmproj=mmproj(), n_parallel=1, ctx_size=1024,
                      batch_size=1024, ubatch_size=1024, threads=2, repack=not cpu_has_amx())
    engine = ModelEngine(cfg, 0)
    try:
        head, chunk, tail = split(engine, arena, text, data)
        assert (chunk.n_tokens, chunk.n_pos) == grid
        ours = run(engine, prefill(0, (head, chunk, tail), 1))
        reference, _ = next_logits(engine.model, engine.media.mtmd, text, [data])
        np.testing.assert_allclose(ours, reference, atol=1e-3)
    finally:
        engine.close()
