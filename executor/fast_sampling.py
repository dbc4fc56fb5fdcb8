"""The common sampled chain (top-k first, then top-p / min-p / temperature, then dist) without
llama.cpp's whole-vocabulary candidate array, token for token as llama.cpp would pick.

llama.cpp's chain copies every logit of the row into a candidate array (262k entries for
Gemma 3) and partially sorts it, once per sequence and step: at 16 sampled sequences that is
most of the executor's time outside ``llama_decode``. Top-k comes first in llama-server's
default order (and in any order this path takes), so only the k largest logits can matter:
one pass over the row's block maxima narrows them down to about k blocks (``FastChain._top_k``),
and the rest of the chain runs on the k candidates. It repeats llama.cpp's arithmetic: the candidates sorted by logit, float32 softmax
and running sums for top-p, min-p's threshold in logit space, float32 division by the
temperature, and dist's draw: ``std::mt19937`` seeded as llama.cpp seeds it (numpy's
``RandomState`` is the same generator with the same seeding), two 32-bit draws combined as
libstdc++'s ``uniform_real_distribution<double>`` combines them, and a float64 running sum.

A logit bias (``logit_bias``; ``ignore_eos`` bans the end-of-generation tokens with one) comes
first in llama.cpp's chain: ``LogitBias`` adds it to the row in place for the pick and restores
the row after, so this path (and plain greedy, ``executor.sampling``) takes biased rows too.

The same seed therefore gives the same tokens as llama.cpp's chain, with one exception: where
two of the top logits are exactly equal, llama.cpp's partial sort leaves them in an
unspecified order while this path puts the lower token id first, so a draw that lands on one
of them may take the other (equally likely) token. The statistical test in the suite checks the
distribution; the equivalence test checks the tokens on real logits.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from ipc.protocol import SamplingParams

LLAMA_DEFAULT_SEED = 0xFFFFFFFF  # llama.cpp draws a random seed for this value
DRAW_AHEAD = 256  # 32-bit draws taken from the generator at a time (two per token)
MAX_TOP_K = 1024  # larger k: llama.cpp's chain (the candidate sets stop being small)
_TWO_32 = 4294967296.0
_TWO_64 = 18446744073709551616.0
# Logits per block of the top-k search: blocks of 1024 (262k vocabulary, k = 40) reduce as fast
# as a plain max; smaller blocks reduce slower, larger ones leave more to read again.
MAX_BLOCK = 1024
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
    """llama.cpp's logit-bias sampler, applied to a row in place for one pick."""

    def __init__(self, pairs: list[tuple[int, float]]) -> None:
        self.ids = np.array([token for token, _ in pairs], dtype=np.int64)
        self.values = np.array([bias for _, bias in pairs], dtype=np.float32)

    @contextmanager
    def applied(self, row: np.ndarray) -> Iterator[np.ndarray]:
        """The row with the biases added (float32, a token listed twice gets both, as in
        llama.cpp), restored bit for bit afterwards (the caller may read raw logits later)."""
        saved = row[self.ids]
        np.add.at(row, self.ids, self.values)
        try:
            yield row
        finally:
            row[self.ids] = saved


