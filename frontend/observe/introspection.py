"""The bodies of /props and /slots, in llama-server's shapes and names, so its tools and web UIs
read ours: default and per-slot generation settings, template capabilities, slot states."""

from __future__ import annotations

import functools
import importlib.metadata
import json
from typing import Any

import llama_cpp
import msgspec

from frontend.text.chat_template import ChatTemplate
from frontend.text.multimodal import MARKER
from frontend.structured.lazy import triggers_json
from ggserve.config import ServeConfig
from ipc.protocol import EngineInfo, SamplingParams, SlotState

RANDOM_SEED = 0xFFFFFFFF  # llama.cpp's LLAMA_DEFAULT_SEED: a new random seed per request
_NOT_PARAMS = frozenset({"logit_bias", "grammar"})  # llama-server's short params leave them out


def generation_params(sampling: SamplingParams, n_predict: int, ignore_eos: bool = False,
                      n_probs: int = 0) -> dict[str, Any]:
    """llama-server's ``params`` object: every sampler setting, named as the API names it."""
    params = {name: value for name, value in msgspec.structs.asdict(sampling).items() if name not in _NOT_PARAMS}
    params["seed"] = RANDOM_SEED if sampling.seed is None else sampling.seed
    params.update(triggers_json(sampling.grammar_triggers))
    return params | {"max_tokens": n_predict, "n_predict": n_predict, "ignore_eos": ignore_eos, "n_probs": n_probs}


def props(cfg: ServeConfig, sampling: SamplingParams, info: EngineInfo, template: ChatTemplate,
          video: bool) -> dict[str, Any]:
    """llama-server's /props (``sampling``: the server's sampling defaults; ``video``: this server
    decodes videos: an image encoder and ffmpeg)."""
    defaults = msgspec.structs.replace(sampling, seed=None if cfg.seed < 0 else cfg.seed)
    executor = info.executors[0] if info.executors else None
    return {
        "default_generation_settings": {"params": generation_params(defaults, cfg.n_predict, cfg.ignore_eos),
                                        "n_ctx": info.n_ctx_slot},
        "total_slots": info.n_slots * info.n_executors,
        "model_alias": cfg.model_alias,
        # llama_model_desc is "<arch> <size> <file type>": its last part is llama-server's model_ftype.
        "model_ftype": executor.model_desc.split(" ", 2)[-1] if executor else "",
        "model_path": info.model_path,
        "modalities": {"vision": bool(executor and executor.vision), "video": video and bool(executor and executor.vision),
                       "audio": bool(executor and executor.audio)},
        "media_marker": MARKER,
        "endpoint_slots": cfg.slots,
        "endpoint_props": cfg.props,
        "endpoint_metrics": cfg.metrics,
        "ui": cfg.webui,
        "ui_settings": json.loads(cfg.ui_settings) if cfg.ui_settings else {},
        "chat_template": template.source,
        "chat_template_caps": template.caps,
        "bos_token": template.bos_token,
        "eos_token": template.eos_token,
        "build_info": build_info(),
        "is_sleeping": False,
        "cors_proxy_enabled": False,
    }


@functools.cache
def build_info() -> str:
    try:
        version = importlib.metadata.version("ggserve")
    except importlib.metadata.PackageNotFoundError:  # a checkout that was never installed
        version = "unknown"
    return f"ggserve {version} (llama.cpp of llama-cpp-python {llama_cpp.__version__})"


def slot_json(slot: SlotState, info: EngineInfo) -> dict[str, Any]:
    """One slot as llama-server shows it; ``id`` counts over every executor, ``id_executor`` and
    ``id_slot`` say where it runs. The request fields are of the running request, or of the
    last one when the slot is idle (as llama-server's ``task_prev``)."""
    state: dict[str, Any] = {
        "id": slot.executor_id * info.n_slots + slot.slot_id,
        "id_slot": slot.slot_id,
        "id_executor": slot.executor_id,
        "n_ctx": info.n_ctx_slot,
        "speculative": bool(info.speculative),
        "is_processing": slot.busy,
        "n_cached_tokens": slot.n_cached_tokens,
    }
    if slot.sampling is None:
        return state
    return state | {
        "id_task": slot.request_id,
        "n_prompt_tokens": slot.n_prompt_tokens,
        "n_prompt_tokens_processed": slot.n_prompt_tokens_processed,
        "n_prompt_tokens_cache": slot.n_prompt_tokens_cached,
        "params": generation_params(slot.sampling, slot.max_tokens, slot.ignore_eos, max(slot.logprobs, 0)),
        # An idle slot has no budget (-1) and has decoded nothing, as llama-server resets it on release.
        "next_token": [{
            "has_next_token": slot.busy,
            # -1: no limit (a context that shifts), as llama-server's
            "n_remain": (-1 if slot.max_tokens < 0 else max(0, slot.max_tokens - slot.n_generated_tokens))
            if slot.busy else -1,
            "n_decoded": slot.n_generated_tokens if slot.busy else 0,
        }],
    }
