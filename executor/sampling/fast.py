"""The common sampled chain (top-k first, then top-p / min-p / temperature, then dist) without
llama.cpp's whole-vocabulary candidate array, token for token as llama.cpp would pick.

llama.cpp's chain copies every logit of the row into a candidate array (262k entries for
Gemma 3) and partially sorts it, once per sequence and step: at 16 sampled sequences that is
most of the executor's time outside ``llama_decode``. Top-k comes first in llama-server's
default order (and in any order this path takes), so only the k largest logits can matter:
one pass over the row's block maxima narrows them down to about k blocks (``_top_k_blocks``),
and the rest of the chain runs on the k candidates. It repeats llama.cpp's arithmetic: the
candidates sorted by logit, float32 softmax and running sums for top-p, min-p's threshold in
logit space, float32 division by the temperature, and dist's draw: ``std::mt19937`` seeded as
llama.cpp seeds it (numpy's ``RandomState`` is the same generator with the same seeding), two
32-bit draws combined as libstdc++'s ``uniform_real_distribution<double>`` combines them, and a
float64 running sum.

The rows a step samples go through each stage together (``sample_many``): a few numpy calls
for all of them, not a few per row, which at 16 rows costs about two thirds of sampling them
one by one (a single row costs about 1.5 times as much, ~0.15 ms).

A logit bias (``logit_bias``; ``ignore_eos`` bans the end-of-generation tokens with one) comes
first in llama.cpp's chain: it is added to the rows in place for the pick and the rows are
restored after, so this path (and greedy, ``biased_argmax``) takes biased rows too.

The same seed therefore gives the same tokens as llama.cpp's chain, with one exception: where
two of the top logits are exactly equal, llama.cpp's partial sort leaves them in an
unspecified order while this path puts the lower token id first, so a draw that lands on one
of them may take the other (equally likely) token. The statistical test in the suite checks the
distribution; the equivalence test checks the tokens on real logits.
"""

from __future__ import annotations

import functools
import secrets
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np

from ipc.protocol import SamplingParams

LLAMA_DEFAULT_SEED = 0xFFFFFFFF  # llama.cpp draws a random seed for this value
DRAW_AHEAD = 256  # 32-bit draws taken from the generator at a time (two per token)
MAX_TOP_K = 1024  # larger k: llama.cpp's chain (the candidate sets stop being small)
_TWO_32 = 4294967296.0
_TWO_64 = 18446744073709551616.0
# Logits per block of the top-k search: blocks of 512 (262k vocabulary, k = 40) reduce as fast
# as a plain max; smaller blocks reduce slower, larger ones leave more to read again (1024 read
# twice as much again for the same block maxima: 1.40 against 1.08 ms for 16 rows on an EPYC).
MAX_BLOCK = 512
MIN_BLOCK = 64

# The samplers this path runs, by the names of SamplingParams.samplers.
TOP_K, TOP_P, MIN_P, TEMPERATURE = "top_k", "top_p", "min_p", "temperature"


def fast_steps(p: SamplingParams, n_vocab: int) -> list[tuple[str, float]] | None:
    """The chain of ``p`` as (sampler, value) steps when this path can run it exactly, else None.

    It can when the active samplers (those whose settings are not neutral) are top-k first, then
    any of top-p, min-p and plain temperature, then dist (after a logit bias, if any): no
    penalties, DRY, typical, XTC, top-n-sigma, dynamic temperature, Mirostat or adaptive-p.
    """
    if p.temperature <= 0 or p.mirostat or p.dynatemp_range > 0:
        return None
    if p.repeat_penalty != 1.0 or p.presence_penalty != 0.0 or p.frequency_penalty != 0.0:
        return None
    steps: list[tuple[str, float]] = []
    for name in p.samplers:
        if name == TOP_K:
            if p.top_k > 0:
                steps.append((TOP_K, min(p.top_k, n_vocab)))
        elif name == TOP_P:
            if p.top_p < 1.0:
                steps.append((TOP_P, p.top_p))
        elif name == MIN_P:
            if p.min_p > 0.0:
                steps.append((MIN_P, p.min_p))
        elif name == TEMPERATURE:
            steps.append((TEMPERATURE, p.temperature))
        elif _active(name, p):
            return None
    if not steps or steps[0][0] != TOP_K or steps[0][1] > MAX_TOP_K:
        return None
    return steps


