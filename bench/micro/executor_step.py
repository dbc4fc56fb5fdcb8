"""Where an executor step's time goes, in process, against the bare llama_decode loop.

``python -m bench.micro.executor_step --batch 16,4,1`` feeds the executor's ModelEngine B
decoding sequences, one token each per step as the scheduler plans them (``follows`` items,
greedy, then greedy under ``ignore_eos``'s logit bias, then llama-server's default sampled chain),
and times each step's parts: the ``llama_decode`` call (on a GPU it returns once the work is
queued), the wait for the device, the host's sampling (``sample_rows``) and the rest. Then the
loop llama-batched-bench runs on the same context: ``llama_decode`` and a wait for it, no
sampling. On a CPU the wait is nothing: the call does the work. Medians over the steps.

``--backend-sampling`` does the same with every sequence's chain at the end of llama.cpp's
graph (``-bs``, executor.sampling.device): the pick then happens inside the wait, and the
host's "sampling" is reading the tokens back.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import llama_cpp

import executor.engine as engine_module
from executor.engine import ModelEngine
from ggserve.config import ServeConfig, cpu_has_amx
from ggserve.models.resolve import resolve_model
from ipc.protocol import BatchItem, KvOp, KvOpKind, SamplingParams, SeqStart, StepPlan

PROMPT = list(range(1000, 1032))
EOS_BAN = [(1, float("-inf"))]  # what ignore_eos sends for Gemma's <eos>
CHAINS = {
    "greedy": SamplingParams(temperature=0),
    "greedy, ignore_eos": SamplingParams(temperature=0, logit_bias=EOS_BAN),
    "sampled, ignore_eos": SamplingParams(temperature=0.8, top_k=40, top_p=0.95, min_p=0.05, seed=1,
                                          logit_bias=EOS_BAN),
}


class Parts:
    """The executor's calls this benchmark times, wrapped where engine.py looks them up while
    the ``with`` block runs (llama_decode is llama_cpp's own: every caller's meanwhile)."""

    def __init__(self) -> None:
        self.seconds: dict[str, list[float]] = {"call": [], "wait": [], "sampling": []}
        self.decode = llama_cpp.llama_decode
        self._originals = (engine_module.logits_view, engine_module.sample_rows)

    def __enter__(self) -> Parts:
        logits_view, sample_rows = self._originals

        def view(ctx: llama_cpp.llama_context_p, n_rows: int, n_vocab: int) -> Any:
            t0 = time.perf_counter()
            llama_cpp.llama_synchronize(ctx)  # what reading the logits would wait for
            self.seconds["wait"].append(time.perf_counter() - t0)
            return logits_view(ctx, n_rows, n_vocab)

        llama_cpp.llama_decode = self._timed("call", self.decode)
        engine_module.logits_view = view
        engine_module.sample_rows = self._timed("sampling", sample_rows)
        return self

    def __exit__(self, *exc: object) -> None:
        llama_cpp.llama_decode = self.decode
        engine_module.logits_view, engine_module.sample_rows = self._originals

    def _timed(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            result = fn(*args, **kwargs)
            self.seconds[name].append(time.perf_counter() - t0)
            return result
        return timed

    def clear(self) -> None:
        for times in self.seconds.values():
            times.clear()


def _ms(times: list[float]) -> float:
    return 1e3 * statistics.median(times)


def measure(engine: ModelEngine, parts: Parts, batch: int, steps: int, where: str) -> None:
    seqs = list(range(batch))
    step_id = 0
    for name, params in CHAINS.items():
        step_id += 1
        engine.step(StepPlan(step_id, [KvOp(KvOpKind.CLEAR, s) for s in seqs], [SeqStart(s, params) for s in seqs],
                             seqs, [BatchItem(s, PROMPT, 0, True) for s in seqs]))
        parts.clear()
        totals = []
        for i in range(steps):
            step_id += 1
            plan = StepPlan(step_id, items=[BatchItem(s, [], len(PROMPT) + i, True, follows=True) for s in seqs])
            t0 = time.perf_counter()
            result = engine.step(plan)
            totals.append(time.perf_counter() - t0)
            if result.error is not None or len(result.samples) != batch:
                raise RuntimeError(f"step {step_id} failed: {result.error or result.failures}")
        step, call, wait, sampling = (_ms(totals), _ms(parts.seconds["call"]), _ms(parts.seconds["wait"]),
                                      _ms(parts.seconds["sampling"]))
        print(f"| {batch} | {name}{where} | {step:.3f} | {call:.3f} | {wait:.3f} | {sampling:.3f} "
              f"| {step - call - wait - sampling:.3f} |", flush=True)
    memory = llama_cpp.llama_get_memory(engine.ctx)
    for s in seqs:
        llama_cpp.llama_memory_seq_rm(memory, s, -1, -1)
    engine.batch.fill([BatchItem(s, PROMPT, 0, True) for s in seqs])
    parts.decode(engine.ctx, engine.batch.struct)
    loop = []
    for i in range(steps):
        engine.batch.fill([BatchItem(s, [2000 + i], len(PROMPT) + i, True) for s in seqs])
        t0 = time.perf_counter()
        parts.decode(engine.ctx, engine.batch.struct)
        llama_cpp.llama_synchronize(engine.ctx)
        loop.append(time.perf_counter() - t0)
    print(f"| {batch} | bare loop (llama_decode, wait) | {_ms(loop):.3f} | | | | |", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.micro.executor_step", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", default="16,4,1", help="sequences per step, comma-separated")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--threads", type=int, default=4)
    p.add_argument("--model", default="", help="GGUF (default: the embedded model); all layers on the GPU if any")
    p.add_argument("--backend-sampling", action="store_true", help="sample on the model's device (-bs)")
    args = p.parse_args(argv)
    batches = [int(b) for b in args.batch.split(",")]
    cfg = ServeConfig(model=resolve_model(args.model or None), n_parallel=max(batches), ctx_size=8192,
                      threads=args.threads, repack=not cpu_has_amx(), log_level="warning",
                      backend_sampling=args.backend_sampling)
    print(f"loading {cfg.model}...", file=sys.stderr)
    engine = ModelEngine(cfg, 0)
    print("| rows | requests | step (ms) | llama_decode call | wait for the device | sampling (host) | the rest |")
    print("|---|---|---|---|---|---|---|")
    try:
        with Parts() as parts:
            for batch in batches:
                measure(engine, parts, batch, args.steps, ", on the device" if args.backend_sampling else "")
    finally:
        engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
