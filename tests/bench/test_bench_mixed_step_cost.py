"""bench.micro.mixed_step_cost: each timed step leaves the cache as it found it, so every repetition
measures the same step, and the report has the four timings."""

from __future__ import annotations

import llama_cpp
import pytest

from bench.cli import default_model_path
from bench.micro.mixed_step_cost import Cache, measure


@pytest.fixture(scope="module")
def model():
    llama_cpp.llama_backend_init()
    m = llama_cpp.llama_model_load_from_file(default_model_path().encode(), llama_cpp.llama_model_default_params())
    yield m
    llama_cpp.llama_model_free(m)


def test_each_step_leaves_the_cache_as_it_was(model) -> None:
    cache = Cache(model, others=2, prompt_len=40, decoded=6, new_len=70, threads=2)
    try:
        before = [llama_cpp.llama_memory_seq_pos_max(cache.memory, s) for s in range(3)]
        assert before == [45, 45, -1]  # 40 prompt tokens + 6 decoded, and the new sequence empty
        for decodes, prompt in ((True, False), (False, True), (True, True)):
            assert cache.step(decodes, prompt) > 0
            assert [llama_cpp.llama_memory_seq_pos_max(cache.memory, s) for s in range(3)] == before
    finally:
        cache.close()


def test_the_report_has_the_four_timings(model) -> None:
    ms = measure(model, others=2, prompt_len=40, decoded=4, new_len=70, reps=1, threads=2)
    assert list(ms) == ["prompt, empty cache", "prompt alone", "decodes alone", "both in one step"]
    assert all(v > 0 for v in ms.values())
