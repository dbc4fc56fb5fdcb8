"""Per-sequence token selection over one step's logits.

Plain greedy sequences (no penalties or grammar) take a numpy argmax of their logits rows:
llama_sampler_sample copies the whole vocabulary (262k entries for Gemma 3) into a candidate
array per call, which at 16 sequences would cost ~10% of a CPU step. Greedy rows with a logit
bias (``ignore_eos`` is one) take the argmax with all their biases added in place at once. The
common sampled chain (logit bias, top-k first, then top-p, min-p, temperature, dist) runs in
executor.sampling.fast, on the top-k candidates only, picking the tokens llama.cpp would pick
for the same seed. Everything else runs a llama.cpp sampler chain built once per request, as
llama-server's common_sampler builds it: logit bias, then the samplers in the request's order
(penalties, DRY, top-n-sigma, top-k, typical, top-p, min-p, XTC, (dynamic) temperature by
default), then dist, adaptive-p or Mirostat (v1, v2). Log-probabilities come from the raw logits
rows (the model's distribution, as OpenAI reports it), never from a Python loop over the
vocabulary.

Grammar-constrained sequences sample first and check the grammar after, as llama-server does:
llama.cpp's grammar sampler masks the whole vocabulary (262k pieces matched against the grammar
stacks) when it runs first, while checking one sampled token costs microseconds. Only when the
grammar rejects the token does the sequence resample, and then over the most likely candidates
first (exact for greedy decoding whenever one of them is allowed), the whole vocabulary only if
none is. A token is accepted into a grammar only after the grammar allowed it: llama.cpp throws
a C++ exception (a dead process) on a rejected token. A grammar with no allowed token left is a
``SequenceFailed`` for that sequence alone.

A sequence with a reasoning budget (executor.sampling.reasoning_budget) takes the forced closing
tag instead of sampling once its thinking has used the budget; the forced tokens go through the
chain's and the grammar's accept like sampled ones.
"""

from __future__ import annotations

import ctypes
import logging
from collections import OrderedDict

import llama_cpp
import numpy as np
import regex

from executor.sampling.banned import BannedSequences
from executor.sampling.fast import FastChain, LogitBias, biased_argmax, fast_steps, pick, sample_many, top_candidates
from executor.sampling.errors import SequenceFailed
from executor.sampling.lazy_grammar import LazyGrammar
from executor.sampling.reasoning_budget import BudgetTracker
from ipc.protocol import SamplingParams, TokenLogprob

log = logging.getLogger("executor")

# Candidates tried after a grammar rejection before the whole vocabulary is masked.
RESAMPLE_TOP_N = 128
GRAMMAR_CACHE_SIZE = 64  # compiled grammars kept per process (by text)
DRY_CACHE_SIZE = 16  # DRY samplers kept per process (by settings) to clone from

