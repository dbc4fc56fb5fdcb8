"""Small LoRA adapters for the embedded Gemma 3 270M, written with the ``gguf`` package.

llama.cpp (src/llama-adapter.cpp) loads a GGUF with ``general.type = adapter``,
``adapter.type = lora``, the base model's ``general.architecture``, ``adapter.lora.alpha``, and a
pair of tensors per adapted weight W of shape (ne0 = n_in, ne1 = n_out): ``W.lora_a`` with
ne = (n_in, rank) and ``W.lora_b`` with ne = (rank, n_out). The delta ``B @ A`` is scaled by
scale * alpha / rank. Values are random (seeded) and large enough to move the logits by several
nats: the tests only need "another function of the prompt", not a useful fine-tune.
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np

RANK = 8
ALPHA = 8.0
TARGETS = ("attn_q", "attn_v", "ffn_up")  # adapted weights of the blocks from FIRST_BLOCK on
# Only the last third of the 18 blocks: float rounding that differs between batch shapes enters
# the adapted path, and fewer blocks after it amplify it less (adapting every block moved a
# token's log-probability by up to 1.5 nats between shapes; these by up to 0.3, while the
# adapter still moves the top candidates by up to ~14 nats).
FIRST_BLOCK = 12
STD = 0.1  # of A and B entries


def write_adapter(base_model: str, path: Path, seed: int, task_name: str = "", wrong_shape: bool = False) -> Path:
    """Write a LoRA adapter for ``base_model`` at ``path`` (kept if already there).

    ``wrong_shape``: the tensors do not match the base model (as an adapter made for another
    model of the same architecture would not).
    """
    if path.exists():
        return path
    reader = gguf.GGUFReader(base_model)
    arch = bytes(reader.fields["general.architecture"].parts[-1]).decode()
    shapes = {t.name: [int(n) for n in t.shape] for t in reader.tensors}
    rng = np.random.default_rng(seed)
    tmp = path.with_suffix(".tmp")
    writer = gguf.GGUFWriter(str(tmp), arch)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, ALPHA)
    if task_name:
        writer.add_string(gguf.Keys.Adapter.LORA_TASK_NAME, task_name)
    for name, (n_in, n_out) in ((n, s) for n, s in shapes.items() if _adapted(n)):
        if wrong_shape:
            n_in += 1
        # numpy shapes are ggml's ne reversed
        writer.add_tensor(f"{name}.lora_a", rng.normal(0, STD, (RANK, n_in)).astype(np.float32))
        writer.add_tensor(f"{name}.lora_b", rng.normal(0, STD, (n_out, RANK)).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.rename(path)
    return path


def _adapted(name: str) -> bool:
    parts = name.split(".")
    return (len(parts) == 4 and parts[0] == "blk" and int(parts[1]) >= FIRST_BLOCK and parts[2] in TARGETS
            and parts[3] == "weight")
