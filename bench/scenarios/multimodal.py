"""The ``multimodal`` workload: `ggserve bench multimodal --mmproj FILE [options]`.

Each server (ggserve, llama-server) is started in turn on the same model, projector, threads and
context, warmed up, and measured in image requests per second: chat completions of a short text
and one PNG, ``--max-tokens`` output tokens each (EOS ignored, greedy), at these loads:

- ``distinct-C``: C concurrent clients, every request a picture never seen before (the encoder
  runs for each; C in --concurrency: 1 and 4);
- ``same-C``: C clients, every request the same picture and text (prefix and encoder caches).

Every load sends ``--requests`` requests after waiting for a quiet machine. The table gives each
server's requests/s and ggserve's ratio to llama-server.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import random
import struct
import sys
import time
import zlib
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench import compare, report
from bench.baselines.llama_cpp_build import ensure_built
from bench.options import add_run_options, add_server_options, chosen_servers


@dataclass(frozen=True)
class Load:
    name: str  # "distinct-4", "same-1"
    clients: int
    distinct: bool


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ggserve bench multimodal", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mmproj", required=True, help="the projector GGUF both servers load")
    add_server_options(p)
    p.add_argument("-t", "--threads", type=int, default=2)
    p.add_argument("-c", "--ctx-size", type=int, default=4096)
    p.add_argument("-np", "--parallel", type=int, default=4, help="slots of both servers")
    p.add_argument("--concurrency", default="1,4", help="comma-separated client counts")
    p.add_argument("--requests", type=int, default=32, help="requests per load")
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--image-size", type=int, default=64, help="side of the square PNGs, in pixels")
    add_run_options(p)
    return p


def png(side: int, rng: random.Random) -> bytes:
    """A PNG of random RGB pixels."""
    raw = b"".join(b"\x00" + rng.randbytes(side * 3) for _ in range(side))

    def block(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + block(b"IHDR", header) + block(b"IDAT", zlib.compress(raw)) + block(b"IEND", b"")


def server_command(name: str, args: argparse.Namespace, model: str, port: int) -> list[str]:
    common = ["-m", model, "--mmproj", args.mmproj, "--port", str(port), "-c", str(args.ctx_size),
              "-t", str(args.threads), "-np", str(args.parallel), "--no-repack"]  # repacked kernels crash on some VMs
    if name == "ggserve":
        return [sys.executable, "-c", compare.GGSERVE_LAUNCHER, "serve", *common]
    return [str(ensure_built()["llama-server"]), *common, "--host", "127.0.0.1", "--no-webui"]


def body(image: bytes, max_tokens: int) -> dict[str, Any]:
    url = "data:image/png;base64," + base64.b64encode(image).decode()
    content = [{"type": "text", "text": "Describe this picture."}, {"type": "image_url", "image_url": {"url": url}}]
    return {"model": "m", "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens,
            "temperature": 0, "ignore_eos": True}


async def run_load(base_url: str, load: Load, images: list[bytes], max_tokens: int) -> dict[str, Any]:
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for image in images:
        queue.put_nowait(image)
    errors = tokens = 0

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal errors, tokens
        while not queue.empty():
            response = await http.post(f"{base_url}/v1/chat/completions", json=body(queue.get_nowait(), max_tokens))
            if response.status_code != 200:
                errors += 1
            else:
                tokens += response.json()["usage"]["completion_tokens"]

    async with httpx.AsyncClient(timeout=600.0, limits=httpx.Limits(max_connections=load.clients)) as http:
        started = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(load.clients)))
        elapsed = time.perf_counter() - started
    return {"load": load.name, "requests": len(images), "errors": errors, "completion_tokens": tokens,
            "seconds": round(elapsed, 3), "requests_per_s": round(len(images) / elapsed, 3)}


def measure(name: str, args: argparse.Namespace, model: str, loads: list[Load], images: dict[str, list[bytes]],
            log_path: Path) -> list[dict[str, Any]]:
    port = args.port or compare.free_port()

    def run(base_url: str, load: Load) -> Awaitable[dict[str, Any]]:
        return run_load(base_url, load, images[load.name], args.max_tokens)

    return compare.measure_loads(name, server_command(name, args, model, port), port, log_path, args,
                                 Load("warmup", 1, True), loads, run, "requests_per_s", "requests/s")


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    servers = chosen_servers(args)
    from ggserve.models.resolve import resolve_model

    model = resolve_model(args.model_path)
    counts = [int(c) for c in args.concurrency.split(",") if c]
    loads = [Load(f"distinct-{c}", c, True) for c in counts] + [Load(f"same-{c}", c, False) for c in counts]
    rng = random.Random(args.seed)
    same = png(args.image_size, rng)
    # The same pictures for every server, in the same order.
    images = {load.name: [png(args.image_size, rng) if load.distinct else same for _ in range(args.requests)]
              for load in loads}
    images["warmup"] = [png(args.image_size, rng) for _ in range(2)]
    rows = []
    for name in servers:
        rows += measure(name, args, model, loads, images, args.output_dir / f"multimodal-{name}.log")
    report.write_jsonl(args.output_dir / "multimodal.jsonl", rows)
    sys.stdout.write(report.ratio_table(rows, servers, [load.name for load in loads], "requests_per_s", "requests/s", 2))
    return 1 if any(r["errors"] for r in rows) else 0