# llama_token_data as numpy sees it: {int32 id; float logit; float p}
TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])
assert TOKEN_DATA.itemsize == ctypes.sizeof(llama_cpp.llama_token_data)


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
        penalty_context: list[int] | None = None,
    ) -> None:
        self.logprobs = logprobs
        self.prompt_logprobs = prompt_logprobs
        self.post_sampling_probs = params.post_sampling_probs and logprobs >= 0
        greedy = params.temperature <= 0
        self.greedy = greedy
        # Greedy without logit changes: the token is the row's argmax, taken for all such rows at once.
        self.argmax_first = greedy and not changes_argmax(params)
        bias = LogitBias(params.logit_bias) if params.logit_bias else None
        # A grammar or banned sequences: the token is checked after it is picked (pick_constrained).
        constrained = params.grammar is not None or bool(params.banned_sequences)
        # Greedy whose only logit change is a bias: the biased row's argmax, no llama.cpp chain.
        self.biased_argmax = bias if (greedy and not constrained and not self.post_sampling_probs
                                      and not _chain_changes_argmax(params)) else None
        # Both take the row's argmax (under the bias, if any) up front, with the step's other such rows.
        self.picks_argmax = self.argmax_first or self.biased_argmax is not None
        self.n_vocab = n_vocab
        self.chain: llama_cpp.llama_sampler_p | None = None
        self.grammar: Grammar | LazyGrammar | BannedSequences | None = None
        # Token ids a logit bias raises: candidates of a resample even when their raw logit is low.
        self._boosted = np.array([t for t, b in params.logit_bias if b > 0], dtype=np.int32)
        if params.grammar is not None:
            grammar = Grammar(_grammar_cache(vocab).new(params.grammar))
            triggers = params.grammar_triggers
            try:
                self.grammar = grammar if triggers is None else LazyGrammar(grammar, triggers, vocab)
            except (regex.error, OverflowError, RecursionError) as exc:  # the frontend checks patterns first
                grammar.free()
                raise SequenceFailed(f"a grammar trigger is not a valid regex: {exc}") from None
        if params.banned_sequences:
            self.grammar = BannedSequences(params.banned_sequences, self.grammar)
        budget = params.reasoning_budget
        self.budget = BudgetTracker(budget, vocab) if budget is not None else None
        # The common sampled chain runs vectorised (executor.sampling.fast), the rest in llama.cpp.
        steps = None
        if not greedy and self.grammar is None and not self.post_sampling_probs:
            steps = fast_steps(params, n_vocab)
        self.fast = FastChain(steps, n_vocab, params.seed, params.min_keep, bias) if steps else None
        # The settings whose chain the device may run for this sequence (executor.sampling.device),
        # or None when the host must sample it: greedy whose only logit change is a bias, or the
        # vectorised path's sampled chain, with no token biased twice (llama.cpp's device bias keeps
        # one value) and nothing of the request reading the raw logits (log-probabilities, a grammar).
        biased = [t for t, _ in params.logit_bias]
        on_device = ((self.picks_argmax or self.fast is not None)
                     and not constrained and logprobs < 0 and prompt_logprobs < 0
                     and len(set(biased)) == len(biased))
        self.device_params = params if on_device else None
        try:
            if self.fast is not None:
                self.fast.skip(len(history))
            elif not self.picks_argmax:
                self.chain = build_chain(params, vocab, n_vocab, greedy)
                skip_draws(self.chain, len(history))
                for token in penalty_context or ():  # prompt tokens: the chain's memory, not the grammar's
                    llama_cpp.llama_sampler_accept(self.chain, token)
            for token in history:
                if self.chain is not None:
                    llama_cpp.llama_sampler_accept(self.chain, token)
                if self.grammar is not None:
                    if not self.grammar.allows(token):
                        raise SequenceFailed("the generated tokens do not match the grammar")
                    self.grammar.accept(token)
                if self.budget is not None:
                    self.budget.accept(token)
        except BaseException:
            self.free()
            raise

    def free(self) -> None:
        if self.chain is not None:
            llama_cpp.llama_sampler_free(self.chain)
            self.chain = None
        if self.grammar is not None:
            g = self.grammar
            log.debug("grammar: %d tokens, %d resampled among the top candidates, %d over the vocabulary",
                      g.n_tokens, g.n_top, g.n_full)
            g.free()
            self.grammar = None

    def sample_with_probs(self, row: np.ndarray, argmax_token: int) -> tuple[int, TokenLogprob]:
        """The next token and the probabilities after the chain (``post_sampling_probs``): the
        chosen token's and the ``logprobs`` most likely candidates'. A greedy pick has
        probability 1 and its runners-up 0, as llama-server reports it."""
        top_n = max(self.logprobs, 1)
        token = argmax_token
        if self.chain is not None:
            full = _scratch(self.n_vocab)
            full["logit"] = row
            array = _token_data_array(full)
            llama_cpp.llama_sampler_apply(self.chain, ctypes.byref(array))
            if not 0 <= array.selected < array.size:
                raise SequenceFailed("the sampler selected no token")
            token = int(full["id"][array.selected])
            llama_cpp.llama_sampler_accept(self.chain, token)
            if not self.greedy:
                kept = full[: array.size]  # the candidates the chain left, with dist's probabilities
                order = np.argsort(-kept["p"])[:top_n]
                top = [(int(t), float(p)) for t, p in zip(kept["id"][order], kept["p"][order])]
                return token, TokenLogprob(token, float(kept["p"][array.selected]), top)
        ranked = np.argsort(-row)[:top_n].tolist()
        return token, TokenLogprob(token, 1.0, [(t, 1.0 if t == token else 0.0) for t in ranked])

    def forced_token(self) -> int | None:
        """The token the reasoning budget forces now (accepted by the chain and the grammar as if
        sampled, so penalties and the grammar see the text the model will read), or None.

        A grammar that forbids the forced token wins: the output's format is the request's
        contract, the budget a preference, so the budget gives up and sampling goes on.
        """
        token = self.budget.forced_token() if self.budget is not None else None
        if token is None:
            return None
        if self.grammar is not None:
            if not self.grammar.allows(token):
                assert self.budget is not None
                self.budget.give_up()
                return None
            self.grammar.accept(token)
        if self.chain is not None:
            llama_cpp.llama_sampler_accept(self.chain, token)
        return token

    def pick_constrained(self, row: np.ndarray, argmax_token: int) -> int:
        """The next token under the grammar: sampled as without it, resampled if it is rejected.

        ``row`` is this sequence's logits; ``argmax_token`` its argmax (when ``argmax_first``).
        """
        grammar = self.grammar
        assert grammar is not None
        if self.chain is None:
            token = argmax_token
            if not grammar.allows(token):
                allowed = self._allowed_candidates(row)
                token = int(allowed["id"][np.argmax(allowed["logit"])])
        else:
            full = _scratch(self.n_vocab)
            full["logit"] = row
            token = _apply_select(self.chain, full)
            if not grammar.allows(token):
                allowed = self._allowed_candidates(row)
                token = _apply_select(self.chain, allowed)
            llama_cpp.llama_sampler_accept(self.chain, token)
        grammar.accept(token)
        return token

    def _allowed_candidates(self, row: np.ndarray) -> np.ndarray:
        """Grammar-allowed candidates: among the top logits (and boosted tokens) if any is
        allowed, else over the whole vocabulary; SequenceFailed when nothing is allowed."""
        assert self.grammar is not None
        n = min(RESAMPLE_TOP_N, len(row))
        top = np.argpartition(row, -n)[-n:]
        if self._boosted.size:
            top = np.union1d(top, self._boosted)
        cand = np.empty(len(top), dtype=TOKEN_DATA)
        cand["id"] = top
        cand["logit"] = row[top]
        allowed = self.grammar.filter(cand)
        if allowed.size:
            self.grammar.n_top += 1
            return allowed
        self.grammar.n_full += 1
        full = _scratch(len(row))
        full["logit"] = row
        allowed = self.grammar.filter(full)
        if not allowed.size:
            raise SequenceFailed("the grammar allows no token at this point of the output (a dead end)")
        return allowed


