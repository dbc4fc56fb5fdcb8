"""The scheduler process's loop: sockets and timing around scheduler.core.

It blocks in zmq poll (never spins: on a CPU box the executors need every core), drains both
sockets, sends the next plan to every idle executor that has work, then sends each frontend
peer one RequestOutputs with everything that step produced for it.
"""

from __future__ import annotations

import logging

import zmq

from ggserve.config import ServeConfig
from ipc.protocol import (
    Abort,
    AddRequest,
    EngineError,
    EngineInfo,
    ErrorCode,
    ExecutorDied,
    ExecutorError,
    ExecutorReady,
    Hello,
    Message,
    RequestOutputs,
    Shutdown,
    StatsRequest,
    StepResult,
)
from ipc.transport import bind_router, executor_identity, recv_routed, send
from scheduler.core import Scheduler

log = logging.getLogger("scheduler")


class SchedulerLoop:
    def __init__(self, cfg: ServeConfig) -> None:
        self.cfg = cfg
        self.zmq = zmq.Context()
        self.frontends = bind_router(self.zmq, cfg.scheduler_endpoint)
        self.executors = bind_router(self.zmq, cfg.executor_endpoint)
        self.core = Scheduler(cfg.executors, cfg.max_queue, cfg.prefix_cache, cfg.batch_size)
        self.hello_waiting: list[bytes] = []  # peers to answer once every executor is ready
        self.running = True

    def run(self) -> None:
        poller = zmq.Poller()
        poller.register(self.frontends, zmq.POLLIN)
        poller.register(self.executors, zmq.POLLIN)
        log.info("waiting for %d executor(s)", self.cfg.executors)
        while self.running:
            events = dict(poller.poll())
            if self.executors in events:
                self._drain(self.executors, self._on_executor_message)
            if self.frontends in events:
                self._drain(self.frontends, self._on_frontend_message)
            self._dispatch()
            self._flush()
        self._stop_executors()

    def _drain(self, sock: zmq.Socket, handle) -> None:
        while True:
            try:
                peer, msg = recv_routed(sock, zmq.NOBLOCK)
            except zmq.Again:
                return
            handle(peer, msg)

    # ------------------------------------------------------------------ messages

    def _on_executor_message(self, peer: bytes, msg: Message) -> None:
        if isinstance(msg, StepResult):
            self.core.step_result(msg)
        elif isinstance(msg, ExecutorReady):
            self.core.executor_ready(msg.info)
            log.info("executor %d ready (%s)", msg.info.executor_id, msg.info.device)
            if self.core.ready:
                self._announce()
        elif isinstance(msg, ExecutorError):
            self.core.executor_failed(msg.executor_id, msg.message)
        else:
            log.warning("unexpected %s from %s", type(msg).__name__, peer)

    def _on_frontend_message(self, peer: bytes, msg: Message) -> None:
        if isinstance(msg, AddRequest):
            self.core.add_request(msg, peer)
        elif isinstance(msg, Abort):
            self.core.abort(msg.request_ids)
        elif isinstance(msg, StatsRequest):
            self._send(self.frontends, self.core.stats(msg.token), peer)
        elif isinstance(msg, Hello):
            self.hello_waiting.append(peer)
            if self.core.ready:
                self._announce()
        elif isinstance(msg, ExecutorDied):
            self.core.executor_failed(msg.executor_id, msg.message)
        elif isinstance(msg, Shutdown):
            log.info("shutting down: %s", msg.reason or "requested")
            self.core.fail_all(EngineError(ErrorCode.SHUTTING_DOWN, "the server is shutting down"))
            self.running = False
        else:
            log.warning("unexpected %s from %s", type(msg).__name__, peer)

    def _announce(self) -> None:
        infos = [self.core.executors[i].info for i in sorted(self.core.executors)]
        first = infos[0]
        info = EngineInfo(
            model_path=first.model_path,
            model_alias=self.cfg.model_alias,
            n_ctx=first.n_ctx,
            n_ctx_slot=self.core.n_ctx_slot,
            n_slots=first.n_slots,
            n_executors=len(infos),
            n_batch=self.core.n_batch,
            max_queue=self.cfg.max_queue,
            executors=infos,
        )
        for peer in self.hello_waiting:
            self._send(self.frontends, info, peer)
        self.hello_waiting.clear()

    # ------------------------------------------------------------------ output

    def _dispatch(self) -> None:
        for ex in self.core.executors.values():
            if ex.idle and self.core.has_work(ex.id):
                plan = self.core.next_plan(ex.id)
                if plan is not None:
                    if not self._send(self.executors, plan, executor_identity(ex.id)):
                        self.core.executor_failed(ex.id, "unreachable")

    def _flush(self) -> None:
        for peer, outputs in self.core.take_outputs().items():
            if not self._send(self.frontends, RequestOutputs(outputs), peer):
                self.core.abort_peer(peer)
                self.core.outputs.pop(peer, None)  # nobody to tell

    def _send(self, sock: zmq.Socket, msg: Message, peer: bytes) -> bool:
        try:
            send(sock, msg, peer)
            return True
        except zmq.ZMQError as exc:  # ROUTER_MANDATORY: the peer is gone
            log.warning("cannot reach %s: %s", peer, exc)
            return False

    def _stop_executors(self) -> None:
        for executor_id, ex in self.core.executors.items():
            if ex.alive:
                self._send(self.executors, Shutdown("scheduler stopping"), executor_identity(executor_id))
        self._flush()
        self.frontends.close(linger=500)
        self.executors.close(linger=500)
        self.zmq.term()
