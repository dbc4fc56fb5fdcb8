"""llama-cpp-python's shared libraries by name, for the few ggml and llama.cpp functions it does
not bind. llama_cpp has loaded them already, so ctypes gets the same handles."""

from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path

import llama_cpp


def library(stem: str) -> ctypes.CDLL:
    """``stem``: e.g. "libggml" or "libggml-cpu"."""
    base = Path(os.environ.get("LLAMA_CPP_LIB_PATH") or Path(llama_cpp.__file__).parent / "lib")
    return ctypes.CDLL(str(base / f"{stem}{'.dylib' if sys.platform == 'darwin' else '.so'}"))
