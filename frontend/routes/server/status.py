"""Server endpoints: /health, /v1/models, /props, /slots, /metrics, /version."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from frontend.observe import introspection, metrics
from frontend.http.errors import RETRY_AFTER_S, ApiError, invalid, unavailable
from frontend.http.asgi import Request, Response, json_response
from frontend.api.schemas import (HealthStatus, Model, ModelArchitecture, ModelList, ModelMeta, OllamaModel,
                                  VersionInfo)
from frontend.routes.pooling.embeddings import input_token_limit
from frontend.state import Frontend
from ggserve import installed_version
from ipc.protocol import EngineInfo, EngineStats

if TYPE_CHECKING:
    from frontend.router import ModelRouter

_STATS_TIMEOUT_S = 5.0


async def health(fe: Frontend, req: Request) -> Response:
    """200 ``ok`` when a request would run now; otherwise 503 with why: ``loading`` (the model
    is loading), ``restarting`` (the engine or every executor is being restarted) or ``draining``
    (the server is shutting down)."""
    engine = fe.engine
    if engine.info is None:
        status = "loading"
    elif not engine.connected or (engine.status is not None and engine.status.n_executors_ready == 0):
        status = "restarting"
    elif engine.status is not None and engine.status.draining:
        status = "draining"
    else:
        return json_response(HealthStatus("ok"))
    return json_response(HealthStatus(status), status=503,
                         headers=[(b"retry-after", str(RETRY_AFTER_S).encode())])


def _model(fe: Frontend) -> Model:
    info = fe.engine.info
    meta = model_meta(fe, info) if info is not None else None
    return Model(fe.model_id, fe.started_at, "ggserve", fe.cfg.aliases, fe.cfg.tags, meta,
                 architecture=architecture(fe), max_model_len=max_model_len(fe, info) if info is not None else None)


async def models(fe: Frontend, req: Request) -> Response:
    capabilities = ["completion", "multimodal"] if fe.multimodal is not None else ["completion"]
    return json_response(ModelList([_model(fe)], [OllamaModel(fe.model_id, fe.model_id, capabilities=capabilities)]))


async def model(fe: Frontend, req: Request) -> Response:
    """GET /v1/models/{model} (OpenAI's retrieve): the model, by its id or an alias."""
    name = req.path.rpartition("/")[2]
    if name != fe.model_id and name not in fe.cfg.aliases:
        raise ApiError(404, f"The model '{name}' does not exist", param="model")
    return json_response(_model(fe))


def architecture(fe: Frontend) -> ModelArchitecture:
    """The model's input modalities (llama-server's router lists them: OpenRouter's shape)."""
    info = fe.multimodal.info if fe.multimodal is not None else None
    inputs = ["text", *(["image"] if info and info.vision else []), *(["audio"] if info and info.audio else [])]
    return ModelArchitecture(inputs)


def max_model_len(fe: Frontend, info: EngineInfo) -> int:
    """vLLM's max_model_len: the tokens one request may hold; on an embedding server, one input
    (it runs whole in one decode), as vLLM reports a BERT's 512 positions."""
    return input_token_limit(info) if fe.cfg.embeddings else info.n_ctx_slot


def model_meta(fe: Frontend, info: EngineInfo) -> ModelMeta:
    meta = ModelMeta(n_vocab=fe.tokenizer.n_vocab, n_ctx=info.n_ctx_slot)
    if info.executors:
        executor = info.executors[0]
        meta.n_ctx_train, meta.n_params, meta.size = executor.n_ctx_train, executor.n_params, executor.model_size_bytes
        meta.n_embd, meta.vocab_type = executor.n_embd, executor.vocab_type
    return meta


async def props(fe: Frontend, req: Request) -> Response:
    video = fe.multimodal is not None and fe.multimodal.video.unavailable_reason is None
    return json_response(introspection.props(fe.cfg, fe.sampling_defaults, fe.engine_info(), fe.template, video))


async def set_props(fe: Frontend, req: Request) -> Response:
    """llama-server's POST /props (allowed with --props) changes no property of this version; so
    here an empty object succeeds and any property is refused by name, never ignored."""
    if not fe.cfg.props:
        raise ApiError(501, "this server does not allow changing its properties; start it with --props")
    changes = req.decode(dict[str, Any]) if req.body.strip() else {}
    if changes:
        raise invalid(f"property {next(iter(changes))!r} cannot be changed at run time", param=next(iter(changes)))
    return json_response({"success": True})


async def engine_stats(fe: Frontend, reset_window: bool = False) -> EngineStats:
    try:
        return await fe.engine.stats(_STATS_TIMEOUT_S, reset_window)
    except TimeoutError:
        raise ApiError(503, f"the scheduler did not answer a stats request within {_STATS_TIMEOUT_S:g} s") from None


async def slots(fe: Frontend, req: Request) -> Response:
    """llama-server's /slots; ``?fail_on_no_slot=1`` answers 503 when no slot is idle."""
    if not fe.cfg.slots:
        raise ApiError(501, "this server does not serve /slots; start it without --no-slots")
    info = fe.engine_info()
    stats = await engine_stats(fe)
    if req.query.get("fail_on_no_slot") and all(slot.busy for slot in stats.slots):
        raise unavailable("no slot available")
    return json_response([introspection.slot_json(slot, info) for slot in stats.slots])


async def metrics_text(fe: Frontend, req: Request) -> Response:
    """Prometheus metrics (--metrics); each scrape starts llama-server's next throughput window."""
    if not fe.cfg.metrics:
        raise ApiError(501, "this server does not serve metrics; start it with --metrics")
    fe.engine_info()
    stats = await engine_stats(fe, reset_window=True)
    headers = [(b"process-start-time-unix", str(int(stats.started_at)).encode())]
    return Response(metrics.render({"": stats}), content_type=metrics.CONTENT_TYPE, headers=headers)


async def version(fe: Frontend | ModelRouter, req: Request) -> Response:
    """vLLM's /version: the server's version."""
    return json_response(VersionInfo(installed_version("ggserve")))