class Grammar:
    """One sequence's grammar sampler (a clone of the cached compiled grammar)."""

    def __init__(self, sampler: llama_cpp.llama_sampler_p) -> None:
        self._sampler = sampler
        self.n_tokens = self.n_top = self.n_full = 0  # accepted; resampled among top candidates / all
        self._one = np.zeros(1, dtype=TOKEN_DATA)
        self._one_array = _token_data_array(self._one)

    def allows(self, token: int) -> bool:
        one = self._one
        one["id"] = token
        one["logit"] = 0.0
        self._one_array.selected = -1
        llama_cpp.llama_sampler_apply(self._sampler, ctypes.byref(self._one_array))
        return bool(np.isfinite(one["logit"][0]))

    def filter(self, cand: np.ndarray) -> np.ndarray:
        """The candidates the grammar allows (a new array)."""
        array = _token_data_array(cand)
        llama_cpp.llama_sampler_apply(self._sampler, ctypes.byref(array))
        return cand[np.isfinite(cand["logit"])]

    def accept(self, token: int) -> None:
        """Only for a token ``allows`` accepted: llama.cpp throws (kills the process) otherwise."""
        self.n_tokens += 1
        llama_cpp.llama_sampler_accept(self._sampler, token)

    def clone(self) -> Grammar:
        """A copy in the same state, to try tokens on without changing this one."""
        sampler = llama_cpp.llama_sampler_clone(self._sampler)
        if not sampler:
            raise SequenceFailed("cannot copy the grammar")
        return Grammar(sampler)

    def free(self) -> None:
        if self._sampler:
            llama_cpp.llama_sampler_free(self._sampler)
            self._sampler = None


