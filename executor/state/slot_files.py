"""Slot save and restore (llama-server's POST /slots/{id}): a sequence's KV cells in a file.

``llama_state_seq_save_file`` writes the sequence's cells (sliding-window ones included) after
a header holding its token ids; ``llama_state_seq_load_file`` reads them back into an empty
sequence. A save goes to a temporary name first and is renamed into place, so a crash mid-save
never leaves a truncated file under the name a client restores. The scheduler decides which
sequence and how many cells; these functions only move bytes and report what happened.
"""

from __future__ import annotations

import ctypes
import os
import time

import llama_cpp

from ipc.protocol import EngineError, ErrorCode, SlotFileResult


def save(ctx: llama_cpp.llama_context_p, seq_id: int, path: str, tokens: list[int]) -> SlotFileResult:
    t0 = time.perf_counter()
    partial = f"{path}.partial"
    ids = (llama_cpp.llama_token * len(tokens))(*tokens)
    n_bytes = llama_cpp.llama_state_seq_save_file(ctx, partial.encode(), seq_id, ids, len(tokens))
    try:
        if n_bytes == 0:
            return SlotFileResult(seq_id, error=EngineError(ErrorCode.INTERNAL, f"could not write {path}"))
        os.replace(partial, path)
    except OSError as exc:
        return SlotFileResult(seq_id, error=EngineError(ErrorCode.INTERNAL, f"could not write {path}: {exc}"))
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return SlotFileResult(seq_id, n_bytes, (time.perf_counter() - t0) * 1e3)


def load(ctx: llama_cpp.llama_context_p, memory: llama_cpp.llama_memory_t, seq_id: int, path: str,
         max_tokens: int, n_vocab: int) -> SlotFileResult:
    """Load ``path`` into the (emptied) sequence; on any failure the sequence is left empty."""
    t0 = time.perf_counter()
    llama_cpp.llama_memory_seq_rm(memory, seq_id, -1, -1)
    if not os.path.isfile(path):
        return SlotFileResult(seq_id, error=EngineError(ErrorCode.NOT_FOUND, f"no slot file {path}"))
    ids = (llama_cpp.llama_token * max(1, max_tokens))()
    n_tokens = ctypes.c_size_t(0)
    n_bytes = llama_cpp.llama_state_seq_load_file(ctx, path.encode(), seq_id, ids, max_tokens,
                                                  ctypes.byref(n_tokens))
    tokens = ids[: n_tokens.value]
    problem = ""
    if n_bytes == 0:
        problem = (f"{path} is not a slot file of this model, holds more than {max_tokens} tokens, "
                   "or the KV cache has no room for it")
    elif any(not 0 <= t < n_vocab for t in tokens):
        problem = f"{path} holds token ids outside the vocabulary"
    if problem:
        llama_cpp.llama_memory_seq_rm(memory, seq_id, -1, -1)
        return SlotFileResult(seq_id, error=EngineError(ErrorCode.INVALID_REQUEST, f"unable to restore: {problem}"))
    return SlotFileResult(seq_id, n_bytes, (time.perf_counter() - t0) * 1e3, tokens)
