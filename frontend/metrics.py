"""Prometheus text for /metrics from the scheduler's EngineStats.

Metrics llama-server also exports keep its names and meaning (``llamacpp:prompt_tokens_total``
counts evaluated prompt tokens, excluding cache hits) so its dashboards work unchanged; the rest
are ``ggserve:``.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ipc.protocol import EngineStats

CONTENT_TYPE = CONTENT_TYPE_LATEST.encode()


class _EngineStatsCollector(Collector):
    def __init__(self, stats: EngineStats) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        s = self._stats
        counters = [
            ("llamacpp:prompt_tokens", "Prompt tokens evaluated, excluding cached tokens",
             s.prompt_tokens_evaluated_total),
            ("llamacpp:prompt_tokens_cached", "Prompt tokens reused from the prefix cache",
             s.prompt_tokens_cached_total),
            ("llamacpp:tokens_predicted", "Generated tokens", s.generated_tokens_total),
            ("llamacpp:n_decode", "Engine steps (llama_decode calls)", s.steps_total),
            ("ggserve:request_prompt_tokens", "Prompt tokens of finished requests, cached or not",
             s.prompt_tokens_total),
            ("ggserve:step_seconds", "Time executors spent in steps", s.step_seconds_total),
            ("ggserve:requests_finished", "Requests that ended normally (stop or length)", s.requests_finished),
            ("ggserve:requests_aborted", "Requests aborted (client gone, stop string)", s.requests_aborted),
            ("ggserve:requests_failed", "Requests the engine failed", s.requests_failed),
            ("ggserve:requests_rejected", "Requests refused at admission (queue full)", s.requests_rejected),
        ]
        for name, doc, value in counters:
            yield CounterMetricFamily(name, doc, value=value)
        busy = sum(1 for slot in s.slots if slot.busy)
        gauges = [
            ("llamacpp:requests_processing", "Requests holding a slot", s.n_running),
            ("llamacpp:requests_deferred", "Requests waiting for a slot", s.n_waiting),
            ("ggserve:slots_busy", "Slots running a request", busy),
            ("ggserve:slots_total", "Slots over all executors", len(s.slots)),
        ]
        for name, doc, value in gauges:
            yield GaugeMetricFamily(name, doc, value=value)


def render(stats: EngineStats) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_EngineStatsCollector(stats))
    return generate_latest(registry)
