"""The Prometheus text of /metrics: the engine's counters (from the scheduler's EngineStats) and
the per-request histograms the HTTP workers observe.

Series llama-server also exports keep its ``llamacpp:`` names and meaning (``prompt_tokens_total``
counts evaluated prompt tokens, cache hits excluded; ``prompt_tokens_seconds`` and
``predicted_tokens_seconds`` average over the time since the previous scrape), so its dashboards
work unchanged; they sum over every executor. ``n_tokens_max`` is typed a counter, as llama-server
types it (though it is a maximum), with its sample named as there (see ``render``).
The ``spec_decode_*`` series come with speculative decoding. The rest are ``ggserve:``, with an
``executor`` label where a value belongs to one executor. In router mode every engine series and
every request histogram has a ``model`` label too (the engine series of each loaded model). With
several executors the two throughput gauges are per executor: their time adds up over executors
running side by side.

Several HTTP workers: the engine's numbers come from the one scheduler (in router mode, each
loaded model's: the scraped worker connects to every one of them), so any worker gives the
same; the request histograms live in each worker, so with ``PROMETHEUS_MULTIPROC_DIR`` set (the
launcher sets it with ``--metrics``) every worker writes them to its own file in that folder
(prometheus-client's multiprocess mode) and the scraped worker sums all the files, those of
workers that granian replaced too. Without it (a single worker in tests) they are read from this
process.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from ipc.protocol import EngineStats, ExecutorStats

CONTENT_TYPE = CONTENT_TYPE_LATEST.encode()
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0,
                    80.0, 160.0, 320.0, 640.0)
_PER_TOKEN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3,
                      0.4, 0.5, 0.75, 1.0, 2.5)
_TOKEN_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000)

class _RequestHistograms:
    """The per-request histograms, in a registry of their own (not the default one: /metrics
    shows the Python metrics of no worker); in router mode each has a ``model`` label."""

    def __init__(self, labels: tuple[str, ...]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)

        def histogram(name: str, doc: str, buckets: tuple[float, ...]) -> Histogram:
            return Histogram(name, doc, labels, buckets=buckets, registry=self.registry)

        self.time_to_first_token = histogram(
            "ggserve:time_to_first_token_seconds", "From the HTTP request to its first generated token (per choice)",
            _LATENCY_BUCKETS)
        self.time_per_output_token = histogram(
            "ggserve:time_per_output_token_seconds", "Mean time between generated tokens after the first (per choice)",
            _PER_TOKEN_BUCKETS)
        self.e2e_latency = histogram(
            "ggserve:e2e_request_latency_seconds", "From the HTTP request to the choice's last token", _LATENCY_BUCKETS)
        self.queue_time = histogram(
            "ggserve:request_queue_time_seconds", "Time a request waited in the scheduler's queue for a slot",
            _LATENCY_BUCKETS)
        self.prompt_tokens = histogram(
            "ggserve:request_prompt_tokens", "Prompt length of a request, in tokens", _TOKEN_BUCKETS)
        self.generation_tokens = histogram(
            "ggserve:request_generation_tokens", "Tokens a request generated", _TOKEN_BUCKETS)


@functools.cache
def _histograms(by_model: bool) -> _RequestHistograms:
    """One set per kind of server, made on first use: a worker serves one model or a router's."""
    return _RequestHistograms(("model",) if by_model else ())


def _sum(executors: list[ExecutorStats], field: str) -> float:
    return sum(getattr(e, field) for e in executors)


_Kind = type[CounterMetricFamily | GaugeMetricFamily]


