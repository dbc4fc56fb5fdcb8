"""Speculative decoding with a draft model (``-md``): a second llama_context in the executor.

The scheduler asks for up to k draft tokens for a sequence (BatchItem.draft_model). Before the
step's decode this module makes them: the draft context decodes the sequence's pending token and
then its own greedy picks, one batched ``llama_decode`` per draft position for every drafting
sequence at once, stopping a sequence early where its pick's probability is below its p_min.
The executor then verifies the draft in the target's decode like any other (BatchItem.draft).

The draft's KV cache follows the target's lazily, by tokens: ``SeqTokens`` mirrors the token ids
each target sequence holds (from the plans' items and KV edits), and before drafting, a
sequence's draft cells are cut to the longest prefix they share with the target's and the rest
is decoded. So a prompt reaches the draft model at its request's first draft; a prefix copied
between sequences, restored from host memory or a file, or moved by a context shift is
recomputed by the draft when it next drafts; a sequence that never drafts costs it nothing.
"""

from __future__ import annotations

import logging
import time

import llama_cpp
import numpy as np

from executor.batch import NumpyBatch
from executor.model import tensor_overrides
from executor.model.params import context_params, model_params
from executor.sampling.sequence import logits_view
from executor.model.threadpool import ExecutorThreads
from ggserve.config import ServeConfig
from ggserve.tokens import common_prefix_len
from ipc.protocol import BatchItem, KvOp, KvOpKind

log = logging.getLogger("executor")


class SeqTokens:
    """The token ids every target sequence holds, by position; None where unknown (the
    sequence then drafts nothing until it is cleared)."""

    def __init__(self, n_seq: int) -> None:
        self.tokens: list[list[int] | None] = [[] for _ in range(n_seq)]
        self._host: dict[int, list[int] | None] = {}  # --cache-ram entries

    def apply(self, op: KvOp) -> None:
        seq, kind = op.seq_id, op.kind
        held = self.tokens[seq] if 0 <= seq < len(self.tokens) else None
        if kind == KvOpKind.CLEAR:
            self.tokens[seq] = []
        elif kind == KvOpKind.TRUNCATE and held is not None:
            del held[op.pos :]
        elif kind == KvOpKind.COPY:
            src = self.tokens[op.src_seq_id]
            self.tokens[seq] = src[: op.pos] if src is not None and len(src) >= op.pos else None
        elif kind == KvOpKind.SHIFT and held is not None:
            del held[op.pos : op.pos + op.n_discard]
        elif kind == KvOpKind.SAVE:
            self._host[op.entry_id] = list(held) if held is not None else None
        elif kind == KvOpKind.DROP:
            self._host.pop(op.entry_id, None)
        elif kind == KvOpKind.RESTORE:
            entry = self._host.get(op.entry_id)
            self.tokens[seq] = list(entry) if entry is not None else None

    def set(self, seq: int, tokens: list[int]) -> None:
        self.tokens[seq] = list(tokens)

    def write(self, item: BatchItem) -> None:
        """The item's tokens are now at its positions."""
        held = self.tokens[item.seq_id]
        if held is None or item.pos > len(held):
            self.tokens[item.seq_id] = None
            return
        del held[item.pos :]
        held.extend(item.token_ids)