class GrammarCache:
    """Compiled grammars by text; each sequence gets a clone (no re-parse of the GBNF)."""

    def __init__(self, vocab: llama_cpp.llama_vocab_p, capacity: int = GRAMMAR_CACHE_SIZE) -> None:
        self._vocab = vocab
        self._capacity = capacity
        self._compiled: OrderedDict[str, llama_cpp.llama_sampler_p] = OrderedDict()

    def new(self, text: str) -> llama_cpp.llama_sampler_p:
        proto = self._compiled.get(text)
        if proto is None:
            proto = llama_cpp.llama_sampler_init_grammar(self._vocab, text.encode(), b"root")
            if not proto:
                raise SequenceFailed("the grammar does not parse (llama.cpp's log has the reason)")
            self._compiled[text] = proto
            while len(self._compiled) > self._capacity:
                _, old = self._compiled.popitem(last=False)
                llama_cpp.llama_sampler_free(old)
        else:
            self._compiled.move_to_end(text)
        clone = llama_cpp.llama_sampler_clone(proto)
        if not clone:
            raise SequenceFailed("cannot copy the compiled grammar")
        return clone


_grammar_caches: dict[int, GrammarCache] = {}
_dry_prototypes: OrderedDict[tuple, llama_cpp.llama_sampler_p] = OrderedDict()
_scratch_buffers: dict[int, np.ndarray] = {}


def _grammar_cache(vocab: llama_cpp.llama_vocab_p) -> GrammarCache:
    key = ctypes.cast(vocab, ctypes.c_void_p).value or 0
    cache = _grammar_caches.get(key)
    if cache is None:
        cache = _grammar_caches[key] = GrammarCache(vocab)
    return cache


def _scratch(n_vocab: int) -> np.ndarray:
    """A whole-vocabulary candidate array with ids set (the caller fills the logits); one per
    process, as the executor samples one row at a time."""
    buf = _scratch_buffers.get(n_vocab)
    if buf is None:
        buf = _scratch_buffers[n_vocab] = np.zeros(n_vocab, dtype=TOKEN_DATA)
    buf["id"] = np.arange(n_vocab, dtype=np.int32)  # samplers may have reordered it
    buf["p"] = 0.0
    return buf


def _token_data_array(cand: np.ndarray) -> llama_cpp.llama_token_data_array:
    assert cand.dtype == TOKEN_DATA and cand.flags.c_contiguous
    return llama_cpp.llama_token_data_array(
        data=ctypes.cast(cand.ctypes.data, ctypes.POINTER(llama_cpp.llama_token_data)),
        size=len(cand),
        selected=-1,
        sorted=False,
    )


def _apply_select(chain: llama_cpp.llama_sampler_p, cand: np.ndarray) -> int:
    """Run the sampler chain over candidates (without accepting); the selected token id."""
    array = _token_data_array(cand)
    llama_cpp.llama_sampler_apply(chain, ctypes.byref(array))
    if not 0 <= array.selected < array.size:
        raise SequenceFailed("the sampler selected no token")
    return int(cand["id"][array.selected])


# Samplers that can move the argmax: the only ones a greedy chain runs (the others keep the top token).
_GREEDY_RELEVANT = frozenset({"penalties", "dry", "typ_p", "xtc", "infill"})


