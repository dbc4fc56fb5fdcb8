"""Router mode, the launcher's side: which models are loaded, loading and unloading their engines.

Each model loads as its own engine (``EngineGroup``: scheduler + executors) with its own
configuration and sockets in ``RUN_DIR/m<index>/``. The HTTP workers learn the models and their
status from the ModelTable this module publishes on its ROUTER socket (``models_endpoint``) at
every change and every TABLE_INTERVAL_S; they ask for loads and unloads (LoadModel, UnloadModel)
and report each request (ModelUsed).

Policy:
  - loading a model when --models-max are loaded or loading, or when its estimated memory
    (``ggserve.models.memory``) would take the loaded models past --models-memory, first unloads
    the least recently used idle ones (``ggserve.models.room``), and starts once their processes
    have exited; while too many are busy the load waits (status LOADING), and fails after
    ROOM_WAIT_S (its waiting requests get 503); a model larger than the whole budget fails at
    once (the HTTP workers answer 400 without asking);
  - a model idle for --sleep-idle-seconds is unloaded with status SLEEPING;
  - a load that fails (a process exits, or no EngineInfo within LOAD_TIMEOUT_S) leaves the model
    UNLOADED with ``failed`` and the reason, which the waiting requests receive;
  - a loaded model whose process keeps failing (--max-restarts) is unloaded the same way; the
    other models are not touched.
Every load, refused ones included, increments the model's ``load_id``: a worker that asked for a
load knows its answer has come when the table shows a newer one.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec
import zmq

from ggserve.children import ChildFailed
from ggserve.config import ModelSpec, ServeConfig, save_config
from ggserve.engine_group import EngineGroup, log_engine
from ggserve.models.memory import MIB, MemoryEstimate, estimate_memory
from ggserve.models.room import Limits, Resident, victims
from ipc.protocol import (
    ChildRestarts,
    Drain,
    Heartbeat,
    Hello,
    LoadModel,
    ModelEntry,
    ModelStatus,
    ModelTable,
    ModelUsed,
    UnloadModel,
)
from ipc.transport import BadFrame, bind_router, ipc_endpoint, recv_routed, send

log = logging.getLogger("ggserve")

TABLE_INTERVAL_S = 0.5  # the table to every worker at least this often (their proof of life)
PEER_TIMEOUT_S = 5.0  # a worker heard from less recently is forgotten
LOAD_TIMEOUT_S = 600.0
RECENT_USE_S = 1.0  # a model asked for this recently is not unloaded to make room
ROOM_WAIT_S = 30.0  # a load waits this long for a loaded model to become idle (--models-max)


@dataclass
class RoutedModel:
    """One model of the router and its engine, if loaded."""

    spec: ModelSpec
    cfg: ServeConfig  # its engine's configuration (own run directory and sockets)
    config_path: str
    memory: MemoryEstimate | None  # its estimated footprint (None without --models-memory)
    status: ModelStatus = ModelStatus.UNLOADED
    engine: EngineGroup | None = None
    load_id: int = 0
    failed: bool = False
    error: str = ""
    last_used: float = field(default_factory=time.monotonic)
    room_deadline: float = 0.0  # a load waiting for room (--models-max, --models-memory) gives up then
    load_started: float = 0.0  # when its engine started

    @property
    def memory_bytes(self) -> int:
        return self.memory.total_bytes if self.memory is not None else 0

    def entry(self) -> ModelEntry:
        return ModelEntry(self.spec.name, self.spec.path, self.status, self.spec.aliases, self.spec.tags,
                          self.config_path, self.load_id, self.failed, self.error, self.cfg.n_parallel,
                          self.cfg.ctx_size, self.spec.args, self.memory_bytes)

    def last_active(self) -> float:
        return max(self.last_used, self.engine.last_busy if self.engine is not None else 0.0)


class ModelRouter:
    def __init__(self, cfg: ServeConfig, zctx: zmq.Context,
                 restart_counts: Callable[[], list[ChildRestarts]]) -> None:
        self.cfg = cfg
        self.zmq = zctx
        self.restart_counts = restart_counts
        self.limits = Limits(cfg.models_max, cfg.models_memory)
        self.socket = bind_router(zctx, cfg.models_endpoint)
        self.models = {spec.name: self._routed(i, spec) for i, spec in enumerate(cfg.models)}
        self.peers: dict[bytes, float] = {}  # HTTP worker -> last heard
        self.stopping: list[EngineGroup] = []  # unloaded engines not yet exited
        self.accepting = True  # False once draining: no more loads
        self.changed = True
        self.next_table = 0.0

    def _routed(self, index: int, spec: ModelSpec) -> RoutedModel:
        run_dir = os.path.join(self.cfg.run_dir, f"m{index}")
        os.makedirs(run_dir, mode=0o700, exist_ok=True)
        cfg = msgspec.convert({**msgspec.to_builtins(msgspec.structs.replace(
            self.cfg, models=[], models_single=False, models_endpoint="", run_dir=run_dir, model=spec.path,
            aliases=[spec.name], tags=spec.tags, model_name=spec.name, mmproj=spec.mmproj or self.cfg.mmproj,
            scheduler_endpoint=ipc_endpoint(run_dir, "scheduler"), executor_endpoint=ipc_endpoint(run_dir, "executors"),
        )), **spec.overrides}, ServeConfig)
        # Read at start (~50 ms a model): the HTTP workers refuse a model that can never fit.
        memory = estimate_memory(cfg) if self.cfg.models_memory else None
        return RoutedModel(spec, cfg, save_config(cfg), memory)

    @property
    def engines(self) -> list[EngineGroup]:
        return [m.engine for m in self.models.values() if m.engine is not None]

    def start(self) -> None:
        """Load the models marked load-on-startup."""
        for model in self.models.values():
            if model.spec.load_on_startup:
                self.load(model)

    # ------------------------------------------------------------------ load / unload

    def load(self, model: RoutedModel) -> None:
        if model.status in (ModelStatus.LOADING, ModelStatus.LOADED):
            return
        model.load_id += 1
        model.failed, model.error = False, ""
        self.changed = True
        now = time.monotonic()
        model.status = ModelStatus.LOADING
        model.last_used = now
        model.room_deadline = now + ROOM_WAIT_S
        self._start_if_room(model, now)

    def _start_if_room(self, model: RoutedModel, now: float) -> None:
        """Start the model's engine once there is room (module docstring), unloading the least
        recently used idle models first; with too few idle, try again at the next tick (up to
        ROOM_WAIT_S). A previous engine of the model must have exited first: the new one binds the
        same sockets; so must the unloaded ones when their memory is what the model needs."""
        if not self.accepting:
            self._refuse(model, "the server is shutting down")
            return
        if any(engine.name == model.spec.name for engine in self.stopping):
            return
        if self.limits.never_fits(model.memory_bytes):
            self._refuse(model, f"it needs about {model.memory.describe() if model.memory else ''} (estimated), "
                                f"more than --models-memory {self.cfg.models_memory / MIB:.0f} MiB")
            return
        running = [m for m in self.models.values() if m.engine is not None]
        chosen = victims(model.memory_bytes, [self._resident(m, now) for m in running], self.limits)
        if chosen is None:
            if now > model.room_deadline:
                self._refuse(model, self._no_room(running, model))
            return
        for victim in chosen:
            log.info("unloading %s (least recently used) to make room for %s", victim.name, model.spec.name)
            self.unload(self.models[victim.name], f"unloaded to make room for {model.spec.name}")
        if self.limits.memory_bytes and self._memory_in_use() + model.memory_bytes > self.limits.memory_bytes:
            return  # unloaded engines are still exiting
        log.info("loading %s (%s%s)", model.spec.name, model.spec.path,
                 f"; estimated {model.memory.describe()}" if model.memory else "")
        model.engine = EngineGroup(model.cfg, model.config_path, self.zmq, model.spec.name, self.restart_counts)
        model.engine.start()
        model.load_started = now
        self.changed = True

    @staticmethod
    def _resident(model: RoutedModel, now: float) -> Resident:
        evictable = (model.status == ModelStatus.LOADED and model.engine is not None and model.engine.idle
                     and now - model.last_used > RECENT_USE_S)
        return Resident(model.spec.name, model.memory_bytes, evictable, model.last_active())

    def _memory_in_use(self) -> int:
        """The estimated memory of the running engines and of the unloaded ones not yet exited."""
        running = sum(m.memory_bytes for m in self.models.values() if m.engine is not None)
        return running + sum(self.models[engine.name].memory_bytes for engine in self.stopping)

    def _no_room(self, running: list[RoutedModel], model: RoutedModel) -> str:
        limits = [f"--models-max {self.cfg.models_max}"] if self.cfg.models_max else []
        if self.limits.memory_bytes:
            limits.append(f"--models-memory {self.cfg.models_memory / MIB:.0f} MiB: {self._memory_in_use() / MIB:.0f} "
                          f"MiB in use, {model.memory_bytes / MIB:.0f} MiB needed")
        return (f"{len(running)} models are loaded ({'; '.join(limits)}) and too few were idle to make room "
                f"for {ROOM_WAIT_S:.0f}s")

    def _refuse(self, model: RoutedModel, why: str) -> None:
        log.warning("not loading %s: %s", model.spec.name, why)
        model.status, model.failed, model.error = ModelStatus.UNLOADED, True, why
        self.changed = True

    def unload(self, model: RoutedModel, why: str, status: ModelStatus = ModelStatus.UNLOADED,
               failed: bool = False) -> None:
        if model.engine is not None:
            model.engine.stop(why)
            self.stopping.append(model.engine)
            model.engine = None
        model.status, model.failed, model.error = status, failed, why
        self.changed = True

    def drain(self, timeout_s: float) -> None:
        self.accepting = False
        for engine in self.engines:
            engine.send_control(Drain(timeout_s))

    # ------------------------------------------------------------------ supervise

    def supervise(self, now: float, restart: bool) -> None:
        self._read_workers(now)
        for model in self.models.values():
            engine = model.engine
            if engine is None:
                if model.status == ModelStatus.LOADING:
                    self._start_if_room(model, now)
                continue
            if model.status == ModelStatus.LOADING:
                self._watch_load(model, engine, now)
                continue
            try:
                engine.supervise(now, restart, self.cfg.max_restarts)
            except ChildFailed as exc:
                log.error("%s; unloading %s", exc, model.spec.name)
                self.unload(model, str(exc), failed=True)
                continue
            sleep_s = self.cfg.sleep_idle_seconds
            if sleep_s > 0 and engine.idle and now - model.last_active() > sleep_s:
                log.info("%s idle for %.0fs: sleeping (unloaded until the next request)", model.spec.name, sleep_s)
                self.unload(model, "sleeping", ModelStatus.SLEEPING)
        self.stopping = [engine for engine in self.stopping if not engine.stopped()]
        if self.changed or now >= self.next_table:
            self._publish(now)

    def _watch_load(self, model: RoutedModel, engine: EngineGroup, now: float) -> None:
        engine.read_control()
        failure = engine.start_failure()
        if failure is None and now > model.load_started + LOAD_TIMEOUT_S:
            failure = f"not ready within {LOAD_TIMEOUT_S:.0f}s"
        if failure is not None:
            log.error("loading %s failed: %s", model.spec.name, failure)
            self.unload(model, f"loading failed: {failure}", failed=True)
        elif engine.info is not None:
            model.status = ModelStatus.LOADED
            model.last_used = now  # the idle clock starts now, not when the load began
            self.changed = True
            log.info("%s loaded in %.1fs", model.spec.name, now - model.load_started)
            log_engine(engine.info)

    def _read_workers(self, now: float) -> None:
        while self.socket.poll(0):
            try:
                peer, msg = recv_routed(self.socket)
            except BadFrame as exc:
                log.warning("dropped a bad frame from an HTTP worker: %s", exc)
                continue
            self.peers[peer] = now
            if isinstance(msg, Hello):
                self.changed = True  # the new worker needs the table now
                continue
            if isinstance(msg, Heartbeat):
                continue
            model = self.models.get(msg.name) if isinstance(msg, LoadModel | UnloadModel | ModelUsed) else None
            if model is None:
                log.warning("dropped a %s from an HTTP worker", type(msg).__name__)
            elif isinstance(msg, ModelUsed):
                model.last_used = now
            elif isinstance(msg, LoadModel):
                model.last_used = now
                self.load(model)
            elif model.status in (ModelStatus.LOADING, ModelStatus.LOADED):  # (a sleeping one keeps its status)
                log.info("unloading %s (asked by a client)", model.spec.name)
                self.unload(model, "unloaded by request")
        for peer in [p for p, heard in self.peers.items() if now - heard > PEER_TIMEOUT_S]:
            del self.peers[peer]

    def _publish(self, now: float) -> None:
        table = ModelTable([m.entry() for m in self.models.values()])
        for peer in self.peers:
            try:
                send(self.socket, table, peer)
            except zmq.ZMQError as exc:
                log.debug("cannot reach HTTP worker %r: %s", peer, exc)
        self.changed = False
        self.next_table = now + TABLE_INTERVAL_S

    # ------------------------------------------------------------------ stop

    def close(self, wait_s: float) -> None:
        """Stop every engine (Shutdown, then SIGKILL after ``wait_s``) and remove their files."""
        for model in self.models.values():
            if model.engine is not None:
                self.unload(model, "the server is stopping")
        deadline = time.monotonic() + wait_s
        while self.stopping and time.monotonic() < deadline:
            self.stopping = [engine for engine in self.stopping if not engine.stopped()]
            time.sleep(0.05)
        for engine in self.stopping:
            engine.close()
        self.socket.close(linger=0)
        for model in self.models.values():
            shutil.rmtree(model.cfg.run_dir, ignore_errors=True)
