"""The ``embeddings`` workload: `ggserve bench embeddings [options]`.

Each server (ggserve, llama-server) is started in turn on the same model, pooling, threads and
context with embeddings on, warmed up, and measured in inputs per second at these loads, on short
random texts of ``--input-len`` tokens:

- ``batch-B``: one client sending requests of B inputs each, one after another (B in --batch-sizes:
  1, 16 and 256 by default);
- ``clients-C``: C concurrent clients sending one-input requests (C = --clients, 16).

Every load runs for ``--inputs`` inputs at least (and a whole number of requests) after waiting
for a quiet machine. The table gives each server's inputs/s and ggserve's ratio to llama-server.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench import compare, report
from bench.baselines.llama_cpp_build import ensure_built
from bench.options import add_run_options, add_server_options, chosen_servers
from bench.tokenizer import TextMaker, Tokenizer
from bench.workloads import LengthDist
from ggserve.config import cpu_has_amx


@dataclass(frozen=True)
class Load:
    name: str  # "batch-256", "clients-16"
    inputs_per_request: int
    clients: int


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ggserve bench embeddings", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_server_options(p)
    p.add_argument("--pooling", default="mean", choices=["mean", "cls", "last"])
    p.add_argument("-t", "--threads", type=int, default=2)
    p.add_argument("-c", "--ctx-size", type=int, default=4096)
    p.add_argument("-b", "--batch-size", type=int, default=512, help="-b and -ub of both servers")
    p.add_argument("--ggserve-parallel", type=int, default=64, help="ggserve's -np: inputs per decode")
    p.add_argument("--llama-parallel", type=int, default=8, help="llama-server's -np (slots)")
    p.add_argument("--input-len", type=LengthDist.parse, default=LengthDist(19, 19), metavar="N|LO:HI")
    p.add_argument("--batch-sizes", default="1,16,256", help="inputs per request, one client")
    p.add_argument("--clients", type=int, default=16, help="concurrent one-input clients (0: none)")
    p.add_argument("--inputs", type=int, default=256, help="inputs per load, at least")
    add_run_options(p)
    return p


def server_command(name: str, args: argparse.Namespace, model: str, port: int) -> list[str]:
    common = ["-m", model, "--port", str(port), "-c", str(args.ctx_size), "-t", str(args.threads),
              "-b", str(args.batch_size), "-ub", str(args.batch_size), "--embeddings", "--pooling", args.pooling,
              "--no-repack" if cpu_has_amx() else "--repack"]
    if name == "ggserve":
        return [sys.executable, "-c", compare.GGSERVE_LAUNCHER, "serve", *common, "-np", str(args.ggserve_parallel)]
    return [str(ensure_built()["llama-server"]), *common, "-np", str(args.llama_parallel), "--host", "127.0.0.1",
            "--no-webui"]


async def run_load(base_url: str, load: Load, texts: list[str]) -> dict[str, Any]:
    """Send ``texts`` (in requests of ``load.inputs_per_request``) from ``load.clients`` clients."""
    requests = [texts[i:i + load.inputs_per_request] for i in range(0, len(texts), load.inputs_per_request)]
    queue: asyncio.Queue[list[str]] = asyncio.Queue()
    for request in requests:
        queue.put_nowait(request)
    errors = 0

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal errors
        while not queue.empty():
            inputs = queue.get_nowait()
            response = await http.post(f"{base_url}/v1/embeddings", json={"input": inputs, "model": "m"})
            if response.status_code != 200 or len(response.json()["data"]) != len(inputs):
                errors += 1

    async with httpx.AsyncClient(timeout=600.0, limits=httpx.Limits(max_connections=load.clients)) as http:
        started = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(load.clients)))
        elapsed = time.perf_counter() - started
    return {"load": load.name, "inputs": len(texts), "requests": len(requests), "errors": errors,
            "seconds": round(elapsed, 3), "inputs_per_s": round(len(texts) / elapsed, 2)}


def measure(name: str, args: argparse.Namespace, model: str, loads: list[Load], texts: dict[str, list[str]],
            log_path: Path) -> list[dict[str, Any]]:
    port = args.port or compare.free_port()

    def run(base_url: str, load: Load) -> Awaitable[dict[str, Any]]:
        return run_load(base_url, load, texts[load.name])

    return compare.measure_loads(name, server_command(name, args, model, port), port, log_path, args,
                                 Load("warmup", 8, 1), loads, run, "inputs_per_s", "inputs/s")


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    servers = chosen_servers(args)
    from ggserve.models.resolve import resolve_model

    model = resolve_model(args.model_path)
    loads = [Load(f"batch-{b}", b, 1) for b in map(int, args.batch_sizes.split(",")) if b > 0]
    loads += [Load(f"clients-{args.clients}", 1, args.clients)] if args.clients > 0 else []
    maker = TextMaker(Tokenizer(model), seed=args.seed)
    rng = random.Random(args.seed)

    def make(n: int) -> list[str]:
        return [maker.text(args.input_len.sample(rng), rng) for _ in range(n)]

    # The same texts for every server; a whole number of requests of each load's size.
    texts = {load.name: make(-(-args.inputs // load.inputs_per_request) * load.inputs_per_request) for load in loads}
    texts["warmup"] = make(16)
    rows = []
    for name in servers:
        rows += measure(name, args, model, loads, texts, args.output_dir / f"embeddings-{name}.log")
    report.write_jsonl(args.output_dir / "embeddings.jsonl", rows)
    sys.stdout.write(report.ratio_table(rows, servers, [load.name for load in loads], "inputs_per_s", "inputs/s", 1))
    return 1 if any(r["errors"] for r in rows) else 0