def changes_argmax(p: SamplingParams) -> bool:
    """Whether the chain may pick another token than the raw logits' argmax under greedy decoding."""
    return bool(p.logit_bias) or _chain_changes_argmax(p)


def _chain_changes_argmax(p: SamplingParams) -> bool:
    """Whether a sampler after the logit bias may move the argmax under greedy decoding."""
    return bool(
        p.repeat_penalty != 1.0
        or p.presence_penalty != 0.0
        or p.frequency_penalty != 0.0
        or _dry_on(p)
        or (p.typical_p < 1.0 and _in_order(p, "typ_p"))
        or (_xtc_on(p) and _in_order(p, "xtc"))
        or _in_order(p, "infill")
    )


def _dry_on(p: SamplingParams) -> bool:
    return p.dry_multiplier != 0.0 and p.dry_base >= 1.0 and p.dry_penalty_last_n != 0 and _in_order(p, "dry")


def _xtc_on(p: SamplingParams) -> bool:
    return p.xtc_probability > 0.0 and p.xtc_threshold <= 0.5


def _in_order(p: SamplingParams, name: str) -> bool:
    return name in p.samplers


def build_chain(
    p: SamplingParams, vocab: llama_cpp.llama_vocab_p, n_vocab: int, greedy: bool
) -> llama_cpp.llama_sampler_p:
    """The chain without the grammar (checked apart, after sampling), built as llama-server's
    common_sampler does: logit bias, then the samplers in ``p.samplers`` order, then the pick
    (dist, adaptive-p, mirostat or greedy). Neutral samplers are left out: each one costs a
    pass over the candidates."""
    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    seed = llama_cpp.LLAMA_DEFAULT_SEED if p.seed is None else p.seed & 0xFFFFFFFF

    def add(sampler: llama_cpp.llama_sampler_p) -> None:
        if not sampler:
            llama_cpp.llama_sampler_free(chain)
            raise SequenceFailed("llama.cpp rejected a sampler parameter")
        llama_cpp.llama_sampler_chain_add(chain, sampler)

    if p.logit_bias:
        biases = (llama_cpp.llama_logit_bias * len(p.logit_bias))(*p.logit_bias)
        add(llama_cpp.llama_sampler_init_logit_bias(n_vocab, len(p.logit_bias), biases))
    order: list[str] | tuple[str, ...] = p.samplers
    if p.mirostat and not greedy:
        # Mirostat replaces the truncating samplers; llama-server keeps only temperature before it.
        order = ("temperature",)
    for name in order:
        if greedy and name not in _GREEDY_RELEVANT:
            continue
        try:
            sampler = _sampler(name, p, vocab, n_vocab, seed)
        except SequenceFailed:
            llama_cpp.llama_sampler_free(chain)
            raise
        if sampler is not None:
            add(sampler)
    if greedy:
        add(llama_cpp.llama_sampler_init_greedy())
    elif p.mirostat == 1:
        add(llama_cpp.llama_sampler_init_mirostat(n_vocab, seed, p.mirostat_tau, p.mirostat_eta, 100))
    elif p.mirostat == 2:
        add(llama_cpp.llama_sampler_init_mirostat_v2(seed, p.mirostat_tau, p.mirostat_eta))
    elif "adaptive_p" in order:
        add(llama_cpp.llama_sampler_init_adaptive_p(p.adaptive_target, p.adaptive_decay, seed))
    else:
        add(llama_cpp.llama_sampler_init_dist(seed))
    return chain


def skip_draws(chain: llama_cpp.llama_sampler_p, n_tokens: int) -> None:
    """Advance the chain's dist sampler past ``n_tokens`` draws, as if it had picked the tokens a
    resumed (preempted) sequence already has: its output goes on as it would have unpreempted.
    dist draws once per call, even over a single candidate. Not exact where a token took other
    than one draw of dist (a grammar's resample draws twice; XTC draws from its own generator;
    mirostat's state comes from logits not kept): such a sequence goes on from another draw."""
    n = llama_cpp.llama_sampler_chain_n(chain)
    last = llama_cpp.llama_sampler_chain_get(chain, n - 1) if n else None
    if not n_tokens or not last or llama_cpp.llama_sampler_name(last) != b"dist":
        return
    one = np.zeros(1, dtype=TOKEN_DATA)
    array = _token_data_array(one)
    for _ in range(n_tokens):
        llama_cpp.llama_sampler_apply(last, ctypes.byref(array))


