"""An embedding server's step: decode whole inputs, one sequence each, and read their vectors.

With pooling (mean, cls, last, rank) llama.cpp pools each sequence's hidden states itself and
``llama_get_embeddings_seq`` gives one row per sequence (rank: the classification head's scores);
with pooling none every token's row comes back, in batch order. llama.cpp refuses a pooled decode
unless every token is an output, so the batch flags them all. The sequences are cleared after the
step: an embedding leaves nothing in the KV cache (a non-causal model like BERT has none at all).
Where a probe at start-up allowed it (``tap_for``, executor.embedding.hidden_tap), the graph stops at the hidden states
before a causal LM's output layer and the pooling is done here instead.

A step's rows go into the executor's shared-memory arena when it has one (ipc.shm): the result
carries one ArrayRef and each item's first row. The plan lists the regions of earlier steps that
nobody reads any more; they are freed before this step writes. A full arena (more rows waiting to
be read than it holds) is no error: the rows then travel inside the result, as without an arena.
"""

from __future__ import annotations

import ctypes
import logging
import time

import llama_cpp
import numpy as np

from executor.batch import NumpyBatch
from executor.embedding.hidden_tap import POOLINGS, HiddenTap, hidden_node, pool
from ipc.protocol import EmbedItem, EmbedPlan, EmbedResult, EngineError, ErrorCode, SeqFailure, Vectors
from ipc.shm import Arena, ArenaFull

log = logging.getLogger("executor")

POOLING_NONE = llama_cpp.LLAMA_POOLING_TYPE_NONE
POOLING_RANK = llama_cpp.LLAMA_POOLING_TYPE_RANK


class Embedder:
    """Runs EmbedPlans on a context created with ``embeddings`` on."""

    def __init__(self, model: llama_cpp.llama_model_p, ctx: llama_cpp.llama_context_p, batch: NumpyBatch,
                 n_vocab: int, n_seq_max: int, arena: Arena | None = None, tap: HiddenTap | None = None) -> None:
        self.ctx = ctx
        self.tap = tap
        self.arena = arena
        self.arena_was_full = False  # logged once
        self.memory = llama_cpp.llama_get_memory(ctx)  # NULL for non-causal models: no KV cache
        self.batch = batch
        self.n_vocab = n_vocab
        self.n_seq_max = n_seq_max
        self.pooling = llama_cpp.llama_pooling_type(ctx)
        self.dim = llama_cpp.llama_model_n_cls_out(model) if self.pooling == POOLING_RANK else (
            llama_cpp.llama_model_n_embd_out(model))

    def step(self, plan: EmbedPlan, executor_id: int) -> EmbedResult:
        t0 = time.perf_counter()
        self._release(plan, executor_id)
        failures: list[SeqFailure] = []
        items = self._runnable(plan.items, failures)
        vectors = Vectors(self.dim, [0] * len(plan.items))  # what the failed items get
        error = None
        if items:
            try:
                rows = self._decode(items)
                data = self._read(items, sum(rows))
            except RuntimeError as exc:
                log.error("executor %d: embedding step %d failed: %s", executor_id, plan.step_id, exc)
                vectors, error = None, str(exc)
            else:
                ran = {id(item): n for item, n in zip(items, rows)}
                vectors = self._vectors([ran.get(id(item), 0) for item in plan.items], data)
            finally:
                llama_cpp.llama_memory_clear(self.memory, False)
        return EmbedResult(plan.step_id, executor_id, vectors, time.perf_counter() - t0, error, failures)

    def _release(self, plan: EmbedPlan, executor_id: int) -> None:
        for ref in plan.releases:
            try:
                if self.arena is None:
                    raise ValueError("this executor has no arena")
                self.arena.release(ref)
            except ValueError as exc:  # a scheduler bug, or a ref of another process: never fatal
                log.error("executor %d: cannot release %s: %s", executor_id, ref, exc)

    def _vectors(self, counts: list[int], data: np.ndarray) -> Vectors:
        """The step's rows in the arena, or in the message when there is no arena or no room."""
        if self.arena is not None:
            try:
                ref = self.arena.put(data)
            except ArenaFull as exc:
                if not self.arena_was_full:
                    log.warning("%s: the vectors go inside the message (counted in ggserve:vectors_inline_total; "
                                "not logged again)", exc)
                self.arena_was_full = True
            else:
                firsts = np.cumsum([0, *counts[:-1]]).tolist()
                return Vectors(self.dim, counts, regions=[ref], where=[(0, first) for first in firsts])
        return Vectors(self.dim, counts, data.tobytes())

    def _runnable(self, items: list[EmbedItem], failures: list[SeqFailure]) -> list[EmbedItem]:
        """The items llama.cpp can decode together (it would abort on some others)."""
        runnable: list[EmbedItem] = []
        seen: set[int] = set()
        n_tokens = 0
        for item in items:
            tokens = item.token_ids
            problem = None
            if not 0 <= item.seq_id < self.n_seq_max or item.seq_id in seen:
                problem = f"sequence id {item.seq_id} out of range or repeated"
            elif not tokens or min(tokens) < 0 or max(tokens) >= self.n_vocab:
                problem = f"empty input or token id out of the vocabulary for sequence {item.seq_id}"
            elif n_tokens + len(tokens) > self.batch.capacity:
                problem = f"the plan has more than {self.batch.capacity} tokens"
            if problem is not None:
                failures.append(SeqFailure(item.seq_id, EngineError(ErrorCode.INTERNAL, f"invalid plan: {problem}")))
                continue
            seen.add(item.seq_id)
            n_tokens += len(tokens)
            runnable.append(item)
        return runnable

    def _decode(self, items: list[EmbedItem]) -> list[int]:
        """Decode the items; the rows each one gets back."""
        self.batch.fill_whole([(item.seq_id, item.token_ids) for item in items])
        if self.tap is not None:
            self.tap.begin()
        rc = llama_cpp.llama_decode(self.ctx, self.batch.struct)
        if rc != 0:
            raise RuntimeError(f"llama_decode returned {rc}")
        if self.tap is not None and self.tap.problem:
            # the graph ran to the end (the tap never stops after a problem): llama.cpp's output stands
            log.warning("embeddings: hidden-state tap: %s; llama.cpp's vectors used", self.tap.problem)
        if self.pooling == POOLING_NONE:
            return [len(item.token_ids) for item in items]
        return [1] * len(items)

    def _read(self, items: list[EmbedItem], n_rows: int) -> np.ndarray:
        """The rows, (n_rows, dim) float32: with pooling none a view of llama.cpp's output buffer,
        valid until the next decode."""
        if self.tap is not None and self.tap.stopped:
            if self.tap.problem or self.tap.n != sum(len(item.token_ids) for item in items):
                raise RuntimeError(f"the hidden-state tap read {self.tap.n} rows ({self.tap.problem})")
            return pool(self.tap.rows, [len(item.token_ids) for item in items], self.pooling)
        float_p = ctypes.POINTER(ctypes.c_float)
        if self.pooling == POOLING_NONE:  # every token's row, in batch order
            ptr = llama_cpp.llama_get_embeddings(self.ctx)
            return np.ctypeslib.as_array(ctypes.cast(ptr, float_p), (n_rows, self.dim))
        out = np.empty((n_rows, self.dim), dtype=np.float32)
        for row, item in enumerate(items):
            ptr = llama_cpp.llama_get_embeddings_seq(self.ctx, item.seq_id)
            if not ptr:
                raise RuntimeError(f"no pooled embedding for sequence {item.seq_id}")
            out[row] = np.ctypeslib.as_array(ctypes.cast(ptr, float_p), (self.dim,))
        return out


