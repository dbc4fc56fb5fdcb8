"""Weights placed on named buffer types (llama-server's -ot, --cpu-moe, --n-cpu-moe, --n-cpu-ffn,
and the draft model's -otd, -cmoed, -ncmoed): the configuration's overrides as llama.cpp's
``tensor_buft_overrides`` array.

Buffer types are looked up by name among the devices llama.cpp has (CPU, CUDA0, ...); a name it
does not have stops the load with the names it does (ggserve.llama.devices asks ggml).
"""

from __future__ import annotations

import ctypes

import llama_cpp

from ggserve.config import TensorOverride
from ggserve.llama.devices import buffer_types


class _Override(ctypes.Structure):
    """llama.h's struct llama_model_tensor_buft_override."""

    _fields_ = [("pattern", ctypes.c_char_p), ("buft", ctypes.c_void_p)]


def apply(overrides: list[TensorOverride], params: llama_cpp.llama_model_params,
          flag: str = "--override-tensor") -> ctypes.Array | None:
    """Point ``params`` at the overrides (a zeroed entry ends the array); the array returned,
    which holds the pattern strings, must outlive the model's load. ``flag`` names them in errors."""
    if not overrides:
        return None
    known = buffer_types()
    unknown = sorted({o.buffer_type for o in overrides} - set(known))
    if unknown:
        raise RuntimeError(f"unknown buffer type {', '.join(unknown)} in {flag}; this build has "
                           f"{', '.join(sorted(known))}")
    array = (_Override * (len(overrides) + 1))()
    for entry, override in zip(array, overrides):
        entry.pattern, entry.buft = override.pattern.encode(), known[override.buffer_type]
    params.tensor_buft_overrides = ctypes.cast(array, ctypes.c_void_p)
    return array