class _EngineCollector(Collector):
    """The engines' series; in router mode one engine per loaded model, told apart by a
    ``model`` label (a single model's series have none)."""

    def __init__(self, engines: dict[str, EngineStats]) -> None:
        self._engines = engines  # model -> its stats ("": the single model, no label)

    def _family(self, kind: _Kind, name: str, doc: str,
                labels: list[str], values: Iterator[tuple[list[str], float]]) -> Metric:
        """A family with the model label first (where there is one), samples from ``values``."""
        routed = any(self._engines)
        family = kind(name, doc, labels=(["model"] if routed else []) + labels)
        for label_values, value in values:
            family.add_metric(label_values, value)
        return family

    def _per_model(self, value: Callable[[EngineStats], float]) -> Iterator[tuple[list[str], float]]:
        routed = any(self._engines)
        return (([model] if routed else [], value(s)) for model, s in self._engines.items())

    def collect(self) -> Iterator[Metric]:
        def steps(s: EngineStats) -> float:
            return _sum(s.executors, "steps_total")

        for name, doc, value in [
            ("prompt_tokens", "Number of prompt tokens processed, excluding cached tokens",
             lambda s: _sum(s.executors, "prompt_tokens_total")),
            ("prompt_tokens_cached", "Number of prompt tokens reused from the cache",
             lambda s: _sum(s.executors, "prompt_tokens_cached_total")),
            ("prompt_seconds", "Total time spent processing prompts",
             lambda s: _sum(s.executors, "prompt_seconds_total")),
            ("tokens_predicted", "Number of generation tokens processed",
             lambda s: _sum(s.executors, "tokens_predicted_total")),
            ("tokens_predicted_seconds", "Total time spent generating tokens",
             lambda s: s.tokens_predicted_seconds_total),
            ("n_decode", "Total number of llama_decode() calls", steps),
            ("spec_decode_num_draft_tokens", "Speculative: Total draft tokens generated",
             lambda s: s.spec_draft_tokens_total),
            ("spec_decode_num_accepted_tokens", "Speculative: Total draft tokens accepted by the target model",
             lambda s: s.spec_accepted_tokens_total),
            ("spec_decode_num_drafts", "Speculative: Total speculative decoding verification steps",
             lambda s: s.spec_drafts_total),
        ]:
            yield self._family(CounterMetricFamily, f"llamacpp:{name}", doc, [], self._per_model(value))
        for name, doc, value in [
            ("n_tokens_max", "Largest observed sequence length (prompt + generation)", lambda s: s.n_tokens_max),
            ("prompt_tokens_seconds", "Average prompt throughput in tokens/s", lambda s: s.prompt_tokens_per_second),
            ("predicted_tokens_seconds", "Average generation throughput in tokens/s",
             lambda s: s.predicted_tokens_per_second),
            ("requests_processing", "Number of requests processing", lambda s: s.n_running),
            ("requests_deferred", "Number of requests deferred", lambda s: s.n_waiting),
            ("n_busy_slots_per_decode", "Average number of busy slots per llama_decode() call",
             lambda s: _sum(s.executors, "busy_slots_total") / max(steps(s), 1)),
        ]:
            yield self._family(GaugeMetricFamily, f"llamacpp:{name}", doc, [], self._per_model(value))
        for name, doc, value in [
            ("requests_finished", "Requests that ended normally (stop or length)", lambda s: s.requests_finished),
            ("requests_aborted", "Requests aborted (client gone, stop string)", lambda s: s.requests_aborted),
            ("requests_failed", "Requests the engine failed", lambda s: s.requests_failed),
            ("requests_rejected", "Requests refused at admission (queue full, invalid, draining)",
             lambda s: s.requests_rejected),
            ("vectors_inline", "Embedding steps whose vectors went inside the message: the shared-memory "
             "arena was full", lambda s: s.vectors_inline_total),
            ("steps_planned_ahead", "Decode steps planned while the step before them ran (asynchronous "
             "scheduling)", lambda s: s.steps_planned_ahead_total),
        ]:
            yield self._family(CounterMetricFamily, f"ggserve:{name}", doc, [], self._per_model(value))
        yield from self._per_executor()
        if any(s.spec_accepted_per_pos for s in self._engines.values()):
            yield self._family(CounterMetricFamily, "llamacpp:spec_decode_num_accepted_tokens_per_pos",
                               "Accepted tokens per draft position", ["position"],
                               self._labelled(lambda s: ((str(i), n) for i, n in enumerate(s.spec_accepted_per_pos))))
        yield self._family(CounterMetricFamily, "ggserve:restarts", "Restarts of a process after it failed or hung",
                           ["process"], self._labelled(lambda s: ((c.process, c.count) for c in s.restarts)))

    def _labelled(self, rows: Callable[[EngineStats], Iterator[tuple[str, float]]]
                  ) -> Iterator[tuple[list[str], float]]:
        """Samples with one label of their own (the executor, the process), under each model's."""
        routed = any(self._engines)
        for model, s in self._engines.items():
            for label, value in rows(s):
                yield ([model] if routed else []) + [label], value

    def _per_executor(self) -> Iterator[Metric]:
        families: list[tuple[_Kind, str, str, Callable[[ExecutorStats], float]]] = [
            (GaugeMetricFamily, "ggserve:executor_ready", "1 while the executor runs requests, 0 while it restarts",
             lambda e: float(e.ready)),
            (GaugeMetricFamily, "ggserve:slots_total", "Slots (sequences) of the executor", lambda e: e.n_slots),
            (GaugeMetricFamily, "ggserve:slots_busy", "Slots running a request", lambda e: e.n_busy_slots),
            (GaugeMetricFamily, "ggserve:kv_cache_tokens", "KV cells in use (a prefix shared by several slots "
             "counts once): running requests and prefix cache", lambda e: e.kv_tokens),
            (GaugeMetricFamily, "ggserve:kv_cache_usage_ratio", "kv_cache_tokens over the context's cells",
             lambda e: e.kv_tokens / e.n_ctx if e.n_ctx else 0.0),
            (CounterMetricFamily, "ggserve:prefix_cache_hit_tokens", "Prompt tokens reused from the prefix cache",
             lambda e: e.prompt_tokens_cached_total),
            (CounterMetricFamily, "ggserve:prompt_tokens", "Prompt tokens evaluated (cache hits excluded)",
             lambda e: e.prompt_tokens_total),
            (CounterMetricFamily, "ggserve:generation_tokens", "Tokens generated by finished requests",
             lambda e: e.tokens_predicted_total),
            (CounterMetricFamily, "ggserve:steps", "Engine steps (llama_decode calls)", lambda e: e.steps_total),
            (CounterMetricFamily, "ggserve:step_seconds", "Time spent in engine steps", lambda e: e.step_seconds_total),
        ]
        for kind, name, doc, value in families:
            yield self._family(kind, name, doc, ["executor"], self._labelled(
                lambda s, value=value: ((str(e.executor_id), value(e)) for e in s.executors)))


