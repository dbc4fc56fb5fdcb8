"""The HTTP worker's link to the scheduler: one ZeroMQ DEALER socket with its own identity.

On start the worker says Hello; the scheduler answers with EngineInfo once the engine is ready
(until then /health says "loading"). A background task reads every message: RequestOutputs are
split by request id into the queue the request's handler waits on, EngineStats, SlotActionDone and
EndReasoningDone answers go to the caller that asked for them (by token), EngineStatus (a few times a second)
says whether executors are ready and whether the server drains. Sends never wait: the socket's high-water mark is unlimited.

Liveness, both ways: the worker sends Heartbeat every HEARTBEAT_S so the scheduler can abort the
requests of a worker that died; and when the scheduler sends nothing for LOSS_S (it died or
hangs), every request of this worker ends with an error at once and the worker reconnects on a
fresh socket (whatever the old one had queued is dropped), saying Hello until a scheduler
answers. Until then new requests get 503. A restarted scheduler may hear the old socket first
(ZeroMQ reconnects by itself): its EngineStatus carries another epoch, which counts as a loss too.
A worker whose event loop stalled past the scheduler's 3 s is forgotten (its requests aborted);
when it speaks again the scheduler ends each of those requests with an error (PEER_FORGOTTEN).

Embedding vectors arrive as refs to the executors' shared-memory arenas, read with this worker's
``arena`` reader. Their regions stay ours until we say VectorsRead, or until the scheduler
forgets this worker (silent for 3 s): a worker whose event loop stalled may have been forgotten
and must not read them (``steady_since``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
from typing import Any

import zmq.asyncio

from ipc import transport
from ipc.protocol import (
    Abort,
    AddRequest,
    AddRequests,
    EmbedRequest,
    EndReasoning,
    EndReasoningDone,
    EngineError,
    EngineInfo,
    EngineStats,
    EngineStatus,
    ErrorCode,
    FinishReason,
    Heartbeat,
    Hello,
    LoraScale,
    Message,
    RequestOutput,
    RequestOutputs,
    SlotAction,
    SlotActionDone,
    SlotActionKind,
    SetLoraScales,
    StatsRequest,
    VectorsRead,
)
from ipc.shm import ArenaReader
from ipc.transport import CurveKeys

log = logging.getLogger(__name__)

HEARTBEAT_S = 0.25  # Heartbeat to the scheduler; Hello again while none answers
# A gap between two sends this long may let the scheduler forget this worker (it does after 3 s
# of silence, scheduler.loop.PEER_TIMEOUT_S) and reuse the vectors' regions it held for us.
STALL_S = 2.0
FIRST_ANSWER_S = 3.0  # how long start() waits for the engine to be ready (a loading model takes longer)
LOSS_S = 1.5  # scheduler silence after which it counts as lost (it sends status every 0.2 s)


class EngineClient:
    def __init__(self, endpoint: str, keys: CurveKeys | None = None) -> None:
        self.endpoint = endpoint
        self.keys = keys
        self.identity = ""
        self.info: EngineInfo | None = None  # set when the engine is ready
        self.status: EngineStatus | None = None  # the scheduler's last pulse
        self.connected = False  # the scheduler answered Hello and has not gone silent since
        self._queues: dict[str, asyncio.Queue[RequestOutput]] = {}
        self._waiters: dict[int, asyncio.Future[Any]] = {}  # token -> the caller of stats() / slot_action()
        self._next_token = 0
        self._ctx: zmq.asyncio.Context | None = None
        self._sock: zmq.asyncio.Socket | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.arena = ArenaReader()  # this worker's mappings of the executors' vector arenas
        self._last_sent = time.monotonic()
        self._stalls = 0  # gaps of STALL_S or more between two sends
        self._ready = asyncio.Event()  # the scheduler has said the engine is ready (EngineInfo)

    async def start(self) -> None:
        """Connect, say Hello and wait (up to FIRST_ANSWER_S) for the scheduler to say the engine
        is ready (EngineInfo). A worker that starts beside the others (--http-workers) must not
        answer /health with "loading" while they answer "ok": one that said Hello while the model
        loaded hears a status first and the EngineInfo a moment later. The rest arrives in the
        background."""
        self._ctx = zmq.asyncio.Context()
        self._connect()
        self._tasks = [
            asyncio.create_task(self._read_loop(), name="engine-reader"),
            asyncio.create_task(self._heartbeat_loop(), name="engine-heartbeat"),
        ]
        try:
            await asyncio.wait_for(self._ready.wait(), FIRST_ANSWER_S)
        except TimeoutError:
            log.info("the engine is not ready yet; serving 503 until it is")

    def _connect(self) -> None:
        assert self._ctx is not None
        if self._sock is not None:
            self._sock.close(linger=0)
        self.identity = f"frontend-{os.getpid()}-{secrets.token_hex(4)}"
        self._sock = transport.connect_dealer(self._ctx, self.endpoint, self.identity.encode(), self.keys)
        self._send(Hello(peer=self.identity))

    async def close(self, why: str = "") -> None:
        """Disconnect; ``why``: end the requests still running with this error (router mode
        unloading the model) instead of leaving them to the caller."""
        if why:
            self._fail_all(why)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._sock is not None:
            self._sock.close(linger=0)
        if self._ctx is not None:
            self._ctx.term()
        self.arena.close()

    @property
    def ready(self) -> bool:
        return self.info is not None and self.connected

    def unavailable_reason(self) -> str | None:
        """Why new requests cannot be served now (503), or None when they can."""
        if self.info is None:
            return "the model is still loading"
        if not self.connected:
            return "the engine is restarting"
        if self.status is not None and self.status.draining:
            return "the server is shutting down"
        return None

    def submit(self, requests: list[AddRequest] | list[EmbedRequest]) -> asyncio.Queue[RequestOutput]:
        """Send requests; the outputs of all of them arrive on the returned queue."""
        queue: asyncio.Queue[RequestOutput] = asyncio.Queue()
        for request in requests:
            self._queues[request.request_id] = queue
        generation = [r for r in requests if isinstance(r, AddRequest)]
        if len(generation) > 1:  # one call's choices and prompts: admitted whole or not at all
            self._send(AddRequests(generation))
        else:
            for request in requests:
                self._send(request)
        return queue

    def abort(self, request_ids: list[str], reason: FinishReason = FinishReason.ABORT) -> None:
        self._send(Abort(request_ids, reason))

    def vectors_read(self, request_ids: list[str]) -> None:
        """Done with these embedding requests' vectors (copied, or given up): free their regions."""
        self._send(VectorsRead(request_ids))

    @property
    def send_mark(self) -> int:
        """Pass to ``steady_since`` later."""
        return self._stalls

    def steady_since(self, mark: int) -> bool:
        """No gap of STALL_S between sends since ``send_mark`` gave ``mark``, nor since the last
        send: the scheduler cannot have forgotten this worker (and reused regions it held)."""
        return self._stalls == mark and time.monotonic() - self._last_sent < STALL_S

    def release(self, request_ids: list[str]) -> None:
        """Forget requests: later outputs for them are dropped."""
        for request_id in request_ids:
            self._queues.pop(request_id, None)

    async def stats(self, timeout_s: float = 5.0, reset_window: bool = False) -> EngineStats:
        """Ask the scheduler for its live counters (``reset_window``: and start a new throughput
        window). Raises TimeoutError if it does not answer."""
        reply: EngineStats = await self._ask(StatsRequest(token=self._new_token(), reset_window=reset_window),
                                             timeout_s)
        return reply

    async def slot_action(self, kind: SlotActionKind, id_slot: int, timeout_s: float, path: str = "",
                          n_tokens: int = 0) -> SlotActionDone:
        """Save, restore or erase a slot (POST /slots/{id}). Raises TimeoutError if the scheduler
        does not answer (it answers an error itself when the executor fails or hangs)."""
        reply: SlotActionDone = await self._ask(SlotAction(self._new_token(), kind, id_slot, path, n_tokens),
                                                timeout_s)
        return reply

    async def end_reasoning(self, request_id: str, timeout_s: float) -> EndReasoningDone:
        """End the thinking of the running choices of a call (POST /v1/chat/completions/control).
        Raises TimeoutError if the scheduler does not answer."""
        reply: EndReasoningDone = await self._ask(EndReasoning(self._new_token(), request_id), timeout_s)
        return reply

    def _new_token(self) -> int:
        self._next_token += 1
        return self._next_token

    async def _ask(self, msg: StatsRequest | SlotAction | EndReasoning, timeout_s: float) -> Any:
        """Send ``msg`` and wait for the answer carrying its token."""
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiters[msg.token] = waiter
        try:
            self._send(msg)
            async with asyncio.timeout(timeout_s):
                return await waiter
        finally:
            self._waiters.pop(msg.token, None)

    async def lora_scales(self, change: list[LoraScale] | None, timeout_s: float = 5.0) -> EngineStats:
        """Set the global LoRA scales (``change``; None: leave them) and return the counters, whose
        ``lora_scales`` then hold the change: the scheduler reads this socket's messages in order."""
        if change is not None:
            self._send(SetLoraScales(change))
        return await self.stats(timeout_s)

    def _send(self, msg: Message) -> None:
        assert self._sock is not None, "EngineClient.start() first"
        # Unlimited high-water mark: the send completes at once, no need to await it.
        transport.send(self._sock, msg)
        now = time.monotonic()
        if now - self._last_sent >= STALL_S:
            self._stalls += 1
        self._last_sent = now

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            self._send(Heartbeat() if self.connected else Hello(peer=self.identity))

    async def _read_loop(self) -> None:
        last_heard = awake = time.monotonic()
        while True:
            sock = self._sock
            assert sock is not None
            polled = await sock.poll(int(HEARTBEAT_S * 1000), zmq.POLLIN)
            now = time.monotonic()
            if now - awake > LOSS_S:  # this worker stalled (not the scheduler): give it time to be heard
                last_heard = now
            awake = now
            if not polled:
                if now - last_heard > LOSS_S and self.connected:
                    self._lost()
                continue
            try:
                msg = await transport.arecv(sock)
            except transport.BadFrame as exc:
                log.warning("dropped a bad frame from the scheduler: %s", exc)
                continue
            last_heard = time.monotonic()
            self._dispatch(msg)

    def _lost(self, why: str = "stopped answering") -> None:
        """The scheduler is gone: end every request at once, then reconnect."""
        log.error("the scheduler %s; failing %d request(s) and reconnecting", why, len(self._queues))
        self.connected = False
        self.status = None
        self._fail_all("the engine stopped answering; retry the request")
        self._connect()

    def _fail_all(self, message: str) -> None:
        """End every request of this worker and every stats wait with an error."""
        error = EngineError(ErrorCode.EXECUTOR_FAILED, message)
        for request_id, queue in self._queues.items():
            queue.put_nowait(RequestOutput(request_id, finish_reason=FinishReason.ERROR, error=error))
        self._queues.clear()
        for waiter in self._waiters.values():
            if not waiter.done():
                waiter.set_exception(TimeoutError("the scheduler stopped answering"))

    def _dispatch(self, msg: Message) -> None:
        if isinstance(msg, RequestOutputs):
            queues = self._queues
            for output in msg.outputs:
                queue = queues.get(output.request_id)
                if queue is not None:
                    queue.put_nowait(output)
        elif isinstance(msg, EngineStatus):
            if self.connected and self.info is not None and msg.epoch != self.info.epoch:
                self._lost("was replaced by a new one")
                return
            self.status = msg
        elif isinstance(msg, (EngineStats, SlotActionDone, EndReasoningDone)):
            waiter = self._waiters.get(msg.token)
            if waiter is not None and not waiter.done():
                waiter.set_result(msg)
        elif isinstance(msg, EngineInfo):
            if not self.connected:
                log.info("engine ready: %s, %d slot(s) of %d tokens", msg.model_alias, msg.n_slots, msg.n_ctx_slot)
            self.info = msg
            self.connected = True
            self._ready.set()
        else:
            log.warning("unexpected %s from the scheduler", type(msg).__name__)
