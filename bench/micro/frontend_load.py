"""``python -m bench.micro.frontend_load URL``: how many requests per second the HTTP frontend sustains.

A closed-loop load generator for one endpoint: ``--connections`` keep-alive HTTP/1.1 connections
each send the same request again as soon as the previous response is complete, for
``--seconds``; prints requests/s and latency percentiles. It speaks just enough HTTP/1.1
(Content-Length or chunked bodies) to stay cheaper per request than the server it measures.
See docs/frontend.md for the numbers and how they were taken.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from urllib.parse import urlsplit


def _request_bytes(host: str, path: str, body: bytes | None) -> bytes:
    method = "POST" if body is not None else "GET"
    head = f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: keep-alive\r\n"
    if body is None:
        return (head + "\r\n").encode()
    head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


async def _read_response(reader: asyncio.StreamReader) -> int:
    """Read one response; returns its status."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    if "content-length" in headers:
        await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding") == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    return status


async def _connection(host: str, port: int, request: bytes, deadline: float, latencies: list[float],
                      errors: list[int]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            writer.write(request)
            status = await _read_response(reader)
            if status == 200:
                latencies.append(time.perf_counter() - start)
            else:
                errors.append(status)
    finally:
        writer.close()


async def run(url: str, body: bytes | None, connections: int, seconds: float) -> dict[str, float]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    request = _request_bytes(f"{host}:{port}", parts.path or "/", body)
    latencies: list[float] = []
    errors: list[int] = []
    deadline = time.perf_counter() + seconds
    start = time.perf_counter()
    await asyncio.gather(*(_connection(host, port, request, deadline, latencies, errors)
                           for _ in range(connections)))
    elapsed = time.perf_counter() - start
    ms = sorted(x * 1000 for x in latencies) or [0.0]
    return {
        "requests_per_s": len(latencies) / elapsed,
        "ok": len(latencies),
        "errors": len(errors),
        "p50_ms": statistics.median(ms),
        "p99_ms": ms[min(len(ms) - 1, int(len(ms) * 0.99))],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.micro.frontend_load", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url", help="e.g. http://127.0.0.1:8080/v1/models")
    parser.add_argument("--json", default=None, help="POST this JSON body instead of a GET")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args(argv)
    body = json.dumps(json.loads(args.json)).encode() if args.json is not None else None
    result = asyncio.run(run(args.url, body, args.connections, args.seconds))
    print(json.dumps({k: round(v, 2) for k, v in result.items()}))


if __name__ == "__main__":
    main()