def _active(name: str, p: SamplingParams) -> bool:
    """Whether a sampler outside this path's set would change anything."""
    if name == "penalties":
        return False  # checked above (neutral here)
    if name == "dry":
        return p.dry_multiplier != 0.0 and p.dry_base >= 1.0 and p.dry_penalty_last_n != 0
    if name == "top_n_sigma":
        return p.top_n_sigma > 0
    if name == "typ_p":
        return p.typical_p < 1.0
    if name == "xtc":
        return p.xtc_probability > 0.0 and p.xtc_threshold <= 0.5
    return True  # infill, adaptive_p and anything new: llama.cpp's chain


class LogitBias:
    """llama.cpp's logit-bias sampler: token ids and what to add to their logits."""

    def __init__(self, pairs: list[tuple[int, float]]) -> None:
        self.ids = np.array([token for token, _ in pairs], dtype=np.int64)
        self.values = np.array([bias for _, bias in pairs], dtype=np.float32)


class FastChain:
    """One sequence's state on this path: its steps, its logit bias and its random stream."""

    def __init__(self, steps: list[tuple[str, float]], n_vocab: int, seed: int | None, min_keep: int,
                 bias: LogitBias | None = None) -> None:
        self.k = int(steps[0][1])
        self.bias = bias
        self.block = _block_size(n_vocab, self.k)
        # the block search needs 4k blocks or more; below that, a partition of the whole row
        self.blocked = n_vocab // self.block >= 4 * self.k
        # Later steps with their values as the float32 llama.cpp stores them.
        self.steps = [(name, np.float32(value)) for name, value in steps[1:]]
        self.min_keep = max(min_keep, 0)
        seed = LLAMA_DEFAULT_SEED if seed is None else seed & 0xFFFFFFFF
        if seed == LLAMA_DEFAULT_SEED:
            seed = secrets.randbits(32)
            while seed == LLAMA_DEFAULT_SEED:
                seed = secrets.randbits(32)
        self._rng = np.random.RandomState(seed)
        self._draws = np.empty(0, dtype=np.float64)  # drawn ahead: a draw costs ~7 us, 256 barely more
        self._next = 0

    def skip(self, n_tokens: int) -> None:
        """Advance the stream past ``n_tokens`` earlier draws (a resumed sequence goes on where
        it was, not from its seed's first draw)."""
        for _ in range(n_tokens):
            self.draw()

    def draw(self) -> float:
        """dist's next uniform number in [0, 1): two 32-bit draws of the stream combined as
        libstdc++'s ``generate_canonical<double, 53>`` combines them."""
        if self._next >= len(self._draws):
            self._draws = self._rng.randint(0, 1 << 32, size=DRAW_AHEAD, dtype=np.uint32).astype(np.float64)
            self._next = 0
        low, high = self._draws[self._next], self._draws[self._next + 1]
        self._next += 2
        return (low + high * _TWO_32) / _TWO_64

    def sample(self, row: np.ndarray) -> int:
        """The next token from one logits row (``sample_many`` with one row)."""
        return sample_many(row[None, :], [0], [self])[0]


def sample_many(logits: np.ndarray, rows: Sequence[int], chains: Sequence[FastChain]) -> list[int]:
    """Each chain's next token: chain i samples ``logits[rows[i]]``. The rows go through each
    step together: a few numpy calls for all of them instead of a few for each."""
    return pick(chains, top_candidates(logits, rows, chains))


Candidates = tuple[np.ndarray, np.ndarray]  # a row's top-k token ids and their logits, best first


def top_candidates(logits: np.ndarray, rows: Sequence[int], chains: Sequence[FastChain]) -> list[Candidates]:
    """The top-k candidates of each chain's row, under its logit bias: for all rows, the biases
    in place, one pass for the block maxima, then the candidates. The rows are restored bit for
    bit after (the caller may read raw logits later). Draws nothing from the random streams."""
    found: list[Candidates] = [(np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32))] * len(chains)
    with _biases_applied(logits, rows, [chain.bias for chain in chains]):
        by_block: dict[int, list[int]] = {}
        for i, chain in enumerate(chains):
            if chain.blocked:
                by_block.setdefault(chain.block, []).append(i)
            else:
                found[i] = _top_k_partition(logits[rows[i]], chain.k)
        for block, members in by_block.items():
            for i, candidates in zip(members, _top_k_blocks(logits, [rows[i] for i in members],
                                                            [chains[i].k for i in members], block)):
                found[i] = candidates
    return found


