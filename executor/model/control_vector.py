"""Control vectors (llama-server's ``--control-vector``, ``--control-vector-scaled``,
``--control-vector-layer-range``): a direction per layer added to every token's hidden state.

The files are GGUF with one F32 tensor ``direction.<layer>`` (layer >= 1) per layer, as
llama.cpp's cvector tools write them; they are read with llama.cpp's own GGUF parser (ctypes on
libggml-base: llama-cpp-python binds none of it), each scaled, summed, and set on the context
once at start (``llama_set_adapter_cvec``): it applies to every sequence, as in llama-server. A
file that is not such a GGUF, or made for another width of model, fails the start naming it.
"""

from __future__ import annotations

import ctypes
import functools

import llama_cpp
import numpy as np

from ggserve.config import ScaledFile
from ggserve.llama.libs import library

_F32 = 0  # GGML_TYPE_F32


class _InitParams(ctypes.Structure):
    _fields_ = [("no_alloc", ctypes.c_bool), ("ctx", ctypes.c_void_p)]


@functools.cache
def _gguf() -> ctypes.CDLL:
    lib = library("libggml-base")
    lib.gguf_init_from_file.argtypes = [ctypes.c_char_p, _InitParams]
    lib.gguf_init_from_file.restype = ctypes.c_void_p
    lib.gguf_free.argtypes = [ctypes.c_void_p]
    lib.gguf_get_n_tensors.argtypes = [ctypes.c_void_p]
    lib.gguf_get_n_tensors.restype = ctypes.c_int64
    lib.gguf_get_data_offset.argtypes = [ctypes.c_void_p]
    lib.gguf_get_data_offset.restype = ctypes.c_size_t
    for fn, restype in ((lib.gguf_get_tensor_name, ctypes.c_char_p), (lib.gguf_get_tensor_offset, ctypes.c_size_t),
                        (lib.gguf_get_tensor_type, ctypes.c_int), (lib.gguf_get_tensor_size, ctypes.c_size_t)):
        fn.argtypes = [ctypes.c_void_p, ctypes.c_int64]
        fn.restype = restype
    return lib


def read_directions(path: str) -> dict[int, np.ndarray]:
    """Layer -> direction of one file; RuntimeError when it is not a control vector."""
    lib = _gguf()
    gguf = lib.gguf_init_from_file(path.encode(), _InitParams(True, None))
    if not gguf:
        raise RuntimeError(f"control vector {path}: not a GGUF file llama.cpp can read")
    try:
        base = lib.gguf_get_data_offset(gguf)
        found = []
        for i in range(lib.gguf_get_n_tensors(gguf)):
            name = lib.gguf_get_tensor_name(gguf, i).decode()
            kind, _, layer = name.partition(".")
            if kind != "direction" or not layer.isdigit() or int(layer) < 1:
                raise RuntimeError(f"control vector {path}: tensor {name!r} is not direction.<layer> (layer >= 1)")
            if lib.gguf_get_tensor_type(gguf, i) != _F32:
                raise RuntimeError(f"control vector {path}: tensor {name} is not F32")
            found.append((int(layer), base + lib.gguf_get_tensor_offset(gguf, i), lib.gguf_get_tensor_size(gguf, i)))
    finally:
        lib.gguf_free(gguf)
    if not found:
        raise RuntimeError(f"control vector {path}: no direction tensors")
    directions: dict[int, np.ndarray] = {}
    with open(path, "rb") as f:
        for layer, offset, size in found:
            f.seek(offset)
            vector = np.frombuffer(f.read(size), dtype="<f4")
            directions[layer] = directions.get(layer, 0) + vector  # a layer given twice adds up, as in llama.cpp
    return directions


def combined(files: list[ScaledFile], n_embd: int) -> np.ndarray:
    """The scaled sum of the files' directions: row l - 1 is layer l (rows up to the deepest)."""
    layers: dict[int, np.ndarray] = {}
    for cv in files:
        for layer, vector in read_directions(cv.path).items():
            if vector.size != n_embd:
                raise RuntimeError(f"control vector {cv.path}: direction.{layer} has {vector.size} values; the "
                                   f"model's hidden state has {n_embd}")
            layers[layer] = layers.get(layer, 0) + vector * np.float32(cv.scale)
    out = np.zeros((max(layers), n_embd), dtype=np.float32)
    for layer, vector in layers.items():
        out[layer - 1] = vector
    return out


def apply(ctx: llama_cpp.llama_context_p, model: llama_cpp.llama_model_p, files: list[ScaledFile],
          layer_start: int, layer_end: int) -> None:
    """Set the control vector on the context for layers ``layer_start`` to ``layer_end``
    (inclusive; 0: the first / last layer)."""
    n_embd = llama_cpp.llama_model_n_embd(model)
    data = np.ascontiguousarray(combined(files, n_embd))
    start = layer_start if layer_start > 0 else 1
    end = layer_end if layer_end > 0 else llama_cpp.llama_model_n_layer(model)
    ptr = data.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
    if llama_cpp.llama_set_adapter_cvec(ctx, ptr, data.size, n_embd, start, end) != 0:
        raise RuntimeError("llama.cpp refused the control vector(s)")
