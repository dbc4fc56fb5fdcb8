"""The vectorised sampling path picks llama.cpp's tokens per seed, with llama.cpp's distribution.

Rows are real logits of the embedded model; the reference is the llama.cpp sampler chain the
executor builds for the same parameters (executor.sampling.sequence), run over the whole vocabulary.
"""

from __future__ import annotations

import ctypes
import math

import llama_cpp
import numpy as np
import pytest

from executor.sampling.fast import FastChain, LogitBias, fast_steps, sample_many
from executor.sampling.sequence import TOKEN_DATA, SeqSampler, _token_data_array, build_chain, sample_rows, skip_draws
from ggserve.models.resolve import resolve_model
from ipc.protocol import SamplingParams

TEXT = (
    "The history of the city begins in the early medieval period, when a small settlement grew around "
    "the river crossing. Merchants came from far away to trade wool, salt and iron, and by the twelfth "
    "century the town had a charter, a market and a stone bridge. Today its old streets hold"
)

# llama-server's default chain, and variants that exercise each step and order of the path.
PARAMS = {
    "server-default": SamplingParams(temperature=0.8, top_k=40, top_p=0.95, min_p=0.05),
    "top-k-only": SamplingParams(temperature=1.0, top_k=50, top_p=1.0, min_p=0.0),
    "large-k-hot": SamplingParams(temperature=1.7, top_k=300, top_p=0.99, min_p=0.0),
    "min-keep": SamplingParams(temperature=0.7, top_k=40, top_p=0.2, min_p=0.3, min_keep=5),
    "temperature-first": SamplingParams(
        temperature=1.3, top_k=64, top_p=0.9, min_p=0.02, samplers=("top_k", "temperature", "top_p", "min_p")
    ),
    "k-one": SamplingParams(temperature=0.8, top_k=1),
}


@pytest.fixture(scope="module")
def model_rows() -> tuple[np.ndarray, llama_cpp.llama_vocab_p, int]:
    """Logits rows of a real text (one per position) and the model's vocabulary."""
    llm = llama_cpp.Llama(resolve_model(None), n_ctx=256, logits_all=True, verbose=False, n_threads=2)
    tokens = llm.tokenize(TEXT.encode())
    llm.eval(tokens)
    rows = np.array(llm.scores[: len(tokens)], dtype=np.float32)
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    yield rows, vocab, llm.n_vocab()
    llm.close()


def _chain_tokens(params: SamplingParams, vocab, n_vocab: int, rows: np.ndarray, skip: int = 0) -> list[int]:
    """llama.cpp's picks for each row in turn, by the chain the executor would build."""
    chain = build_chain(params, vocab, n_vocab, greedy=False)
    skip_draws(chain, skip)
    cand = np.zeros(n_vocab, dtype=TOKEN_DATA)
    picked = []
    try:
        for row in rows:
            cand["id"] = np.arange(n_vocab, dtype=np.int32)
            cand["logit"] = row
            cand["p"] = 0.0
            array = _token_data_array(cand)
            llama_cpp.llama_sampler_apply(chain, ctypes.byref(array))
            token = int(cand["id"][array.selected])
            llama_cpp.llama_sampler_accept(chain, token)
            picked.append(token)
    finally:
        llama_cpp.llama_sampler_free(chain)
    return picked


def _fast_tokens(params: SamplingParams, n_vocab: int, rows: np.ndarray, skip: int = 0) -> list[int]:
    steps = fast_steps(params, n_vocab)
    assert steps is not None
    fast = FastChain(steps, n_vocab, params.seed, params.min_keep,
                     LogitBias(params.logit_bias) if params.logit_bias else None)
    fast.skip(skip)
    return [fast.sample(row) for row in rows]


def _has_tie_in_top(row: np.ndarray, k: int) -> bool:
    top = np.sort(row)[-k:]
    return bool(np.any(np.diff(top) == 0))


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_same_seed_picks_llama_cpp_chains_tokens(model_rows, name: str) -> None:
    rows, vocab, n_vocab = model_rows
    base = PARAMS[name]
    for seed in range(12):
        params = SamplingParams(**{**{f: getattr(base, f) for f in base.__struct_fields__}, "seed": seed})
        expected = _chain_tokens(params, vocab, n_vocab, rows)
        got = _fast_tokens(params, n_vocab, rows)
        for i, (a, b) in enumerate(zip(expected, got)):
            # The one documented difference: exactly equal logits among the top-k keep another order.
            assert a == b or _has_tie_in_top(rows[i], params.top_k), (name, seed, i, a, b)