def _sampler(name: str, p: SamplingParams, vocab: llama_cpp.llama_vocab_p, n_vocab: int,
             seed: int) -> llama_cpp.llama_sampler_p | None:
    """One sampler of the ordered part of the chain; None when its settings make it a no-op."""
    if name == "penalties":
        if p.repeat_penalty == 1.0 and p.presence_penalty == 0.0 and p.frequency_penalty == 0.0:
            return None
        return llama_cpp.llama_sampler_init_penalties(
            n_vocab, p.repeat_last_n, p.repeat_penalty, p.frequency_penalty, p.presence_penalty
        )
    if name == "dry":
        return _dry(p, vocab) if _dry_on(p) else None
    if name == "top_n_sigma":
        return llama_cpp.llama_sampler_init_top_n_sigma(p.top_n_sigma) if p.top_n_sigma > 0 else None
    if name == "top_k":
        return llama_cpp.llama_sampler_init_top_k(p.top_k) if p.top_k > 0 else None
    if name == "typ_p":
        return llama_cpp.llama_sampler_init_typical(p.typical_p, p.min_keep) if p.typical_p < 1.0 else None
    if name == "top_p":
        return llama_cpp.llama_sampler_init_top_p(p.top_p, p.min_keep) if p.top_p < 1.0 else None
    if name == "min_p":
        return llama_cpp.llama_sampler_init_min_p(p.min_p, p.min_keep) if p.min_p > 0.0 else None
    if name == "xtc":
        return llama_cpp.llama_sampler_init_xtc(p.xtc_probability, p.xtc_threshold, p.min_keep, seed) if _xtc_on(p) else None
    if name == "temperature":
        if p.dynatemp_range > 0.0:
            return llama_cpp.llama_sampler_init_temp_ext(p.temperature, p.dynatemp_range, p.dynatemp_exponent)
        return llama_cpp.llama_sampler_init_temp(p.temperature)
    if name == "infill":
        return llama_cpp.llama_sampler_init_infill(vocab)
    if name == "adaptive_p":
        return None  # the final pick, added after the ordered samplers
    raise SequenceFailed(f"unknown sampler {name!r}")


def _dry(p: SamplingParams, vocab: llama_cpp.llama_vocab_p) -> llama_cpp.llama_sampler_p:
    """A DRY sampler: a clone of a cached one with the same settings. Building one matches every
    sequence breaker against the whole vocabulary (~70 ms for Gemma's 262k tokens, a stall of the
    whole step); a clone copies the processed breakers."""
    key = (ctypes.cast(vocab, ctypes.c_void_p).value, p.dry_multiplier, p.dry_base, p.dry_allowed_length,
           p.dry_penalty_last_n, tuple(p.dry_sequence_breakers))
    proto = _dry_prototypes.get(key)
    if proto is None:
        breakers = [b.encode(errors="replace") for b in p.dry_sequence_breakers]  # a lone surrogate is JSON
        # llama.cpp copies the breakers while building the sampler: the array may go after.
        array = (ctypes.c_char_p * len(breakers))(*breakers)
        proto = llama_cpp.llama_sampler_init_dry(
            vocab, p.dry_multiplier, p.dry_base, p.dry_allowed_length, p.dry_penalty_last_n, array, len(breakers)
        )
        if not proto:
            raise SequenceFailed("llama.cpp rejected the DRY settings")
        _dry_prototypes[key] = proto
        while len(_dry_prototypes) > DRY_CACHE_SIZE:
            llama_cpp.llama_sampler_free(_dry_prototypes.popitem(last=False)[1])
    else:
        _dry_prototypes.move_to_end(key)
    return llama_cpp.llama_sampler_clone(proto)


