"""GET and POST /lora-adapters (llama-server's): the loaded LoRA adapters and their global scales.

The scales live in the scheduler, so every HTTP worker sees one value: POST sends the change and
then asks for EngineStats, whose answer (the scheduler reads a worker's messages in order) comes
after the change took effect; later requests that name no ``lora`` run with it.
"""

from __future__ import annotations

from frontend.api.lora import lora_scales
from frontend.api.schemas import LoraAdapter, LoraApplied, LoraField
from frontend.http.asgi import Request, Response, json_response
from frontend.http.errors import ApiError, invalid
from frontend.state import Frontend
from ipc.protocol import EngineStats, LoraScale

_STATS_TIMEOUT_S = 5.0


async def get_adapters(fe: Frontend, req: Request) -> Response:
    info = fe.engine_info()
    stats = await _engine_scales(fe, None)
    loaded = info.executors[0].lora_adapters if info.executors else []
    return json_response([LoraAdapter(i, a.path, scale, a.task_name, a.prompt_prefix)
                          for i, (a, scale) in enumerate(zip(loaded, stats.lora_scales))])


async def set_adapters(fe: Frontend, req: Request) -> Response:
    """The global scales: those listed, every other adapter at 0 (as llama-server)."""
    info = fe.engine_info()
    if not req.body.strip().startswith(b"["):
        raise invalid("the body must be an array of {\"id\", \"scale\"} objects")
    await _engine_scales(fe, lora_scales(req.decode(list[LoraField]), info, None))
    return json_response(LoraApplied())


async def _engine_scales(fe: Frontend, change: list[LoraScale] | None) -> EngineStats:
    """The engine's counters (with the global scales) after ``change``, if any, took effect."""
    try:
        return await fe.engine.lora_scales(change, _STATS_TIMEOUT_S)
    except TimeoutError:
        raise ApiError(503, f"the scheduler did not answer within {_STATS_TIMEOUT_S:g} s") from None
