"""A small stand-in for a GGUF model, for benchmarking where its weights cannot be copied.

``pack`` keeps the file's header (metadata, tokenizer, tensor infos) and the first rows of each
tensor, xz-compressed: the embedded Gemma 3 270M (253 MB) packs into 2.3 MB. ``unpack`` writes a
GGUF of the original's exact layout, each tensor's bytes repeated from its sampled rows, and the
quants of a large Q8_0 tensor (the token embeddings, tied to the output layer) drawn at random:
repeated rows would tie whole classes of tokens and greedy decoding would only ever pick the
first (control) tokens. Shapes, types and so the kernels and the work per token are the real
model's; the text it writes is noise. It served the GPU runs in docs/benchmarks.md, whose machine
receives at most 64 MiB per call.

    python -m bench.micro.gguf_standin pack model.gguf standin.xz
    python -m bench.micro.gguf_standin unpack standin.xz model-standin.gguf
"""

from __future__ import annotations

import argparse
import json
import lzma
import struct
from pathlib import Path

import numpy as np

SAMPLE_BYTES = 8 * 1024  # per tensor: whole rows up to this size (at least one row)
Q8_0_BLOCK = 34  # bytes: an fp16 scale, then 32 int8 quants
RANDOM_ABOVE = 1 << 26  # bytes: a Q8_0 tensor this large gets random quants (the token embeddings)


def pack(src: str, dst: str) -> None:
    import gguf  # the test extra; the server never needs it

    reader = gguf.GGUFReader(src)
    raw = Path(src).read_bytes()
    tensors = sorted(reader.tensors, key=lambda t: t.data_offset)
    data_start = tensors[0].data_offset
    layout, samples = [], []
    for t in tensors:
        rows = max(1, int(t.n_elements) // int(t.shape[0]))
        row_bytes = int(t.n_bytes) // rows
        sample = max(1, min(rows, SAMPLE_BYTES // row_bytes)) * row_bytes
        samples.append(raw[t.data_offset : t.data_offset + sample])
        layout.append([t.data_offset - data_start, int(t.n_bytes), sample, t.tensor_type.name])
    end = max(t.data_offset + int(t.n_bytes) for t in tensors) - data_start
    head = json.dumps({"header": data_start, "end": end, "tensors": layout}).encode()
    with lzma.open(dst, "wb", preset=9) as out:
        out.write(struct.pack("<Q", len(head)) + head + raw[:data_start] + b"".join(samples))


def unpack(src: str, dst: str) -> None:
    with lzma.open(src, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    info = json.loads(data[8 : 8 + n])
    pos = 8 + n
    header = info["header"]
    out = bytearray(header + info["end"])
    out[:header] = data[pos : pos + header]
    pos += header
    rng = np.random.default_rng(0)
    for offset, size, sample_bytes, kind in info["tensors"]:
        sample = data[pos : pos + sample_bytes]
        pos += sample_bytes
        start = header + offset
        out[start : start + size] = (sample * -(-size // sample_bytes))[:size]
        if kind == "Q8_0" and size > RANDOM_ABOVE:
            blocks = np.frombuffer(out, np.uint8, size, start).reshape(-1, Q8_0_BLOCK)
            blocks[:, 2:] = rng.integers(0, 256, (len(blocks), Q8_0_BLOCK - 2), dtype=np.uint8)
    Path(dst).write_bytes(out)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.micro.gguf_standin", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["pack", "unpack"])
    parser.add_argument("src")
    parser.add_argument("dst")
    args = parser.parse_args()
    (pack if args.action == "pack" else unpack)(args.src, args.dst)


if __name__ == "__main__":
    main()
