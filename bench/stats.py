"""Statistics of a run: throughput, goodput under SLOs, and latency percentiles.

Latencies are reported in milliseconds. Only successful requests count towards throughput and
latencies; failed ones are counted as errors. Inter-token latencies of all requests are pooled.
Where requests carry groups (long and short prompts, first and returning turns), each group is
also summarized on its own, its throughput over the whole run's duration (so the groups' add up).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench.client import RequestRecord
from bench.runner import RunResult

PERCENTILES = (50, 90, 99)
LATENCIES = ("ttft", "tpot", "itl", "e2e")


@dataclass(frozen=True)
class Slo:
    """Service-level objectives in milliseconds; None means no objective on that latency."""

    ttft_ms: float | None = None
    tpot_ms: float | None = None
    e2e_ms: float | None = None

    @property
    def defined(self) -> bool:
        return any(v is not None for v in (self.ttft_ms, self.tpot_ms, self.e2e_ms))

    def met_by(self, record: RequestRecord) -> bool:
        checks = ((self.ttft_ms, record.ttft), (self.tpot_ms, record.tpot),
                  (self.e2e_ms, record.e2e))
        return record.ok and all(limit is None or (value is not None and value * 1000 <= limit)
                                 for limit, value in checks)


def latency_stats(name: str, seconds: Sequence[float]) -> dict[str, float | None]:
    """Mean and percentiles of a latency, in ms (None when there are no samples)."""
    stats: dict[str, float | None] = {f"{name}_mean_ms": None}
    stats |= {f"{name}_p{q}_ms": None for q in PERCENTILES}
    if seconds:
        ms = np.asarray(seconds, dtype=np.float64) * 1000.0
        stats[f"{name}_mean_ms"] = float(ms.mean())
        stats |= {f"{name}_p{q}_ms": float(np.percentile(ms, q)) for q in PERCENTILES}
    return stats


def request_stats(records: Sequence[RequestRecord], duration: float,
                  slo: Slo) -> dict[str, Any]:
    """Counts, throughput over duration, cache use and latencies of some requests of a run."""
    ok = [r for r in records if r.ok]
    output_tokens = sum(r.output_tokens for r in ok)
    # Prompt tokens as the server counted them (template, BOS, history) when it says so.
    prompt_tokens = sum(r.prompt_tokens if r.prompt_tokens is not None else r.input_len for r in ok)
    cache_known = [r for r in ok if r.cached_tokens is not None and r.prompt_tokens]
    samples = {
        "ttft": [r.ttft for r in ok if r.ttft is not None],
        "tpot": [t for t in (r.tpot for r in ok) if t is not None],
        "itl": [gap for r in ok for gap in r.itl],
        "e2e": [r.e2e for r in ok if r.e2e is not None],
    }
    cached_tokens = sum(r.cached_tokens or 0 for r in cache_known)
    stats: dict[str, Any] = {
        "requests": len(ok),
        "errors": len(records) - len(ok),
        "short_outputs": sum(r.output_tokens < r.expected_output_tokens for r in ok),
        "duration_s": duration,
        "request_throughput": len(ok) / duration if duration else 0.0,
        "output_throughput": output_tokens / duration if duration else 0.0,
        "total_throughput": (output_tokens + prompt_tokens) / duration if duration else 0.0,
        "output_tokens": output_tokens,
        "prompt_tokens": prompt_tokens,
        # share of the prompt tokens the server says it took from its prefix cache, and how
        # many per request
        "cached_prompt_fraction": cached_tokens / sum(r.prompt_tokens or 0 for r in cache_known)
        if cache_known else None,
        "cached_tokens_mean": cached_tokens / len(cache_known) if cache_known else None,
        "goodput": (sum(slo.met_by(r) for r in ok) / duration if duration else 0.0)
        if slo.defined else None,
    }
    for name in LATENCIES:
        stats |= latency_stats(name, samples[name])
    return stats


def summarize(result: RunResult, slo: Slo) -> dict[str, Any]:
    """request_stats of the whole run, its load and sessions, its CPU use and, if its requests
    carry groups, request_stats per group under "groups"."""
    summary: dict[str, Any] = {
        "mode": result.load.mode,
        "load": result.load.value,
        "sessions": result.sessions_started,
        "sessions_planned": result.sessions_planned,
    }
    summary |= request_stats(result.records, result.duration, slo)
    groups = sorted({r.group for r in result.records if r.group})
    if groups:
        summary["groups"] = {group: request_stats([r for r in result.records if r.group == group],
                                                  result.duration, slo) for group in groups}
    return summary | result.cpu
