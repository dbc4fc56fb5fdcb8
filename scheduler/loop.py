"""The scheduler process's loop: sockets and timing around scheduler.core.

It blocks in zmq poll (never spins: on a CPU box the executors need every core), drains both
sockets, sends the next plan to every idle executor that has work (and, with
--async-scheduling, the decode step behind a running one), then sends each frontend peer one
RequestOutputs with everything that step produced for it.

A few times a second (the poll's timeout) it also keeps the engine alive and honest:
  - sends EngineStatus to every peer that said Hello (the frontends' and the launcher's proof
    that the scheduler lives, and whether executors are ready or the server is draining);
  - aborts the requests of a frontend worker whose Heartbeat stopped (the worker died);
  - declares an executor whose step runs past ``--step-timeout`` hung: its requests fail and the
    launcher is asked to kill and restart it;
  - finishes a drain: once no request is left, or at the deadline, tells the launcher.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable

import zmq

from ggserve.config import ServeConfig
from ipc.protocol import (
    Abort,
    AddRequest,
    AddRequests,
    Drain,
    Drained,
    EmbedRequest,
    EmbedResult,
    EndReasoning,
    EngineError,
    EngineInfo,
    EngineStatus,
    ErrorCode,
    ExecutorDied,
    ExecutorError,
    ExecutorReady,
    FinishReason,
    Heartbeat,
    Hello,
    Message,
    RequestOutput,
    RequestOutputs,
    RestartExecutor,
    Restarts,
    SetLoraScales,
    Shutdown,
    SlotAction,
    StatsRequest,
    StepResult,
    VectorsRead,
)
from ipc.transport import (
    LAUNCHER_IDENTITY,
    BadFrame,
    bind_router,
    executor_identity,
    recv_routed,
    send,
    start_authenticator,
)
from scheduler.core import Scheduler
from scheduler.speculative.drafter import spec_settings

log = logging.getLogger("scheduler")

TICK_S = 0.1  # poll timeout: how often timers are checked when no message arrives
STATUS_INTERVAL_S = 0.2  # EngineStatus to every peer
PEER_TIMEOUT_S = 3.0  # a frontend worker silent this long is gone: its requests are aborted
FORGOTTEN_TTL_S = 600.0  # how long a forgotten worker's dropped requests are remembered, should it come back
LOAD_LOG_INTERVAL_S = 60.0  # a line per executor on its load and KV use, while there is work


class SchedulerLoop:
    def __init__(self, cfg: ServeConfig) -> None:
        self.cfg = cfg
        self.zmq = zmq.Context()
        self.auth = start_authenticator(self.zmq, cfg.curve) if cfg.curve is not None else None
        self.frontends = bind_router(self.zmq, cfg.scheduler_endpoint, cfg.curve)
        self.executors = bind_router(self.zmq, cfg.executor_endpoint, cfg.curve)
        cache_ram_bytes = cfg.cache_ram * 2**20 if cfg.cache_ram > 0 else cfg.cache_ram
        self.core = Scheduler(
            cfg.executors, cfg.max_queue, cfg.prefix_cache, cfg.batch_size, cfg.ctx_per_request, cache_ram_bytes,
            cfg.context_shift, cfg.lora_scales, spec_settings(cfg),
        )
        self.hello_waiting: set[bytes] = set()  # peers to answer once every executor is ready
        self.peers: dict[bytes, float] = {}  # peers that said Hello -> last time heard from
        self.heartbeating: set[bytes] = set()  # peers that send Heartbeat (expected to go on)
        # forgotten peers (silent or unreachable) -> (when, the ids of their requests dropped then):
        # one that was only stalled is told those requests failed when it is heard from again
        self.forgotten: dict[bytes, tuple[float, set[str]]] = {}
        self.epoch = secrets.randbits(62)  # tells this scheduler from the one it may replace
        self.drain_deadline: float | None = None
        self.next_status = 0.0
        self.next_load_log = time.monotonic() + LOAD_LOG_INTERVAL_S
        self.running = True

    def run(self) -> None:
        poller = zmq.Poller()
        poller.register(self.frontends, zmq.POLLIN)
        poller.register(self.executors, zmq.POLLIN)
        log.info("waiting for %d executor(s)", self.cfg.executors)
        while self.running:
            events = dict(poller.poll(int(TICK_S * 1000)))
            if self.executors in events:
                self._drain(self.executors, self._on_executor_message)
            if self.frontends in events:
                self._drain(self.frontends, self._on_frontend_message)
            self._tick(time.monotonic())
            self._dispatch()
            self._flush()
        self._stop_executors()

    def _drain(self, sock: zmq.Socket, handle: Callable[[bytes, Message], None]) -> None:
        while True:
            try:
                peer, msg = recv_routed(sock, zmq.NOBLOCK)
            except zmq.Again:
                return
            except BadFrame as exc:
                log.warning("dropped a bad frame: %s", exc)
                continue
            handle(peer, msg)

    # ------------------------------------------------------------------ messages

    def _on_executor_message(self, peer: bytes, msg: Message) -> None:
        if isinstance(msg, StepResult):
            if peer == executor_identity(msg.executor_id):
                self.core.step_result(msg)
            else:
                log.warning("dropped a StepResult of executor %d from %r", msg.executor_id, peer)
        elif isinstance(msg, EmbedResult) and peer == executor_identity(msg.executor_id):
            self.core.embed_result(msg)
        elif isinstance(msg, ExecutorReady) and peer == executor_identity(msg.info.executor_id):
            if not 0 <= msg.info.executor_id < self.cfg.executors:
                log.warning("dropped ExecutorReady of unknown executor %d", msg.info.executor_id)
                return
            restarted = msg.info.executor_id in self.core.executors
            self.core.executor_ready(msg.info)
            if self.cfg.cache_reuse and not msg.info.can_shift:
                log.warning("cache reuse is not supported by this model's KV cache (it cannot shift): "
                            "--cache-reuse and n_cache_reuse are ignored")
            log.info("executor %d %s (%s, pid %d)", msg.info.executor_id,
                     "restarted and ready" if restarted else "ready", msg.info.device, msg.info.pid)
            if self.core.ready:
                self._announce()
        elif isinstance(msg, ExecutorError) and peer == executor_identity(msg.executor_id):
            self.core.executor_failed(msg.executor_id, msg.message)
        else:
            log.warning("dropped an unexpected %s from %r", type(msg).__name__, peer)

    def _on_frontend_message(self, peer: bytes, msg: Message) -> None:
        if peer in self.forgotten:
            self._remind(peer)
        if peer in self.peers:
            self.peers[peer] = time.monotonic()
        if isinstance(msg, AddRequest):
            self.core.add_requests([msg], peer)
        elif isinstance(msg, AddRequests):
            self.core.add_requests(msg.requests, peer)
        elif isinstance(msg, EmbedRequest):
            self.core.add_embedding(msg, peer)
        elif isinstance(msg, VectorsRead):
            self.core.vectors_read(peer, msg.request_ids)
        elif isinstance(msg, Abort):
            self.core.abort(msg.request_ids, msg.reason)
        elif isinstance(msg, SlotAction):
            self.core.slot_action(msg, peer)
        elif isinstance(msg, EndReasoning):
            self.core.end_reasoning(msg, peer)
        elif isinstance(msg, Heartbeat):
            self.heartbeating.add(peer)
            self.peers.setdefault(peer, time.monotonic())
        elif isinstance(msg, SetLoraScales):
            self.core.set_lora_scales(msg.scales)
        elif isinstance(msg, StatsRequest):
            self._send(self.frontends, self.core.stats(msg.token), peer)
            if msg.reset_window:
                self.core.metrics.reset_window()
        elif isinstance(msg, Hello):
            self.peers[peer] = time.monotonic()
            self.hello_waiting.add(peer)
            if self.core.ready:
                self._announce()
        elif peer == LAUNCHER_IDENTITY and isinstance(msg, (ExecutorDied, RestartExecutor)):
            self.core.executor_failed(msg.executor_id, msg.message, msg.pid)
        elif peer == LAUNCHER_IDENTITY and isinstance(msg, Restarts):
            self.core.metrics.restarts = msg.counts
        elif peer == LAUNCHER_IDENTITY and isinstance(msg, Drain):
            log.info("draining: %d request(s) to finish within %.0fs", len(self.core.requests), msg.timeout_s)
            self.core.draining = True
            self.drain_deadline = time.monotonic() + msg.timeout_s
            self.next_status = 0.0  # tell the frontends at once
        elif peer == LAUNCHER_IDENTITY and isinstance(msg, Shutdown):
            log.info("shutting down: %s", msg.reason or "requested")
            self.core.fail_all(EngineError(ErrorCode.SHUTTING_DOWN, "the server is shutting down"))
            self.running = False
        else:
            log.warning("dropped an unexpected %s from %r", type(msg).__name__, peer)

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
            epoch=self.epoch,
            executors=infos,
            context_shift=self.core.context_shift,
            speculative=self.cfg.spec_type,
        )
        for peer in self.hello_waiting:
            self._send(self.frontends, info, peer)
        self.hello_waiting.clear()

    # ------------------------------------------------------------------ timers

    def _tick(self, now: float) -> None:
        if now >= self.next_status:
            self.next_status = now + STATUS_INTERVAL_S
            status = EngineStatus(self.epoch, self.core.n_alive, self.core.draining, len(self.core.requests))
            for peer in list(self.peers):
                if not self._send(self.frontends, status, peer):
                    self._forget(peer, "is unreachable")
        if now >= self.next_load_log:
            self.next_load_log = now + LOAD_LOG_INTERVAL_S
            if self.core.requests:
                self._log_load()
        for peer in [p for p in self.heartbeating if now - self.peers.get(p, now) > PEER_TIMEOUT_S]:
            self._forget(peer, "went silent")
        for ex in self.core.hung_executors(now, self.cfg.step_timeout):
            message = f"step {ex.step_id} ran longer than --step-timeout {self.cfg.step_timeout:g}s"
            self.core.executor_failed(ex.id, message)
            self._send(self.frontends, RestartExecutor(ex.id, ex.info.pid, message), LAUNCHER_IDENTITY)
        if self.drain_deadline is not None:
            if self.core.n_unfinished and now < self.drain_deadline:
                return
            cut = self.core.fail_all(EngineError(ErrorCode.SHUTTING_DOWN, "the server is shutting down"))
            log.info("drained (%d request(s) cut short at the deadline)", cut)
            self._flush()
            self._send(self.frontends, Drained(cut), LAUNCHER_IDENTITY)
            self.drain_deadline = None

    def _log_load(self) -> None:
        c = self.core.counters
        for ex in self.core.executors.values():
            if not ex.alive:
                continue
            used = ex.n_ctx - ex.free_cells
            host = ex.host_cache.entries
            log.info(
                "executor %d: %d running, %d waiting, KV %d/%d cells (%.0f%%), host cache %d prefix(es) ~%.0f MiB; "
                "since start %d preemption(s), %d prefix(es) saved to and %d restored from host memory, "
                "%d evicted unsaved (slower to save than to recompute: %.2f ms per run of cells)",
                ex.id, len(ex.running), len(self.core.waiting), used, ex.n_ctx, 100 * used / ex.n_ctx,
                len(host), sum(e.nbytes for e in host) / 2**20,
                c["preempted"], c["host_cache_saved"], c["host_cache_restored"], c["host_cache_unsaved"],
                1e3 * ex.host_cache.run_seconds,
            )

    def _forget(self, peer: bytes, why: str, unsent: list[RequestOutput] | None = None) -> None:
        """A frontend worker is gone: abort its requests, send it nothing more (unless it comes
        back: ``_remind``); ``unsent``: outputs that could not be sent to it."""
        n = sum(r.peer == peer for r in self.core.requests.values())
        if peer != LAUNCHER_IDENTITY:
            log.warning("frontend peer %r %s; aborting its %d request(s)", peer, why, n)
        self.peers.pop(peer, None)
        self.heartbeating.discard(peer)
        now = time.monotonic()
        dropped = self.core.abort_peer(peer) | {out.request_id for out in unsent or ()}
        if dropped and peer != LAUNCHER_IDENTITY:
            self.forgotten[peer] = (now, dropped | self.forgotten.get(peer, (now, set()))[1])
        for old in [p for p, (when, _) in self.forgotten.items() if now - when > FORGOTTEN_TTL_S]:
            del self.forgotten[old]  # a worker that died: it never comes back

    def _remind(self, peer: bytes) -> None:
        """A forgotten worker speaks again (its event loop had stalled, or a send to it failed): the
        requests dropped then end with an error, so none of its clients waits forever."""
        _, dropped = self.forgotten.pop(peer)
        log.warning("frontend peer %r is back; failing the %d request(s) dropped while it was silent",
                    peer, len(dropped))
        error = EngineError(ErrorCode.PEER_FORGOTTEN, f"this HTTP worker did not answer the engine for over "
                            f"{PEER_TIMEOUT_S:g}s (its event loop stalled), so the engine dropped its requests; retry")
        self._send(self.frontends, RequestOutputs([RequestOutput(rid, finish_reason=FinishReason.ERROR, error=error)
                                                   for rid in sorted(dropped)]), peer)

    # ------------------------------------------------------------------ output

    def _dispatch(self) -> None:
        for ex in self.core.executors.values():
            plans = []
            if ex.idle and self.core.has_work(ex.id):
                plans.append(self.core.next_plan(ex.id))
            if self.cfg.async_scheduling:  # the step behind the one running, planned now
                plans.append(self.core.next_follow_plan(ex.id))
            for plan in plans:
                if plan is not None and not self._send(self.executors, plan, executor_identity(ex.id)):
                    self.core.executor_failed(ex.id, "unreachable")
                    break

    def _flush(self) -> None:
        for peer, outputs in self.core.take_outputs().items():
            if not self._send(self.frontends, RequestOutputs(outputs), peer):
                self._forget(peer, "is unreachable", outputs)
        for peer, reply in self.core.take_replies():
            self._send(self.frontends, reply, peer)

    def _send(self, sock: zmq.Socket, msg: Message, peer: bytes) -> bool:
        try:
            send(sock, msg, peer)
            return True
        except zmq.ZMQError as exc:  # ROUTER_MANDATORY: the peer is gone
            log.warning("cannot reach %r: %s", peer, exc)
            return False

    def _stop_executors(self) -> None:
        for executor_id, ex in self.core.executors.items():
            if ex.alive:
                self._send(self.executors, Shutdown("scheduler stopping"), executor_identity(executor_id))
        self._flush()
        self.frontends.close(linger=500)
        self.executors.close(linger=500)
        if self.auth is not None:
            self.auth.stop()
        self.zmq.term()
