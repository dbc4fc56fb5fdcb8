"""Start, watch and stop the server's processes.

Order: scheduler (binds the sockets), executors (load the model, report to the scheduler),
frontend (granian). Ready means the scheduler answered Hello with EngineInfo (every executor
loaded) and the frontend's /health says ok. A child that exits during start-up fails the whole
start; a child that dies later is reported, in-flight requests of a dead executor are failed
(the scheduler answers their clients), and everything is shut down with a non-zero exit.
"""

from __future__ import annotations

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

import msgspec
import zmq

from ggserve.config import ServeConfig, save_config
from ipc.protocol import EngineInfo, ExecutorDied, Hello, Shutdown
from ipc.transport import connect_dealer, ipc_endpoint, recv, send

log = logging.getLogger("ggserve")

POLL_SECONDS = 0.1
STARTUP_TIMEOUT = 600.0
DRAIN_SECONDS = 1.0  # after an executor death, time for clients to receive their errors


class ChildFailed(RuntimeError):
    pass


class Launcher:
    def __init__(self, cfg: ServeConfig) -> None:
        """``self.cfg`` is ``cfg`` completed with this run's directory and endpoints."""
        run_dir = cfg.run_dir or tempfile.mkdtemp(prefix="ggserve-")
        cfg = msgspec.structs.replace(
            cfg,
            run_dir=run_dir,
            scheduler_endpoint=cfg.scheduler_endpoint or ipc_endpoint(run_dir, "scheduler"),
            executor_endpoint=cfg.executor_endpoint or ipc_endpoint(run_dir, "executors"),
        )
        self.cfg = cfg
        self.config_path = save_config(cfg)
        self.children: dict[str, subprocess.Popen] = {}
        self.zmq = zmq.Context()
        self.control = connect_dealer(self.zmq, cfg.scheduler_endpoint, b"launcher")
        self.stop_requested = False

    # ------------------------------------------------------------------ start

    def _spawn(self, name: str, module: str, *args: str, env: dict[str, str] | None = None) -> None:
        cmd = [sys.executable, "-m", module, "--config", self.config_path, *args]
        self.children[name] = subprocess.Popen(cmd, env={**os.environ, **(env or {})})

    def start(self, http: bool = True) -> EngineInfo:
        """Start every process; ``http=False`` runs the engine alone (tests, remote frontends)."""
        cfg = self.cfg
        self._spawn("scheduler", "scheduler")
        for i in range(cfg.executors):
            gpu = cfg.gpus[i] if i < len(cfg.gpus) else str(i)
            self._spawn(f"executor {i}", "executor", "--id", str(i), env={"CUDA_VISIBLE_DEVICES": gpu})
        if http:
            self._spawn("frontend", "frontend")
        send(self.control, Hello(peer="launcher"))
        info = self._wait_engine()
        if http:
            self._wait_http()
        return info

    def _wait_engine(self) -> EngineInfo:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            self._check_children(starting=True)
            if self.control.poll(int(POLL_SECONDS * 1000)):
                msg = recv(self.control)
                if isinstance(msg, EngineInfo):
                    return msg
        raise ChildFailed("the engine did not become ready in time")

    def _wait_http(self) -> None:
        url = f"{self.scheme}://{self.cfg.host}:{self.cfg.port}/health"
        context = ssl._create_unverified_context() if self.scheme == "https" else None
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            self._check_children(starting=True)
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

    # ------------------------------------------------------------------ watch

    def _check_children(self, starting: bool = False) -> None:
        for name, proc in self.children.items():
            code = proc.poll()
            if code is None:
                continue
            when = "during start-up" if starting else "unexpectedly"
            if name.startswith("executor") and not starting:
                executor_id = int(name.split()[1])
                send(self.control, ExecutorDied(executor_id, f"process exited with code {code}"))
            raise ChildFailed(f"{name} exited {when} with code {code}")

    def supervise(self) -> int:
        """Block until a signal (exit 0) or a child's death (exit 1)."""
        try:
            while not self.stop_requested:
                self._check_children()
                time.sleep(POLL_SECONDS)
        except ChildFailed as exc:
            log.error("%s; shutting down", exc)
            time.sleep(DRAIN_SECONDS)
            return 1
        log.info("stopping")
        return 0

    def request_stop(self, *_: object) -> None:
        self.stop_requested = True

    # ------------------------------------------------------------------ stop

    def shutdown(self) -> None:
        """Stop every child: frontend first (no new requests), then scheduler and executors."""
        frontend = self.children.get("frontend")
        if frontend is not None and frontend.poll() is None:
            frontend.send_signal(signal.SIGTERM)
            _wait(frontend, 5.0)
        try:
            send(self.control, Shutdown("launcher stopping"))
        except zmq.ZMQError:
            pass
        deadline = time.monotonic() + 5.0
        for proc in self.children.values():
            _wait(proc, max(0.1, deadline - time.monotonic()))
        for proc in self.children.values():
            if proc.poll() is None:
                proc.terminate()
                _wait(proc, 2.0)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        self.control.close(linger=0)
        self.zmq.term()
        shutil.rmtree(self.cfg.run_dir, ignore_errors=True)


def _wait(proc: subprocess.Popen, timeout: float) -> None:
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        pass
