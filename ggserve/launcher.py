"""Start, supervise, heal and stop the server's processes.

Start order: scheduler (binds the sockets), executors (load the model, report to the scheduler),
frontend (granian). Ready means the scheduler answered Hello with EngineInfo (every executor
loaded) and the frontend's /health says ok. A child that exits during start-up fails the start.

Once serving, the launcher heals:
  - an executor that exits (or that the scheduler reports hung past --step-timeout, which the
    launcher then kills) is reported to the scheduler, which fails its in-flight requests at
    once; the executor is started again after a back-off (1 s, 2 s, 4 s ... 30 s) and the
    scheduler gives it work once it reports ready, with empty slots and cache;
  - a scheduler that exits, or goes silent (no EngineStatus), is restarted with fresh executors;
    frontends notice the silence themselves, fail their requests and reconnect;
  - a frontend (granian) that exits is restarted; granian restarts its own workers;
  - a process that fails more than --max-restarts times within RESTART_WINDOW_S (a model that
    crashes on load) ends the server with exit code 1.

Every child runs in its own process group (a terminal's Ctrl-C or a signal to the launcher's
group reaches the launcher alone), ignores SIGINT/SIGTERM, and is SIGKILLed by the kernel if the
launcher dies (PR_SET_PDEATHSIG): no orphan survives, whatever ends the launcher.

Stopping (SIGTERM/SIGINT): the scheduler drains (new requests get 503, running and queued ones
finish for up to --shutdown-timeout, then the rest end with an error), then the frontend is
stopped, then the engine; a second signal skips the wait. Exit code 0; the run directory's
files are removed (only the ones ggserve created when --run-dir was given).
"""

from __future__ import annotations

import collections
import logging
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

import msgspec
import zmq

from ggserve.config import ServeConfig, save_config
from ipc.protocol import (
    ChildRestarts,
    Drain,
    Drained,
    EngineInfo,
    EngineStatus,
    ExecutorDied,
    Hello,
    RestartExecutor,
    Restarts,
    Shutdown,
)
from ipc.shm import executor_owner, run_id_of, segment_name, unlink_segment
from ipc.transport import (
    LAUNCHER_IDENTITY,
    BadFrame,
    CurveKeys,
    connect_dealer,
    ipc_endpoint,
    is_tcp,
    recv,
    send,
)

log = logging.getLogger("ggserve")

POLL_SECONDS = 0.1
STARTUP_TIMEOUT = 600.0
BACKOFF_S = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0)  # delay before the k-th restart within the window
RESTART_WINDOW_S = 120.0
SCHEDULER_SILENCE_S = 10.0  # a live scheduler that sends no EngineStatus this long is hung
HTTP_GRACE_S = 0.5  # after the drain, time for the frontend to write the last events out
STOP_WAIT_S = 5.0  # after Shutdown, time for the engine to exit before it is killed


class ChildFailed(RuntimeError):
    pass


class StartInterrupted(RuntimeError):
    """A stop signal arrived while the server was starting."""