def test_rows_sampled_together_pick_each_chains_own_tokens(model_rows) -> None:
    """Sequences with different chains (k, step order, min_keep, biases) sampled in one call, on
    rows in any order, each pick what llama.cpp's chain picks for that sequence alone."""
    rows, vocab, n_vocab = model_rows
    biased = SamplingParams(temperature=0.8, top_k=40, top_p=0.95, min_p=0.05, logit_bias=_biases(rows))
    settings = [*PARAMS.values(), biased]
    chains = [FastChain(fast_steps(p, n_vocab), n_vocab, seed, p.min_keep,
                        LogitBias(p.logit_bias) if p.logit_bias else None) for seed, p in enumerate(settings)]
    before = rows.copy()
    # at step t, sequence i reads row order[(i + 3 * t) % len(order)]: rows out of order, a sequence's rows apart
    order = np.random.default_rng(5).permutation(len(rows))
    n_steps = 8
    read = [[int(order[(i + 3 * t) % len(order)]) for t in range(n_steps)] for i in range(len(chains))]
    got: list[list[int]] = [[] for _ in chains]
    for t in range(n_steps):
        for i, token in enumerate(sample_many(rows, [read[i][t] for i in range(len(chains))], chains)):
            got[i].append(token)
    assert rows.tobytes() == before.tobytes()  # the biased rows are restored bit for bit
    for seed, (p, tokens) in enumerate(zip(settings, got)):
        params = SamplingParams(**{**{f: getattr(p, f) for f in p.__struct_fields__}, "seed": seed})
        expected = _chain_tokens(params, vocab, n_vocab, rows[read[seed]])
        assert all(a == b or _has_tie_in_top(rows[r], params.top_k)
                   for a, b, r in zip(expected, tokens, read[seed])), (seed, expected, tokens)


def test_resumed_sequence_continues_its_random_stream(model_rows) -> None:
    """After skip(n) both paths pick what an unpreempted sequence picks from row n on."""
    rows, vocab, n_vocab = model_rows
    params = SamplingParams(temperature=1.5, top_k=100, top_p=1.0, min_p=0.0, seed=7)
    whole_chain = _chain_tokens(params, vocab, n_vocab, rows)
    whole_fast = _fast_tokens(params, n_vocab, rows)
    assert whole_fast == whole_chain
    assert _chain_tokens(params, vocab, n_vocab, rows[10:], skip=10) == whole_chain[10:]
    assert _fast_tokens(params, n_vocab, rows[10:], skip=10) == whole_fast[10:]


def test_distribution_matches_the_chains_probabilities(model_rows) -> None:
    """Across seeds, the picks over one row follow the truncated, tempered softmax (chi-square)."""
    rows, _, n_vocab = model_rows
    row = max(rows, key=lambda r: np.sort(r)[-10])  # a row with several likely tokens
    params = SamplingParams(temperature=0.9, top_k=20, top_p=0.95, min_p=0.0)
    # The expected distribution, computed independently in float64.
    top = np.argsort(-row.astype(np.float64))[:20]
    probs = np.exp(row[top].astype(np.float64) - row[top].max())
    probs /= probs.sum()
    keep = np.searchsorted(np.cumsum(probs), 0.95) + 1
    top = top[:keep]
    scaled = np.exp((row[top].astype(np.float64) - row[top].max()) / 0.9)
    expected = scaled / scaled.sum()
    n_draws = 6000
    steps = fast_steps(params, n_vocab)
    counts = dict.fromkeys(top.tolist(), 0)
    for seed in range(n_draws):
        token = FastChain(steps, n_vocab, seed, 0).sample(row)
        assert token in counts, "picked a token outside top-k / top-p"
        counts[token] += 1
    observed = np.array([counts[t] for t in top.tolist()], dtype=np.float64)
    chi2 = float(((observed - n_draws * expected) ** 2 / (n_draws * expected)).sum())
    # 99.9% quantile of chi-square with len(top) - 1 degrees of freedom (Wilson-Hilferty).
    dof = len(top) - 1
    z = 3.09
    bound = dof * (1 - 2 / (9 * dof) + z * np.sqrt(2 / (9 * dof))) ** 3
    assert chi2 < bound, (chi2, bound, observed, expected)


def test_vectorised_path_is_taken_only_for_chains_it_reproduces() -> None:
    n_vocab = 262144
    assert fast_steps(PARAMS["server-default"], n_vocab) == [
        ("top_k", 40), ("top_p", 0.95), ("min_p", 0.05), ("temperature", 0.8)
    ]
    off = [
        SamplingParams(temperature=0.0),  # greedy: the argmax path
        SamplingParams(temperature=0.8, top_k=0),  # no top-k: the whole vocabulary is a candidate
        SamplingParams(temperature=0.8, repeat_penalty=1.1),
        SamplingParams(temperature=0.8, mirostat=2),
        SamplingParams(temperature=0.8, dynatemp_range=0.5),
        SamplingParams(temperature=0.8, typical_p=0.9),
        SamplingParams(temperature=0.8, xtc_probability=0.5, xtc_threshold=0.1),
        SamplingParams(temperature=0.8, top_n_sigma=1.0),
        SamplingParams(temperature=0.8, top_k=40, top_p=0.9, samplers=("top_p", "top_k", "temperature")),  # top-k not first
        SamplingParams(temperature=0.8, top_k=5000),
    ]
    for params in off:
        assert fast_steps(params, n_vocab) is None, params


