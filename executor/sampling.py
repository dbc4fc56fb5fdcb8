"""Per-sequence token selection over one step's logits.

Plain greedy sequences (no penalties, bias or grammar) take one vectorised numpy argmax over
their logits rows: llama_sampler_sample copies the whole vocabulary (262k entries for Gemma 3)
into a candidate array per call, which at 16 sequences would cost ~10% of a CPU step. Everything
else runs a llama.cpp sampler chain built once per request (llama-server's order: bias,
penalties, top-k, typical, top-p, min-p, temperature, dist). Log-probabilities come from the
raw logits rows (the model's distribution, as OpenAI reports it), never from a Python loop over
the vocabulary.
"""

from __future__ import annotations

import ctypes

import llama_cpp
import numpy as np

from ipc.protocol import SamplingParams, TokenLogprob


class SequenceFailed(Exception):
    """One sequence cannot go on (its sampler cannot be built or cannot sample); only its
    request fails, the step's other sequences are unaffected."""


class SeqSampler:
    """Sampling state of the request running on one sequence."""

    def __init__(
        self,
        params: SamplingParams,
        vocab: llama_cpp.llama_vocab_p,
        n_vocab: int,
        logprobs: int,
        history: list[int],
        prompt_logprobs: int = -1,
    ) -> None:
        self.logprobs = logprobs
        self.prompt_logprobs = prompt_logprobs
        greedy = params.temperature <= 0
        self.fast_greedy = (
            greedy
            and not params.logit_bias
            and params.grammar is None
            and params.repeat_penalty == 1.0
            and params.presence_penalty == 0.0
            and params.frequency_penalty == 0.0
        )
        self.chain: llama_cpp.llama_sampler_p | None = None
        if not self.fast_greedy:
            self.chain = _build_chain(params, vocab, n_vocab, greedy)
            for token in history:
                llama_cpp.llama_sampler_accept(self.chain, token)

    def free(self) -> None:
        if self.chain is not None:
            llama_cpp.llama_sampler_free(self.chain)
            self.chain = None


def _build_chain(
    p: SamplingParams, vocab: llama_cpp.llama_vocab_p, n_vocab: int, greedy: bool
) -> llama_cpp.llama_sampler_p:
    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())

    def add(sampler: llama_cpp.llama_sampler_p) -> None:
        if not sampler:
            llama_cpp.llama_sampler_free(chain)
            raise SequenceFailed("llama.cpp rejected a sampler parameter (an invalid grammar?)")
        llama_cpp.llama_sampler_chain_add(chain, sampler)

    if p.grammar is not None:
        add(llama_cpp.llama_sampler_init_grammar(vocab, p.grammar.encode(), b"root"))
    if p.logit_bias:
        biases = (llama_cpp.llama_logit_bias * len(p.logit_bias))(*p.logit_bias)
        add(llama_cpp.llama_sampler_init_logit_bias(n_vocab, len(p.logit_bias), biases))
    if p.repeat_penalty != 1.0 or p.presence_penalty != 0.0 or p.frequency_penalty != 0.0:
        add(
            llama_cpp.llama_sampler_init_penalties(
                n_vocab,
                p.repeat_last_n,
                p.repeat_penalty,
                p.frequency_penalty,
                p.presence_penalty,
            )
        )
    if greedy:
        add(llama_cpp.llama_sampler_init_greedy())
        return chain
    if p.top_k > 0:
        add(llama_cpp.llama_sampler_init_top_k(p.top_k))
    if p.typical_p < 1.0:
        add(llama_cpp.llama_sampler_init_typical(p.typical_p, 1))
    if p.top_p < 1.0:
        add(llama_cpp.llama_sampler_init_top_p(p.top_p, 1))
    if p.min_p > 0.0:
        add(llama_cpp.llama_sampler_init_min_p(p.min_p, 1))
    add(llama_cpp.llama_sampler_init_temp(p.temperature))
    seed = llama_cpp.LLAMA_DEFAULT_SEED if p.seed is None else p.seed & 0xFFFFFFFF
    add(llama_cpp.llama_sampler_init_dist(seed))
    return chain


def sample_rows(
    ctx: llama_cpp.llama_context_p,
    logits: np.ndarray,
    batch_rows: list[int],
    samplers: list[SeqSampler],
) -> tuple[list[int], list[TokenLogprob | None], dict[int, str]]:
    """Choose one token per output row. ``logits[i]`` is the row of ``batch_rows[i]``.

    Returns the tokens, their log-probabilities and, by row, why a row's sampler failed (that
    row's token is meaningless; the others are not affected).
    """
    n = len(samplers)
    tokens = [0] * n
    failed: dict[int, str] = {}
    fast = [i for i, s in enumerate(samplers) if s.fast_greedy]
    if fast:
        picked = np.argmax(logits if len(fast) == n else logits[fast], axis=1)
        for i, token in zip(fast, picked.tolist()):
            tokens[i] = token
    for i, sampler in enumerate(samplers):
        if sampler.chain is not None:
            try:
                tokens[i] = llama_cpp.llama_sampler_sample(sampler.chain, ctx, batch_rows[i])
            except Exception as exc:  # noqa: BLE001 - whatever it is, it fails this row alone
                failed[i] = f"sampling failed: {exc}"
    logprobs = [
        target_logprobs(logits[i : i + 1], [tokens[i]], s.logprobs)[0]
        if s.logprobs >= 0 and i not in failed
        else None
        for i, s in enumerate(samplers)
    ]
    return tokens, logprobs, failed


def target_logprobs(block: np.ndarray, targets: list[int], top_n: int) -> list[TokenLogprob]:
    """Row j's log-probability of ``targets[j]`` (+ top_n alternatives), vectorised over rows."""
    peak = block.max(axis=1, keepdims=True)
    log_z = peak[:, 0] + np.log(np.exp(block - peak).sum(axis=1, dtype=np.float64))
    rows = np.arange(len(targets))
    chosen = (block[rows, targets] - log_z).tolist()
    if top_n <= 0:
        return [TokenLogprob(t, lp) for t, lp in zip(targets, chosen)]
    top_idx = np.argpartition(block, -top_n, axis=1)[:, -top_n:]
    top_val = np.take_along_axis(block, top_idx, axis=1)
    order = np.argsort(-top_val, axis=1)
    top_idx = np.take_along_axis(top_idx, order, axis=1)
    top_lp = np.take_along_axis(top_val, order, axis=1) - log_z[:, None]
    return [
        TokenLogprob(t, lp, list(zip(ids, lps)))
        for t, lp, ids, lps in zip(targets, chosen, top_idx.tolist(), top_lp.tolist())
    ]


def logits_view(ctx: llama_cpp.llama_context_p, n_rows: int, n_vocab: int) -> np.ndarray:
    """Zero-copy view of the last decode's output logits (valid until the next decode)."""
    ptr = llama_cpp.llama_get_logits(ctx)
    return np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_float)), (n_rows, n_vocab))
