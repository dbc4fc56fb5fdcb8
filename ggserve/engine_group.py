"""One model's engine as the launcher sees it: its scheduler, its executors, the control socket.

The launcher runs one of these for the single model, or one per loaded model in router mode.
``start`` spawns the processes and says Hello; the scheduler answers EngineInfo once every
executor has loaded (``info``). ``supervise`` heals it as the launcher's docstring describes:
a dead or hung executor is reported and restarted after a back-off, a dead or silent scheduler
restarts the whole engine; a process failing too often raises ChildFailed. ``stop`` shuts it
down without blocking the caller (``stopped`` says when it is over).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import zmq

from ggserve.children import Child
from ggserve.config import ServeConfig
from ggserve.gpu_groups import executor_gpus
from ipc.protocol import (
    ChildRestarts,
    Drain,
    Drained,
    EngineInfo,
    EngineStatus,
    ExecutorDied,
    Hello,
    Message,
    RestartExecutor,
    Restarts,
    Shutdown,
)
from ipc.shm import executor_owner, run_id_of, segment_name, unlink_segment
from ipc.transport import LAUNCHER_IDENTITY, BadFrame, connect_dealer, recv, send

log = logging.getLogger("ggserve")

SCHEDULER_SILENCE_S = 10.0  # a live scheduler that sends no EngineStatus this long is hung
STOP_WAIT_S = 5.0  # after Shutdown, time for the engine to exit before it is killed


class EngineGroup:
    def __init__(self, cfg: ServeConfig, config_path: str, zctx: zmq.Context, name: str = "",
                 restart_counts: Callable[[], list[ChildRestarts]] | None = None) -> None:
        """``name``: the model's in router mode (prefixes its processes' names), "" alone;
        ``restart_counts``: the server's other children's counts, reported with this engine's."""
        self.cfg = cfg
        self.name = name
        self.zmq = zctx
        prefix = f"{name}/" if name else ""
        self.scheduler = Child.module(f"{prefix}scheduler", "scheduler", config_path)
        gpus = executor_gpus(cfg.gpus, cfg.executors, cfg.split_mode, cfg.main_gpu)
        self.executors = [
            Child.module(f"{prefix}executor {i}", "executor", config_path, "--id", str(i),
                         env={"CUDA_VISIBLE_DEVICES": visible} if visible is not None else None)
            for i, visible in enumerate(gpus)
        ]
        self._other_counts = restart_counts or list
        self.control = self._connect_control()
        self.info: EngineInfo | None = None  # the engine's facts once it is ready
        self.status: EngineStatus | None = None  # the scheduler's last pulse
        self.drained = False  # the scheduler reported every request ended after Drain
        self.last_heard = time.monotonic()  # last message from the scheduler
        self.last_busy = time.monotonic()  # last pulse with requests in flight (or start)
        self.stop_deadline: float | None = None  # set by stop(): kill whatever still runs then

    @property
    def children(self) -> list[Child]:
        return [self.scheduler, *self.executors]

    def _connect_control(self) -> zmq.Socket:
        """A fresh socket to the scheduler (a new one drops whatever the old one had queued)."""
        return connect_dealer(self.zmq, self.cfg.scheduler_endpoint, LAUNCHER_IDENTITY, self.cfg.curve)

    # ------------------------------------------------------------------ start

    def start(self) -> None:
        for child in self.children:
            child.spawn()
        self.last_heard = self.last_busy = time.monotonic()
        self._hello()

    def start_failure(self) -> str | None:
        """Why the start failed (a process exited before the engine was ready), or None."""
        for child in self.children:
            code = child.exit_code()
            if code is not None:
                return f"{child.name} exited during start-up with code {code}"
        return None

    # ------------------------------------------------------------------ supervise

    def supervise(self, now: float, restart: bool, max_restarts: int) -> None:
        """Read the scheduler's messages, notice deaths and hangs, start again what is due."""
        self.read_control()
        if self.scheduler.restart_at is None:
            code = self.scheduler.exit_code()
            if code is not None:
                self._scheduler_lost(now, f"exited with code {code}", max_restarts)
            elif now - self.last_heard > SCHEDULER_SILENCE_S:
                self.scheduler.kill()
                self._scheduler_lost(now, f"sent nothing for {SCHEDULER_SILENCE_S:.0f}s (hung); killed",
                                     max_restarts)
        for i, executor in enumerate(self.executors):
            if executor.restart_at is None and self.scheduler.restart_at is None:
                code = executor.exit_code()
                if code is not None:
                    message = f"process {executor.pid} exited with code {code}"
                    self._unlink_arena(i, executor)
                    self.send_control(ExecutorDied(i, executor.pid, message))
                    executor.failed(now, message, max_restarts)
        if restart:
            self._restart_due(now)

    def _scheduler_lost(self, now: float, message: str, max_restarts: int) -> None:
        """The engine restarts whole: fresh executors for the fresh scheduler."""
        for i, executor in enumerate(self.executors):
            executor.kill()
            self._unlink_arena(i, executor)
            executor.restart_at = None
        self.scheduler.failed(now, message, max_restarts)
        self.control.close(linger=0)
        self.control = self._connect_control()

    def _unlink_arena(self, executor_id: int, executor: Child) -> None:
        """A dead executor's vector arena (when it had one and could not unlink it itself: a
        SIGKILL takes its resource tracker too). The frontends' mappings go as they move on."""
        unlink_segment(segment_name(run_id_of(self.cfg.run_dir), executor_owner(executor_id, executor.pid)))

    def _restart_due(self, now: float) -> None:
        if self.scheduler.restart_at is not None:
            if now < self.scheduler.restart_at:
                return
            log.info("restarting %s and %d executor(s)", self.scheduler.name, len(self.executors))
            for child in self.children:
                child.spawn()
            self.scheduler.restarts += 1
            self.last_heard = now
            self._hello()
        for executor in self.executors:
            if executor.restart_at is not None and now >= executor.restart_at:
                log.info("restarting %s", executor.name)
                executor.spawn()
                executor.restarts += 1
                self.send_restarts()

    def _hello(self) -> None:
        """Introduce the launcher to a (new) scheduler, with the restart counts it reports."""
        send(self.control, Hello(peer="launcher"))
        self.send_restarts()

    def send_restarts(self) -> None:
        counts = [ChildRestarts(c.name.replace(" ", "-"), c.restarts) for c in self.children]
        self.send_control(Restarts(counts + self._other_counts()))

    def read_control(self) -> None:
        while self.control.poll(0):
            try:
                msg = recv(self.control)
            except BadFrame as exc:
                log.warning("dropped a bad frame from %s: %s", self.scheduler.name, exc)
                continue
            self.last_heard = time.monotonic()
            self._on_message(msg)

    def _on_message(self, msg: Message) -> None:
        if isinstance(msg, EngineStatus):
            self.status = msg
            if msg.n_requests:
                self.last_busy = time.monotonic()
        elif isinstance(msg, RestartExecutor):
            executor = self.executors[msg.executor_id] if 0 <= msg.executor_id < len(self.executors) else None
            if executor is not None and executor.pid == msg.pid and executor.exit_code() is None:
                log.error("%s hung (%s); killing it", executor.name, msg.message)
                executor.kill()  # supervise() restarts it
        elif isinstance(msg, Drained):
            log.info("all requests ended (%d cut short at the deadline)", msg.n_cut_short)
            self.drained = True
        elif isinstance(msg, EngineInfo):
            if self.info is not None:
                log.info("the engine%s is ready again", f" of {self.name}" if self.name else "")
            self.info = msg
        else:
            log.warning("dropped an unexpected %s from %s", type(msg).__name__, self.scheduler.name)

    def send_control(self, msg: Drain | ExecutorDied | Restarts | Shutdown) -> None:
        try:
            send(self.control, msg)
        except zmq.ZMQError as exc:
            log.warning("cannot reach %s: %s", self.scheduler.name, exc)

    @property
    def idle(self) -> bool:
        """Ready, and no request running or waiting (as of the scheduler's last pulse)."""
        return self.info is not None and self.status is not None and self.status.n_requests == 0

    # ------------------------------------------------------------------ stop

    def stop(self, reason: str) -> None:
        """Ask the engine to stop; ``stopped`` kills what is left after STOP_WAIT_S."""
        self.send_control(Shutdown(reason))
        self.stop_deadline = time.monotonic() + STOP_WAIT_S

    def stopped(self) -> bool:
        """Whether every process has ended (killing them once the stop's deadline has passed)."""
        if all(c.proc is None or c.exit_code() is not None for c in self.children):
            self.close()
            return True
        if self.stop_deadline is not None and time.monotonic() > self.stop_deadline:
            for child in self.children:
                if child.exit_code() is None:
                    log.warning("%s did not stop in time; killing it", child.name)
                    child.kill()
            self.close()
            return True
        return False

    def close(self) -> None:
        for child in self.children:
            child.kill()  # reaps it (and its group) whether it ended by itself or not
        for i, executor in enumerate(self.executors):
            self._unlink_arena(i, executor)
        self.control.close(linger=0)


def log_engine(info: EngineInfo) -> None:
    """Say what an engine loaded and how it is laid out."""
    ex = info.executors[0]
    log.info(
        "model %s (%s, %.0fM params, %.0f MiB) as '%s'",
        info.model_path, ex.model_desc, ex.n_params / 1e6, ex.model_size_bytes / 2**20, info.model_alias,
    )
    log.info(
        "%d executor(s) x %d slots, up to %d tokens per request, batch %d, KV %.1f MiB per executor",
        info.n_executors, info.n_slots, info.n_ctx_slot, info.n_batch, ex.kv_bytes / 2**20,
    )

