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

Router mode (--models-dir / --models-preset): one engine per loaded model, loaded on demand and
healed alone (``ggserve.models.router``); the frontend is shared. A model whose processes keep
failing is unloaded (its requests fail), never the server.

Stopping (SIGTERM/SIGINT): the scheduler drains (new requests get 503, running and queued ones
finish for up to --shutdown-timeout, then the rest end with an error), then the frontend is
stopped, then the engine; a second signal skips the wait. Exit code 0; the run directory's
files are removed (only the ones ggserve created when --run-dir was given).

Shared memory (ipc.shm): a process killed with its process group cannot unlink its arena, so
at start, before a frontend restart and at the end the launcher unlinks every ggserve segment
whose owner process is gone, this run's or a killed server's.
"""

from __future__ import annotations

import logging
import os
import shutil
import ssl
import tempfile
import time
import urllib.error
import urllib.request

import msgspec
import zmq

from ggserve.children import Child, ChildFailed
from ggserve.config import ServeConfig, save_config
from ggserve.engine_group import STOP_WAIT_S, EngineGroup
from ggserve.models.router import ModelRouter
from ipc.protocol import ChildRestarts, Drain, EngineInfo
from ipc.shm import pid_alive, unlink_orphans
from ipc.transport import CurveKeys, ipc_endpoint, is_tcp

log = logging.getLogger("ggserve")

POLL_SECONDS = 0.1
STARTUP_TIMEOUT = 600.0
HTTP_GRACE_S = 0.5  # after the drain, time for the frontend to write the last events out
# ... and after a scheduler that died instead of draining: the HTTP workers end its requests with an
# error once it has been silent 1.5 s (frontend.engine_client.LOSS_S)
HTTP_LOSS_GRACE_S = 2.0
RUN_DIR_PREFIX = "ggserve-"  # a run directory the launcher makes (in the temporary directory)
LAUNCHER_PID_FILE = "launcher.pid"  # in a run directory the launcher made


def _remove_stale_run_dirs() -> None:
    """Remove the run directories of launchers that are gone (killed before they could remove
    them): their config.json holds the API keys. A directory is removed only when it names its
    launcher and that process is dead."""
    root = tempfile.gettempdir()
    try:
        names = [n for n in os.listdir(root) if n.startswith(RUN_DIR_PREFIX)]
    except OSError:
        return
    for name in names:
        path = os.path.join(root, name)
        try:
            with open(os.path.join(path, LAUNCHER_PID_FILE), encoding="ascii") as f:
                pid = int(f.read())
        except (OSError, ValueError):
            continue  # not one this launcher writes, or another user's
        if not pid_alive(pid):
            shutil.rmtree(path, ignore_errors=True)
            log.info("removed %s, the run directory of a ggserve launcher that is gone", path)


class StartInterrupted(RuntimeError):
    """A stop signal arrived while the server was starting."""


class Launcher:
    def __init__(self, cfg: ServeConfig) -> None:
        """``self.cfg`` is ``cfg`` completed with this run's directory, endpoints and keys."""
        self.created_run_dir = not cfg.run_dir or not os.path.isdir(cfg.run_dir)
        run_dir = cfg.run_dir or tempfile.mkdtemp(prefix=RUN_DIR_PREFIX)
        os.makedirs(run_dir, mode=0o700, exist_ok=True)
        if self.created_run_dir:  # whose it is, for the sweep of a later start should this one be killed
            with open(os.path.join(run_dir, LAUNCHER_PID_FILE), "w", encoding="ascii") as f:
                f.write(str(os.getpid()))
        scheduler_endpoint = cfg.scheduler_endpoint or ipc_endpoint(run_dir, "scheduler")
        executor_endpoint = cfg.executor_endpoint or ipc_endpoint(run_dir, "executors")
        remote = is_tcp(scheduler_endpoint) or is_tcp(executor_endpoint)
        cfg = msgspec.structs.replace(
            cfg,
            run_dir=run_dir,
            scheduler_endpoint=scheduler_endpoint,
            executor_endpoint=executor_endpoint,
            models_endpoint=ipc_endpoint(run_dir, "models") if cfg.router else "",
            curve=cfg.curve or (CurveKeys.generate() if remote else None),
        )
        self.cfg = cfg
        self.config_path = save_config(cfg)
        self.created_files = [self.config_path] + [
            e.removeprefix("ipc://") for e in (scheduler_endpoint, executor_endpoint, cfg.models_endpoint)
            if e.startswith("ipc://")
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
        self.frontend = Child.module("frontend", "frontend", self.config_path, env=frontend_env)
        # One engine for the single model; in router mode, one per loaded model (self.router's).
        self.router = ModelRouter(cfg, self.zmq, self._frontend_restarts) if cfg.router else None
        self.engine = None if cfg.router else EngineGroup(cfg, self.config_path, self.zmq,
                                                           restart_counts=self._frontend_restarts)
        self.http = True
        self.stop_requested = False
        self.force_stop = False  # a second signal: do not wait for the drain

    def _frontend_restarts(self) -> list[ChildRestarts]:
        return [ChildRestarts("frontend", self.frontend.restarts)] if self.http else []

    @property
    def engines(self) -> list[EngineGroup]:
        return self.router.engines if self.router is not None else [self.engine] if self.engine is not None else []

    @property
    def scheduler(self) -> Child:
        """The single model's scheduler."""
        assert self.engine is not None, "router mode has one scheduler per loaded model"
        return self.engine.scheduler

    @property
    def executors(self) -> list[Child]:
        """The single model's executors."""
        assert self.engine is not None, "router mode has executors per loaded model"
        return self.engine.executors

    # ------------------------------------------------------------------ start

    def start(self, http: bool = True) -> EngineInfo | None:
        """Start every process; ``http=False`` runs the engine alone (tests, remote frontends).
        Returns the engine's facts (None in router mode, where models load on demand)."""
        self.http = http
        self._unlink_orphans()  # of servers killed before they could clean up
        _remove_stale_run_dirs()
        if self.engine is not None:
            self.engine.start()
        if http:
            self.frontend.spawn()
        info = self._wait_engine() if self.engine is not None else None
        if self.router is not None:
            self.router.start()
        if http:
            self._wait_http()
        return info

    def _check_start(self) -> None:
        if self.stop_requested:
            raise StartInterrupted("stopped while starting")
        # Until the engine is ready, a process that exits fails the start; once it is, the engine
        # heals as while serving (_wait_http supervises it): /health may already say ok to clients.
        failure = self.engine.start_failure() if self.engine is not None and self.engine.info is None else None
        if failure is not None:
            raise ChildFailed(failure)
        code = self.frontend.exit_code() if self.http else None
        if code is not None:
            raise ChildFailed(f"frontend exited during start-up with code {code}")

    def _wait_engine(self) -> EngineInfo:
        assert self.engine is not None
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            self._check_start()
            self.engine.read_control()
            if self.engine.info is not None:
                return self.engine.info
            time.sleep(POLL_SECONDS / 4)
        raise ChildFailed("the engine did not become ready in time")

    def _wait_http(self) -> None:
        url = f"{self.scheme}://{_local_host(self.cfg.host)}:{self.cfg.port}/health"
        context = ssl._create_unverified_context() if self.scheme == "https" else None
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            self._check_start()
            if self.engine is not None:  # ready: a child that dies now is restarted (or fails past --max-restarts)
                self.engine.supervise(time.monotonic(), True, self.cfg.max_restarts)
            if self.router is not None:
                self.router.supervise(time.monotonic(), restart=False)  # the workers need the model table
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
                if self.router is not None:
                    self.router.drain(self.cfg.shutdown_timeout)
                for engine in [self.engine] if self.engine is not None else []:
                    engine.send_control(Drain(self.cfg.shutdown_timeout))
            if drain_deadline is not None:
                if self.force_stop or now > drain_deadline or all(
                        e.drained or e.scheduler.exit_code() is not None for e in self.engines):
                    return 0
            try:
                if self.engine is not None:
                    self.engine.supervise(now, drain_deadline is None, self.cfg.max_restarts)
                if self.router is not None:
                    self.router.supervise(now, drain_deadline is None)
                self._watch_frontend(now, restart=drain_deadline is None)
            except ChildFailed as exc:
                log.error("%s; giving up", exc)
                return 1
            time.sleep(POLL_SECONDS)

    def _watch_frontend(self, now: float, restart: bool) -> None:
        if not self.http:
            return
        if self.frontend.restart_at is None:
            code = self.frontend.exit_code()
            if code is not None:
                self.frontend.kill()  # its workers, if any survived it
                self.frontend.failed(now, f"exited with code {code}", self.cfg.max_restarts)
        elif restart and now >= self.frontend.restart_at:
            log.info("restarting the frontend")
            self._unlink_orphans()  # the media arenas of its killed workers
            self.frontend.spawn()
            self.frontend.restarts += 1
            for engine in self.engines:
                engine.send_restarts()

    def request_stop(self, *_: object) -> None:
        """Signal handler: the first signal drains, a second one stops without waiting."""
        if self.stop_requested:
            self.force_stop = True
        self.stop_requested = True

    # ------------------------------------------------------------------ stop

    def shutdown(self) -> None:
        """Stop every child: frontend first (requests are over), then the engines."""
        if self.http and self.frontend.exit_code() is None and self.frontend.proc is not None:
            lost = any(not e.drained and e.scheduler.exit_code() is not None for e in self.engines)
            time.sleep(HTTP_LOSS_GRACE_S if lost else HTTP_GRACE_S)
        self.frontend.kill()
        if self.router is not None:
            self.router.close(STOP_WAIT_S)
        if self.engine is not None:
            self.engine.stop("launcher stopping")
            while not self.engine.stopped():
                time.sleep(0.05)
        self._unlink_orphans()  # the HTTP workers' media arenas: their process group was killed
        self.zmq.term()
        self._remove_files()

    def _unlink_orphans(self) -> None:
        """Free the shared memory that ggserve processes which are gone left behind (ipc.shm)."""
        freed = unlink_orphans()
        if freed:
            log.info("freed %.0f MiB of shared memory left by ggserve processes that are gone", freed / 2**20)

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

