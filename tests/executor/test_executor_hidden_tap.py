"""Embeddings that stop the graph before the output layer (executor.embedding.hidden_tap), in process: on
the embedded Gemma 3 (a causal LM with a 262k-token output layer) every pooling gives the vectors
llama.cpp's own pooling gives on a context without the tap; models with nothing to skip (BERT) or
a head after the pooling (rank) run the whole graph as before."""

from __future__ import annotations

import ctypes

import llama_cpp
import numpy as np
import pytest
from embedding_models import minilm_gguf, tiny_reranker_gguf

from executor.engine import ModelEngine
from ggserve.config import ServeConfig, cpu_has_amx
from ggserve.models.resolve import resolve_model
from ipc.protocol import EmbedItem, EmbedPlan

INPUTS = [[2, 651, 5866, 3002, 1127, 528, 506, 9678, 236761], [2, 9259], [2, 45518, 563, 1657, 236761, 108]]


def engine(model: str, pooling: str) -> ModelEngine:
    cfg = ServeConfig(model=model, embeddings=True, pooling=pooling, n_parallel=8, ctx_size=512,
                      batch_size=64, threads=2, repack=not cpu_has_amx())
    return ModelEngine(cfg, 0)


def llama_cpp_vectors(eng: ModelEngine, pooling: int) -> np.ndarray:
    """The same inputs through a context of the same model without a callback: llama.cpp's pooling."""
    params = llama_cpp.llama_context_default_params()
    params.n_ctx, params.n_batch, params.n_ubatch, params.n_seq_max = 512, 64, 64, 8
    params.n_threads = params.n_threads_batch = 2
    params.kv_unified, params.embeddings, params.pooling_type = True, True, pooling
    params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
    ctx = llama_cpp.llama_init_from_model(eng.model, params)
    batch = llama_cpp.llama_batch_init(64, 0, 8)
    try:
        i = 0
        for seq, tokens in enumerate(INPUTS):
            for pos, token in enumerate(tokens):
                batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = token, pos, 1, 1
                batch.seq_id[i][0] = seq
                i += 1
        batch.n_tokens = i
        assert llama_cpp.llama_decode(ctx, batch) == 0
        float_p = ctypes.POINTER(ctypes.c_float)
        dim = eng.info.n_embd
        if pooling == llama_cpp.LLAMA_POOLING_TYPE_NONE:
            return np.ctypeslib.as_array(ctypes.cast(llama_cpp.llama_get_embeddings(ctx), float_p), (i, dim)).copy()
        return np.stack([np.ctypeslib.as_array(ctypes.cast(llama_cpp.llama_get_embeddings_seq(ctx, seq), float_p),
                                               (dim,)).copy() for seq in range(len(INPUTS))])
    finally:
        llama_cpp.llama_batch_free(batch)
        llama_cpp.llama_free(ctx)


@pytest.mark.parametrize("pooling", ["mean", "cls", "last", "none"])
def test_gemma_skips_the_output_layer_and_pools_as_llama_cpp_does(pooling: str):
    eng = engine(resolve_model(None), pooling)
    try:
        assert eng.embedder.tap is not None
        result = eng.embed(EmbedPlan(1, [EmbedItem(seq, tokens) for seq, tokens in enumerate(INPUTS)]))
        assert result.error is None and not result.failures
        assert eng.embedder.tap.stopped  # the graph ended at the hidden states
        ours = np.frombuffer(result.vectors.data, "<f4").reshape(-1, result.vectors.dim)
        theirs = llama_cpp_vectors(eng, eng.embedder.pooling)
        assert ours.shape == theirs.shape == ((sum(map(len, INPUTS)) if pooling == "none" else len(INPUTS)), 640)
        cosine = (ours * theirs).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(theirs, axis=1)
        assert cosine.min() > 0.99999 and np.abs(ours - theirs).max() < 1e-3
    finally:
        eng.close()


def test_models_without_an_output_layer_or_with_a_rank_head_run_the_whole_graph():
    for model, pooling in [(minilm_gguf(), "mean"), (tiny_reranker_gguf(), "rank")]:
        eng = engine(model, pooling)
        try:
            assert eng.embedder.tap is None
            result = eng.embed(EmbedPlan(1, [EmbedItem(0, [101, 7592, 102])]))
            assert result.error is None and result.vectors.counts == [1]
        finally:
            eng.close()
