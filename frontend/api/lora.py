"""LoRA adapter scales from the API, checked against the adapters the engine loaded.

A request's ``lora`` and POST /lora-adapters' body are lists of ``{id, scale}`` with the ids GET
/lora-adapters shows (the order of --lora / --lora-scaled). An id that is not loaded, or a scale
that is not a finite number, is a 400 naming the field (llama-server ignores unknown ids).
"""

from __future__ import annotations

from frontend.api.schemas import LoraField, SamplingFields
from frontend.http.errors import invalid
from ipc.protocol import EngineInfo, LoraScale, valid_scale


def n_adapters(info: EngineInfo) -> int:
    return len(info.executors[0].lora_adapters) if info.executors else 0


def lora_scales(entries: list[LoraField], info: EngineInfo, param: str | None) -> list[LoraScale]:
    """The entries as the engine takes them; a 400 (naming ``param``) if one cannot apply."""
    n = n_adapters(info)
    for entry in entries:
        if not 0 <= entry.id < n:
            loaded = f"ids 0..{n - 1}" if n else "none (start it with --lora)"
            raise invalid(f"LoRA adapter id {entry.id} does not exist; the server's adapters are {loaded}",
                          param=param)
        if not valid_scale(entry.scale):
            raise invalid(f"the scale of LoRA adapter {entry.id} is not a finite float32 number", param=param)
    return [LoraScale(entry.id, entry.scale) for entry in entries]


def request_lora(req: SamplingFields, info: EngineInfo) -> list[LoraScale] | None:
    """The engine's form of a request's ``lora``; None (the global scales) when it sets none."""
    return lora_scales(req.lora, info, "lora") if req.lora else None