def pick(chains: Sequence[FastChain], candidates: Sequence[Candidates]) -> list[int]:
    """Each chain's token among its candidates (``top_candidates``): the rest of its steps and
    dist, chains with the same steps together. Each chain draws once from its stream."""
    tokens = [0] * len(chains)
    by_steps: dict[tuple[str, ...], list[int]] = {}
    for i, chain in enumerate(chains):
        by_steps.setdefault(tuple(name for name, _ in chain.steps), []).append(i)
    for names, members in by_steps.items():
        chosen = _finish([chains[i] for i in members], names, [candidates[i][1] for i in members])
        for i, j in zip(members, chosen):
            tokens[i] = int(candidates[i][0][j])
    return tokens


def biased_argmax(logits: np.ndarray, rows: Sequence[int], biases: Sequence[LogitBias | None]) -> list[int]:
    """Greedy picks: the argmax of each ``logits[rows[i]]`` under ``biases[i]`` (None: none).
    The biases of all rows go in with one call and the rows are restored after: one context per
    row cost ~13 us of a GPU step's ~4 ms at 16 rows with ``ignore_eos``."""
    with _biases_applied(logits, rows, biases):
        return [int(logits[row].argmax()) for row in rows]


@contextmanager
def _biases_applied(logits: np.ndarray, rows: Sequence[int], biases: Sequence[LogitBias | None]) -> Iterator[None]:
    """The logit biases added to their rows in place (float32; a token listed twice gets both,
    as in llama.cpp), and the rows restored bit for bit afterwards."""
    biased = [(row, bias) for row, bias in zip(rows, biases) if bias is not None]
    if not biased:
        yield
        return
    at = (np.concatenate([np.full(len(bias.ids), row) for row, bias in biased]),
          np.concatenate([bias.ids for _, bias in biased]))
    saved = logits[at]
    np.add.at(logits, at, np.concatenate([bias.values for _, bias in biased]))
    try:
        yield
    finally:
        logits[at] = saved


def _top_k_partition(row: np.ndarray, k: int) -> Candidates:
    """The k largest logits of a short row (ids and float32 copies), by logit descending and then
    by id, from one partition of the whole row."""
    cand = np.flatnonzero(row >= np.partition(row, len(row) - k)[len(row) - k])
    order = np.lexsort((cand, -row[cand]))[:k]
    return cand[order], row[cand[order]]


def _top_k_blocks(logits: np.ndarray, rows: list[int], ks: list[int], block: int) -> list[Candidates]:
    """The ks[i] largest logits of each row ``rows[i]`` (ids and float32 copies), by logit
    descending and then by id.

    Each row is cut into blocks of ``block``. A row's k-th largest block maximum is a floor for
    its k-th largest logit (k blocks each hold a logit at least that high), so its top k lie in
    the blocks whose maximum reaches it: one pass over all rows for the block maxima, then only
    about k blocks per row are read again.
    """
    assert logits.strides[1] == logits.itemsize, "rows of contiguous logits"
    n_vocab = logits.shape[1]
    n_blocks = n_vocab // block
    whole = n_blocks * block
    # every output row as (blocks, logits in a block), a view (rows are contiguous float32)
    blocks = np.lib.stride_tricks.as_strided(logits, (logits.shape[0], n_blocks, block),
                                             (logits.strides[0], block * logits.itemsize, logits.itemsize))
    at = np.asarray(rows)
    # each row's block maxima (the short last block's too, when there is one), contiguous rows
    # in one call: a max over segments is faster in numpy than one over an axis of 1024
    contiguous = rows == list(range(rows[0], rows[0] + len(rows)))
    segments = _segments(len(rows) if contiguous else 1, n_vocab, block)
    if contiguous:
        peaks = np.maximum.reduceat(logits[rows[0] : rows[0] + len(rows)].ravel(), segments).reshape(len(rows), -1)
    else:
        peaks = np.stack([np.maximum.reduceat(logits[row], segments) for row in rows])
    floors = np.sort(peaks, axis=1)[np.arange(len(rows)), peaks.shape[1] - np.asarray(ks)]
    # (row, block) pairs to read again, and their logits at or above the row's floor
    picked = np.flatnonzero(peaks[:, :n_blocks] >= floors[:, None])
    member, block_id = picked // n_blocks, picked % n_blocks
    hits = np.flatnonzero(blocks[at[member], block_id] >= floors[member][:, None])  # (2-D nonzero is slower)
    hit_block = hits // block
    cand_member = member[hit_block]
    cand = block_id[hit_block] * block + hits % block
    if whole < n_vocab:
        for i in np.flatnonzero(peaks[:, n_blocks] >= floors):
            tail = whole + np.flatnonzero(logits[rows[i], whole:] >= floors[i])
            cand_member = np.concatenate([cand_member, np.full(len(tail), i)])
            cand = np.concatenate([cand, tail])
    cand_values = logits[at[cand_member], cand]
    order = np.lexsort((cand, -cand_values, cand_member))  # by row, then logit descending, then id
    cand, cand_values = cand[order], cand_values[order]
    counts = np.bincount(cand_member, minlength=len(rows))
    firsts = np.cumsum(counts) - counts
    return [(cand[f : f + k], cand_values[f : f + k]) for f, k in zip(firsts.tolist(), ks)]


