"""A GGUF file's metadata (the key-value header), read without llama.cpp.

The launcher needs a few facts of a model before loading it (its layer count and KV heads for a
memory estimate) and must not load llama.cpp itself for that. The header is: magic ``GGUF``,
version (2 or 3), tensor count, key-value count, then each pair as a string key, a type tag and
the value (little-endian). Arrays of numbers are kept when short (per-layer values such as
``head_count_kv``); long arrays and arrays of strings (the vocabulary) are skipped, only their
length kept.
"""

from __future__ import annotations

import math
import mmap
import struct
from dataclasses import dataclass, field
from typing import Any

MAGIC = b"GGUF"
MAX_KEPT_ARRAY = 4096  # number arrays up to this length are read (per-layer values); longer ones skipped

# GGUF value types -> struct format of one scalar (8: string, 9: array)
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


class GGUFError(ValueError):
    """Not a GGUF file this reader understands; the message says why."""


class DamagedGGUF(GGUFError):
    """A file llama.cpp cannot load either: truncated, or of a GGUF version it does not read."""


@dataclass
class GGUFMetadata:
    values: dict[str, Any] = field(default_factory=dict)  # key -> scalar, string or short number list
    array_lengths: dict[str, int] = field(default_factory=dict)  # every array's length, kept or skipped
    data_end: int = 0  # the file size the tensors' data needs

    @property
    def architecture(self) -> str:
        return str(self.values.get("general.architecture", ""))

    def arch_value(self, name: str, default: Any = None) -> Any:
        """``{architecture}.{name}`` (e.g. ``block_count``)."""
        return self.values.get(f"{self.architecture}.{name}", default)


# ggml tensor types -> (values per block, bytes per block), to know where a tensor's data ends
TYPE_SIZES = {0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34), 9: (32, 40),
              10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176), 14: (256, 210), 15: (256, 292),
              16: (256, 66), 17: (256, 74), 18: (256, 98), 19: (256, 50), 20: (32, 18), 21: (256, 110),
              22: (256, 82), 23: (256, 136), 24: (1, 1), 25: (1, 2), 26: (1, 4), 27: (1, 8), 28: (1, 8),
              29: (256, 56), 30: (1, 2), 34: (256, 54), 35: (256, 66), 39: (32, 17)}


class _Reader:
    def __init__(self, data: mmap.mmap, path: str) -> None:
        self.data = data
        self.path = path
        self.pos = 0

    def scalar(self, fmt: str) -> Any:
        (value,) = self.scalars(fmt)
        return value

    def scalars(self, fmt: str) -> tuple[Any, ...]:
        try:
            values = struct.unpack_from(fmt, self.data, self.pos)
        except struct.error:
            raise DamagedGGUF(f"{self.path}: truncated GGUF header") from None
        self.pos += struct.calcsize(fmt)
        return values

    def data_end(self, n_tensors: int, alignment: int) -> int:
        """From the tensor infos: where the last tensor's data ends (a type of unknown size
        counts to its start)."""
        end = 0
        for _ in range(n_tensors):
            self.skip_strings(1)  # the name
            dims = self.scalars(f"<{self.scalar('<I')}Q")
            kind, offset = self.scalars("<IQ")
            per_block, block_bytes = TYPE_SIZES.get(kind, (1, 0))
            end = max(end, offset + math.prod(dims) // per_block * block_bytes)
        return -(-self.pos // alignment) * alignment + end

    def string(self) -> str:
        size = self.scalar("<Q")
        if self.pos + size > len(self.data):
            raise DamagedGGUF(f"{self.path}: truncated GGUF header")
        text = self.data[self.pos:self.pos + size].decode("utf-8", errors="replace")
        self.pos += size
        return text

    def skip_strings(self, count: int) -> None:
        for _ in range(count):
            size = self.scalar("<Q")  # read first: it moves pos past the length
            self.pos += size

    def value(self, kind: int, key: str, meta: GGUFMetadata) -> Any:
        if kind in _SCALARS:
            return self.scalar(_SCALARS[kind])
        if kind == _STRING:
            return self.string()
        if kind != _ARRAY:
            raise GGUFError(f"{self.path}: unknown value type {kind} for {key}")
        item, count = self.scalar("<I"), self.scalar("<Q")
        meta.array_lengths[key] = count
        if item in _SCALARS:
            fmt = _SCALARS[item]
            if count <= MAX_KEPT_ARRAY:
                return list(self.scalars(f"<{count}{fmt[1]}"))
            self.pos += count * struct.calcsize(fmt)
            return None
        if item == _STRING:
            self.skip_strings(count)
            return None
        raise GGUFError(f"{self.path}: arrays of type {item} ({key}) are not read")


def read_metadata(path: str) -> GGUFMetadata:
    """The metadata of a GGUF file (the first shard of a split holds it)."""
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            if data[:4] != MAGIC:
                raise GGUFError(f"{path}: not a GGUF file")
            reader = _Reader(data, path)
            reader.pos = 4
            version = reader.scalar("<I")
            if version not in (2, 3):
                raise DamagedGGUF(f"{path}: GGUF version {version} is not supported")
            n_tensors = reader.scalar("<Q")
            meta = GGUFMetadata()
            for _ in range(reader.scalar("<Q")):
                key = reader.string()
                kind = reader.scalar("<I")
                value = reader.value(kind, key, meta)
                if value is not None:
                    meta.values[key] = value
            alignment = meta.values.get("general.alignment", 32)
            if not isinstance(alignment, int) or alignment <= 0:
                raise DamagedGGUF(f"{path}: general.alignment is {alignment!r}")
            meta.data_end = reader.data_end(n_tensors, alignment)
            if meta.data_end > len(data):
                raise DamagedGGUF(f"{path}: the file ends at byte {len(data):,}, before its tensors' data does "
                                  f"(at byte {meta.data_end:,})")
            return meta
    except GGUFError:
        raise
    except (OSError, ValueError) as exc:  # mmap of an empty file is a ValueError
        raise GGUFError(f"{path}: {exc}") from None
