"""What idle cached prefixes cost the decoding sequences beside them (issue 10).

ggserve's KV cache is one unified pool: a prefix kept for reuse stays in it while other
sequences decode, and with a unified cache every decode's attention walks the pool's cells
(masked ones included). ``python -m bench.micro.idle_prefix_cost`` decodes B sequences one token each
per step, with N idle sequences of L cached tokens beside them and without, alternating the two
in one process so that machine noise hits both alike, with flash attention on and off:

    cost = step time with the idle prefixes / step time without them - 1
"""

from __future__ import annotations

import argparse
import sys

import llama_cpp
import numpy as np

from bench.micro.llama_direct import context, decode, load_model
from executor.batch import NumpyBatch
from ipc.protocol import BatchItem

PROMPT_LEN = 32


def measure(model: llama_cpp.llama_model_p, batch: int, idle: int, idle_len: int, steps: int, rounds: int,
            threads: int, flash: str) -> tuple[float, float]:
    """Median decode step seconds (without, with) the idle prefixes."""
    n_seq = batch + idle
    ctx = context(model, n_seq, batch * (PROMPT_LEN + steps * (rounds + 1) * 2 + 8) + idle * idle_len + 512, threads,
                  flash)
    memory = llama_cpp.llama_get_memory(ctx)
    nb = NumpyBatch(512)
    prompt = list(range(1000, 1000 + PROMPT_LEN))
    decode(ctx, nb, [BatchItem(s, prompt, 0, True) for s in range(batch)])
    pos = PROMPT_LEN
    times: dict[bool, list[float]] = {False: [], True: []}
    for round_ in range(rounds + 1):  # the first round warms up and is not counted
        for with_idle in (False, True):
            if with_idle:
                for s in range(batch, n_seq):  # idle prefixes, prefilled in chunks
                    tokens = list(range(3000 + s, 3000 + s + idle_len))
                    for start in range(0, idle_len, 512):
                        decode(ctx, nb, [BatchItem(s, tokens[start : start + 512], start, False)])
            for _ in range(steps):
                seconds = decode(ctx, nb, [BatchItem(s, [2000 + pos], pos, True) for s in range(batch)])
                if round_:
                    times[with_idle].append(seconds)
                pos += 1
            for s in range(batch, n_seq):
                llama_cpp.llama_memory_seq_rm(memory, s, -1, -1)
    llama_cpp.llama_free(ctx)
    return float(np.median(times[False])), float(np.median(times[True]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.micro.idle_prefix_cost", description=__doc__.splitlines()[0])
    parser.add_argument("-m", "--model-path", default=None)
    parser.add_argument("--batch", type=int, default=16, help="decoding sequences")
    parser.add_argument("--idle", default="4,16", help="idle cached prefixes (comma-separated counts)")
    parser.add_argument("--idle-len", type=int, default=256, help="tokens of each idle prefix")
    parser.add_argument("--steps", type=int, default=16, help="decode steps per round and condition")
    parser.add_argument("--rounds", type=int, default=3, help="alternations of without / with")
    parser.add_argument("-t", "--threads", type=int, default=2)
    args = parser.parse_args(argv)
    model = load_model(args.model_path)
    print("| flash attention | idle prefixes | step ms without | step ms with | cost |")
    print("|---|---|---|---|---|")
    for flash in ("on", "off"):
        for idle in (int(n) for n in args.idle.split(",")):
            without, with_ = measure(model, args.batch, idle, args.idle_len, args.steps, args.rounds, args.threads,
                                     flash)
            print(f"| {flash} | {idle} x {args.idle_len} | {without * 1e3:.1f} | {with_ * 1e3:.1f} | "
                  f"{(with_ / without - 1) * 100:+.1f}% |", flush=True)
    llama_cpp.llama_model_free(model)
    return 0


if __name__ == "__main__":
    sys.exit(main())