@dataclass
class Child:
    """One supervised process and its restart history."""

    name: str  # "scheduler", "executor N" or "frontend"
    args: list[str]
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen | None = None
    failures: collections.deque[float] = field(default_factory=collections.deque)
    restart_at: float | None = None  # when to start it again after a failure
    restarts: int = 0  # since the server started (ggserve:restarts_total)

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc is not None else 0

    def exit_code(self) -> int | None:
        """The exit code once the process has ended (None while it runs or was never started)."""
        return None if self.proc is None else self.proc.poll()

    def kill(self) -> None:
        """SIGKILL the child's whole process group (granian's workers too) and reap it."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait()


class Launcher:
    def __init__(self, cfg: ServeConfig) -> None:
        """``self.cfg`` is ``cfg`` completed with this run's directory, endpoints and keys."""
        self.created_run_dir = not cfg.run_dir or not os.path.isdir(cfg.run_dir)
        run_dir = cfg.run_dir or tempfile.mkdtemp(prefix="ggserve-")
        os.makedirs(run_dir, mode=0o700, exist_ok=True)
        scheduler_endpoint = cfg.scheduler_endpoint or ipc_endpoint(run_dir, "scheduler")
        executor_endpoint = cfg.executor_endpoint or ipc_endpoint(run_dir, "executors")
        remote = is_tcp(scheduler_endpoint) or is_tcp(executor_endpoint)
        cfg = msgspec.structs.replace(
            cfg,
            run_dir=run_dir,
            scheduler_endpoint=scheduler_endpoint,
            executor_endpoint=executor_endpoint,
            curve=cfg.curve or (CurveKeys.generate() if remote else None),
        )
        self.cfg = cfg
        self.config_path = save_config(cfg)
        self.created_files = [self.config_path] + [
            e.removeprefix("ipc://") for e in (scheduler_endpoint, executor_endpoint) if e.startswith("ipc://")
        ]
        frontend_env: dict[str, str] = {}
        if cfg.metrics:
            # The HTTP workers' request histograms, one file per worker (prometheus-client's
            # multiprocess mode): any worker's /metrics sums them all.
            metrics_dir = os.path.join(run_dir, "metrics")
            shutil.rmtree(metrics_dir, ignore_errors=True)  # a previous run's counts are not ours
            os.makedirs(metrics_dir, mode=0o700)
            self.created_files.append(metrics_dir)
            frontend_env["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        self.zmq = zmq.Context()
        self.control = self._connect_control()
        self.scheduler = self._child("scheduler", "scheduler")
        self.executors = [
            self._child(f"executor {i}", "executor", "--id", str(i),
                        env={"CUDA_VISIBLE_DEVICES": cfg.gpus[i] if i < len(cfg.gpus) else str(i)})
            for i in range(cfg.executors)
        ]
        self.frontend = self._child("frontend", "frontend", env=frontend_env)
        self.http = True
        self.stop_requested = False
        self.force_stop = False  # a second signal: do not wait for the drain
        self.drained = False  # the scheduler reported every request ended
        self.last_heard = time.monotonic()  # last message from the scheduler

    def _child(self, name: str, module: str, *args: str, env: dict[str, str] | None = None) -> Child:
        return Child(name, [sys.executable, "-m", module, "--config", self.config_path, *args], env or {})

    def _connect_control(self) -> zmq.Socket:
        """A fresh socket to the scheduler (a new one drops whatever the old one had queued)."""
        return connect_dealer(self.zmq, self.cfg.scheduler_endpoint, LAUNCHER_IDENTITY, self.cfg.curve)

    @property
    def children(self) -> list[Child]:
        return [self.scheduler, *self.executors, *([self.frontend] if self.http else [])]

    # ------------------------------------------------------------------ start

    def _spawn(self, child: Child) -> None:
        child.proc = subprocess.Popen(child.args, env={**os.environ, **child.env}, process_group=0)
        child.restart_at = None

    def start(self, http: bool = True) -> EngineInfo:
        """Start every process; ``http=False`` runs the engine alone (tests, remote frontends)."""
        self.http = http
        self._spawn(self.scheduler)
        for executor in self.executors:
            self._spawn(executor)
        if http:
            self._spawn(self.frontend)
        self._hello()
        info = self._wait_engine()
        if http:
            self._wait_http()
        return info

    def _check_start(self) -> None:
        if self.stop_requested:
            raise StartInterrupted("stopped while starting")
        for child in self.children:
            code = child.exit_code()
            if code is not None:
                raise ChildFailed(f"{child.name} exited during start-up with code {code}")

    def _wait_engine(self) -> EngineInfo:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            self._check_start()
            if self.control.poll(int(POLL_SECONDS * 1000)):
                msg = self._recv_control()
                if isinstance(msg, EngineInfo):
                    self.last_heard = time.monotonic()
                    return msg
        raise ChildFailed("the engine did not become ready in time")

    def _wait_http(self) -> None:
        url = f"{self.scheme}://{_local_host(self.cfg.host)}:{self.cfg.port}/health"
        context = ssl._create_unverified_context() if self.scheme == "https" else None
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            self._check_start()
            self._read_control()  # keep the scheduler's pulse from piling up
            try:
                with urllib.request.urlopen(url, timeout=2, context=context) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(POLL_SECONDS)
        raise ChildFailed("the HTTP frontend did not become ready in time")

    @property
    def scheme(self) -> str:
        return "https" if self.cfg.ssl_certfile else "http"

    # ------------------------------------------------------------------ supervise

    def supervise(self) -> int:
        """Heal children until a stop signal (drain, exit 0) or a child failing too often (1)."""
        drain_deadline: float | None = None
        while True:
            now = time.monotonic()
            if self.stop_requested and drain_deadline is None:
                log.info("stopping: finishing running requests (up to %.0fs; signal again to skip)",
                         self.cfg.shutdown_timeout)
                drain_deadline = now + self.cfg.shutdown_timeout + STOP_WAIT_S
                self._send_control(Drain(self.cfg.shutdown_timeout))
            if drain_deadline is not None:
                if self.drained or self.force_stop or now > drain_deadline or self.scheduler.exit_code() is not None:
                    return 0
            self._read_control()
            try:
                self._watch(now, restart=drain_deadline is None)
            except ChildFailed as exc:
                log.error("%s; giving up", exc)
                return 1
            time.sleep(POLL_SECONDS)

    def _watch(self, now: float, restart: bool) -> None:
        """Notice deaths and hangs; start again what is due."""
        if self.scheduler.restart_at is None:
            code = self.scheduler.exit_code()
            if code is not None:
                self._scheduler_lost(now, f"exited with code {code}")
            elif now - self.last_heard > SCHEDULER_SILENCE_S:
                self.scheduler.kill()
                self._scheduler_lost(now, f"sent nothing for {SCHEDULER_SILENCE_S:.0f}s (hung); killed")
        for i, executor in enumerate(self.executors):
            if executor.restart_at is None and self.scheduler.restart_at is None:
                code = executor.exit_code()
                if code is not None:
                    message = f"process {executor.pid} exited with code {code}"
                    self._unlink_arena(i, executor)
                    self._send_control(ExecutorDied(i, executor.pid, message))
                    self._failed(executor, now, message)
        if self.http and self.frontend.restart_at is None:
            code = self.frontend.exit_code()
            if code is not None:
                self.frontend.kill()  # its workers, if any survived it
                self._failed(self.frontend, now, f"exited with code {code}")
        if restart:
            self._restart_due(now)

    def _scheduler_lost(self, now: float, message: str) -> None:
        """The engine restarts whole: fresh executors for the fresh scheduler."""
        for i, executor in enumerate(self.executors):
            executor.kill()
            self._unlink_arena(i, executor)
            executor.restart_at = None
        self._failed(self.scheduler, now, message)
        self.control.close(linger=0)
        self.control = self._connect_control()

    def _unlink_arena(self, executor_id: int, executor: Child) -> None:
        """A dead executor's vector arena (when it had one and could not unlink it itself: a
        SIGKILL takes its resource tracker too). The frontends' mappings go as they move on."""
        unlink_segment(segment_name(run_id_of(self.cfg.run_dir), executor_owner(executor_id, executor.pid)))

    def _failed(self, child: Child, now: float, message: str) -> None:
        while child.failures and now - child.failures[0] > RESTART_WINDOW_S:
            child.failures.popleft()
        child.failures.append(now)
        n = len(child.failures)
        if n > self.cfg.max_restarts:
            raise ChildFailed(f"{child.name} {message}; it failed {n} times within {RESTART_WINDOW_S:.0f}s")
        delay = BACKOFF_S[min(n, len(BACKOFF_S)) - 1]
        log.error("%s %s; restarting it in %.0fs", child.name, message, delay)
        child.restart_at = now + delay

    def _restart_due(self, now: float) -> None:
        if self.scheduler.restart_at is not None:
            if now < self.scheduler.restart_at:
                return
            log.info("restarting the scheduler and %d executor(s)", len(self.executors))
            self._spawn(self.scheduler)
            for executor in self.executors:
                self._spawn(executor)
            self.scheduler.restarts += 1
            self.last_heard = now
            self._hello()
        for executor in self.executors:
            if executor.restart_at is not None and now >= executor.restart_at:
                log.info("restarting %s", executor.name)
                self._spawn(executor)
                executor.restarts += 1
                self._send_restarts()
        if self.http and self.frontend.restart_at is not None and now >= self.frontend.restart_at:
            log.info("restarting the frontend")
            self._spawn(self.frontend)
            self.frontend.restarts += 1
            self._send_restarts()

    def _hello(self) -> None:
        """Introduce the launcher to a (new) scheduler, with the restart counts it reports."""
        send(self.control, Hello(peer="launcher"))
        self._send_restarts()

    def _send_restarts(self) -> None:
        counts = [ChildRestarts(c.name.replace(" ", "-"), c.restarts) for c in self.children]
        self._send_control(Restarts(counts))

    def _read_control(self) -> None:
        while self.control.poll(0):
            msg = self._recv_control()
            if msg is None:
                continue
            self.last_heard = time.monotonic()
            if isinstance(msg, RestartExecutor):
                executor = self.executors[msg.executor_id] if 0 <= msg.executor_id < len(self.executors) else None
                if executor is not None and executor.pid == msg.pid and executor.exit_code() is None:
                    log.error("executor %d hung (%s); killing it", msg.executor_id, msg.message)
                    executor.kill()  # _watch restarts it
            elif isinstance(msg, Drained):
                log.info("all requests ended (%d cut short at the deadline)", msg.n_cut_short)
                self.drained = True
            elif isinstance(msg, EngineInfo):
                log.info("the engine is ready again")
            elif not isinstance(msg, EngineStatus):
                log.warning("dropped an unexpected %s from the scheduler", type(msg).__name__)

    def _recv_control(self) -> object | None:
        try:
            return recv(self.control)
        except BadFrame as exc:
            log.warning("dropped a bad frame from the scheduler: %s", exc)
            return None

    def _send_control(self, msg: Drain | ExecutorDied | Restarts | Shutdown) -> None:
        try:
            send(self.control, msg)
        except zmq.ZMQError as exc:
            log.warning("cannot reach the scheduler: %s", exc)

    def request_stop(self, *_: object) -> None:
        """Signal handler: the first signal drains, a second one stops without waiting."""
        if self.stop_requested:
            self.force_stop = True
        self.stop_requested = True

    # ------------------------------------------------------------------ stop

    def shutdown(self) -> None:
        """Stop every child: frontend first (requests are over), then scheduler and executors."""
        if self.http and self.frontend.exit_code() is None and self.frontend.proc is not None:
            time.sleep(HTTP_GRACE_S)
        self.frontend.kill()
        self._send_control(Shutdown("launcher stopping"))
        deadline = time.monotonic() + STOP_WAIT_S
        for child in (self.scheduler, *self.executors):
            if child.proc is not None:
                try:
                    child.proc.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    log.warning("%s did not stop in time; killing it", child.name)
            child.kill()
        for i, executor in enumerate(self.executors):
            self._unlink_arena(i, executor)
        self.control.close(linger=0)
        self.zmq.term()
        self._remove_files()

    def _remove_files(self) -> None:
        if self.created_run_dir:
            shutil.rmtree(self.cfg.run_dir, ignore_errors=True)
            return
        for path in self.created_files:
            if os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
                continue
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass


def _local_host(host: str) -> str:
    """The address to reach a server bound to ``host`` from this machine, as a URL host."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host

