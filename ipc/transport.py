"""ZeroMQ plumbing: endpoint names, socket creation, framed send/receive of protocol messages.

Topology (the scheduler binds, everyone else connects, so executors may live on other hosts):
  - ``scheduler_endpoint``: ROUTER bound by the scheduler; frontend workers and the launcher
    connect DEALER sockets with their own identity.
  - ``executor_endpoint``: ROUTER bound by the scheduler; executor ``i`` connects a DEALER with
    identity ``executor_identity(i)``.
Endpoints are ``ipc://`` paths in the per-run directory by default (reachable only through the
file system, by this user). ``tcp://host:port`` endpoints are authenticated and encrypted with
ZeroMQ's CURVE: the launcher makes a server and a client key pair at start-up and hands them to
its children in the run's configuration; the scheduler accepts only peers holding the client key,
so nobody else on the network can send it a message.

A frame that does not decode (or a message with the wrong number of parts) raises ``BadFrame``:
receivers log and drop it, never die of it.
"""

from __future__ import annotations

import logging
import os

import msgspec
import zmq
import zmq.asyncio
from zmq.auth.thread import ThreadAuthenticator

from ipc.protocol import Message, decode, encode

log = logging.getLogger(__name__)

LAUNCHER_IDENTITY = b"launcher"  # the only peer whose control messages the scheduler obeys


class BadFrame(Exception):
    """A received frame is not a protocol message."""


class CurveKeys(msgspec.Struct, frozen=True):
    """Z85-encoded CURVE key pairs of a run: the scheduler's (server) and its peers' (client)."""

    server_public: str
    server_secret: str
    client_public: str
    client_secret: str

    @classmethod
    def generate(cls) -> CurveKeys:
        server_public, server_secret = zmq.curve_keypair()
        client_public, client_secret = zmq.curve_keypair()
        return cls(
            server_public.decode(), server_secret.decode(), client_public.decode(), client_secret.decode()
        )


def ipc_endpoint(run_dir: str, name: str) -> str:
    return f"ipc://{os.path.join(run_dir, name)}.sock"


def is_tcp(endpoint: str) -> bool:
    return endpoint.startswith("tcp://")


def executor_identity(executor_id: int) -> bytes:
    return f"executor-{executor_id}".encode()


def _tune(sock: zmq.Socket) -> None:
    sock.setsockopt(zmq.LINGER, 0)
    # Never drop messages silently when a peer is slow: block the sender instead.
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.setsockopt(zmq.RCVHWM, 0)


class _OnlyClientKey:
    """ZAP credentials provider: accept the run's client key and nothing else."""

    def __init__(self, client_public: str) -> None:
        self._allowed = client_public.encode()

    def callback(self, domain: str, key: bytes) -> bool:
        return key == self._allowed


def start_authenticator(ctx: zmq.Context, keys: CurveKeys) -> ThreadAuthenticator:
    """Run the ZAP handler that checks every CURVE peer of ``ctx``'s server sockets."""
    auth = ThreadAuthenticator(ctx, log=logging.getLogger("ipc.auth"))
    auth.start()
    auth.configure_curve_callback("*", credentials_provider=_OnlyClientKey(keys.client_public))
    return auth


def bind_router(ctx: zmq.Context, endpoint: str, keys: CurveKeys | None = None) -> zmq.Socket:
    """A ROUTER bound to ``endpoint``; over tcp:// it requires CURVE (``keys``, with the ZAP
    handler of ``start_authenticator`` running in ``ctx``)."""
    sock = ctx.socket(zmq.ROUTER)
    _tune(sock)
    # Tell the sender when a peer identity is unknown instead of dropping the message.
    sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
    if is_tcp(endpoint):
        if keys is None:
            raise ValueError(f"{endpoint}: tcp endpoints need CURVE keys")
        sock.curve_server = True
        sock.curve_secretkey = keys.server_secret.encode()
        sock.curve_publickey = keys.server_public.encode()
    sock.bind(endpoint)
    return sock


def _secure_client(sock: zmq.Socket, endpoint: str, keys: CurveKeys | None) -> None:
    if is_tcp(endpoint):
        if keys is None:
            raise ValueError(f"{endpoint}: tcp endpoints need CURVE keys")
        sock.curve_serverkey = keys.server_public.encode()
        sock.curve_publickey = keys.client_public.encode()
        sock.curve_secretkey = keys.client_secret.encode()


def connect_dealer(
    ctx: zmq.Context, endpoint: str, identity: bytes, keys: CurveKeys | None = None
) -> zmq.Socket:
    """A DEALER connected to ``endpoint`` (an asyncio socket when ``ctx`` is zmq.asyncio's)."""
    sock = ctx.socket(zmq.DEALER)
    _tune(sock)
    sock.setsockopt(zmq.IDENTITY, identity)
    _secure_client(sock, endpoint, keys)
    sock.connect(endpoint)
    return sock


def send(sock: zmq.Socket, msg: Message, identity: bytes | None = None) -> None:
    """Send one message; through a ROUTER, ``identity`` names the peer."""
    payload = encode(msg)
    if identity is None:
        sock.send(payload, copy=False)
    else:
        sock.send_multipart((identity, payload), copy=False)


def _decode(payload: zmq.Frame) -> Message:
    try:
        return decode(payload.buffer)
    except msgspec.DecodeError as exc:
        raise BadFrame(f"undecodable frame of {len(payload.buffer)} bytes: {exc}") from None


def recv(sock: zmq.Socket, flags: int = 0) -> Message:
    """Receive one message on a DEALER socket (zmq.NOBLOCK in flags: raise zmq.Again if none)."""
    frames = sock.recv_multipart(flags, copy=False)
    if len(frames) != 1:
        raise BadFrame(f"a message of {len(frames)} parts")
    return _decode(frames[0])


def recv_routed(sock: zmq.Socket, flags: int = 0) -> tuple[bytes, Message]:
    """Receive one message on a ROUTER socket: (peer identity, message)."""
    frames = sock.recv_multipart(flags, copy=False)
    if len(frames) != 2:
        raise BadFrame(f"a message of {len(frames) - 1} parts from {frames[0].bytes!r}")
    return frames[0].bytes, _decode(frames[1])


async def arecv(sock: zmq.asyncio.Socket) -> Message:
    frames = await sock.recv_multipart(copy=False)
    if len(frames) != 1:
        raise BadFrame(f"a message of {len(frames)} parts")
    return _decode(frames[0])
