"""Server endpoints: /health, /v1/models, /props, /slots, /metrics."""

from __future__ import annotations

from frontend import metrics
from frontend.errors import RETRY_AFTER_S, ApiError
from frontend.http import Request, Response, json_response
from frontend.sampling import default_sampling
from frontend.schemas import HealthStatus, Model, ModelList, ModelMeta, OllamaModel
from frontend.state import Frontend
from ipc.protocol import EngineInfo, EngineStats

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


async def models(fe: Frontend, req: Request) -> Response:
    info = fe.engine.info
    meta = _model_meta(fe, info) if info is not None else None
    return json_response(ModelList([Model(fe.model_id, fe.started_at, "ggserve", meta)],
                                   [OllamaModel(fe.model_id, fe.model_id)]))


def _model_meta(fe: Frontend, info: EngineInfo) -> ModelMeta:
    meta = ModelMeta(n_vocab=fe.tokenizer.n_vocab, n_ctx=info.n_ctx_slot)
    if info.executors:
        executor = info.executors[0]
        meta.n_ctx_train, meta.n_params, meta.size = executor.n_ctx_train, executor.n_params, executor.model_size_bytes
        meta.n_embd, meta.vocab_type = executor.n_embd, executor.vocab_type
    return meta


async def props(fe: Frontend, req: Request) -> Response:
    info = fe.engine_info()
    return json_response({
        "default_generation_settings": {"params": default_sampling(fe.cfg), "n_ctx": info.n_ctx_slot},
        "total_slots": info.n_slots * info.n_executors,
        "model_alias": fe.model_id,
        "model_path": fe.cfg.model,
        "modalities": {"vision": False, "audio": False},
        "chat_template": fe.template.source,
        "bos_token": fe.template.bos_token,
        "eos_token": fe.template.eos_token,
        "endpoint_slots": True,
        "endpoint_metrics": True,
        "endpoint_props": False,
        "is_sleeping": False,
        "build_info": "ggserve",
    })


async def _engine_stats(fe: Frontend) -> EngineStats:
    try:
        return await fe.engine.stats(_STATS_TIMEOUT_S)
    except TimeoutError:
        raise ApiError(503, f"the scheduler did not answer a stats request within {_STATS_TIMEOUT_S:g} s") from None


async def slots(fe: Frontend, req: Request) -> Response:
    """llama-server's /slots shape; ``id`` counts over all executors, ``id_executor`` says which."""
    info = fe.engine_info()
    stats = await _engine_stats(fe)
    return json_response([
        {
            "id": slot.executor_id * info.n_slots + slot.slot_id,
            "id_slot": slot.slot_id,
            "id_executor": slot.executor_id,
            "n_ctx": info.n_ctx_slot,
            "speculative": False,
            "is_processing": slot.busy,
            "id_task": slot.request_id,
            "n_prompt_tokens": slot.n_prompt_tokens,
            "n_cached_tokens": slot.n_cached_tokens,
            "next_token": [{"has_next_token": slot.busy, "n_decoded": slot.n_generated_tokens}],
        }
        for slot in stats.slots
    ])


async def metrics_text(fe: Frontend, req: Request) -> Response:
    fe.engine_info()
    stats = await _engine_stats(fe)
    return Response(metrics.render(stats), content_type=metrics.CONTENT_TYPE)
