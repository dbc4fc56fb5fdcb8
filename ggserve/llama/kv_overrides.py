"""GGUF metadata overrides (llama-server's --override-kv KEY=TYPE:VALUE,...): parsed from the
command line, and handed to llama.cpp as its ``kv_overrides`` array wherever the model is loaded
(the executors' weights and the frontend's vocabulary, so both read the same values)."""

from __future__ import annotations

import ctypes

import llama_cpp

from ggserve.config import KvOverride

MAX_TEXT = 127  # llama.cpp's key and string fields hold 128 bytes with the terminating zero
_TAGS = {"int": llama_cpp.LLAMA_KV_OVERRIDE_TYPE_INT, "float": llama_cpp.LLAMA_KV_OVERRIDE_TYPE_FLOAT,
         "bool": llama_cpp.LLAMA_KV_OVERRIDE_TYPE_BOOL, "str": llama_cpp.LLAMA_KV_OVERRIDE_TYPE_STR}


def parse(text: str) -> list[KvOverride]:
    """``KEY=TYPE:VALUE,...``; ValueError naming what is wrong."""
    out = []
    for item in text.split(","):
        key, eq, typed = item.partition("=")
        kind, colon, raw = typed.partition(":")
        if not eq or not key or not colon:
            raise ValueError(f"{item!r} is not KEY=TYPE:VALUE")
        if len(key.encode()) > MAX_TEXT:
            raise ValueError(f"the key of {item!r} is longer than {MAX_TEXT} bytes")
        value: int | float | bool | str
        if kind in ("int", "float"):
            try:
                value = int(raw) if kind == "int" else float(raw)
            except ValueError:
                raise ValueError(f"{item!r}: {raw!r} is not {'an int' if kind == 'int' else 'a float'}") from None
        elif kind == "bool" and raw in ("true", "false"):
            value = raw == "true"
        elif kind == "str" and len(raw.encode()) <= MAX_TEXT:
            value = raw
        else:
            raise ValueError(f"{item!r}: the type is int, float, bool (true / false) or str (at most "
                             f"{MAX_TEXT} bytes)")
        out.append(KvOverride(key, kind, value))
    return out


def apply(overrides: list[KvOverride], params: llama_cpp.llama_model_params) -> ctypes.Array | None:
    """Point ``params`` at the overrides; the array returned must outlive the model's load."""
    if not overrides:
        return None
    array = (llama_cpp.llama_model_kv_override * (len(overrides) + 1))()  # a zeroed entry ends it
    for entry, o in zip(array, overrides):
        entry.tag, entry.key = _TAGS[o.type], o.key.encode()
        if o.type == "str":
            entry.value.val_str = str(o.value).encode()
        elif o.type == "float":
            entry.value.val_f64 = float(o.value)
        elif o.type == "bool":
            entry.value.val_bool = bool(o.value)
        else:
            entry.value.val_i64 = int(o.value)
    params.kv_overrides = array
    return array
