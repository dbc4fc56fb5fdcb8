"""At start-up an executor with a host cache (--cache-ram) times one save of a sequence whose
cells interleave with another's, and reports the time per run of cells (ExecutorInfo.
save_run_seconds): the scheduler's estimate before its first eviction. The probe leaves nothing
behind in the KV cache or in host memory."""

from __future__ import annotations

import llama_cpp
import pytest
from tiny_models import tiny_llama

from executor.engine import SAVE_PROBE_ENTRY, ModelEngine
from ggserve.config import ServeConfig, cpu_has_amx


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
