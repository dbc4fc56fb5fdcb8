"""The HTTP worker's link to the scheduler: one ZeroMQ DEALER socket with its own identity.

On start the worker says Hello; the scheduler answers with EngineInfo once the engine is ready
(until then /health says "loading"). A background task reads every message: RequestOutputs are
split by request id into the queue the request's handler waits on, EngineStats answers go to the
caller that asked for them. Sends never wait: the socket's high-water mark is unlimited.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets

import msgspec
import zmq.asyncio

from ipc import transport
from ipc.protocol import (
    Abort,
    AddRequest,
    EngineInfo,
    EngineStats,
    Hello,
    Message,
    RequestOutput,
    RequestOutputs,
    StatsRequest,
)

log = logging.getLogger(__name__)


class EngineClient:
    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.identity = f"frontend-{os.getpid()}-{secrets.token_hex(4)}"
        self.info: EngineInfo | None = None  # set when the engine is ready
        self._queues: dict[str, asyncio.Queue[RequestOutput]] = {}
        self._stats_waiters: dict[int, asyncio.Future[EngineStats]] = {}
        self._next_stats_token = 0
        self._ctx: zmq.asyncio.Context | None = None
        self._sock: zmq.asyncio.Socket | None = None
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Connect and say Hello; EngineInfo arrives in the background."""
        self._ctx = zmq.asyncio.Context()
        self._sock = transport.async_dealer(self._ctx, self.endpoint, self.identity.encode())
        self._reader = asyncio.create_task(self._read_loop(), name="engine-reader")
        self._send(Hello(peer=self.identity))

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        if self._sock is not None:
            self._sock.close(linger=0)
        if self._ctx is not None:
            self._ctx.term()

    @property
    def ready(self) -> bool:
        return self.info is not None

    def submit(self, requests: list[AddRequest]) -> asyncio.Queue[RequestOutput]:
        """Send requests; the outputs of all of them arrive on the returned queue."""
        queue: asyncio.Queue[RequestOutput] = asyncio.Queue()
        for request in requests:
            self._queues[request.request_id] = queue
            self._send(request)
        return queue

    def abort(self, request_ids: list[str]) -> None:
        self._send(Abort(request_ids=request_ids))

    def release(self, request_ids: list[str]) -> None:
        """Forget requests: later outputs for them are dropped."""
        for request_id in request_ids:
            self._queues.pop(request_id, None)

    async def stats(self, timeout_s: float = 5.0) -> EngineStats:
        """Ask the scheduler for its live counters. Raises TimeoutError if it does not answer."""
        self._next_stats_token += 1
        token = self._next_stats_token
        waiter: asyncio.Future[EngineStats] = asyncio.get_running_loop().create_future()
        self._stats_waiters[token] = waiter
        try:
            self._send(StatsRequest(token=token))
            async with asyncio.timeout(timeout_s):
                return await waiter
        finally:
            self._stats_waiters.pop(token, None)

    def _send(self, msg: Message) -> None:
        assert self._sock is not None, "EngineClient.start() first"
        # Unlimited high-water mark: the send completes at once, no need to await it.
        transport.send(self._sock, msg)

    async def _read_loop(self) -> None:
        assert self._sock is not None
        while True:
            try:
                msg = await transport.arecv(self._sock)
            except msgspec.DecodeError:
                log.exception("undecodable message from the scheduler")
                continue
            self._dispatch(msg)

    def _dispatch(self, msg: Message) -> None:
        if isinstance(msg, RequestOutputs):
            queues = self._queues
            for output in msg.outputs:
                queue = queues.get(output.request_id)
                if queue is not None:
                    queue.put_nowait(output)
        elif isinstance(msg, EngineStats):
            waiter = self._stats_waiters.get(msg.token)
            if waiter is not None and not waiter.done():
                waiter.set_result(msg)
        elif isinstance(msg, EngineInfo):
            if self.info is None:
                log.info("engine ready: %s, %d slot(s) of %d tokens", msg.model_alias, msg.n_slots, msg.n_ctx_slot)
            self.info = msg
        else:
            log.warning("unexpected %s from the scheduler", type(msg).__name__)