def sample_rows(
    ctx: llama_cpp.llama_context_p,
    logits: np.ndarray,
    batch_rows: list[int],
    samplers: list[SeqSampler],
    failures: dict[int, Exception] | None = None,
    device_tokens: list[int | None] | None = None,
    out_rows: list[int] | None = None,
) -> tuple[list[int], list[TokenLogprob | None]]:
    """Choose one token per sampler: sampler i's logits are ``logits[out_rows[i]]`` (default:
    row i), the output of ``batch_rows[i]``; ``device_tokens[i]``, where given, the token the
    device sampled there with the sequence's chain (the row itself is then never read:
    llama.cpp may not have copied it). The rows are read in place, never gathered: a copy of 16
    rows of 262k logits costs about as much as their argmax.

    A row whose sequence cannot go on gets token -1; with ``failures`` given, the exception is
    stored there under the row index (any exception of a row's sampler fails that row alone),
    otherwise it propagates.
    """
    n = len(samplers)
    device_tokens = device_tokens or [None] * n
    out_rows = out_rows if out_rows is not None else list(range(n))
    rows = [logits[r] for r in out_rows]
    tokens = [token if token is not None else 0 for token in device_tokens]
    greedy = [i for i, s in enumerate(samplers) if device_tokens[i] is None and s.picks_argmax]
    picked = biased_argmax(logits, [out_rows[i] for i in greedy], [samplers[i].biased_argmax for i in greedy])
    for i, token in zip(greedy, picked):
        tokens[i] = token
    # The sampled chains executor.sampling.fast runs, all rows at once (a reasoning budget may
    # force a token instead: such a row goes alone, below).
    fast = [i for i, s in enumerate(samplers)
            if s.fast is not None and s.budget is None and device_tokens[i] is None]
    sampled_together = set(fast)
    if fast:
        try:
            picked = sample_many(logits, [out_rows[i] for i in fast], [samplers[i].fast for i in fast])
            for i, token in zip(fast, picked):
                tokens[i] = token
        except Exception as exc:  # noqa: BLE001 - it fails these rows, not the others
            if failures is None:
                raise
            for i in fast:
                failures[i], tokens[i] = exc, -1
    post: dict[int, TokenLogprob] = {}  # rows reporting probabilities after the chain
    for i, sampler in enumerate(samplers):
        if i in sampled_together:
            continue
        try:
            tokens[i], lp = _pick(sampler, ctx, rows[i], tokens[i], batch_rows[i], device_tokens[i] is not None)
            if lp is not None:
                post[i] = lp
        except Exception as exc:  # noqa: BLE001 - whatever it is, it fails this row alone
            if failures is None:
                raise
            failures[i] = exc
            tokens[i] = -1
    logprobs = [
        post.get(i) or target_logprobs(rows[i][None, :], [tokens[i]], s.logprobs)[0]
        if s.logprobs >= 0 and tokens[i] >= 0 else None
        for i, s in enumerate(samplers)
    ]
    return tokens, logprobs


def _pick(
    sampler: SeqSampler, ctx: llama_cpp.llama_context_p, row: np.ndarray, argmax_token: int, batch_row: int,
    on_device: bool = False,
) -> tuple[int, TokenLogprob | None]:
    """One sequence's next token from its logits ``row`` (batch index ``batch_row``; its argmax
    under its logit bias ``argmax_token`` when ``picks_argmax``, or the token the device
    sampled with the chain: ``on_device``, the row is then not read), with the probabilities after the chain when the
    request reports those. The sampler's state (chain, grammar, budget) accepts the token."""
    post = None
    if (forced := sampler.forced_token()) is not None:
        token = forced
    elif on_device:
        token = argmax_token
    elif sampler.grammar is not None:
        token = sampler.pick_constrained(row, argmax_token)
    elif sampler.post_sampling_probs:
        token, post = sampler.sample_with_probs(row, argmax_token)
    elif sampler.fast is not None:
        token = sampler.fast.sample(row)
    elif sampler.chain is not None:
        token = llama_cpp.llama_sampler_sample(sampler.chain, ctx, batch_row)
    else:
        token = argmax_token
    if sampler.budget is not None:
        sampler.budget.accept(token)
    return token, post


