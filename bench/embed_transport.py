"""How embedding vectors should travel executor -> scheduler -> frontend: inside the messages
(msgpack bytes over ZeroMQ) or through the ``ipc.shm`` arena with handles in the messages.

`python -m bench.embed_transport [--inputs 256] [--dim 640] [--steps 10] [--repeat 50]` times the
transport alone (no model) for one request of ``--inputs`` pooled vectors computed in
``--steps`` decodes, with the real protocol encoder and ZeroMQ ipc:// sockets:

- socket: each step's EmbedResult carries its rows; the scheduler joins them into the request's
  RequestOutputs; the frontend views them with numpy;
- shm: the executor copies each step's rows into its arena and sends an ArrayRef; the scheduler
  forwards the refs; the frontend copies them out and sends the refs back to be released.

It prints the milliseconds per request of each; the engine keeps whichever is faster.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable

import msgspec
import numpy as np
import zmq

from ipc.protocol import ArrayRef, EmbedResult, FinishReason, RequestOutput, RequestOutputs, Vectors, decode, encode
from ipc.shm import Arena, ArenaReader


class _Refs(msgspec.Struct, array_like=True):
    """What a shared-memory variant of the messages would carry instead of the rows."""

    step_id: int
    refs: list[ArrayRef]


def _pair(ctx: zmq.Context, path: str) -> tuple[zmq.Socket, zmq.Socket]:
    server = ctx.socket(zmq.PAIR)
    server.bind(f"ipc://{path}")
    client = ctx.socket(zmq.PAIR)
    client.connect(f"ipc://{path}")
    return client, server


def via_socket(hops: tuple[tuple[zmq.Socket, zmq.Socket], ...], steps: list[np.ndarray]) -> np.ndarray:
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
    got = decode(fe_in.recv(copy=False).buffer).outputs[0].vectors
    return np.frombuffer(got.data, "<f4").reshape(-1, got.dim)


def via_shm(hops: tuple[tuple[zmq.Socket, zmq.Socket], ...], steps: list[np.ndarray], arena: Arena,
            reader: ArenaReader) -> np.ndarray:
    (ex_out, sched_in), (sched_out, fe_in), (fe_out, ex_in) = hops
    refs: list[ArrayRef] = []
    for i, step in enumerate(steps):
        ex_out.send(msgspec.msgpack.encode(_Refs(i, [arena.put(step)])))
        refs += msgspec.msgpack.decode(sched_in.recv(copy=False).buffer, type=_Refs).refs
    sched_out.send(msgspec.msgpack.encode(_Refs(0, refs)))
    got = msgspec.msgpack.decode(fe_in.recv(copy=False).buffer, type=_Refs).refs
    vectors = np.concatenate([reader.view(ref) for ref in got])  # the copy the response needs
    fe_out.send(msgspec.msgpack.encode(_Refs(0, got)))  # done: release (relayed to the executor)
    for ref in msgspec.msgpack.decode(ex_in.recv(copy=False).buffer, type=_Refs).refs:
        arena.release(ref)
    return vectors


def _time(run: Callable[[], np.ndarray], repeat: int) -> float:
    run()  # warm up (connections, page faults)
    started = time.perf_counter()
    for _ in range(repeat):
        run()
    return (time.perf_counter() - started) / repeat * 1000


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.embed_transport", description=__doc__,
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
            assert np.array_equal(via_socket(hops, steps), vectors)
            assert np.array_equal(via_shm(hops, steps, arena, reader), vectors)
            socket_ms = _time(lambda: via_socket(hops, steps), args.repeat)
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
    print(f"  socket (rows in the messages): {socket_ms:.3f} ms")
    print(f"  shared memory (ArrayRef handles): {shm_ms:.3f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
