"""bench.stats: percentiles, throughput, TPOT, goodput and error accounting on synthetic runs."""

import pytest

from bench.client import RequestRecord
from bench.runner import Load, RunResult
from bench.stats import Slo, latency_stats, summarize


def record(ttft: float, e2e: float, tokens: int, expected: int = 8, error: str = "",
           prompt_tokens: int | None = None, cached_tokens: int | None = None,
           group: str = "") -> RequestRecord:
    gaps = [(e2e - ttft) / (tokens - 1)] * (tokens - 1) if tokens > 1 else []
    return RequestRecord(session=0, turn=0, input_len=10, expected_output_tokens=expected,
                         group=group, ttft=ttft, e2e=e2e, itl=gaps, output_tokens=tokens,
                         prompt_tokens=prompt_tokens, cached_tokens=cached_tokens, error=error)


def test_latency_stats_percentiles_in_ms():
    stats = latency_stats("ttft", [i / 1000 for i in range(1, 101)])  # 1..100 ms
    assert stats["ttft_mean_ms"] == pytest.approx(50.5)
    assert stats["ttft_p50_ms"] == pytest.approx(50.5)
    assert stats["ttft_p90_ms"] == pytest.approx(90.1)
    assert stats["ttft_p99_ms"] == pytest.approx(99.01)


def test_latency_stats_without_samples_are_none():
    assert set(latency_stats("itl", []).values()) == {None}


def test_tpot_excludes_first_token():
    assert record(0.1, 0.8, 8).tpot == pytest.approx(0.1)
    assert record(0.1, 0.1, 1).tpot is None
    assert record(0.1, 0.8, 8, error="boom").tpot is None


def test_summarize_counts_only_successes():
    records = [record(0.1, 0.8, 8, prompt_tokens=11, cached_tokens=4), record(0.2, 0.9, 8),
               record(0.3, 1.0, 4), record(0.0, 0.0, 0, error="HTTP 500")]
    summary = summarize(RunResult(Load("concurrency", 2), records, 2.0, 4, 4), Slo())
    assert summary["requests"] == 3
    assert summary["errors"] == 1
    assert summary["short_outputs"] == 1
    assert summary["output_throughput"] == pytest.approx(20 / 2.0)
    assert summary["request_throughput"] == pytest.approx(1.5)
    # prompt tokens from usage where given (11), else the prompt's own length (10)
    assert summary["total_throughput"] == pytest.approx((20 + 11 + 10 + 10) / 2.0)
    assert summary["ttft_p50_ms"] == pytest.approx(200.0)
    assert summary["tpot_p50_ms"] == pytest.approx(100.0)
    assert summary["goodput"] is None
    assert summary["cached_prompt_fraction"] == pytest.approx(4 / 11)  # only where reported
    assert summary["cached_tokens_mean"] == pytest.approx(4.0)
    assert "groups" not in summary  # no request has a group


def test_goodput_counts_requests_meeting_every_slo():
    records = [record(0.1, 0.8, 8), record(0.5, 1.2, 8), record(0.1, 2.2, 8)]
    slo = Slo(ttft_ms=200, tpot_ms=150)
    assert [slo.met_by(r) for r in records] == [True, False, False]  # ttft; tpot 300 ms
    summary = summarize(RunResult(Load("rate", 1.0), records, 4.0, 3, 3), slo)
    assert summary["goodput"] == pytest.approx(1 / 4.0)


def test_groups_are_summarized_apart_over_the_whole_run():
    records = [record(2.0, 3.0, 8, group="long", prompt_tokens=301, cached_tokens=0),
               record(0.1, 0.8, 8, group="short", prompt_tokens=11, cached_tokens=0),
               record(0.3, 1.0, 8, group="short", prompt_tokens=11, cached_tokens=10),
               record(0.0, 0.0, 0, group="short", error="HTTP 500")]
    summary = summarize(RunResult(Load("concurrency", 4), records, 4.0, 4, 4), Slo())
    long, short = summary["groups"]["long"], summary["groups"]["short"]
    assert list(summary["groups"]) == ["long", "short"]
    assert (long["requests"], short["requests"], short["errors"]) == (1, 2, 1)
    assert long["ttft_p50_ms"] == pytest.approx(2000.0)
    assert short["ttft_p50_ms"] == pytest.approx(200.0)
    assert short["ttft_p90_ms"] == pytest.approx(280.0)
    # throughput over the run's 4 s, so the groups add up to the whole
    assert long["output_throughput"] + short["output_throughput"] == pytest.approx(
        summary["output_throughput"]) == pytest.approx(24 / 4.0)
    assert long["total_throughput"] == pytest.approx((8 + 301) / 4.0)
    assert short["cached_tokens_mean"] == pytest.approx(5.0)
    assert short["cached_prompt_fraction"] == pytest.approx(10 / 22)
