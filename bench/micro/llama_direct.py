"""The model, contexts and decodes of the micro-benchmarks that drive llama.cpp directly
(bench.micro.idle_prefix_cost, bench.micro.mixed_step_cost), set as ggserve's executor sets them."""

from __future__ import annotations

import time

import llama_cpp

from executor.batch import NumpyBatch
from ggserve.llama.log import LlamaLogCapture
from ggserve.config import cpu_has_amx
from ggserve.models.resolve import resolve_model
from ipc.protocol import BatchItem

FLASH = {"on": llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED, "off": llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED}


def load_model(model_path: str | None) -> llama_cpp.llama_model_p:
    """The model (the embedded one when ``model_path`` is None), weight repacking as ggserve sets it."""
    LlamaLogCapture()  # llama.cpp's loading chatter goes to logging (not configured here: dropped)
    llama_cpp.llama_backend_init()
    mparams = llama_cpp.llama_model_default_params()
    mparams.use_extra_bufts = not cpu_has_amx()
    return llama_cpp.llama_model_load_from_file(resolve_model(model_path).encode(), mparams)


def context(model: llama_cpp.llama_model_p, n_seq: int, n_ctx: int, threads: int, flash: str
            ) -> llama_cpp.llama_context_p:
    """A context laid out as ggserve's: one unified KV pool, sliding-window cells per sequence."""
    cparams = llama_cpp.llama_context_default_params()
    cparams.n_ctx, cparams.n_batch, cparams.n_ubatch, cparams.n_seq_max = n_ctx, 512, 512, n_seq
    cparams.n_threads = cparams.n_threads_batch = threads
    cparams.kv_unified, cparams.swa_full = True, False
    cparams.flash_attn_type = FLASH[flash]
    cparams.no_perf = True
    return llama_cpp.llama_init_from_model(model, cparams)


def decode(ctx: llama_cpp.llama_context_p, nb: NumpyBatch, items: list[BatchItem]) -> float:
    """Seconds of one llama_decode of ``items``."""
    nb.fill(items)
    t0 = time.perf_counter()
    if llama_cpp.llama_decode(ctx, nb.struct) != 0:
        raise RuntimeError("llama_decode failed")
    return time.perf_counter() - t0
