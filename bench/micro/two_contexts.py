"""Can the host's token pick for one batch overlap the device's decode of another? One llama.cpp
context decoding R sequences a step against two contexts on the same model with R/2 each,
driven alternately from one thread.

On a GPU ``llama_decode`` returns once the step's work is queued; reading the logits waits for
it. ggserve's executor then reads every row of logits on the host (the argmax of 16 x 262k
floats: 0.7 ms of a 3.8 ms step on an H200, session 14), while the device idles; and the next
step cannot be queued before its tokens are known. With two contexts, context B's step runs on
the device while the host picks context A's tokens, and the two contexts' small kernels may
share the device. If the two together step R rows faster than one context steps R rows, with
the pick, an executor holding two contexts is worth building (issue 10: ">= 90% of S_TG").

Modes, each for ``--steps`` steps of greedy decoding (argmax on the host, as the executor):
  bare   one context, R rows: decode and wait, no pick (llama-batched-bench's loop)
  one    one context, R rows: decode, wait, argmax every row (ggserve's executor today)
  two    two contexts, R/2 rows each: queue A; queue B; then repeat: wait for A, argmax A, queue
         A; wait for B, argmax B, queue B

``python -m bench.micro.two_contexts --rows 16 --steps 200 [--model GGUF] [--threads 4]``
prints one line per mode: milliseconds per R tokens and tokens per second. On a CPU the decode
call does the work itself, so "two" shows only its own overhead there.
"""

from __future__ import annotations

import argparse
import ctypes
import sys
import time

import llama_cpp
import numpy as np

from bench.micro.llama_direct import context, load_model
from executor.batch import NumpyBatch
from ipc.protocol import BatchItem

PROMPT_LEN = 32
WARM = 10  # steps before the timing starts


class Lane:
    """One context and its sequences, decoding one greedy token per sequence a step."""

    def __init__(self, model: llama_cpp.llama_model_p, rows: int, steps: int, threads: int) -> None:
        self.ctx = context(model, rows, rows * (PROMPT_LEN + WARM + steps + 2), threads, "on")
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(model))
        self.rows = rows
        self.batch = NumpyBatch(max(rows * PROMPT_LEN, rows))
        prompt = [(7 * j + 11) % 1000 + 100 for j in range(PROMPT_LEN)]
        self.items = [BatchItem(i, [100 + i, *prompt[1:]], 0, True) for i in range(rows)]
        self.queue()  # the prompts, then one token a step
        self.pick()

    def queue(self) -> None:
        self.batch.fill(self.items)
        if llama_cpp.llama_decode(self.ctx, self.batch.struct) != 0:
            raise RuntimeError("llama_decode failed")

    def pick(self, read: bool = True) -> None:
        """Wait for the step, then the next step's tokens: each row's argmax, or (``read`` False,
        the bare loop) each sequence's last token again."""
        if read:
            ptr = llama_cpp.llama_get_logits(self.ctx)  # waits for the device
            logits = np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_float)), (self.rows, self.n_vocab))
            tokens = [int(row.argmax()) for row in logits]
        else:
            llama_cpp.llama_synchronize(self.ctx)
            tokens = [item.token_ids[-1] for item in self.items]
        self.items = [BatchItem(item.seq_id, [token], item.pos + len(item.token_ids), True)
                      for item, token in zip(self.items, tokens)]

    def close(self) -> None:
        llama_cpp.llama_free(self.ctx)


def run(mode: str, model: llama_cpp.llama_model_p, rows: int, steps: int, threads: int) -> float:
    """Seconds per step of ``rows`` tokens in ``mode``."""
    lanes = [Lane(model, rows, steps, threads)] if mode != "two" else [
        Lane(model, rows // 2, steps, threads), Lane(model, rows - rows // 2, steps, threads)]
    try:
        for lane in lanes:  # the first step of each lane queued, the timing starts after a warm-up
            lane.queue()
        for step in range(steps + WARM):
            if step == WARM:
                t0 = time.perf_counter()
            for lane in lanes:
                lane.pick(read=mode != "bare")
                lane.queue()
        for lane in lanes:
            llama_cpp.llama_synchronize(lane.ctx)
        return (time.perf_counter() - t0) / steps
    finally:
        for lane in lanes:
            lane.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.micro.two_contexts", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=16, help="sequences decoded per step (split in two for 'two')")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--threads", type=int, default=4)
    p.add_argument("--rounds", type=int, default=2, help="the three modes, alternated this many times")
    p.add_argument("--model", default="", help="GGUF (default: the embedded model); all layers on the GPU if any")
    args = p.parse_args(argv)
    if args.rows < 2:
        p.error("--rows must be at least 2 (two contexts share them)")
    print("loading the model...", file=sys.stderr)
    model = load_model(args.model or None)
    print(f"| round | mode | ms per {args.rows} tokens | tok/s |")
    print("|---|---|---|---|")
    try:
        for r in range(1, args.rounds + 1):
            for mode in ("bare", "one", "two"):
                seconds = run(mode, model, args.rows, args.steps, args.threads)
                print(f"| {r} | {mode} | {seconds * 1e3:.3f} | {args.rows / seconds:,.1f} |", flush=True)
    finally:
        llama_cpp.llama_model_free(model)
    return 0


if __name__ == "__main__":
    sys.exit(main())