class FastChain:
    """One sequence's state on this path: its steps, its logit bias and its random stream."""

    def __init__(self, steps: list[tuple[str, float]], n_vocab: int, seed: int | None, min_keep: int,
                 bias: LogitBias | None = None) -> None:
        self.k = int(steps[0][1])
        self._bias = bias
        self._block = _block_size(n_vocab, self.k)
        # Later steps with their values as the float32 llama.cpp stores them.
        self._steps = [(name, np.float32(value)) for name, value in steps[1:]]
        self._min_keep = max(min_keep, 0)
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
            self._draw()

    def _draw(self) -> tuple[float, float]:
        """The next two 32-bit draws of the stream (as floats)."""
        if self._next >= len(self._draws):
            self._draws = self._rng.randint(0, 1 << 32, size=DRAW_AHEAD, dtype=np.uint32).astype(np.float64)
            self._next = 0
        low, high = self._draws[self._next], self._draws[self._next + 1]
        self._next += 2
        return low, high

    def sample(self, row: np.ndarray) -> int:
        if self._bias is None:
            ids, logits = self._top_k(row)
        else:
            with self._bias.applied(row):
                ids, logits = self._top_k(row)  # copies: the row may be restored
        n = len(ids)
        for name, value in self._steps:
            if name == TOP_K:
                n = min(int(value), n)
            elif name == TOP_P:
                n = self._top_p(logits[:n], value)
            elif name == MIN_P:
                n = self._min_p(logits[:n], value)
            else:  # temperature
                logits[:n] /= value
        return int(ids[self._dist(logits[:n])])

    def _top_k(self, row: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The k largest logits of ``row`` (ids and float32 copies), by logit descending and
        then by id.

        The row is cut into blocks (``_block_size``). The k-th largest block maximum is a floor
        for the k-th largest logit (k blocks each hold a logit at least that high), so the top k
        lie in the blocks whose maximum reaches it: one pass for the block maxima, then only
        about k blocks are read again.
        """
        k = self.k
        block = self._block
        n_blocks = len(row) // block
        if n_blocks < 4 * k:
            cand = np.flatnonzero(row >= np.partition(row, len(row) - k)[len(row) - k])
        else:
            body = row[: n_blocks * block].reshape(n_blocks, block)
            peaks = body.max(axis=1)
            if n_blocks * block < len(row):  # the short last block
                peaks = np.append(peaks, row[n_blocks * block :].max())
            floor = np.partition(peaks, len(peaks) - k)[len(peaks) - k]
            blocks = np.flatnonzero(peaks >= floor)
            tail = blocks == n_blocks
            inner = blocks[~tail]
            hits = np.flatnonzero(body[inner] >= floor)  # (2-D np.nonzero is several times slower)
            cand = inner[hits // block] * block + hits % block
            if tail.any():
                cand = np.concatenate([cand, n_blocks * block + np.flatnonzero(row[n_blocks * block :] >= floor)])
        values = row[cand]
        if len(cand) > k:
            keep = np.argpartition(-values, k - 1)[:k]
            cand, values = cand[keep], values[keep]
        order = np.lexsort((cand, -values))
        return cand[order], values[order].astype(np.float32)

    def _top_p(self, logits: np.ndarray, p: np.float32) -> int:
        probs = _softmax32(logits)
        cum = np.cumsum(probs, dtype=np.float32)  # sequential float32 sums, as llama.cpp's loop
        reached = np.flatnonzero(cum >= p)
        reached = reached[reached + 1 >= self._min_keep]
        return int(reached[0]) + 1 if len(reached) else len(logits)

    def _min_p(self, logits: np.ndarray, p: np.float32) -> int:
        floor = np.float32(logits[0] + _logf(p))
        below = np.flatnonzero(logits[1:] < floor) + 1
        below = below[below >= self._min_keep]
        return int(below[0]) if len(below) else len(logits)

    def _dist(self, logits: np.ndarray) -> int:
        low, high = self._draw()
        if len(logits) == 1:
            return 0
        rnd = (low + high * _TWO_32) / _TWO_64  # libstdc++'s generate_canonical<double, 53>
        weights = _expf(logits - logits[0]).astype(np.float64)
        running = np.cumsum(weights)  # sequential float64 sums, as llama.cpp's loop
        hit = np.flatnonzero(running >= running[-1] * rnd)
        return int(hit[0]) if len(hit) else len(logits) - 1


def _block_size(n_vocab: int, k: int) -> int:
    """The largest power of two up to MAX_BLOCK that still cuts the row into 4k blocks or more."""
    block = MAX_BLOCK
    while block > MIN_BLOCK and n_vocab // block < 4 * k:
        block //= 2
    return block


def _expf(x: np.ndarray) -> np.ndarray:
    """float32 exp rounded as C's expf rounds (numpy's float32 exp may differ in the last bit)."""
    return np.exp(x.astype(np.float64)).astype(np.float32)


def _logf(x: np.float32) -> np.float32:
    return np.float32(np.log(np.float64(x)))


def _softmax32(logits: np.ndarray) -> np.ndarray:
    """llama.cpp's softmax over sorted candidates: float32 exps, a sequential float32 sum."""
    exps = _expf(logits - logits[0])
    total = np.cumsum(exps, dtype=np.float32)[-1]
    return exps / total
