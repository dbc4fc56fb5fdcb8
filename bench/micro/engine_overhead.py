"""Python overhead of the engine per decode step, against a bare llama_decode loop.

``python -m bench.micro.engine_overhead --batch 16`` measures, on the same model and context settings:
  1. kernel: B sequences decoding one token each per ``llama_decode`` in a tight loop (what
     llama-batched-bench's S_TG measures: no sampling, no scheduling);
  2. engine: B greedy requests through the scheduler and an executor process (ZeroMQ plans,
     batch fill, sampling, outputs), timed over the steady decode phase.
Overhead = engine step time / kernel step time - 1.
"""

from __future__ import annotations

import argparse
import sys
import time

import llama_cpp
import numpy as np
import zmq

from executor.batch import NumpyBatch
from ggserve.config import ServeConfig, cpu_has_amx
from ggserve.launcher import Launcher
from ggserve.models.resolve import resolve_model
from ipc.protocol import AddRequest, BatchItem, RequestOutputs, SamplingParams
from ipc.transport import connect_dealer, recv, send

PROMPT_LEN = 32


def kernel_step_seconds(cfg: ServeConfig, batch: int, steps: int) -> float:
    llama_cpp.llama_backend_init()
    mparams = llama_cpp.llama_model_default_params()
    mparams.use_extra_bufts = cfg.repack
    model = llama_cpp.llama_model_load_from_file(cfg.model.encode(), mparams)
    cparams = llama_cpp.llama_context_default_params()
    cparams.n_ctx, cparams.n_batch, cparams.n_seq_max = cfg.ctx_size, cfg.batch_size, cfg.n_parallel
    cparams.n_threads = cparams.n_threads_batch = cfg.n_threads
    cparams.kv_unified, cparams.swa_full = True, False
    ctx = llama_cpp.llama_init_from_model(model, cparams)
    nb = NumpyBatch(cfg.batch_size)
    prompt = list(range(1000, 1000 + PROMPT_LEN))
    nb.fill([BatchItem(s, prompt, 0, True) for s in range(batch)])
    llama_cpp.llama_decode(ctx, nb.struct)
    times = []
    for step in range(steps):
        items = [BatchItem(s, [2000 + step], PROMPT_LEN + step, True) for s in range(batch)]
        nb.fill(items)
        t0 = time.perf_counter()
        llama_cpp.llama_decode(ctx, nb.struct)
        times.append(time.perf_counter() - t0)
    llama_cpp.llama_free(ctx)
    llama_cpp.llama_model_free(model)
    return float(np.median(times))


def engine_step_seconds(cfg: ServeConfig, batch: int, steps: int) -> float:
    """Median wall time between consecutive steps' outputs, as a frontend sees them."""
    launcher = Launcher(cfg)
    launcher.start(http=False)
    try:
        zctx = zmq.Context()
        sock = connect_dealer(zctx, launcher.cfg.scheduler_endpoint, b"bench-overhead")
        prompt = list(range(1000, 1000 + PROMPT_LEN))
        for i in range(batch):
            params = SamplingParams(temperature=0)
            send(sock, AddRequest(f"r{i}", prompt, steps + 1, params, ignore_eos=True))
        arrivals: list[float] = []  # one per step: every request gets one token per step
        done = 0
        while done < batch:
            msg = recv(sock)
            assert isinstance(msg, RequestOutputs)
            if len(msg.outputs) == batch:
                arrivals.append(time.perf_counter())
            done += sum(out.finish_reason is not None for out in msg.outputs)
        gaps = np.diff(arrivals)
        sock.close(linger=0)
        zctx.term()
        return float(np.median(gaps))
    finally:
        launcher.shutdown()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.micro.engine_overhead", description=__doc__)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=64)
    p.add_argument("--repeat", type=int, default=3, help="kernel/engine pairs, interleaved")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--model", default="")
    p.add_argument("--no-async-scheduling", dest="async_scheduling", action="store_false",
                   help="the engine waits for each step's result before planning the next")
    args = p.parse_args(argv)
    cfg = ServeConfig(
        model=resolve_model(args.model or None),
        n_parallel=args.batch,
        ctx_size=args.batch * 256,
        threads=args.threads,
        repack=not cpu_has_amx(),
        log_level="warning",
        async_scheduling=args.async_scheduling,
    )
    print("| run | batch | kernel step (ms) | engine step (ms) | kernel tok/s | engine tok/s | overhead |")
    print("|---|---|---|---|---|---|---|")
    kernels, engines = [], []
    for run in range(1, args.repeat + 1):
        print(f"run {run}/{args.repeat}: kernel loop, then the engine...", file=sys.stderr)
        kernels.append(kernel_step_seconds(cfg, args.batch, args.steps))
        engines.append(engine_step_seconds(cfg, args.batch, args.steps))
        _row(str(run), args.batch, kernels[-1], engines[-1])
    _row("median", args.batch, float(np.median(kernels)), float(np.median(engines)))
    return 0


def _row(label: str, batch: int, kernel: float, engine: float) -> None:
    print(
        f"| {label} | {batch} | {kernel * 1e3:.1f} | {engine * 1e3:.1f} | {batch / kernel:.0f} "
        f"| {batch / engine:.0f} | {100 * (engine / kernel - 1):.1f}% |",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
