"""llama.cpp's compute devices through ggml's backend registry (llama-cpp-python binds none of
it): the GPUs and accelerators as llama-server's ``--list-devices`` prints them and its ``-dev``
names them, and every device's buffer type by name (``-ot``, executor.model.tensor_overrides)."""

from __future__ import annotations

import ctypes
import functools
from dataclasses import dataclass

from ggserve.llama.libs import library

_CPU = 0  # GGML_BACKEND_DEVICE_TYPE_CPU
_MIB = 1024 * 1024


@dataclass(frozen=True)
class Device:
    name: str  # e.g. CUDA0
    description: str
    total_mib: int
    free_mib: int


@functools.cache
def _ggml() -> ctypes.CDLL:
    lib = library("libggml")
    lib.ggml_backend_load_all.restype = None
    lib.ggml_backend_dev_count.restype = ctypes.c_size_t
    lib.ggml_backend_dev_get.argtypes = [ctypes.c_size_t]
    lib.ggml_backend_dev_get.restype = ctypes.c_void_p
    lib.ggml_backend_dev_type.argtypes = [ctypes.c_void_p]
    lib.ggml_backend_dev_type.restype = ctypes.c_int
    for fn in (lib.ggml_backend_dev_name, lib.ggml_backend_dev_description):
        fn.argtypes = [ctypes.c_void_p]
        fn.restype = ctypes.c_char_p
    lib.ggml_backend_dev_memory.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t),
                                            ctypes.POINTER(ctypes.c_size_t)]
    lib.ggml_backend_dev_memory.restype = None
    lib.ggml_backend_dev_buffer_type.argtypes = [ctypes.c_void_p]
    lib.ggml_backend_dev_buffer_type.restype = ctypes.c_void_p
    lib.ggml_backend_buft_name.argtypes = [ctypes.c_void_p]
    lib.ggml_backend_buft_name.restype = ctypes.c_char_p
    return lib


def devices() -> list[Device]:
    """The devices this llama.cpp build finds, the CPU left out."""
    lib = _ggml()
    lib.ggml_backend_load_all()  # backends built as loadable modules register here
    found = []
    for i in range(lib.ggml_backend_dev_count()):
        dev = lib.ggml_backend_dev_get(i)
        if lib.ggml_backend_dev_type(dev) == _CPU:
            continue
        free, total = ctypes.c_size_t(), ctypes.c_size_t()
        lib.ggml_backend_dev_memory(dev, ctypes.byref(free), ctypes.byref(total))
        found.append(Device(lib.ggml_backend_dev_name(dev).decode(), lib.ggml_backend_dev_description(dev).decode(),
                            total.value // _MIB, free.value // _MIB))
    return found


def buffer_types() -> dict[str, int]:
    """Each device's buffer type by name (CPU, CUDA0, ...)."""
    lib = _ggml()
    found = {}
    for i in range(lib.ggml_backend_dev_count()):
        buft = lib.ggml_backend_dev_buffer_type(lib.ggml_backend_dev_get(i))
        if buft:
            found[lib.ggml_backend_buft_name(buft).decode()] = buft
    return found


def listing() -> str:
    """llama-server's ``--list-devices`` text."""
    lines = ["Available devices:"]
    lines += [f"  {d.name}: {d.description} ({d.total_mib} MiB, {d.free_mib} MiB free)" for d in devices()] or ["  (none)"]
    return "\n".join(lines)