def test_sample_rows_routes_default_sampling_through_the_vectorised_path(model_rows) -> None:
    rows, vocab, n_vocab = model_rows
    params = SamplingParams(temperature=0.8, top_k=40, top_p=0.95, min_p=0.05, seed=3)
    samplers = [SeqSampler(params, vocab, n_vocab, -1, []) for _ in range(3)]
    try:
        assert all(s.fast is not None and s.chain is None for s in samplers)
        tokens, _ = sample_rows(None, rows[:3], [0, 1, 2], samplers)
        assert tokens == [_chain_tokens(params, vocab, n_vocab, rows[i : i + 1])[0] for i in range(3)]
    finally:
        for s in samplers:
            s.free()


@pytest.mark.parametrize("n_vocab", [1000, 262144 - 77, 32000])
def test_vocabulary_sizes_without_whole_blocks_pick_the_same_tokens(n_vocab: int) -> None:
    """Small vocabularies (no block search) and sizes with a short last block."""
    rows = (np.random.default_rng(n_vocab).standard_normal((24, n_vocab)) * 4).astype(np.float32)
    rows[5, -3] = rows[5].max() + 5  # the best token in the short last block
    params = SamplingParams(temperature=1.1, top_k=40, top_p=0.97, min_p=0.01, seed=11)
    assert _fast_tokens(params, n_vocab, rows) == _chain_tokens(params, None, n_vocab, rows)
    # and every row at once, a sequence (seed) each
    seeds = [SamplingParams(**{**{f: getattr(params, f) for f in params.__struct_fields__}, "seed": seed})
             for seed in range(len(rows))]
    chains = [FastChain(fast_steps(p, n_vocab), n_vocab, p.seed, 0) for p in seeds]
    assert sample_many(rows, list(range(len(rows))), chains) == [
        _chain_tokens(p, None, n_vocab, rows[i : i + 1])[0] for i, p in enumerate(seeds)]


def _biases(rows: np.ndarray) -> list[tuple[int, float]]:
    """Bans of the tokens that top the first rows (as ignore_eos bans its tokens), one of them
    listed twice, and a boost that makes a mid-ranked token competitive."""
    tops = [int(t) for t in np.argmax(rows[:4], axis=1)]
    mid = int(np.argsort(rows[5])[-30])
    return [(t, -math.inf) for t in tops] + [(tops[0], -math.inf), (mid, 6.0), (mid, 1.5)]


def test_logit_bias_on_the_vectorised_path_picks_llama_cpp_chains_tokens(model_rows) -> None:
    rows, vocab, n_vocab = model_rows
    for seed in range(6):
        params = SamplingParams(temperature=0.8, top_k=40, top_p=0.95, min_p=0.05, seed=seed, logit_bias=_biases(rows))
        before = rows.copy()
        expected = _chain_tokens(params, vocab, n_vocab, rows)
        got = _fast_tokens(params, n_vocab, rows)
        assert rows.tobytes() == before.tobytes()  # the rows are restored bit for bit
        assert all(a == b or _has_tie_in_top(rows[i], 40) for i, (a, b) in enumerate(zip(expected, got)))
        assert not {t for t, b in params.logit_bias if b < 0} & set(got)


def test_greedy_with_a_logit_bias_takes_the_biased_argmax_without_a_chain(model_rows) -> None:
    rows, vocab, n_vocab = model_rows
    params = SamplingParams(temperature=0.0, logit_bias=_biases(rows))
    samplers = [SeqSampler(params, vocab, n_vocab, -1, []) for _ in rows]
    greedy = build_chain(params, vocab, n_vocab, greedy=True)
    try:
        assert all(s.biased_argmax is not None and s.chain is None and not s.argmax_first for s in samplers)
        before = rows.copy()
        tokens, _ = sample_rows(None, rows, list(range(len(rows))), samplers)
        assert rows.tobytes() == before.tobytes()
        cand = np.zeros(n_vocab, dtype=TOKEN_DATA)
        for row, token in zip(rows, tokens):
            cand["id"], cand["logit"], cand["p"] = np.arange(n_vocab, dtype=np.int32), row, 0.0
            array = _token_data_array(cand)
            llama_cpp.llama_sampler_apply(greedy, ctypes.byref(array))
            assert token == int(cand["id"][array.selected])
        assert not {t for t, b in params.logit_bias if b < 0} & set(tokens)
    finally:
        llama_cpp.llama_sampler_free(greedy)
        for s in samplers:
            s.free()