class DraftModel:
    """The draft model's context; ``held[seq]``: the tokens its cache holds for the sequence."""

    def __init__(self, cfg: ServeConfig, n_vocab: int, n_seq_max: int, threads: ExecutorThreads) -> None:
        mparams = model_params(cfg, draft=True)
        # referenced until the load returns
        tensors = tensor_overrides.apply(cfg.spec_draft_tensor_overrides, mparams, "--override-tensor-draft")
        log.info("loading the draft model %s", cfg.spec_draft_model)
        self.model = llama_cpp.llama_model_load_from_file(cfg.spec_draft_model.encode(), mparams)
        del tensors
        if not self.model:
            raise RuntimeError(f"failed to load the draft model {cfg.spec_draft_model}")
        vocab = llama_cpp.llama_model_get_vocab(self.model)
        if llama_cpp.llama_vocab_n_tokens(vocab) != n_vocab:
            llama_cpp.llama_model_free(self.model)
            raise RuntimeError(f"the draft model's vocabulary ({llama_cpp.llama_vocab_n_tokens(vocab)} tokens) "
                               f"is not the target's ({n_vocab})")
        cparams = context_params(cfg, n_seq_max, draft=True)
        self.ctx = llama_cpp.llama_init_from_model(self.model, cparams)
        if not self.ctx:
            llama_cpp.llama_model_free(self.model)
            raise RuntimeError("failed to create the draft model's context (out of memory?)")
        self.pools = threads.attach(self.ctx, draft=True)
        self.memory = llama_cpp.llama_get_memory(self.ctx)
        self.n_vocab = n_vocab
        self.batch = NumpyBatch(llama_cpp.llama_n_batch(self.ctx))
        self.held: list[list[int]] = [[] for _ in range(n_seq_max)]
        self.seconds = 0.0  # time the last draft() took

    def draft(self, wanted: list[tuple[int, list[int], int, float]]) -> dict[int, list[int]]:
        """Draft tokens per sequence. ``wanted``: (seq, the target's tokens with the pending one
        last, tokens to draft at most, p_min) per drafting sequence."""
        t0 = time.perf_counter()
        drafts: dict[int, list[int]] = {seq: [] for seq, _, _, _ in wanted}
        try:
            # catch up: each sequence's cache gets the target's tokens, the pending one last
            items = []
            for seq, tokens, _, _ in wanted:
                keep = min(common_prefix_len(self.held[seq], tokens), len(tokens) - 1)
                llama_cpp.llama_memory_seq_rm(self.memory, seq, keep, -1)
                self.held[seq] = tokens[:keep]
                items.append(BatchItem(seq, tokens[keep:], keep, True))
            with_probs = any(p_min > 0 for _, _, _, p_min in wanted)
            picks = self._decode(items, with_probs)
            active = []
            for seq, tokens, limit, p_min in wanted:
                self.held[seq] = list(tokens)
                pick = picks.get(seq)
                if pick is not None and limit > 0 and pick[1] >= p_min:
                    drafts[seq].append(pick[0])
                    active.append((seq, limit, p_min))
            # one batched decode per draft position
            while active:
                active = [(s, lim, p) for s, lim, p in active if len(drafts[s]) < lim]
                if not active:
                    break
                items = [BatchItem(s, [drafts[s][-1]], len(self.held[s]), True) for s, _, _ in active]
                picks = self._decode(items, with_probs)
                for item in items:
                    self.held[item.seq_id].append(item.token_ids[0])
                still = []
                for seq, limit, p_min in active:
                    pick = picks.get(seq)
                    if pick is not None and pick[1] >= p_min:
                        drafts[seq].append(pick[0])
                        still.append((seq, limit, p_min))
                active = still
        except RuntimeError as exc:  # no room, or a failed decode: this step drafts what it has
            log.warning("draft model: %s; its cache is cleared", exc)
            self.clear()
        self.seconds = time.perf_counter() - t0
        return drafts

    def _decode(self, items: list[BatchItem], with_probs: bool) -> dict[int, tuple[int, float]]:
        """Decode the items (split to fit the batch), and each sequence's greedy pick after its
        last token with that pick's probability (1.0 unless ``with_probs``)."""
        picks: dict[int, tuple[int, float]] = {}
        pending = list(items)
        while pending:
            chunk, room = [], self.batch.capacity
            while pending and room > 0:
                item = pending.pop(0)
                if len(item.token_ids) > room:  # the rest goes in the next decode, sampled there
                    head = BatchItem(item.seq_id, item.token_ids[:room], item.pos, False)
                    pending.insert(0, BatchItem(item.seq_id, item.token_ids[room:], item.pos + room, True))
                    item = head
                chunk.append(item)
                room -= len(item.token_ids)
            layout = self.batch.fill(chunk)
            rc = llama_cpp.llama_decode(self.ctx, self.batch.struct)
            if rc != 0:
                raise RuntimeError(f"llama_decode returned {rc}")
            if layout.n_outputs:
                rows = logits_view(self.ctx, layout.n_outputs, self.n_vocab)
                best = np.argmax(rows, axis=1)
                probs = np.ones(len(best))
                if with_probs:
                    peak = rows[np.arange(len(best)), best]
                    probs = 1.0 / np.exp(rows - peak[:, None]).sum(axis=1)
                sampled = [item.seq_id for item in chunk if item.sample]
                for seq, token, p in zip(sampled, best.tolist(), probs.tolist()):
                    picks[seq] = (token, p)
        return picks

    def clear(self) -> None:
        llama_cpp.llama_memory_clear(self.memory, True)
        self.held = [[] for _ in self.held]

    def close(self) -> None:
        llama_cpp.llama_free(self.ctx)
        if self.pools is not None:
            self.pools.close()
        llama_cpp.llama_model_free(self.model)