def verify_draft(
    ctx: llama_cpp.llama_context_p, rows: np.ndarray, first_batch_row: int, draft: list[int], sampler: SeqSampler,
    device_tokens: list[int] | None = None,
) -> tuple[list[int], list[TokenLogprob | None]]:
    """Speculative decoding: sample at each position of a draft in order (``rows[j]`` are the
    logits after draft token j, row 0 after the token before the draft) and accept while the
    sample equals the draft token. Returns the output tokens, the accepted draft tokens then the
    token sampled after them, and their log-probabilities (None where not wanted). The sampler's
    state has accepted exactly these tokens, as if they had been sampled one step each.
    ``device_tokens``: the rows' tokens as the device sampled them (the rows are then not read)."""
    if device_tokens is not None:
        picks = device_tokens
    elif sampler.picks_argmax:
        picks = biased_argmax(rows, range(len(rows)), [sampler.biased_argmax] * len(rows))
    else:
        picks = [0] * len(rows)
    # a sampled chain of executor.sampling.fast: every row's candidates at once (only the rows
    # reached draw from the random stream)
    fast = sampler.fast if sampler.budget is None and device_tokens is None else None
    candidates = top_candidates(rows, range(len(rows)), [fast] * len(rows)) if fast is not None else []
    tokens: list[int] = []
    post: list[TokenLogprob | None] = []
    for j, row in enumerate(rows):
        if fast is not None:
            token, lp = pick([fast], [candidates[j]])[0], None
        else:
            token, lp = _pick(sampler, ctx, row, picks[j], first_batch_row + j, device_tokens is not None)
        tokens.append(token)
        post.append(lp)
        if j == len(draft) or token != draft[j]:
            break
    if sampler.logprobs < 0:
        return tokens, [None] * len(tokens)
    raw = target_logprobs(rows[: len(tokens)], tokens, sampler.logprobs)
    return tokens, [p or r for p, r in zip(post, raw)]


def target_logprobs(block: np.ndarray, targets: list[int], top_n: int, ranked: bool = False) -> list[TokenLogprob]:
    """Row j's log-probability of ``targets[j]`` (+ top_n alternatives; its rank when ``ranked``:
    another pass over the vocabulary), vectorised over rows."""
    peak = block.max(axis=1, keepdims=True)
    log_z = peak[:, 0] + np.log(np.exp(block - peak).sum(axis=1, dtype=np.float64))
    rows = np.arange(len(targets))
    target_logits = block[rows, targets]
    chosen = (target_logits - log_z).tolist()
    ranks = ((block > target_logits[:, None]).sum(axis=1) + 1).tolist() if ranked else [0] * len(targets)
    if top_n <= 0:
        return [TokenLogprob(t, lp, rank=r) for t, lp, r in zip(targets, chosen, ranks)]
    top_idx = np.argpartition(block, -top_n, axis=1)[:, -top_n:]
    top_val = np.take_along_axis(block, top_idx, axis=1)
    order = np.argsort(-top_val, axis=1)
    top_idx = np.take_along_axis(top_idx, order, axis=1)
    top_lp = np.take_along_axis(top_val, order, axis=1) - log_z[:, None]
    return [
        TokenLogprob(t, lp, list(zip(ids, lps)), r)
        for t, lp, ids, lps, r in zip(targets, chosen, top_idx.tolist(), top_lp.tolist(), ranks)
    ]


def logits_view(ctx: llama_cpp.llama_context_p, n_rows: int, n_vocab: int) -> np.ndarray:
    """Zero-copy view of the last decode's output logits (valid until the next decode)."""
    ptr = llama_cpp.llama_get_logits(ctx)
    return np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_float)), (n_rows, n_vocab))
