"""How embedding vectors travel executor -> scheduler -> frontend: through the executors'
``ipc.shm`` arenas with handles in the messages (the engine's path), or inside the messages (its
fallback when an arena is full or a process is remote, and the path before shared memory).

`python -m bench.micro.embed_transport [--inputs 256] [--dim 640] [--steps 10] [--repeat 50]` times the
transport alone (no model) for one request of ``--inputs`` pooled vectors computed in
``--steps`` decodes, with the real protocol messages and encoder, ZeroMQ ipc:// sockets and the
frontend's own reading (frontend.embedding.split_rows):

- shm: each step's rows go into the arena and its EmbedResult carries an ArrayRef and each row's
  place; the scheduler forwards the refs in the request's RequestOutputs; the frontend copies the
  rows out and says VectorsRead; the refs ride back on the next EmbedPlan and are freed;
- socket: each step's EmbedResult carries its rows; the scheduler joins them into the request's
  RequestOutputs; the frontend views them with numpy.

It prints the milliseconds per request of each.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable

import numpy as np
import zmq

from frontend.embedding import split_rows
from ipc.protocol import (
    ArrayRef,
    EmbedPlan,
    EmbedResult,
    FinishReason,
    RequestOutput,
    RequestOutputs,
    Vectors,
    VectorsRead,
    decode,
    encode,
)
from ipc.shm import Arena, ArenaReader


def _pair(ctx: zmq.Context, path: str) -> tuple[zmq.Socket, zmq.Socket]:
    server = ctx.socket(zmq.PAIR)
    server.bind(f"ipc://{path}")
    client = ctx.socket(zmq.PAIR)
    client.connect(f"ipc://{path}")
    return client, server


def via_socket(hops: tuple[tuple[zmq.Socket, zmq.Socket], ...], steps: list[np.ndarray],
               reader: ArenaReader) -> np.ndarray:
    (ex_out, sched_in), (sched_out, fe_in) = hops[:2]
    rows: list[bytes] = []
    for i, step in enumerate(steps):
        ex_out.send(encode(EmbedResult(i, 0, Vectors(step.shape[1], [1] * len(step), step.tobytes()))))
        result = decode(sched_in.recv(copy=False).buffer)
        width = result.vectors.dim * 4
        rows += [result.vectors.data[j * width:(j + 1) * width] for j in range(len(result.vectors.counts))]
    dim = steps[0].shape[1]
    out = RequestOutput("r", finish_reason=FinishReason.STOP, vectors=Vectors(dim, [1] * len(rows), b"".join(rows)))
    sched_out.send(encode(RequestOutputs([out])))
    return np.concatenate(split_rows(decode(fe_in.recv(copy=False).buffer).outputs[0].vectors, reader))


def via_shm(hops: tuple[tuple[zmq.Socket, zmq.Socket], ...], steps: list[np.ndarray], arena: Arena,
            reader: ArenaReader) -> np.ndarray:
    (ex_out, sched_in), (sched_out, fe_in), (fe_out, sched_back) = hops
    regions: list[ArrayRef] = []
    where: list[tuple[int, int]] = []
    for i, step in enumerate(steps):
        vectors = Vectors(step.shape[1], [1] * len(step), regions=[arena.put(step)],
                          where=[(0, j) for j in range(len(step))])
        ex_out.send(encode(EmbedResult(i, 0, vectors)))
        result = decode(sched_in.recv(copy=False).buffer)
        where += [(len(regions), first) for _, first in result.vectors.where]
        regions += result.vectors.regions
    dim = steps[0].shape[1]
    out = RequestOutput("r", finish_reason=FinishReason.STOP,
                        vectors=Vectors(dim, [1] * len(where), regions=regions, where=where))
    sched_out.send(encode(RequestOutputs([out])))
    vectors = np.concatenate(split_rows(decode(fe_in.recv(copy=False).buffer).outputs[0].vectors, reader))
    fe_out.send(encode(VectorsRead(["r"])))
    decode(sched_back.recv(copy=False).buffer)
    sched_in.send(encode(EmbedPlan(len(steps), [], regions)))  # the releases ride on the next plan
    for ref in decode(ex_out.recv(copy=False).buffer).releases:
        arena.release(ref)
    return vectors


def _time(run: Callable[[], np.ndarray], repeat: int) -> float:
    run()  # warm up (connections, page faults)
    started = time.perf_counter()
    for _ in range(repeat):
        run()
    return (time.perf_counter() - started) / repeat * 1000


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.micro.embed_transport", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--inputs", type=int, default=256)
    p.add_argument("--dim", type=int, default=640, help="vector width (Gemma 3 270M: 640)")
    p.add_argument("--steps", type=int, default=10, help="decodes the inputs take (~26 short inputs each)")
    p.add_argument("--repeat", type=int, default=50)
    args = p.parse_args(argv)
    vectors = np.random.default_rng(0).standard_normal((args.inputs, args.dim)).astype("<f4")
    steps = np.array_split(vectors, args.steps)
    ctx = zmq.Context()
    with tempfile.TemporaryDirectory() as tmp:
        hops = tuple(_pair(ctx, os.path.join(tmp, name)) for name in ("ex", "sched", "fe"))
        arena = Arena(f"bench{os.getpid()}", "executor", 4 * vectors.nbytes + 2**16)
        reader = ArenaReader()
        try:
            assert np.array_equal(via_socket(hops, steps, reader), vectors)
            assert np.array_equal(via_shm(hops, steps, arena, reader), vectors)
            assert arena.free_bytes == arena.capacity
            socket_ms = _time(lambda: via_socket(hops, steps, reader), args.repeat)
            shm_ms = _time(lambda: via_shm(hops, steps, arena, reader), args.repeat)
        finally:
            reader.close()
            arena.close()
            arena.unlink()
            for pair in hops:
                for sock in pair:
                    sock.close(linger=0)
            ctx.term()
    mib = vectors.nbytes / 2**20
    print(f"{args.inputs} vectors x {args.dim} float32 ({mib:.2f} MiB) in {args.steps} steps, per request:")
    print(f"  shared memory (ArrayRef handles): {shm_ms:.3f} ms  (the engine's path, VectorsRead and release included)")
    print(f"  socket (rows in the messages): {socket_ms:.3f} ms  (the fallback)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
