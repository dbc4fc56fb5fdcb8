"""What putting decodes and a prompt chunk in one step costs, against two steps (issue 10).

ggserve's scheduler, on a CPU, runs decodes and a long prompt chunk in alternate steps
(scheduler.policy.step_requests) because llama.cpp's CPU flash attention runs a query tile that
holds several sequences' rows against the whole cache. ``python -m bench.micro.mixed_step_cost`` checks
that on this machine and llama.cpp: beside N cached sequences (prefilled, then decoded in
lockstep as a server does, so their cells interleave), it times a P-token prompt step of a new
sequence alone, the N decodes alone, and both in one step, median of ``--reps``:

    mixed step ms / (prompt alone ms + decodes alone ms)

above 1 means taking turns is cheaper. Also the prompt alone with no other sequence cached.
"""

from __future__ import annotations

import argparse
import statistics
import sys

import llama_cpp

from bench.micro.llama_direct import context, decode, load_model
from executor.batch import NumpyBatch
from ipc.protocol import BatchItem


class Cache:
    """A context whose first ``others`` sequences hold ``prompt_len`` prompt tokens and then
    ``decoded`` tokens decoded in lockstep; sequence ``others`` is the new one."""

    def __init__(self, model: llama_cpp.llama_model_p, others: int, prompt_len: int, decoded: int, new_len: int,
                 threads: int) -> None:
        self.ctx = context(model, others + 1, others * (prompt_len + decoded + 8) + new_len + 512, threads, "on")
        self.memory = llama_cpp.llama_get_memory(self.ctx)
        self.batch = NumpyBatch(512)
        self.others, self.new_len, self.pos = others, new_len, prompt_len + decoded
        for s in range(others):
            tokens = list(range(1000 + s, 1000 + s + prompt_len))
            for start in range(0, prompt_len, 512):
                decode(self.ctx, self.batch, [BatchItem(s, tokens[start : start + 512], start, False)])
        for k in range(decoded):
            decode(self.ctx, self.batch, [BatchItem(s, [3000 + k], prompt_len + k, False) for s in range(others)])

    def step(self, decodes: bool, prompt: bool) -> float:
        """Seconds of one step, after which the cache is as before it."""
        items = [BatchItem(s, [5000 + s], self.pos, True) for s in range(self.others)] if decodes else []
        if prompt:
            n = self.new_len - len(items)
            items.append(BatchItem(self.others, list(range(7000, 7000 + n)), 0, True))
        seconds = decode(self.ctx, self.batch, items)
        for s in range(self.others + 1):
            llama_cpp.llama_memory_seq_rm(self.memory, s, self.pos if s < self.others else 0, -1)
        return seconds

    def median_ms(self, decodes: bool, prompt: bool, reps: int) -> float:
        self.step(decodes, prompt)  # warm-up: a new batch shape
        return 1e3 * statistics.median(self.step(decodes, prompt) for _ in range(reps))

    def close(self) -> None:
        llama_cpp.llama_free(self.ctx)


def measure(model: llama_cpp.llama_model_p, others: int, prompt_len: int, decoded: int, new_len: int, reps: int,
            threads: int) -> dict[str, float]:
    """Median milliseconds: the prompt with an empty cache, and beside the others: the prompt
    alone, the decodes alone, both in one step."""
    empty = Cache(model, 0, prompt_len, 0, new_len, threads)
    out = {"prompt, empty cache": empty.median_ms(False, True, reps)}
    empty.close()
    cache = Cache(model, others, prompt_len, decoded, new_len, threads)
    out["prompt alone"] = cache.median_ms(False, True, reps)
    out["decodes alone"] = cache.median_ms(True, False, reps)
    out["both in one step"] = cache.median_ms(True, True, reps)
    cache.close()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.micro.mixed_step_cost", description=__doc__.splitlines()[0])
    parser.add_argument("-m", "--model-path", default=None)
    parser.add_argument("--others", type=int, default=8, help="cached sequences that decode")
    parser.add_argument("--prompt-len", type=int, default=458, help="prompt tokens of each of them")
    parser.add_argument("--decoded", type=int, default=150, help="tokens each decoded, in lockstep")
    parser.add_argument("--new-len", type=int, default=512, help="tokens of the step (the new prompt's chunk)")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("-t", "--threads", type=int, default=2)
    args = parser.parse_args(argv)
    model = load_model(args.model_path)
    ms = measure(model, args.others, args.prompt_len, args.decoded, args.new_len, args.reps, args.threads)
    llama_cpp.llama_model_free(model)
    print(f"| step ({args.new_len} rows; {args.others} others of {args.prompt_len} + {args.decoded} tokens) | ms |")
    print("|---|---|")
    for name, value in ms.items():
        print(f"| {name} | {value:.1f} |")
    ratio = ms["both in one step"] / (ms["prompt alone"] + ms["decodes alone"])
    print(f"\nmixed / apart: {ratio:.2f} ({'turns' if ratio > 1 else 'one step'} is cheaper)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
