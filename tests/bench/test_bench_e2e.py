"""Short runs of the load generator against real servers on the embedded Gemma 3 270M, started
the way `ggserve bench compare` starts them, with tiny lengths (a few seconds each)."""

import asyncio
import importlib.util
import random

import pytest

from bench import compare
from bench.cli import default_model_path
from bench.host.machine import CpuMeter
from bench.runner import Load, Plan, RunResult, benchmark
from bench.stats import Slo, summarize
from bench.tokenizer import TextMaker, Tokenizer
from bench.workloads import LengthDist, random_sessions

INPUT_LEN, OUTPUT_LEN, PER_LEVEL = 16, 8, 3


def run_against(server: str, tmp_path, exact_output: str) -> list[RunResult]:
    model = default_model_path()
    texts = TextMaker(Tokenizer(model), pool_size=300)

    def sessions_for(load: Load):
        lengths = LengthDist(INPUT_LEN, INPUT_LEN), LengthDist(OUTPUT_LEN, OUTPUT_LEN)
        return random_sessions(texts, random.Random(str(load)), PER_LEVEL, *lengths)

    plan = Plan([Load("concurrency", 1), Load("concurrency", 2)], sessions_for,
                sessions_for(Load("rate", 0)), max_duration=60, request_timeout=60, seed=0)
    setup = compare.ServerSetup(model_path=model, parallel=2, ctx_size=1024, threads=2,
                                repack=False, port=0, startup_timeout=120, extra_args={})
    port = compare.free_port()
    with compare.running_server(server, compare.server_command(server, setup, port), port,
                                tmp_path / "server.log", setup.startup_timeout) as (url, sid):
        return asyncio.run(benchmark(url, None, plan, exact_output, CpuMeter(sid)))


def check_sensible(results: list[RunResult]) -> None:
    for result in results:
        assert [r.error for r in result.records] == [""] * PER_LEVEL
        for r in result.records:
            assert r.output_tokens == OUTPUT_LEN and len(r.itl) == OUTPUT_LEN - 1
            assert 0 < r.ttft < r.e2e < 60
        summary = summarize(result, Slo(ttft_ms=60_000))
        assert summary["requests"] == PER_LEVEL
        assert summary["goodput"] == summary["request_throughput"]
        assert 0 < summary["output_throughput"] < 2000
        assert 0 < summary["tpot_p50_ms"] <= summary["tpot_p99_ms"] < 5000
        assert summary["cpu_server_cores"] > 0.05  # it was the server that did the work


@pytest.mark.timeout(180)
def test_against_ggserve(tmp_path):
    results = run_against("ggserve", tmp_path, "ignore_eos")
    check_sensible(results)
    for r in results[0].records:  # counted from the server's usage; BOS + prompt
        assert r.tokens_from_usage and r.prompt_tokens == INPUT_LEN + 1
        assert r.cached_tokens is not None and 0 <= r.cached_tokens <= r.prompt_tokens


@pytest.mark.timeout(180)
@pytest.mark.skipif(importlib.util.find_spec("uvicorn") is None,
                    reason="llama-cpp-python's server needs llama-cpp-python[server]")
def test_against_llama_cpp_python_server(tmp_path):
    # min_tokens: this server ignores ignore_eos; min_tokens makes the lengths exact
    results = run_against("llama-cpp-python", tmp_path, "min_tokens")
    check_sensible(results)
    # it serves one request at a time: at concurrency 2 requests queue, so TTFT grows
    mean_ttft = [sum(r.ttft for r in result.records) / PER_LEVEL for result in results]
    assert mean_ttft[1] > mean_ttft[0]
