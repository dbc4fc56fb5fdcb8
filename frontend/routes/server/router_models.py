"""Router mode's server-wide endpoints: /health, /v1/models with each model's status, /props,
/metrics (every loaded model's, labelled by model), POST /models/load and /models/unload,
GET /models/sse (llama-server's router API)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator
from typing import Any

import msgspec

from frontend.api.schemas import HealthStatus, Model, ModelList, ModelStatusInfo, OllamaModel
from frontend.http import multipart, sse
from frontend.http.asgi import Request, Response, StreamResponse, json_response
from frontend.http.errors import UNREADABLE_JSON, ApiError, invalid
from frontend.observe import metrics
from frontend.router import ModelRouter
from frontend.state import Frontend
from frontend.routes.server import status
from ipc.protocol import EngineStats, ModelEntry, ModelStatus


class ModelName(msgspec.Struct):
    """The ``model`` of a request body (every other field is the handler's business)."""

    model: str = ""


def requested_model(req: Request, router: ModelRouter) -> str:
    """The model a request names: ``?model=`` or the JSON body's ``model``; a 400 without one.
    A single model that sleeps (--sleep-idle-seconds without a models directory) is every name."""
    if router.cfg.models_single:
        return router.cfg.models[0].name
    name = req.query.get("model", "")
    if not name and req.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        name = multipart.parse(req.headers["content-type"], req.body).fields.get("model", "")  # a file upload
    elif not name and req.body.strip():
        try:
            name = msgspec.json.decode(req.body, type=ModelName).model
        except UNREADABLE_JSON:  # (msgspec's DecodeError is a ValueError)
            name = ""  # the handler reports the bad body
    if not name:
        raise invalid("model name is missing from the request", param="model")
    return name


async def health(router: ModelRouter, req: Request) -> Response:
    """The router serves as soon as it runs: models load on demand."""
    return json_response(HealthStatus("ok"))


async def models(router: ModelRouter, req: Request) -> Response:
    await router.first_table()  # a worker asked right after start-up must not list no models
    data = [await _listed(router, entry) for entry in list(router.table.values())]
    return json_response(ModelList(data, [OllamaModel(m.id, m.id) for m in data]))


async def model(router: ModelRouter, req: Request) -> Response:
    """GET /v1/models/{model} (OpenAI's retrieve): one model as /v1/models lists it, by its name or an alias."""
    await router.first_table()
    return json_response(await _listed(router, router.entry(req.path.rpartition("/")[2])))


async def _listed(router: ModelRouter, entry: ModelEntry) -> Model:
    fe = await _connected(router, entry.name)
    info = fe.engine.info if fe is not None else None
    meta = status.model_meta(fe, info) if fe is not None and info is not None else None
    loaded = ModelStatusInfo(str(entry.status), entry.args, entry.failed, entry.error if entry.failed else "")
    return Model(entry.name, router.started_at, "ggserve", entry.aliases, entry.tags, meta, entry.path, loaded,
                 status.architecture(fe) if fe is not None else None,
                 status.max_model_len(fe, info) if fe is not None and info is not None else None)


async def props(router: ModelRouter, req: Request) -> Response:
    """``/props?model=``: the model's properties when loaded; otherwise what is known without
    loading it (a /props request never loads a model, as in llama-server)."""
    name = requested_model(req, router)
    fe = await router.connected(name)
    if fe is not None:
        return await status.props(fe, req)
    entry = router.entry(name)
    body: dict[str, Any] = {"model_alias": entry.name, "model_path": entry.path, "total_slots": entry.n_slots,
                            "n_ctx": entry.n_ctx, "is_sleeping": entry.status == ModelStatus.SLEEPING, "status": str(entry.status)}
    return json_response(body)


async def metrics_text(router: ModelRouter, req: Request) -> Response:
    """Every loaded model's engine series and the request histograms, with a ``model`` label
    (``?model=``: that model's engine series only)."""
    if not router.cfg.metrics:
        raise ApiError(501, "this server does not serve metrics; start it with --metrics")
    names = [router.entry(requested_model(req, router)).name] if "model" in req.query else list(router.table)
    stats = await asyncio.gather(*(_engine_stats(router, name) for name in names))
    engines = {name: s for name, s in zip(names, stats) if s is not None}
    return Response(metrics.render(engines, by_model=True), content_type=metrics.CONTENT_TYPE)


async def _engine_stats(router: ModelRouter, name: str) -> EngineStats | None:
    """A loaded model's engine stats (starting its next throughput window); None when it is not
    loaded, or is being unloaded while the scrape runs."""
    fe = await _connected(router, name)
    if fe is None:
        return None
    try:
        return await status.engine_stats(fe, reset_window=True)
    except ApiError:
        return None


async def _connected(router: ModelRouter, name: str) -> Frontend | None:
    """The model's Frontend when it is loaded and answers; None otherwise (a model being unloaded
    while a listing or a scrape runs is left out of it, not an error of the whole answer)."""
    try:
        return await router.connected(name)
    except ApiError as exc:
        if exc.status == 404:
            raise
        return None


async def status_events(router: ModelRouter, req: Request) -> StreamResponse:
    """GET /models/sse: llama-server's stream of model status changes, an event per model whose
    status changed (``{"model", "event": "status_change", "data": {"status", ...}}``; a failed
    load adds ``failed`` and its ``error``), pings between them."""
    await router.first_table()
    return StreamResponse(_status_events(router))


async def _status_events(router: ModelRouter) -> AsyncGenerator[bytes, None]:
    seen = {name: entry.status for name, entry in router.table.items()}
    yield sse.PING  # opens the stream: events come when a status changes
    quiet_since = time.monotonic()
    while True:
        try:
            await router.next_table()
        except ApiError as exc:  # the launcher is gone
            yield sse.error_event(exc)
            return
        events = []
        for name, entry in router.table.items():
            if seen.get(name) != entry.status:
                seen[name] = entry.status
                data: dict[str, Any] = {"status": str(entry.status)}
                if entry.failed:
                    data |= {"failed": True, "error": entry.error}
                events.append(sse.event({"model": name, "event": "status_change", "data": data}))
        if events or time.monotonic() - quiet_since > router.cfg.sse_ping_interval:
            yield b"".join(events) or sse.PING  # a ping finds a client that left
            quiet_since = time.monotonic()


async def no_downloads(router: ModelRouter, req: Request) -> Response:
    """POST / DELETE /models: llama-server downloads a model into its cache, or removes one."""
    raise ApiError(501, "ggserve serves the models of --models-dir and --models-preset only: it downloads "
                        "and removes none")


async def router_only(fe: Frontend, req: Request) -> Response:
    """/models/load, /models/unload and /models/sse on a server of one model: they manage router
    mode's models (llama-server does not serve them there either)."""
    raise ApiError(501, f"{req.path} manages the models of router mode: start the server with --models-dir or "
                        "--models-preset")


async def load(router: ModelRouter, req: Request) -> Response:
    """Start loading the model; /v1/models shows when it is loaded."""
    await router.load(req.decode(ModelName).model or requested_model(req, router))
    return json_response({"success": True})


async def unload(router: ModelRouter, req: Request) -> Response:
    await router.unload(req.decode(ModelName).model or requested_model(req, router))
    return json_response({"success": True})
