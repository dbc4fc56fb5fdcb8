"""One short run of the load generator against a real server: llama-cpp-python's own server
on the embedded Gemma 3 270M, with tiny lengths (a few seconds)."""

import asyncio
import random

import pytest

from bench import compare
from bench.cli import default_model_path
from bench.runner import Load, Plan, benchmark
from bench.stats import Slo, summarize
from bench.tokenizer import TextMaker, Tokenizer
from bench.workloads import LengthDist, random_sessions

INPUT_LEN, OUTPUT_LEN = 16, 8


@pytest.mark.timeout(180)
def test_load_generator_against_llama_cpp_python_server(tmp_path):
    model = default_model_path()
    texts = TextMaker(Tokenizer(model), pool_size=300)

    def sessions_for(load: Load):
        lengths = LengthDist(INPUT_LEN, INPUT_LEN), LengthDist(OUTPUT_LEN, OUTPUT_LEN)
        return random_sessions(texts, random.Random(str(load)), 3, *lengths)

    plan = Plan([Load("concurrency", 1), Load("concurrency", 2)], sessions_for,
                sessions_for(Load("rate", 0)), max_duration=60, request_timeout=60, seed=0)
    setup = compare.ServerSetup(model_path=model, parallel=1, ctx_size=1024, threads=2,
                                no_repack=True, port=0, startup_timeout=120, extra_args={})
    port = compare.free_port()
    command = compare.server_command("llama-cpp-python", setup, port)
    with compare.running_server("llama-cpp-python", command, port, tmp_path / "server.log",
                                setup.startup_timeout) as (base_url, _):
        # min_tokens: this server ignores ignore_eos; min_tokens makes the lengths exact
        results = asyncio.run(benchmark(base_url, None, plan, "min_tokens"))

    for result in results:
        assert [r.error for r in result.records] == [""] * 3
        for r in result.records:
            assert r.output_tokens == OUTPUT_LEN and len(r.itl) == OUTPUT_LEN - 1
            assert 0 < r.ttft < r.e2e < 30
        summary = summarize(result, Slo(ttft_ms=60_000))
        assert summary["requests"] == 3 and summary["goodput"] == summary["request_throughput"]
        assert 1 < summary["output_throughput"] < 2000
        assert 0 < summary["tpot_p50_ms"] <= summary["tpot_p99_ms"] < 5000
    # it serves one request at a time: at concurrency 2 requests queue, so TTFT grows
    mean_ttft = [sum(r.ttft for r in result.records) / 3 for result in results]
    assert mean_ttft[1] > mean_ttft[0]