def observe_request(model: str, prompt_tokens: int, generated_tokens: int, e2e_s: float, ttft_s: float | None,
                    queue_s: float | None) -> None:
    """One engine request (one choice) ended; ``model``: the model it named in router mode, ""
    with one model; ``ttft_s`` is None when it generated nothing, ``queue_s`` when the engine
    never reported it (the client left first)."""
    h = _histograms(bool(model))

    def observe(histogram: Histogram, value: float) -> None:
        (histogram.labels(model) if model else histogram).observe(value)

    observe(h.prompt_tokens, prompt_tokens)
    observe(h.generation_tokens, generated_tokens)
    observe(h.e2e_latency, e2e_s)
    if queue_s is not None:
        observe(h.queue_time, queue_s)
    if ttft_s is not None:
        observe(h.time_to_first_token, ttft_s)
        if generated_tokens > 1:
            observe(h.time_per_output_token, (e2e_s - ttft_s) / (generated_tokens - 1))


def render(engines: dict[str, EngineStats], by_model: bool = False) -> bytes:
    """The metrics text of the engines (model -> stats; the single model's key is "") and of the
    request histograms (``by_model``: router mode's, labelled by model)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_EngineCollector(engines))
    # Made before any request too: a histogram without labels is shown at zero from the start
    # (in multiprocess mode, making it writes its zeros to this worker's file).
    histograms = _histograms(by_model)
    multiproc_dir = os.environ.get(MULTIPROC_ENV)
    if multiproc_dir:
        MultiProcessCollector(registry, multiproc_dir)
    else:
        registry.register(_RegistryCollector(histograms.registry))
    # prometheus_client names a counter's sample NAME_total, and llama-server's n_tokens_max sample
    # has no suffix: it is made a gauge and its TYPE line says counter, as llama-server's does.
    return generate_latest(registry).replace(b"# TYPE llamacpp:n_tokens_max gauge\n",
                                             b"# TYPE llamacpp:n_tokens_max counter\n")


class _RegistryCollector(Collector):
    """Another registry's metrics, as one collector."""

    def __init__(self, source: CollectorRegistry) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        return self._source.collect()
