"""Router mode, one HTTP worker's side: the model table, and a ``Frontend`` per loaded model.

The worker connects a DEALER socket to the launcher's model table (``models_endpoint``), says
Hello and Heartbeat, and receives the ModelTable at every change and a few times a second. A
request names its model; ``frontend_for`` answers with that model's ``Frontend`` (its own
configuration, tokenizer, chat template and EngineClient to the model's scheduler), after asking
the launcher to load the model and waiting for it when needed. A model's Frontend outlives its
engine: when the table shows the model unloaded, or loaded again (a new ``load_id``), its
EngineClient is closed, ending its running requests with the reason, and a new one connects.

No wait is unbounded: a load ends in LOADED or in a failure the table reports (the launcher
gives up on a load after its own timeout), and a launcher silent for LAUNCHER_LOSS_S fails the
waiting requests at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time

import zmq.asyncio

from frontend.engine_client import EngineClient
from frontend.http.auth import ApiKeys
from frontend.http.errors import ApiError, invalid, unavailable
from frontend.state import Frontend
from ggserve.config import ServeConfig, load_config
from ipc import transport
from ipc.protocol import (
    Heartbeat,
    Hello,
    LoadModel,
    Message,
    ModelEntry,
    ModelStatus,
    ModelTable,
    ModelUsed,
    UnloadModel,
)

log = logging.getLogger(__name__)

HEARTBEAT_S = 1.0
LAUNCHER_LOSS_S = 3.0  # no table this long: the launcher is gone or hung
ENGINE_CONNECT_S = 10.0  # a loaded model's scheduler answers Hello within this
_RUNNING = (ModelStatus.LOADING, ModelStatus.LOADED)


class ModelRouter:
    def __init__(self, cfg: ServeConfig) -> None:
        self.cfg = cfg
        self.api_keys = ApiKeys(cfg.api_keys)
        self.started_at = int(time.time())
        self.table: dict[str, ModelEntry] = {}
        self._aliases: dict[str, str] = {}  # alias -> the model's name
        self.heard_at = 0.0  # monotonic time of the last table
        self._frontends: dict[str, Frontend] = {}
        self._engine_load: dict[str, int] = {}  # model -> load_id its Frontend's EngineClient belongs to
        self._opening: dict[str, asyncio.Task[Frontend]] = {}
        # A model's first Frontend, started while the model loads: (load_id, its start).
        self._prefetching: dict[str, tuple[int, asyncio.Task[Frontend]]] = {}
        self._closing: set[asyncio.Task[None]] = set()  # engine clients of unloaded models, closing
        self._changed = asyncio.Event()
        self._ctx: zmq.asyncio.Context | None = None
        self._sock: zmq.asyncio.Socket | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self._ctx = zmq.asyncio.Context()
        identity = f"frontend-{os.getpid()}-{secrets.token_hex(4)}"
        self._sock = transport.connect_dealer(self._ctx, self.cfg.models_endpoint, identity.encode())
        self._send(Hello(peer=identity))
        self._tasks = [asyncio.create_task(self._read_loop(), name="model-table"),
                       asyncio.create_task(self._heartbeat_loop(), name="model-heartbeat")]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        started = [task for _, task in self._prefetching.values()]
        await asyncio.gather(*started, return_exceptions=True)
        prefetched = [t.result() for t in started if not t.cancelled() and t.exception() is None]
        for fe in [*self._frontends.values(), *prefetched]:
            await fe.close()
        if self._sock is not None:
            self._sock.close(linger=0)
        if self._ctx is not None:
            self._ctx.term()

    # ------------------------------------------------------------------ requests

    def entry(self, name: str) -> ModelEntry:
        """The model's row of the table, by its name or an alias; 404 for a model the server does not have."""
        entry = self.table.get(self._aliases.get(name, name))
        if entry is None:
            if not self.table:
                raise unavailable("the model list is not known yet")
            raise ApiError(404, f"model '{name}' not found", param="model")
        return entry

    def loaded(self, name: str) -> Frontend | None:
        """The model's Frontend if the model is loaded and connected now (never loads it)."""
        entry = self.entry(name)
        fe = self._frontends.get(entry.name)
        if entry.status != ModelStatus.LOADED or fe is None or self._engine_load.get(entry.name) != entry.load_id:
            return None
        return fe if fe.engine.ready else None

    async def connected(self, name: str) -> Frontend | None:
        """The model's Frontend if the model is loaded, None if not (never loads it). With several
        HTTP workers a worker may not have served a loaded model yet: it connects to it now."""
        entry = self.entry(name)
        if entry.status != ModelStatus.LOADED:
            return None
        return self.loaded(name) or await self._open(entry)

    async def frontend_for(self, name: str, autoload: bool) -> Frontend:
        """The model's Frontend, ready to take requests: loads the model when it is not loaded
        (``autoload``; otherwise 503) and waits. A failed load is a 503 with its reason."""
        await self.first_table()
        name = self.entry(name).name  # an alias names the model
        self._check_fits(self.entry(name))
        self._send(ModelUsed(name))
        fe = self.loaded(name)
        if fe is not None:
            return fe
        asked: int | None = None  # load_id the answer to our LoadModel will carry
        while True:
            entry = self.entry(name)
            if entry.status == ModelStatus.LOADED:
                fe = await self._open(entry)
                if asked is not None:
                    self._send(ModelUsed(name))  # the idle clock starts again: the request runs now
                return fe
            if entry.status == ModelStatus.LOADING:
                self._prefetch(entry)
            else:
                if asked is not None and entry.load_id >= asked:
                    raise unavailable(f"model '{name}' could not be loaded: {entry.error or 'it was unloaded'}")
                if asked is None:
                    if not autoload:
                        raise unavailable(f"model '{name}' is not loaded (autoload is off: POST /models/load)")
                    asked = entry.load_id + 1
                    self._send(LoadModel(name))
            await self._wait_change()

    async def load(self, name: str) -> None:
        """POST /models/load: as llama-server, a 400 for a model loading or loaded already. Returns
        once the launcher has taken the load (the table shows it loading, or a newer load_id when
        it refused), so that an unload right after finds the model running."""
        await self.first_table()
        entry = self.entry(name)
        if entry.status in _RUNNING:
            raise invalid(f"model '{entry.name}' is already running", param="model")
        self._check_fits(entry)
        self._send(LoadModel(entry.name))
        while (now := self.entry(entry.name)).status not in _RUNNING and now.load_id <= entry.load_id:
            await self._wait_change()

    def _check_fits(self, entry: ModelEntry) -> None:
        """A 400 for a model larger than the whole --models-memory budget: no unload makes room."""
        budget = self.cfg.models_memory
        if budget and entry.memory_bytes > budget:
            raise invalid(f"model '{entry.name}' needs about {entry.memory_bytes / 2**20:.0f} MiB (estimated from "
                          f"its GGUF and settings), more than --models-memory ({budget / 2**20:.0f} MiB): it "
                          "cannot be loaded", param="model")

    async def unload(self, name: str) -> None:
        """POST /models/unload: as llama-server, a 400 for a model not loading or loaded. Returns
        once the table shows it stopped."""
        await self.first_table()
        entry = self.entry(name)
        if entry.status not in _RUNNING:
            raise invalid(f"model '{entry.name}' is not running", param="model")
        self._send(UnloadModel(entry.name))
        while self.entry(entry.name).status in _RUNNING:
            await self._wait_change()

    async def first_table(self) -> None:
        """Until this worker has the launcher's model table (it comes just after start-up)."""
        while not self.table:
            await self._wait_change()

    async def next_table(self) -> None:
        """Until the launcher's next table (it sends one on every change, and now and then)."""
        await self._wait_change()

    async def _wait_change(self) -> None:
        """Until the next table; 503 when the launcher has been silent too long."""
        try:
            async with asyncio.timeout(LAUNCHER_LOSS_S):
                await self._changed.wait()
        except TimeoutError:
            if time.monotonic() - self.heard_at > LAUNCHER_LOSS_S:
                raise unavailable("the server's model manager is not answering") from None

    async def _open(self, entry: ModelEntry) -> Frontend:
        """The Frontend of a loaded model, connected to its current engine (one opening at a time)."""
        task = self._opening.get(entry.name)
        if task is None:
            task = asyncio.create_task(self._connect(entry))
            self._opening[entry.name] = task
            task.add_done_callback(lambda _: self._opening.pop(entry.name, None))
        return await asyncio.shield(task)

    def _prefetch(self, entry: ModelEntry) -> None:
        """Load the vocabulary and template of a loading model beside its engine (the first
        time only: a model's Frontend outlives its engines)."""
        held = self._prefetching.get(entry.name)
        if held is not None and held[0] != entry.load_id:  # of an earlier load (its files may have changed)
            held[1].cancel()
            held = None
        if entry.name not in self._frontends and held is None:
            task = asyncio.create_task(Frontend.start(load_config(entry.config_path)))
            self._prefetching[entry.name] = (entry.load_id, task)

    async def _connect(self, entry: ModelEntry) -> Frontend:
        fe = self._frontends.get(entry.name)
        if fe is None:
            self._prefetch(entry)
            load_id, task = self._prefetching.pop(entry.name)
            try:
                fe = await task
            except Exception as exc:  # its vocabulary, chat template or defaults: the operator's files
                log.error("model '%s': the HTTP worker cannot serve it: %s", entry.name, exc)
                raise unavailable(f"model '{entry.name}' cannot be served: {exc}") from None
            self._frontends[entry.name] = fe
            self._engine_load[entry.name] = load_id
        if self._engine_load.get(entry.name) != entry.load_id:
            old, fe.engine = fe.engine, EngineClient(fe.cfg.scheduler_endpoint, fe.cfg.curve)
            await fe.engine.start()
            await old.close("the model was reloaded; retry the request")
        self._engine_load[entry.name] = entry.load_id
        deadline = time.monotonic() + ENGINE_CONNECT_S
        while not fe.engine.ready:
            current = self.entry(entry.name)
            if current.status != ModelStatus.LOADED or current.load_id != entry.load_id:
                raise unavailable(f"model '{entry.name}' was unloaded: {current.error}")
            if time.monotonic() > deadline:
                raise unavailable(f"model '{entry.name}' is loaded but its engine does not answer")
            await asyncio.sleep(0.02)
        return fe

    # ------------------------------------------------------------------ the launcher's table

    def _send(self, msg: Message) -> None:
        assert self._sock is not None, "ModelRouter.start() first"
        transport.send(self._sock, msg)

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            self._send(Heartbeat())

    async def _read_loop(self) -> None:
        assert self._sock is not None
        while True:
            try:
                msg = await transport.arecv(self._sock)
            except transport.BadFrame as exc:
                log.warning("dropped a bad frame from the launcher: %s", exc)
                continue
            if isinstance(msg, ModelTable):
                self._on_table(msg)
            else:
                log.warning("unexpected %s from the launcher", type(msg).__name__)

    def _on_table(self, table: ModelTable) -> None:
        self.heard_at = time.monotonic()
        self.table = {entry.name: entry for entry in table.models}
        self._aliases = {alias: entry.name for entry in table.models for alias in entry.aliases}
        for name, load_id in list(self._engine_load.items()):
            entry = self.table.get(name)
            if entry is not None and entry.status == ModelStatus.LOADED and entry.load_id == load_id:
                continue
            # Unloaded (or loaded anew): end this engine's requests now with the reason.
            del self._engine_load[name]
            why = entry.error if entry is not None and entry.error else "the model was unloaded"
            task = asyncio.create_task(self._frontends[name].engine.close(f"model '{name}': {why}"))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
        self._changed.set()
        self._changed = asyncio.Event()
