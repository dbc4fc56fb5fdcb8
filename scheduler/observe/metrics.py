"""The scheduler's counters for /metrics, with llama-server's meaning.

Per executor they live here, not in the executor's state, so they keep counting across its
restarts (Prometheus counters must never go back). Time is attributed as llama-server does:
a step's time is split between prompt and generation by their share of the step's tokens
(llama-server times its prompt batches the same way), and generation time is each request's
first-to-last token time, so the generation rate is a per-request speed, as in llama-server.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from ipc.protocol import ChildRestarts, ExecutorStats


@dataclass
class ExecutorCounters:
    steps: int = 0
    step_seconds: float = 0.0
    prompt_tokens: int = 0
    prompt_seconds: float = 0.0
    cached_tokens: int = 0
    predicted_tokens: int = 0
    busy_slots: int = 0


@dataclass
class Window:
    """Throughput since the last reset: llama-server's gauges average over the time between
    two /metrics scrapes."""

    prompt_tokens: int = 0
    prompt_seconds: float = 0.0
    decode_steps: int = 0  # generated tokens less each request's first (it comes with the prompt)
    decode_seconds: float = 0.0

    def prompt_rate(self) -> float:
        return self.prompt_tokens / self.prompt_seconds if self.prompt_seconds > 0 else 0.0

    def decode_rate(self) -> float:
        return self.decode_steps / self.decode_seconds if self.decode_seconds > 0 else 0.0


class EngineCounters:
    def __init__(self) -> None:
        self.by_executor: dict[int, ExecutorCounters] = {}
        self.window = Window()
        self.predicted_seconds = 0.0
        self.n_tokens_max = 0
        self.restarts: list[ChildRestarts] = []
        self.started_at = time.time()

    def executor(self, executor_id: int) -> ExecutorCounters:
        return self.by_executor.setdefault(executor_id, ExecutorCounters())

    def on_step(self, executor_id: int, seconds: float, n_prompt: int, n_tokens: int, n_busy: int,
                longest: int) -> None:
        """A step ran ``n_tokens`` tokens, ``n_prompt`` of them prompt tokens, with ``n_busy``
        slots holding a request; ``longest`` is its longest sequence."""
        c = self.executor(executor_id)
        c.steps += 1
        c.step_seconds += seconds
        c.busy_slots += n_busy
        if n_prompt:
            prompt_seconds = seconds * n_prompt / n_tokens
            c.prompt_tokens += n_prompt
            c.prompt_seconds += prompt_seconds
            self.window.prompt_tokens += n_prompt
            self.window.prompt_seconds += prompt_seconds
        self.n_tokens_max = max(self.n_tokens_max, longest)

    def on_admit(self, executor_id: int, n_cached: int) -> None:
        self.executor(executor_id).cached_tokens += n_cached

    def on_finish(self, executor_id: int, n_generated: int, decode_seconds: float) -> None:
        self.executor(executor_id).predicted_tokens += n_generated
        self.predicted_seconds += decode_seconds
        self.window.decode_steps += max(0, n_generated - 1)
        self.window.decode_seconds += decode_seconds

    def executor_stats(self, executor_id: int, ready: bool, n_slots: int, n_busy: int, n_ctx: int,
                       kv_tokens: int) -> ExecutorStats:
        c = self.executor(executor_id)
        return ExecutorStats(
            executor_id=executor_id, ready=ready, n_slots=n_slots, n_busy_slots=n_busy, n_ctx=n_ctx,
            kv_tokens=kv_tokens, steps_total=c.steps, step_seconds_total=c.step_seconds,
            prompt_tokens_total=c.prompt_tokens, prompt_seconds_total=c.prompt_seconds,
            prompt_tokens_cached_total=c.cached_tokens, tokens_predicted_total=c.predicted_tokens,
            busy_slots_total=c.busy_slots,
        )

    def reset_window(self) -> None:
        self.window = Window()
