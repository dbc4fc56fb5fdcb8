"""Weights placed on named buffer types (llama-server's -ot, --cpu-moe, --n-cpu-moe, --n-cpu-ffn):
the configuration's overrides as llama.cpp's ``tensor_buft_overrides`` array.

Buffer types are looked up by name among the devices llama.cpp has (CPU, CUDA0, ...); a name it
does not have stops the load with the names it does. llama-cpp-python binds none of this, so
the few ggml calls go through ctypes.
"""

from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path

import llama_cpp

from ggserve.config import TensorOverride


class _Override(ctypes.Structure):
    """llama.h's struct llama_model_tensor_buft_override."""

    _fields_ = [("pattern", ctypes.c_char_p), ("buft", ctypes.c_void_p)]


def _ggml() -> ctypes.CDLL:
    """libggml (the backend registry), which llama.cpp has already loaded."""
    base = Path(os.environ.get("LLAMA_CPP_LIB_PATH") or Path(llama_cpp.__file__).parent / "lib")
    lib = ctypes.CDLL(str(base / ("libggml.dylib" if sys.platform == "darwin" else "libggml.so")))
    lib.ggml_backend_dev_count.restype = ctypes.c_size_t
    lib.ggml_backend_dev_get.argtypes = [ctypes.c_size_t]
    lib.ggml_backend_dev_get.restype = ctypes.c_void_p
    lib.ggml_backend_dev_buffer_type.argtypes = [ctypes.c_void_p]
    lib.ggml_backend_dev_buffer_type.restype = ctypes.c_void_p
    lib.ggml_backend_buft_name.argtypes = [ctypes.c_void_p]
    lib.ggml_backend_buft_name.restype = ctypes.c_char_p
    return lib


def buffer_types() -> dict[str, int]:
    """Each device's buffer type by name."""
    lib = _ggml()
    found = {}
    for i in range(lib.ggml_backend_dev_count()):
        buft = lib.ggml_backend_dev_buffer_type(lib.ggml_backend_dev_get(i))
        if buft:
            found[lib.ggml_backend_buft_name(buft).decode()] = buft
    return found


class TensorOverrides:
    """The C array (terminated by a null entry) and the strings it points to, kept alive while
    llama.cpp loads the model."""

    def __init__(self, overrides: list[TensorOverride]) -> None:
        known = buffer_types()
        unknown = sorted({o.buffer_type for o in overrides} - set(known))
        if unknown:
            raise RuntimeError(f"unknown buffer type {', '.join(unknown)} in --override-tensor; this build has "
                               f"{', '.join(sorted(known))}")
        self._patterns = [o.pattern.encode() for o in overrides]
        self.array = (_Override * (len(overrides) + 1))()
        for entry, pattern, override in zip(self.array, self._patterns, overrides):
            entry.pattern, entry.buft = pattern, known[override.buffer_type]

    def apply(self, mparams: llama_cpp.llama_model_params) -> None:
        mparams.tensor_buft_overrides = ctypes.cast(self.array, ctypes.c_void_p)
