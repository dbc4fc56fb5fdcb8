"""LoRA adapters of one executor: loaded with the model at start, set on the context per step.

An adapter applies to the whole llama_context, so a step runs one adapter set: the scheduler
sends the set with a plan only when it differs from the previous step's, and ``apply`` hands it
to ``llama_set_adapters_lora`` (which makes llama.cpp re-reserve its compute graph on the next
decode). A file that is missing, not a LoRA, or made for another base model fails the start.
"""

from __future__ import annotations

import ctypes

import llama_cpp

from ggserve.llama.log import LlamaLogCapture
from ipc.protocol import LoraAdapterInfo, LoraScale


class LoraAdapters:
    def __init__(self, model: llama_cpp.llama_model_p, ctx: llama_cpp.llama_context_p, paths: list[str],
                 log_capture: LlamaLogCapture) -> None:
        self.ctx = ctx
        self.info: list[LoraAdapterInfo] = []
        adapters = []
        for path in paths:
            with log_capture.collect_problems() as problems:
                adapter = llama_cpp.llama_adapter_lora_init(model, path.encode())
            if not adapter:
                why = "; ".join(problems) or "llama.cpp could not read it"
                raise RuntimeError(f"LoRA adapter {path} failed to load: {why}")
            if llama_cpp.llama_adapter_get_alora_n_invocation_tokens(adapter):
                raise RuntimeError(f"LoRA adapter {path} is an activated LoRA (aLoRA), which ggserve does not run")
            adapters.append(adapter)
            self.info.append(LoraAdapterInfo(path, _meta(adapter, "adapter.lora.task_name"),
                                             _meta(adapter, "adapter.lora.prompt_prefix")))
        # Freed with the model (llama_model_free frees the adapters still loaded).
        self._adapters = (llama_cpp.llama_adapter_lora_p_ctypes * len(adapters))(*adapters)
        self._scales = (ctypes.c_float * len(adapters))()

    def apply(self, scales: list[LoraScale]) -> None:
        """Run the next decodes with these adapters at these scales, every other one off."""
        ctypes.memset(self._scales, 0, ctypes.sizeof(self._scales))
        for lora in scales:
            if not 0 <= lora.id < len(self._scales):
                raise ValueError(f"LoRA adapter id {lora.id} does not exist ({len(self._scales)} loaded)")
            self._scales[lora.id] = lora.scale
        llama_cpp.llama_set_adapters_lora(self.ctx, self._adapters, len(self._scales), self._scales)


def _meta(adapter: llama_cpp.llama_adapter_lora_p, key: str) -> str:
    buf = ctypes.create_string_buffer(4096)
    n = llama_cpp.llama_adapter_meta_val_str(adapter, key.encode(), buf, len(buf))
    return buf.value.decode(errors="replace") if n >= 0 else ""