def tap_for(model: llama_cpp.llama_model_p, cparams: llama_cpp.llama_context_params,
            n_vocab: int) -> HiddenTap | None:
    """A stopping tap for contexts made with ``cparams``, if a probe shows it gives llama.cpp's
    vectors and saves an output layer; else None (the context then runs without a callback)."""
    width = llama_cpp.llama_model_n_embd(model)
    probe = llama_cpp.llama_context_params.from_buffer_copy(cparams)
    probe.n_ctx, probe.n_batch, probe.n_ubatch, probe.n_seq_max = 256, 64, 64, 4
    observer = HiddenTap(64, width, stop=False)
    probe.cb_eval, probe.cb_eval_user_data = observer.callback, None
    ctx = llama_cpp.llama_init_from_model(model, probe)
    if not ctx:
        return None
    try:
        verdict = _probe(Embedder(model, ctx, NumpyBatch(64), n_vocab, probe.n_seq_max), observer)
    finally:
        llama_cpp.llama_free(ctx)
    if verdict:
        log.info("embeddings: llama.cpp runs the whole graph and pools: %s", verdict)
        return None
    log.info("embeddings: the output layer is skipped (the graph stops at %s)", observer.node.decode())
    return HiddenTap(cparams.n_batch, width, stop=True, node=observer.node)


def _probe(embedder: Embedder, observer: HiddenTap) -> str:
    """Why the tap cannot be used with this model ('' if it can): a few short inputs decoded
    with ``observer`` watching, its rows pooled here against llama.cpp's own vectors."""
    if embedder.pooling not in POOLINGS:
        return "rank pooling needs the classification head"
    observer.node = hidden_node(embedder.pooling)
    items = [EmbedItem(seq, [(97 * seq + 13 * i) % embedder.n_vocab for i in range(n)])
             for seq, n in enumerate([5, 3, 7])]
    lengths = [len(item.token_ids) for item in items]
    observer.begin()
    try:
        rows = embedder._decode(items)
    except RuntimeError:
        return "the probe decode failed"
    theirs = embedder._read(items, sum(rows))
    if observer.problem or observer.n != sum(lengths):
        return f"no usable {observer.node.decode()} node ({observer.problem or f'{observer.n} rows'})"
    if not observer.saw_output:
        return "no output layer after the hidden states: nothing to skip"
    mine = pool(observer.rows, lengths, embedder.pooling)
    if mine.shape != theirs.shape or not np.allclose(mine, theirs, rtol=1e-3, atol=1e-4):
        return "the hidden states pooled here differ from llama.cpp's vectors"
    return ""