@functools.lru_cache(maxsize=64)
def _segments(n_rows: int, n_vocab: int, block: int) -> np.ndarray:
    """Where each block of ``n_rows`` consecutive rows starts, in the rows' flat layout."""
    return (np.arange(n_rows)[:, None] * n_vocab + np.arange(0, n_vocab, block)).ravel()


def _finish(chains: list[FastChain], names: tuple[str, ...], values: list[np.ndarray]) -> list[int]:
    """The candidate each chain picks from its top-k ``values`` (sorted, descending), all chains
    (of the same step names) at once: row g of each array is chain g, its candidates from
    ``n[g]`` on (cut by the steps so far, or padding) left out of every sum and search."""
    every = np.arange(len(chains))
    width = max(len(v) for v in values) + 1  # and a padding column: where a search that finds nothing stops
    logits = np.full((len(chains), width), -np.inf, dtype=np.float32)
    for g, v in enumerate(values):
        logits[g, : len(v)] = v
    n = np.array([len(v) for v in values])
    column = np.arange(width)
    # llama.cpp keeps at least min_keep candidates: where top-p may stop (keeping up to and
    # including its column) and where min-p may cut (keeping the columns before)
    min_keep = np.array([chain.min_keep for chain in chains])[:, None]
    top_p_may_stop, min_p_may_cut = column + 1 >= min_keep, column >= min_keep
    for s, name in enumerate(names):
        value = np.array([chain.steps[s][1] for chain in chains], dtype=np.float32)
        if name == TOP_K:
            n = np.minimum(n, value.astype(np.int64))
        elif name == TOP_P:
            # llama.cpp: softmax (float32 exps, sequential float32 sums), then the first running
            # probability to reach p; n is the count up to and including it
            exps = _expf(logits - logits[:, :1])
            exps[column >= n[:, None]] = 0
            total = np.cumsum(exps, axis=1, dtype=np.float32)[every, n - 1]
            running = np.cumsum(exps / total[:, None], axis=1, dtype=np.float32)
            n = _first((running >= value[:, None]) & top_p_may_stop, column, n - 1) + 1
        elif name == MIN_P:
            # the first candidate below the top logit plus log(p), in float32, is the count
            below = logits < (logits[:, 0] + _logf(value))[:, None]
            below[:, 0] = False
            n = _first(below & min_p_may_cut, column, n)
        else:  # temperature
            logits /= value[:, None]
    # dist: float64 weights and a sequential float64 running sum, the first to reach the draw
    weights = _expf(logits - logits[:, :1]).astype(np.float64)
    weights[column >= n[:, None]] = 0
    running = np.cumsum(weights, axis=1)
    draw = np.array([chain.draw() for chain in chains])
    return _first(running >= (running[every, n - 1] * draw)[:, None], column, n - 1).tolist()


def _first(hit: np.ndarray, column: np.ndarray, limit: np.ndarray) -> np.ndarray:
    """Per row, the first column where ``hit`` holds, or ``limit`` when none does before it."""
    return np.argmax(hit | (column >= limit[:, None]), axis=1)


def _block_size(n_vocab: int, k: int) -> int:
    """The largest power of two up to MAX_BLOCK that still cuts the row into 4k blocks or more."""
    block = MAX_BLOCK
    while block > MIN_BLOCK and n_vocab // block < 4 * k:
        block //= 2
    return block


def _expf(x: np.ndarray) -> np.ndarray:
    """float32 exp rounded as C's expf rounds (numpy's float32 exp may differ in the last bit)."""
    return np.exp(x.astype(np.float64)).astype(np.float32)


def _logf(x: np.ndarray) -> np.ndarray:
    """float32 log rounded as C's logf rounds."""
    return np.log(x.astype(np.float64)).astype(np.float32)
