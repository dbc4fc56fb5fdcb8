"""ZeroMQ plumbing: endpoint names, socket creation, framed send/receive of protocol messages.

Topology (the scheduler binds, everyone else connects, so executors may live on other hosts):
  - ``scheduler_endpoint``: ROUTER bound by the scheduler; frontend workers and the launcher
    connect DEALER sockets with their own identity.
  - ``executor_endpoint``: ROUTER bound by the scheduler; executor ``i`` connects a DEALER with
    identity ``executor_identity(i)``.
Endpoints are ``ipc://`` paths in the per-run directory by default; ``tcp://host:port`` works too.
"""

from __future__ import annotations

import os

import zmq
import zmq.asyncio

from ipc.protocol import Message, decode, encode


def ipc_endpoint(run_dir: str, name: str) -> str:
    return f"ipc://{os.path.join(run_dir, name)}.sock"


def executor_identity(executor_id: int) -> bytes:
    return f"executor-{executor_id}".encode()


def executor_id_of(identity: bytes) -> int:
    return int(identity.decode().rsplit("-", 1)[1])


def _tune(sock: zmq.Socket) -> None:
    sock.setsockopt(zmq.LINGER, 0)
    # Never drop messages silently when a peer is slow: block the sender instead.
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.setsockopt(zmq.RCVHWM, 0)


def bind_router(ctx: zmq.Context, endpoint: str) -> zmq.Socket:
    sock = ctx.socket(zmq.ROUTER)
    _tune(sock)
    # Tell the sender when a peer identity is unknown instead of dropping the message.
    sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
    sock.bind(endpoint)
    return sock


def connect_dealer(ctx: zmq.Context, endpoint: str, identity: bytes) -> zmq.Socket:
    sock = ctx.socket(zmq.DEALER)
    _tune(sock)
    sock.setsockopt(zmq.IDENTITY, identity)
    sock.connect(endpoint)
    return sock


def send(sock: zmq.Socket, msg: Message, identity: bytes | None = None) -> None:
    """Send one message; through a ROUTER, ``identity`` names the peer."""
    payload = encode(msg)
    if identity is None:
        sock.send(payload, copy=False)
    else:
        sock.send_multipart((identity, payload), copy=False)


def recv(sock: zmq.Socket, flags: int = 0) -> Message:
    """Receive one message on a DEALER socket (zmq.NOBLOCK in flags: raise zmq.Again if none)."""
    return decode(sock.recv(flags, copy=False).buffer)


def recv_routed(sock: zmq.Socket, flags: int = 0) -> tuple[bytes, Message]:
    """Receive one message on a ROUTER socket: (peer identity, message)."""
    identity, payload = sock.recv_multipart(flags, copy=False)
    return identity.bytes, decode(payload.buffer)


async def arecv(sock: zmq.asyncio.Socket) -> Message:
    frame = await sock.recv(copy=False)
    return decode(frame.buffer)


def async_dealer(ctx: zmq.asyncio.Context, endpoint: str, identity: bytes) -> zmq.asyncio.Socket:
    sock = ctx.socket(zmq.DEALER)
    _tune(sock)
    sock.setsockopt(zmq.IDENTITY, identity)
    sock.connect(endpoint)
    return sock
