"""bench.micro.gguf_standin: the stand-in of the embedded model keeps its layout, loads in llama.cpp,
and decodes ordinary (not control) tokens; it is a small fraction of the model's size."""

from __future__ import annotations

from pathlib import Path

import gguf
import llama_cpp
import numpy as np

from bench.cli import default_model_path
from bench.micro.gguf_standin import pack, unpack


def _greedy(path: Path, n: int) -> tuple[list[int], list[bool]]:
    """n greedy tokens after a short prompt, and whether each is a control token."""
    mparams = llama_cpp.llama_model_default_params()
    model = llama_cpp.llama_model_load_from_file(str(path).encode(), mparams)
    cparams = llama_cpp.llama_context_default_params()
    cparams.n_ctx, cparams.n_threads, cparams.n_threads_batch = 128, 2, 2
    ctx = llama_cpp.llama_init_from_model(model, cparams)
    vocab = llama_cpp.llama_model_get_vocab(model)
    n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)
    tokens, out = [2, 818, 5279, 529], []
    try:
        for _ in range(n):
            arr = (llama_cpp.llama_token * len(tokens))(*tokens)
            assert llama_cpp.llama_decode(ctx, llama_cpp.llama_batch_get_one(arr, len(tokens))) == 0
            logits = llama_cpp.llama_get_logits_ith(ctx, -1)
            best = int(np.ctypeslib.as_array(logits, shape=(n_vocab,)).argmax())
            out.append(best)
            tokens = [best]
        controls = [bool(llama_cpp.llama_vocab_is_control(vocab, t)) for t in out]
    finally:
        llama_cpp.llama_free(ctx)
        llama_cpp.llama_model_free(model)
    return out, controls


def test_a_packed_model_unpacks_to_its_layout_and_decodes_ordinary_tokens(tmp_path: Path) -> None:
    model = Path(default_model_path())
    packed, standin = tmp_path / "standin.xz", tmp_path / "standin.gguf"
    pack(str(model), str(packed))
    assert packed.stat().st_size < model.stat().st_size / 50
    unpack(str(packed), str(standin))
    assert standin.stat().st_size == model.stat().st_size
    real, fake = gguf.GGUFReader(model), gguf.GGUFReader(standin)
    assert list(real.fields) == list(fake.fields)  # metadata and tokenizer
    assert [(t.name, t.tensor_type, list(t.shape), t.data_offset) for t in real.tensors] == [
        (t.name, t.tensor_type, list(t.shape), t.data_offset) for t in fake.tensors]
    tokens, controls = _greedy(standin, 6)
    assert tokens == _greedy(standin, 6)[0]  # deterministic
    assert not any(controls) and len(set(tokens)) > 1  # random embeddings: tokens that differ
