"""LoRA adapter sets as the scheduler keys them.

A request runs with one adapter set: the global scales (POST /lora-adapters) unless it names its
own (then the adapters it does not name are off, as in llama-server). A set is keyed by its
non-zero scales, so every spelling of "no adapter" (none loaded, all at 0) is the empty key ():
llama.cpp skips adapters at scale 0, so those runs compute the same function and may share
steps and cached prefixes. Steps and the prefix cache never mix two keys (scheduler.policy).
"""

from __future__ import annotations

from ipc.protocol import LoraScale, valid_scale

LoraKey = tuple[tuple[int, float], ...]  # (adapter id, scale) of the adapters on, by id
NO_LORA: LoraKey = ()


def key_of(scales: list[float]) -> LoraKey:
    """The key of a scale per adapter id."""
    return tuple((i, s) for i, s in enumerate(scales) if s != 0.0)


def request_key(requested: list[LoraScale] | None, global_scales: list[float]) -> LoraKey:
    """The set a request runs with (its list has passed ``problem``)."""
    if not requested:  # None or [] (llama-server ignores an empty list): the global scales
        return key_of(global_scales)
    scales = [0.0] * len(global_scales)
    for lora in requested:
        scales[lora.id] = lora.scale
    return key_of(scales)


def problem(requested: list[LoraScale], n_adapters: int) -> str | None:
    """Why a list of adapter scales cannot be applied, or None."""
    for lora in requested:
        if not 0 <= lora.id < n_adapters:
            return f"LoRA adapter id {lora.id} does not exist ({n_adapters} loaded)"
        if not valid_scale(lora.scale):
            return f"LoRA adapter {lora.id} has scale {lora.scale}; a scale is a finite float32 number"
    return None


def to_wire(key: LoraKey) -> list[LoraScale]:
    return [LoraScale(i, s) for i, s in key]
