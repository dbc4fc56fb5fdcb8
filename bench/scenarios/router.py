"""The ``router`` workload: `ggserve bench router [options]`.

Starts ggserve in router mode on a directory holding the model under two names (``alpha`` and
``beta``, symlinks to one GGUF) and measures, after waiting for a quiet machine:

- ``cold``: time to first token of a streamed completion whose model is not loaded (the request
  loads it: engine start, model load, warm-up, then the prompt), ``--repeats`` times, unloading
  the model (POST /models/unload) and waiting for its processes to exit in between;
- ``warm``: the same request to the loaded model, ``--repeats`` times;
- ``one model`` and ``two models``: output tokens/s of ``--requests`` completions of
  ``--output-len`` tokens (``ignore_eos``) from ``--concurrency`` clients, all to ``alpha``, then
  alternating between ``alpha`` and ``beta`` (both loaded). On CPU each model's executor uses
  ``-t`` threads: two models running at once share the cores.

Every prompt is a different random text of ``--input-len`` tokens (no prefix cache hits). The
table gives the medians and the ratios (cold / warm, two models / one); the rows go to
``OUTPUT_DIR/router.jsonl``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shlex
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench import compare, report
from bench.host import proctree
from bench.host.machine import wait_until_quiet
from bench.options import add_run_options
from bench.tokenizer import TextMaker, Tokenizer
from ggserve.config import cpu_has_amx

MODELS = ("alpha", "beta")
UNLOAD_WAIT_S = 30.0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ggserve bench router", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-m", "--model-path", default=None, help="GGUF (default: the embedded Gemma 3 270M)")
    p.add_argument("--server-args", default="-c 2048 -np 4",
                   help="more `ggserve serve` flags, for every model (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=5, help="cold and warm requests each")
    p.add_argument("--input-len", type=int, default=64, help="prompt tokens")
    p.add_argument("--output-len", type=int, default=64, help="tokens per throughput request")
    p.add_argument("--requests", type=int, default=32, help="throughput requests per phase")
    p.add_argument("--concurrency", type=int, default=4)
    add_run_options(p)
    return p


async def first_token_s(http: httpx.AsyncClient, model: str, prompt: str) -> float:
    """Seconds from sending a streamed completion to its first generated text."""
    body = {"model": model, "prompt": prompt, "max_tokens": 4, "stream": True, "temperature": 0}
    started = time.perf_counter()
    async with http.stream("POST", "/v1/completions", json=body) as response:
        if response.status_code != 200:
            raise RuntimeError(f"{model}: HTTP {response.status_code}: {(await response.aread()).decode()}")
        async for line in response.aiter_lines():
            if line.startswith("data: {") and json.loads(line[6:])["choices"][0]["text"]:
                return time.perf_counter() - started
    raise RuntimeError(f"{model}: the stream ended without text")


async def unload(http: httpx.AsyncClient, model: str, server_pid: int) -> None:
    """Unload the model and wait until its engine's processes have exited (the launcher starts a
    model's new engine only then: a cold request measured earlier would include that wait)."""
    (await http.post("/models/unload", json={"model": model})).raise_for_status()
    deadline = time.monotonic() + UNLOAD_WAIT_S
    while engine_processes(server_pid):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{model}'s engine still runs {UNLOAD_WAIT_S:.0f}s after its unload")
        await asyncio.sleep(0.1)


def engine_processes(server_pid: int) -> list[int]:
    """The schedulers and executors among the server's processes (of every loaded model)."""
    return [pid for pid in proctree.descendants(server_pid, proctree.parents())
            if any(arg in ("scheduler", "executor") for arg in proctree.cmdline(pid)[1:3])]


