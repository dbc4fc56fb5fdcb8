"""The executor's embedding step on the converted all-MiniLM-L6-v2 (no KV cache: BERT), in
process: pooled and per-token vectors, plans llama.cpp would abort on failing item by item, and
vectors through a shared-memory arena (freed by later plans; inline when it is full)."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
from embedding_models import minilm_gguf

from executor.engine import ModelEngine
from ggserve.config import ServeConfig, cpu_has_amx
from ipc.protocol import EmbedItem, EmbedPlan
from ipc.shm import Arena, ArenaReader

SENTENCE = [101, 1037, 2158, 2003, 5983, 2833, 1012, 102]  # "a man is eating food." with [CLS], [SEP]


def engine(pooling: str) -> ModelEngine:
    cfg = ServeConfig(model=minilm_gguf(), embeddings=True, pooling=pooling, n_parallel=8, ctx_size=512,
                      batch_size=64, threads=2, repack=not cpu_has_amx())
    return ModelEngine(cfg, 0)


@pytest.fixture(scope="module")
def mean_engine():
    eng = engine("mean")
    yield eng
    eng.close()


def rows(result, i: int) -> np.ndarray:
    data = np.frombuffer(result.vectors.data, "<f4").reshape(-1, result.vectors.dim)
    start = sum(result.vectors.counts[:i])
    return data[start:start + result.vectors.counts[i]]


def test_pooled_vectors_one_per_input_whatever_runs_beside_it(mean_engine: ModelEngine):
    assert mean_engine.info.pooling == 1 and mean_engine.info.n_embd == 384
    alone = mean_engine.embed(EmbedPlan(1, [EmbedItem(0, SENTENCE)]))
    batch = mean_engine.embed(EmbedPlan(2, [EmbedItem(3, [101, 7592, 102]), EmbedItem(5, SENTENCE)]))
    assert alone.error is None and batch.vectors.counts == [1, 1] and batch.vectors.dim == 384
    a, b = rows(alone, 0)[0], rows(batch, 1)[0]
    assert float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)) > 0.9999


def test_invalid_items_fail_alone(mean_engine: ModelEngine):
    plan = EmbedPlan(3, [
        EmbedItem(0, SENTENCE),
        EmbedItem(1, [101, 10**6]),  # out of the vocabulary
        EmbedItem(0, SENTENCE),  # a sequence id twice
        EmbedItem(99, SENTENCE),  # no such sequence
        EmbedItem(2, []),
        EmbedItem(4, [7] * 60),  # past the 64-token batch with the first one
    ])
    result = mean_engine.embed(plan)
    assert result.error is None and result.vectors.counts == [1, 0, 0, 0, 0, 0]
    assert sorted(f.seq_id for f in result.failures) == [0, 1, 2, 4, 99]
    assert mean_engine.embed(EmbedPlan(4, [EmbedItem(1, [101, 10**6])])).vectors.counts == [0]


def test_pooling_none_gives_one_row_per_token():
    eng = engine("none")
    try:
        result = eng.embed(EmbedPlan(1, [EmbedItem(2, SENTENCE), EmbedItem(0, SENTENCE[:3])]))
        assert eng.info.pooling == 0 and result.vectors.counts == [8, 3]
        assert rows(result, 0).shape == (8, 384)
        # BERT attends both ways: a token's row depends on the tokens after it too
        assert not np.allclose(rows(result, 0)[:3], rows(result, 1), atol=1e-3)
    finally:
        eng.close()


@pytest.fixture
def arena():
    arena = Arena(f"test{uuid.uuid4().hex[:10]}", "executor0-1", 4096)  # two 384-wide rows and a bit
    yield arena
    arena.close()
    arena.unlink()


def test_vectors_through_the_arena_equal_the_inline_ones_and_a_full_arena_sends_them_inline(arena: Arena):
    cfg = ServeConfig(model=minilm_gguf(), embeddings=True, pooling="mean", n_parallel=8, ctx_size=512,
                      batch_size=64, threads=2, repack=not cpu_has_amx())
    eng = ModelEngine(cfg, 0, arena)
    reader = ArenaReader()
    try:
        assert eng.info.arena == arena.name
        items = [EmbedItem(0, SENTENCE), EmbedItem(1, [101, 10**6]), EmbedItem(2, [101, 7592, 102])]
        shared = eng.embed(EmbedPlan(1, items))  # 2 rows: 3,072 of the arena's 4,032 bytes
        inline = eng.embed(EmbedPlan(2, items))  # no room left: inside the message
        assert not shared.vectors.data and len(shared.vectors.regions) == 1
        assert shared.vectors.counts == inline.vectors.counts == [1, 0, 1]
        assert shared.vectors.where == [(0, 0), (0, 1), (0, 1)]
        assert inline.vectors.data and not inline.vectors.regions and not inline.vectors.where
        region = reader.get(shared.vectors.regions[0])
        assert region.tobytes() == inline.vectors.data  # bitwise
        assert arena.free_bytes < arena.capacity
        # the next plan frees the region before writing its own
        again = eng.embed(EmbedPlan(3, items[:1], releases=shared.vectors.regions))
        assert again.vectors.regions[0].offset == 0 and not again.vectors.data
        eng.embed(EmbedPlan(4, [], releases=again.vectors.regions + shared.vectors.regions))  # once too often: logged
        assert arena.free_bytes == arena.capacity
    finally:
        reader.close()
        eng.close()


def test_an_encoder_gets_flash_attention_back_and_stays_batch_invariant(caplog):
    """No KV cache: flash attention (2-2.5x faster on full batches) keeps a text's vector the
    same alone and among 31 others."""
    cfg = ServeConfig(model=minilm_gguf(), embeddings=True, pooling="mean", n_parallel=64, ctx_size=1024,
                      batch_size=512, threads=2, repack=not cpu_has_amx())
    with caplog.at_level("INFO", logger="executor"):
        eng = ModelEngine(cfg, 0)
    try:
        assert "encoder without KV cache: flash attention" in caplog.text
        rng = np.random.default_rng(5)
        others = [[101, *rng.integers(2000, 29000, int(rng.integers(5, 13))).tolist(), 102] for _ in range(31)]
        alone = rows(eng.embed(EmbedPlan(1, [EmbedItem(0, SENTENCE)])), 0)[0]
        for where in (0, 17, 31):
            items = [EmbedItem(i + 1, tokens) for i, tokens in enumerate(others)]
            items.insert(where, EmbedItem(0, SENTENCE))
            batch = eng.embed(EmbedPlan(2, items))
            assert batch.vectors.counts == [1] * 32
            together = rows(batch, where)[0]
            cosine = float(alone @ together / np.linalg.norm(alone) / np.linalg.norm(together))
            assert cosine > 0.9999 and np.abs(alone - together).max() < 1e-3
    finally:
        eng.close()
