"""A llama_batch whose arrays are numpy buffers, so a step fills it with slice assignments.

llama_batch_init allocates one seq_id array per token, which forces a Python loop per token; here
all seq ids live in one contiguous int32 buffer and the pointer table is built once.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass, field

import llama_cpp
import numpy as np

from ipc.protocol import BatchItem


class NoKvRoom(Exception):
    """llama_decode returned 1: no KV cells for the batch; the cache is left as it was."""


class BatchError(ValueError):
    """The plan's batch cannot be decoded (llama.cpp would abort or reject it)."""


@dataclass
class BatchLayout:
    """Where the outputs of a filled batch are: llama.cpp returns one logits row per flagged
    token, in batch order."""

    n_outputs: int = 0
    sample_batch_rows: list[int] = field(default_factory=list)  # batch index of each sample
    sample_out_rows: list[int] = field(default_factory=list)  # its logits row
    # items with a draft (not in the sample lists): (batch index, logits row) of their first of
    # draft + 1 sampled positions
    drafts: list[tuple[int, int]] = field(default_factory=list)
    spans: list[tuple[int, int, list[int]]] = field(default_factory=list)  # (seq, first row, targets)


class NumpyBatch:
    """Token ids, or embeddings of ``n_embd`` (media) with ``n_pos`` positions each (M-RoPE: 4,
    section-major as llama_batch wants them)."""

    def __init__(self, capacity: int, n_embd: int = 0, n_pos: int = 1) -> None:
        self.capacity = capacity
        self.token = np.zeros(capacity, dtype=np.int32)
        self.embd = np.zeros((capacity, n_embd), dtype=np.float32)
        self.pos = np.zeros(capacity * n_pos, dtype=np.int32)
        self.n_seq_id = np.ones(capacity, dtype=np.int32)
        self.seq_id = np.zeros(capacity, dtype=np.int32)
        self.logits = np.zeros(capacity, dtype=np.int8)
        int32_p = ctypes.POINTER(ctypes.c_int32)
        base = self.seq_id.ctypes.data
        self._seq_ptrs = (int32_p * capacity)(
            *(ctypes.cast(base + 4 * i, int32_p) for i in range(capacity))
        )
        self.struct = llama_cpp.llama_batch()
        self.struct.token = self.token.ctypes.data_as(int32_p) if not n_embd else int32_p()
        self.struct.embd = (self.embd.ctypes.data_as(ctypes.POINTER(ctypes.c_float)) if n_embd
                            else ctypes.POINTER(ctypes.c_float)())
        self.struct.pos = self.pos.ctypes.data_as(int32_p)
        self.struct.n_seq_id = self.n_seq_id.ctypes.data_as(int32_p)
        self.struct.seq_id = self._seq_ptrs
        self.struct.logits = self.logits.ctypes.data_as(ctypes.POINTER(ctypes.c_int8))

    def fill(self, items: list[BatchItem], first_pos: list[int] | None = None) -> BatchLayout:
        """Lay the items out in order and flag the tokens whose logits are needed. The items
        have passed ``item_problem``. ``first_pos``: llama.cpp's position of each item's first
        token where it is not ``item.pos`` (executor.media.positions).

        Each array is written once, from a list (a decode step is one token per item: numpy slice
        assignments per item cost several times more, most of the executor's work before the
        decode)."""
        lengths = [len(item.token_ids) for item in items]
        n = sum(lengths)
        if n > self.capacity:
            raise BatchError(f"batch of more than {self.capacity} tokens")
        firsts = first_pos if first_pos is not None else [item.pos for item in items]
        tokens: list[int] = []
        seq_ids: list[int] = []
        positions: list[int] = []
        flagged: list[int] = []  # the output rows
        layout = BatchLayout()
        start = 0
        for item, first, k in zip(items, firsts, lengths):
            end = start + k
            tokens += item.token_ids
            seq_ids += [item.seq_id] * k
            positions += range(first, first + k)
            n_targets = len(item.logprob_targets)
            if n_targets:
                flagged += range(start, start + n_targets)
                layout.spans.append((item.seq_id, layout.n_outputs, item.logprob_targets))
                layout.n_outputs += n_targets
            if item.draft:
                flagged += range(end - item.draft - 1, end)
                layout.drafts.append((end - item.draft - 1, layout.n_outputs))
                layout.n_outputs += item.draft + 1
            elif item.sample:
                if n_targets < k:  # the last token is not already an output row
                    flagged.append(end - 1)
                    layout.n_outputs += 1
                layout.sample_batch_rows.append(end - 1)
                layout.sample_out_rows.append(layout.n_outputs - 1)
            start = end
        self.token[:n] = tokens
        self.seq_id[:n] = seq_ids
        self.pos[:n] = positions
        self.logits[:n] = 0
        self.logits[flagged] = 1
        self.struct.n_tokens = n
        return layout

    def fill_whole(self, sequences: list[tuple[int, list[int]]]) -> None:
        """Lay out whole inputs (seq id, tokens from position 0), every token an output: pooled
        embeddings need them all. The caller has checked ids and capacity."""
        n = 0
        for seq_id, tokens in sequences:
            end = n + len(tokens)
            self.token[n:end] = tokens
            self.pos[n:end] = np.arange(len(tokens), dtype=np.int32)
            self.seq_id[n:end] = seq_id
            n = end
        self.logits[:n] = 1
        self.struct.n_tokens = n

    def fill_embeddings(self, seq_id: int, embd: np.ndarray, positions: np.ndarray) -> None:
        """One media chunk's embeddings (n x n_embd) at ``positions`` (n_pos x n), no outputs.
        The caller has checked n against the capacity."""
        n = len(embd)
        self.embd[:n] = embd
        n_pos = len(self.pos) // self.capacity
        self.pos[: n_pos * n] = positions.reshape(-1)  # section-major for this n
        self.seq_id[:n] = seq_id
        self.logits[:n] = 0
        self.struct.n_tokens = n


def item_problem(item: BatchItem, n_vocab: int, n_seq_max: int) -> str | None:
    """Why llama.cpp could not decode this item (it would abort or reject it), or None."""
    k = len(item.token_ids)
    if k == 0:
        return f"empty item for sequence {item.seq_id}"
    if not 0 <= item.seq_id < n_seq_max:
        return f"sequence id {item.seq_id} out of range"
    if item.pos < 0:
        return f"negative position {item.pos} for sequence {item.seq_id}"
    if item.draft and not (0 < item.draft < k and item.sample and not item.logprob_targets):
        return f"invalid draft of {item.draft} tokens for sequence {item.seq_id}"
    if item.draft_model and not (item.draft_model > 0 and k == 1 and item.sample and not item.draft
                                 and not item.logprob_targets):
        return f"invalid draft request of {item.draft_model} tokens for sequence {item.seq_id}"
    if len(item.logprob_targets) > k:
        return f"more logprob targets than tokens for sequence {item.seq_id}"
    if min(item.token_ids) < 0 or max(item.token_ids) >= n_vocab:
        return f"token id out of the vocabulary for sequence {item.seq_id}"
    if item.logprob_targets and (min(item.logprob_targets) < 0 or max(item.logprob_targets) >= n_vocab):
        return f"logprob target out of the vocabulary for sequence {item.seq_id}"
    return None
