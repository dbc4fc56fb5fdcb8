"""At start-up an executor with a host cache (--cache-ram) times one save of a sequence whose
cells interleave with another's, and reports the time per run of cells (ExecutorInfo.
save_run_seconds): the scheduler's estimate before its first eviction. The probe leaves nothing
behind in the KV cache or in host memory."""

from __future__ import annotations

import llama_cpp
import pytest
from frontend_support import gemma_path
from tiny_models import tiny_llama

from executor.engine import SAVE_PROBE_ENTRY, ModelEngine
from ggserve.config import ServeConfig, cpu_has_amx
from ipc.protocol import BatchItem


def engine(**kw) -> ModelEngine:
    return ModelEngine(ServeConfig(model=tiny_llama(), ctx_size=256, threads=2, repack=not cpu_has_amx(), **kw), 0)


def test_an_executor_with_a_host_cache_times_a_save_and_leaves_nothing_behind() -> None:
    eng = engine(n_parallel=2)
    try:
        assert eng.info.save_run_seconds > 0
        memory = llama_cpp.llama_get_memory(eng.ctx)
        assert [llama_cpp.llama_memory_seq_pos_max(memory, s) for s in (0, 1)] == [-1, -1]
        assert not eng.host_cache.restore(SAVE_PROBE_ENTRY, 0)  # the probe's entry is gone
    finally:
        eng.close()


@pytest.mark.parametrize("kw", [{"n_parallel": 2, "cache_ram": 0}, {"n_parallel": 1}], ids=["no-host-cache", "one-slot"])
def test_no_save_is_timed_without_a_host_cache_or_a_second_sequence(kw) -> None:
    eng = engine(**kw)
    try:
        assert eng.info.save_run_seconds == 0.0
    finally:
        eng.close()


def test_the_probe_counts_every_layers_cells_of_a_prefix_on_a_sliding_window_model() -> None:
    """Gemma 3's window layers hold fewer cells than -c, so the KV cache's bytes per cell
    undercount what a saved prefix takes (--cache-ram went ~1.5x over its budget): the probe's
    bytes per token are what a real prefix's save measures."""
    eng = ModelEngine(ServeConfig(model=gemma_path(), ctx_size=4096, threads=2, n_parallel=2,
                                  repack=not cpu_has_amx()), 0)
    try:
        per_token = eng.info.save_bytes_per_token
        assert per_token > 1.4 * eng.info.kv_bytes / eng.info.n_ctx  # (at -c 4096)
        n = 100
        eng.batch.fill([BatchItem(0, [eng.info.bos_token_id] * n, 0, False)])
        assert llama_cpp.llama_decode(eng.ctx, eng.batch.struct) == 0
        saved = eng.host_cache.save(0, 7)
        assert abs(saved - n * per_token) < 0.02 * saved
    finally:
        eng.close()
