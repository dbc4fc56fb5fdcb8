"""Tiny GGUF models for tests, written with the ``gguf`` package and cached on disk.

``tiny_llama()`` is a llama-architecture model with random (seeded) weights and the embedded
Gemma 3 model's tokenizer (its ``tokenizer.ggml.*`` metadata copied), so the frontend tokenizes
and detokenizes real text. It is meant for what the embedded model cannot do: its KV cache can
shift positions (``llama_memory_can_shift``: no sliding window), and a one-layer model makes a
shifted cache exactly what a fresh prefill of the same tokens computes (the keys and values of
the only layer depend on the token and its position alone), so tests can compare the two.

The weights are scaled so greedy text is neither a run of near-ties nor one token repeated:
embeddings and output rows of unit variance (an output tied to the embeddings would predict the
token it just read), projections of variance 1 / fan-in, value and output projections
``attn_gain`` times larger and query and key projections ``qk_gain`` times larger, so attention
picks out tokens of the context and the context, not only the last token, picks the next one
(dropping one token of a 40-token context changes the next greedy token about half the time). Two
262k x 64 f16 matrices make the file 64 MiB.

Files are cached under ``~/.cache/ggserve-tests`` (``GGSERVE_TEST_CACHE`` overrides) with the
spec in the name, written to a temporary file and renamed, so parallel test sessions share them.
Writing one takes a few seconds. Use::

    from tiny_models import tiny_llama
    path = tiny_llama()             # one layer, 64 wide: ``ggserve serve -m path`` serves it
    path = tiny_llama(n_layer=2)    # any LlamaSpec field; each spec is its own cached file

``write_llama(path, spec, tokenizer_from)`` writes one anywhere, with any GGUF's tokenizer.
"""

from __future__ import annotations

import functools
import hashlib
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import gguf
import numpy as np

from frontend_support import gemma_path


@dataclass(frozen=True)
class LlamaSpec:
    n_layer: int = 1
    n_embd: int = 64
    n_head: int = 4
    n_head_kv: int = 2
    n_ff: int = 128
    n_ctx_train: int = 4096
    seed: int = 0
    attn_gain: float = 4.0  # scale of the value and output projections: what attention adds to each token
    qk_gain: float = 3.0  # scale of the query and key projections: how sharply attention picks tokens

    @property
    def key(self) -> str:
        return hashlib.sha256(repr(sorted(asdict(self).items())).encode()).hexdigest()[:12]


def cache_dir() -> Path:
    path = Path(os.environ.get("GGSERVE_TEST_CACHE", Path.home() / ".cache" / "ggserve-tests"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@functools.cache
def tiny_llama(**spec: float) -> str:
    """Path of the tiny llama model of ``spec`` (see LlamaSpec), written the first time."""
    return _tiny("llama", LlamaSpec(**spec))


@functools.cache
def tiny_qwen2vl(**spec: float) -> str:
    """The tiny model of ``spec`` as a Qwen2-VL text model (``qwen2vl``: M-RoPE positions)."""
    return _tiny("qwen2vl", LlamaSpec(**spec))


def _tiny(arch: str, s: LlamaSpec) -> str:
    target = cache_dir() / f"tiny-{arch}-{s.key}.gguf"
    if not target.exists():
        fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".part")
        os.close(fd)
        try:
            write_llama(tmp, s, gemma_path(), arch)
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return str(target)


def mrope_sections(head_dim: int) -> list[int]:
    """Rotary pairs per M-RoPE section (time, height, width, unused), in Qwen2-VL's proportions
    (16, 24, 24 of a 128-wide head's 64 pairs)."""
    pairs = head_dim // 2
    time = pairs // 4
    return [time, (pairs - time) // 2, pairs - time - (pairs - time) // 2, 0]


def write_llama(path: str, spec: LlamaSpec, tokenizer_from: str, arch: str = "llama") -> None:
    """Write a llama-architecture GGUF of ``spec`` with the tokenizer of the GGUF ``tokenizer_from``.
    ``arch="qwen2vl"``: the same decoder with Qwen2-VL's M-RoPE (its rope sections; the tensors
    are llama's, Qwen2's q/k/v biases being optional)."""
    reader = gguf.GGUFReader(tokenizer_from)
    tokens = reader.fields["tokenizer.ggml.tokens"].contents()
    writer = gguf.GGUFWriter(path, arch)
    writer.add_name(f"tiny-{arch}-{spec.n_layer}L-{spec.n_embd}")
    writer.add_context_length(spec.n_ctx_train)
    writer.add_embedding_length(spec.n_embd)
    writer.add_block_count(spec.n_layer)
    writer.add_feed_forward_length(spec.n_ff)
    writer.add_head_count(spec.n_head)
    writer.add_head_count_kv(spec.n_head_kv)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(spec.n_embd // spec.n_head)
    if arch == "qwen2vl":
        writer.add_rope_dimension_sections(mrope_sections(spec.n_embd // spec.n_head))
    writer.add_vocab_size(len(tokens))
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    _copy_tokenizer(reader, writer)

    rng = np.random.default_rng(spec.seed)
    head_dim = spec.n_embd // spec.n_head
    n_kv = spec.n_head_kv * head_dim

    def matrix(n_out: int, n_in: int) -> np.ndarray:  # llama.cpp's layout: rows of n_in values
        return (rng.standard_normal((n_out, n_in)) / np.sqrt(n_in)).astype(np.float16)

    writer.add_tensor("token_embd.weight", rng.standard_normal((len(tokens), spec.n_embd)).astype(np.float16))
    writer.add_tensor("output_norm.weight", np.ones(spec.n_embd, dtype=np.float32))
    writer.add_tensor("output.weight", rng.standard_normal((len(tokens), spec.n_embd)).astype(np.float16))
    for i in range(spec.n_layer):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(spec.n_embd, dtype=np.float32))
        writer.add_tensor(f"blk.{i}.attn_q.weight", spec.qk_gain * matrix(spec.n_embd, spec.n_embd))
        writer.add_tensor(f"blk.{i}.attn_k.weight", spec.qk_gain * matrix(n_kv, spec.n_embd))
        writer.add_tensor(f"blk.{i}.attn_v.weight", spec.attn_gain * matrix(n_kv, spec.n_embd))
        writer.add_tensor(f"blk.{i}.attn_output.weight", spec.attn_gain * matrix(spec.n_embd, spec.n_embd))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(spec.n_embd, dtype=np.float32))
        writer.add_tensor(f"blk.{i}.ffn_gate.weight", matrix(spec.n_ff, spec.n_embd))
        writer.add_tensor(f"blk.{i}.ffn_up.weight", matrix(spec.n_ff, spec.n_embd))
        writer.add_tensor(f"blk.{i}.ffn_down.weight", matrix(spec.n_embd, spec.n_ff))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _copy_tokenizer(reader: gguf.GGUFReader, writer: gguf.GGUFWriter) -> None:
    """Every ``tokenizer.ggml.*`` key of ``reader``, with its type."""
    for name, field in reader.fields.items():
        if not name.startswith("tokenizer.ggml."):
            continue
        value_type = field.types[0]
        if value_type == gguf.GGUFValueType.ARRAY:
            writer.add_key_value(name, field.contents(), value_type, sub_type=field.types[-1])
        else:
            writer.add_key_value(name, field.contents(), value_type)
