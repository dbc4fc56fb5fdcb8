"""What a model will take in memory once loaded, estimated from its GGUF before loading it.

Router mode's ``--models-memory`` budget compares this estimate, not measurements: a model must
be judged before its engine starts, and the page cache makes the resident size of an mmapped
model a poor measure anyway. The estimate is

    weights + executors x (KV cache + logits buffer)

  - weights: the size of the GGUF file(s) (every shard of a split). On CPU the weights are
    mmapped and shared by the executors of one model, so they count once;
  - KV cache per executor: ``-c`` cells x layers x KV heads x (key + value head size) x the bytes
    per element of ``-ctk`` / ``-ctv`` (2 for f16, 34/32 for q8_0, ...), from the GGUF's
    ``{arch}.block_count``, ``attention.head_count_kv`` (one number, or one per layer),
    ``attention.key_length`` / ``value_length``. It is an upper bound: sliding-window layers
    (Gemma 3, whose pattern the GGUF does not record) hold fewer cells once ``-c`` exceeds
    window x slots + batch, and recurrent state (Mamba) is not counted;
  - logits per executor: llama.cpp reserves one float32 row of the vocabulary per sequence
    (``-np`` x n_vocab x 4 bytes; an embedding server: one row of n_embd).

Not counted: llama.cpp's compute buffers (about 22 MiB for Gemma 3 270M at batch 512; they grow
with ``-ub`` and the model's width), and the Python processes themselves (~100-200 MiB each). For
the embedded model at ``-c 512 -np 2`` the KV and logits terms match llama.cpp's own figures.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ggserve.config import ServeConfig
from ggserve.models.gguf_meta import GGUFError, GGUFMetadata, read_metadata
from ggserve.models.sources import SPLIT_NAME

MIB = 2**20
# bytes per element of the KV cache types (-ctk, -ctv): block size over block bytes for quantised ones
KV_TYPE_BYTES = {"f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32, "q4_1": 20 / 32,
                 "q5_0": 22 / 32, "q5_1": 24 / 32, "iq4_nl": 18 / 32}


@dataclass(frozen=True)
class MemoryEstimate:
    weights_bytes: int
    kv_bytes: int  # per executor
    output_bytes: int  # per executor
    executors: int

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.executors * (self.kv_bytes + self.output_bytes)

    def describe(self) -> str:
        return (f"{self.total_bytes / MIB:.0f} MiB: weights {self.weights_bytes / MIB:.0f} MiB + {self.executors} "
                f"executor(s) x (KV {self.kv_bytes / MIB:.1f} MiB + logits {self.output_bytes / MIB:.1f} MiB)")


def model_files(path: str) -> list[str]:
    """The file of a model, or every shard of a split given its first."""
    split = SPLIT_NAME.match(os.path.basename(path))
    if split is None:
        return [path]
    directory, count = os.path.dirname(path), int(split["count"])
    return [os.path.join(directory, f"{split['stem']}-{i:05d}-of-{count:05d}.gguf") for i in range(1, count + 1)]


def estimate_memory(cfg: ServeConfig) -> MemoryEstimate:
    """The estimate of the module docstring for the model ``cfg.model`` served as ``cfg`` says.
    A file whose header cannot be read counts its size only: llama.cpp will refuse to load it."""
    weights = sum(os.path.getsize(f) for f in model_files(cfg.model) if os.path.exists(f))
    try:
        meta = read_metadata(cfg.model)
    except GGUFError:
        return MemoryEstimate(weights, 0, 0, cfg.executors)
    return MemoryEstimate(weights, _kv_bytes(meta, cfg), _output_bytes(meta, cfg), cfg.executors)


def _kv_bytes(meta: GGUFMetadata, cfg: ServeConfig) -> int:
    n_layer = int(meta.arch_value("block_count", 0))
    n_embd = int(meta.arch_value("embedding_length", 0))
    heads = meta.arch_value("attention.head_count", 0)
    n_head_kv = _per_layer(meta.arch_value("attention.head_count_kv", heads), n_layer)  # no GQA: as many as heads
    n_head_max = max(_per_layer(heads, n_layer), default=0)
    default_head = n_embd // n_head_max if n_head_max else 0  # head size when the GGUF does not say
    key = int(meta.arch_value("attention.key_length", default_head))
    value = int(meta.arch_value("attention.value_length", default_head))
    per_cell = sum(heads * (key * KV_TYPE_BYTES[cfg.cache_type_k] + value * KV_TYPE_BYTES[cfg.cache_type_v])
                   for heads in n_head_kv)
    return int(cfg.ctx_size * per_cell)


def _per_layer(value: int | list[int], n_layer: int) -> list[int]:
    """A hyperparameter given once for every layer, or per layer (a list)."""
    return [int(v) for v in value] if isinstance(value, list) else [int(value)] * n_layer


def _output_bytes(meta: GGUFMetadata, cfg: ServeConfig) -> int:
    if cfg.embeddings:
        row = int(meta.arch_value("embedding_length", 0))
    else:
        row = int(meta.arch_value("vocab_size", meta.array_lengths.get("tokenizer.ggml.tokens", 0)))
    return cfg.n_parallel * row * 4
