"""llama.cpp's own multimodal path in process: the reference ggserve's positions are checked against.

``next_logits`` evaluates a prompt (text with one media marker per file) the way llama.cpp's
tools do, chunk by chunk through ``mtmd_helper_eval_chunk_single`` on a fresh context of its own,
and returns the logits of the prompt's last token: with M-RoPE that path lays out each image's
2-D positions and advances the sequence by its n_pos, so a server that gets a position wrong
predicts something else.
"""

from __future__ import annotations

import ctypes

import llama_cpp
import numpy as np
from llama_cpp import mtmd_cpp as mtmd

from ggserve.llama import projector


def next_logits(model: llama_cpp.llama_model_p, mtmd_ctx: mtmd.mtmd_context_p, text: str, files: list[bytes],
                n_ctx: int = 1024) -> tuple[np.ndarray, int]:
    """The logits after ``text`` (BOS added, special tokens parsed) and the prompt's token count."""
    params = llama_cpp.llama_context_default_params()
    params.n_ctx = params.n_batch = params.n_ubatch = n_ctx  # an image decodes in one micro-batch
    params.n_threads = params.n_threads_batch = 2
    params.no_perf = True
    ctx = llama_cpp.llama_init_from_model(model, params)
    assert ctx, "no llama.cpp context for the reference"
    n_vocab = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(model))
    try:
        n_past, n_tokens = 0, 0
        with projector.chunks_of(mtmd_ctx, text.encode(), files, add_special=True) as chunks:
            for i, chunk in enumerate(chunks):
                new_n_past = llama_cpp.llama_pos(n_past)  # the text path adds to it, media sets it
                rc = mtmd.mtmd_helper_eval_chunk_single(mtmd_ctx, ctx, chunk, n_past, 0, n_ctx,
                                                        i == len(chunks) - 1, ctypes.byref(new_n_past))
                assert rc == 0, f"mtmd_helper_eval_chunk_single returned {rc}"
                n_past = new_n_past.value
                n_tokens += projector.n_embeddings(chunk)
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, -1), shape=(n_vocab,)).copy()
        return logits, n_tokens
    finally:
        llama_cpp.llama_free(ctx)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max()
    return shifted - np.log(np.exp(shifted).sum())