async def throughput(http: httpx.AsyncClient, models: list[str], prompts: list[str], output_len: int,
                     concurrency: int) -> dict[str, Any]:
    """Output tokens/s of one completion per prompt, the i-th to ``models[i % len(models)]``."""
    queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
    for i, prompt in enumerate(prompts):
        queue.put_nowait((models[i % len(models)], prompt))
    tokens = 0

    async def client() -> None:
        nonlocal tokens
        while not queue.empty():
            model, prompt = queue.get_nowait()
            body = {"model": model, "prompt": prompt, "max_tokens": output_len, "ignore_eos": True, "temperature": 0}
            response = await http.post("/v1/completions", json=body)
            response.raise_for_status()
            tokens += response.json()["usage"]["completion_tokens"]

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    return {"requests": len(prompts), "tokens": tokens, "seconds": round(elapsed, 3),
            "tokens_per_s": round(tokens / elapsed, 2)}


async def run(base_url: str, args: argparse.Namespace, prompts: list[str], server_pid: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    async with httpx.AsyncClient(base_url=base_url, timeout=600.0) as http:
        async def quiet() -> float:
            other = await asyncio.to_thread(wait_until_quiet, args.quiet_cores, args.quiet_timeout,
                                            server_session=server_pid)
            return round(other, 2)

        cold, warm = [], []
        for _ in range(args.repeats):
            other = await quiet()
            cold.append(await first_token_s(http, "alpha", prompts.pop()))
            warm.append(await first_token_s(http, "alpha", prompts.pop()))
            rows += [{"phase": "cold", "ttft_s": round(cold[-1], 4), "other_cores": other},
                     {"phase": "warm", "ttft_s": round(warm[-1], 4), "other_cores": other}]
            await unload(http, "alpha", server_pid)
        for model in MODELS:  # both loaded (and warmed up) before the throughput phases
            await first_token_s(http, model, prompts.pop())
        for phase, models in (("one model", ["alpha"]), ("two models", list(MODELS))):
            other = await quiet()
            batch = [prompts.pop() for _ in range(args.requests)]
            rows.append({"phase": phase, "models": models, "concurrency": args.concurrency,
                         "output_len": args.output_len, "other_cores": other}
                        | await throughput(http, models, batch, args.output_len, args.concurrency))
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    cold = statistics.median(r["ttft_s"] for r in rows if r["phase"] == "cold")
    warm = statistics.median(r["ttft_s"] for r in rows if r["phase"] == "warm")
    one, two = ({r["phase"]: r for r in rows}[p]["tokens_per_s"] for p in ("one model", "two models"))
    return ("| measure | value |\n|---|---|\n"
            f"| TTFT, model not loaded (cold), median | {cold * 1000:.0f} ms |\n"
            f"| TTFT, model loaded (warm), median | {warm * 1000:.0f} ms |\n"
            f"| cold / warm | {cold / warm:.1f}x |\n"
            f"| output tok/s, all requests to one model | {one:.1f} |\n"
            f"| output tok/s, alternating between two models | {two:.1f} |\n"
            f"| two models / one | {two / one:.2f}x |\n")


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    from ggserve.models.resolve import resolve_model

    model = resolve_model(args.model_path)
    # A SIGTERM (or hang-up) exits through the `finally` that stops the server.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, _: sys.exit(128 + signum))
    maker = TextMaker(Tokenizer(model), seed=args.seed)
    rng = random.Random(args.seed)
    prompts = [maker.text(args.input_len, rng) for _ in range(3 * args.repeats + 2 * args.requests + 2)]
    with tempfile.TemporaryDirectory(prefix="ggserve-bench-router-") as models_dir:
        for name in MODELS:
            (Path(models_dir) / f"{name}.gguf").symlink_to(model)
        port = args.port or compare.free_port()
        command = [sys.executable, "-c", compare.GGSERVE_LAUNCHER, "serve", "--models-dir", models_dir,
                   "--port", str(port), "--models-max", str(len(MODELS)),
                   "--no-repack" if cpu_has_amx() else "--repack", *shlex.split(args.server_args)]
        with compare.running_server("ggserve (router)", command, port, args.output_dir / "router-server.log",
                                    args.startup_timeout) as (base_url, pid):
            rows = asyncio.run(run(base_url, args, prompts, pid))
    command_line = shlex.join(["ggserve", "bench", "router", *argv])
    report.write_jsonl(args.output_dir / "router.jsonl", [{"command": command_line, **row} for row in rows])
    sys.stdout.write(table(rows))
    return 0
