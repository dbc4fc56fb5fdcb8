"""Speculative decoding, the scheduler's half: model-free drafts and how long each one is.

A decoding request with speculation on proposes the tokens that followed the last time its
latest tokens appeared in its own prompt + output (prompt lookup); with a draft model (-md) the
scheduler books cells for the draft instead, and the executor drafts (executor.draft) and says
which tokens it drafted. Its step item then carries
the pending token and the draft; the executor verifies them in the same ``llama_decode`` as
every other sequence's tokens (ipc.protocol.BatchItem.draft) and reports how many were
accepted; the scheduler drops the rejected ones from the KV cache (a TRUNCATE before the next
step) and from its books.

Verification samples the target at each draft position and accepts while the sample equals the
draft. A model-free draft is a point mass, for which this is exactly the standard rejection
rule: the output has the target's distribution at any temperature, and with the same seed the
same random draws go to the same output positions as without speculation.

Drafts cost compute: on a CPU a decode's time grows with its tokens, so speculation must pay for
itself. Each executor keeps its step time as a curve of the step's tokens (``StepCost``); each
request keeps its recent acceptance rate ``alpha`` (``Acceptance``, starting from the rate of
all requests lately), so the j-th draft token is expected to yield ``alpha ** j`` output tokens.
The step's draft tokens are the most valuable ones, as many as maximise its expected output
tokens per second (``allocate``): when the batch is already compute-bound (many decodes, each
draft token nearly as costly as a whole output token) drafts stop, and a request whose drafts
keep failing drafts shorter, then not at all, until a probe shows it agreeing again.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass

import numpy as np

from ggserve.config import DRAFT_MODEL_TYPE, ServeConfig

# Acceptance prior: as if this many draft positions had been tried, PRIOR_ALPHA of them accepted.
PRIOR_TRIALS = 2.0
PRIOR_ALPHA = 0.5
ACCEPTANCE_DECAY = 0.8  # per verification: the rate follows the text (a quote ends, a new one starts)
# A new request's prior is the server's recent rate over all requests (a copy workload's requests
# draft long from their first step; on free text they do not waste a first long draft); that
# pooled rate forgets more slowly, as it follows the workload rather than one text.
POOL_DECAY = 0.95
MIN_ALPHA = 0.05  # a request never gives up for good: every so often a 1-token probe is worth it
PROBE_EVERY = 16  # steps between probes of a request whose acceptance is below the threshold
# ... doubled after each draft that had nothing accepted, up to this: a probe costs a token of
# compute, and on free text at 8 sequences (where speculation measured ~4% slower than none)
# a probe every 16 steps per request adds ~6% tokens to the steps
PROBE_EVERY_MAX = 128

# Step-time model prior: a token costs PRIOR_TOKEN_SHARE of a one-token step (until steps of
# several sizes have been seen).
PRIOR_TOKEN_SHARE = 0.1
COST_DECAY = 0.995  # per step: the curve follows load changes (other processes, thermal state)
MIN_SMALL_N = 2  # the llama.cpp n-gram rule never matches fewer tokens; ggserve's backs off to this


@dataclass(frozen=True)
class SpecSettings:
    """The server's speculative decoding settings (--spec-*)."""

    kind: str  # "": off; "ngram-simple": llama.cpp's rule; "draft-simple": a draft model; else the longest match
    n_max: int  # draft tokens per step at most
    n_min: int  # a shorter draft is not verified
    size_n: int  # tokens matched (the longest-match index: at most)
    min_hits: int  # earlier occurrences of the matched tokens needed
    p_min: float = 0.0  # the draft model's probability floor

    @property
    def enabled(self) -> bool:
        return bool(self.kind)

    @property
    def model(self) -> bool:
        """The executor drafts with a draft model (the scheduler proposes nothing itself)."""
        return self.kind == DRAFT_MODEL_TYPE


DRAFT_MODEL_N_MAX = 16  # a draft model's tokens per step at most, unless --spec-draft-n-max says


def spec_settings(cfg: ServeConfig) -> SpecSettings:
    default_max = DRAFT_MODEL_N_MAX if cfg.spec_type == DRAFT_MODEL_TYPE else cfg.spec_ngram_size_m
    return SpecSettings(cfg.spec_type, cfg.spec_draft_n_max or default_max, cfg.spec_draft_n_min,
                        cfg.spec_ngram_size_n, cfg.spec_ngram_min_hits, cfg.spec_draft_p_min)


class Drafter:
    """One request's token history and its draft proposals.

    The history is kept as little-endian int32 bytes, so finding the last earlier occurrence of
    the latest n tokens is one ``bytes.rfind`` (C speed, no per-token index to maintain).
    """

    __slots__ = ("_bytes", "n_tokens", "acceptance", "_idle_steps", "_probe_every")

    def __init__(self, tokens: list[int], prior_alpha: float = PRIOR_ALPHA) -> None:
        self._bytes = bytearray()
        self.n_tokens = 0
        self.extend(tokens)
        self.acceptance = Acceptance(prior_alpha)
        self._idle_steps = 0  # steps since it last drafted (for probes)
        self._probe_every = PROBE_EVERY

    def extend(self, tokens: list[int]) -> None:
        self._bytes += array("i", tokens).tobytes()
        self.n_tokens += len(tokens)

    def propose(self, settings: SpecSettings, limit: int) -> list[int]:
        """Up to ``limit`` tokens that followed the latest tokens earlier in the history."""
        if limit <= 0:
            return []
        sizes = [settings.size_n] if settings.kind == "ngram-simple" else range(settings.size_n, MIN_SMALL_N - 1, -1)
        for n in sizes:
            start = self._find(n, settings.min_hits)
            if start >= 0:
                end = min(start + limit, self.n_tokens)
                draft = array("i", self._bytes[4 * start : 4 * end]).tolist()
                cut = next((i for i, t in enumerate(draft) if t < 0), len(draft))
                if cut < len(draft):
                    return draft[:cut]  # a negative id stands for media, never a token to feed
                # Past the history's end the continuation repeats (its period is the distance
                # to the match): a lookup after accepting it would propose the same again. A
                # model caught in a loop ("\n\n\n", a table's "| --- |") drafts it whole.
                return (draft * -(-limit // len(draft)))[:limit]
        return []

    def _find(self, n: int, min_hits: int) -> int:
        """Where the tokens after the last earlier occurrence of the latest ``n`` tokens start
        (-1: none, or fewer than ``min_hits`` occurrences)."""
        if self.n_tokens <= n:
            return -1
        data = self._bytes
        pattern = bytes(data[-4 * n :])
        end = len(data) - 4  # the occurrence must end before the latest token
        hits = 0
        found = -1
        while True:
            at = data.rfind(pattern, 0, end)
            if at < 0:
                return found if hits >= min_hits else -1
            if at % 4 == 0:  # token-aligned (a match across token boundaries is not one)
                hits += 1
                if found < 0:
                    found = at // 4 + n
                if hits >= min_hits:
                    return found
            end = at + 4 * n - 1

    def wants_probe(self) -> bool:
        """Whether a request whose drafts have not paid lately should try one token again."""
        self._idle_steps += 1
        return self._idle_steps >= self._probe_every

    def drafted(self) -> None:
        self._idle_steps = 0

    def verified(self, n_drafted: int, n_accepted: int) -> None:
        """A draft's outcome: the acceptance rate, and the wait before the next probe."""
        self.acceptance.update(n_drafted, n_accepted)
        self._probe_every = PROBE_EVERY if n_accepted else min(2 * self._probe_every, PROBE_EVERY_MAX)


class Acceptance:
    """A recent rate of draft acceptance (a request's, or the scheduler's over all requests), per
    draft position (a geometric model: each position is accepted with probability ``alpha``
    until the first rejection)."""

    __slots__ = ("accepted", "trials", "decay")

    def __init__(self, prior_alpha: float = PRIOR_ALPHA, decay: float = ACCEPTANCE_DECAY) -> None:
        self.accepted = prior_alpha * PRIOR_TRIALS
        self.trials = PRIOR_TRIALS
        self.decay = decay

    @property
    def alpha(self) -> float:
        return max(MIN_ALPHA, self.accepted / self.trials)

    def update(self, n_drafted: int, n_accepted: int) -> None:
        rejected = 1 if n_accepted < n_drafted else 0
        self.accepted = self.accepted * self.decay + n_accepted
        self.trials = self.trials * self.decay + n_accepted + rejected


class StepCost:
    """An executor's step time as a function of the step's tokens, from its recent steps.

    A CPU's cost per token falls as a batch grows (the weights are read once for all its tokens:
    here ~4 ms a token at 16, ~1.4 ms at 500), so a straight line misjudges long drafts. Steps are
    kept by size class (powers of two, halved), each an average with forgetting of its tokens and
    seconds; ``seconds(n)`` interpolates between the classes seen, never decreasing, and goes on
    past the largest with its last slope. With one class seen, the slope is a prior (a token costs
    PRIOR_TOKEN_SHARE of a one-token step), which the prefill chunks correct soon.
    """

    def __init__(self) -> None:
        self._classes: dict[int, list[float]] = {}  # class -> [weight, tokens sum, seconds sum]
        self._curve: list[tuple[float, float]] | None = None  # (tokens, seconds), made on demand

    def observe(self, n_tokens: int, seconds: float) -> None:
        if n_tokens <= 0:
            return
        cls = (2 * n_tokens).bit_length()  # 1, 2, 3-4, 5-8, ... tokens: one class each (about)
        for stats in self._classes.values():
            stats[0] *= COST_DECAY
            stats[1] *= COST_DECAY
            stats[2] *= COST_DECAY
        stats = self._classes.setdefault(cls, [0.0, 0.0, 0.0])
        stats[0] += 1.0
        stats[1] += n_tokens
        stats[2] += seconds
        self._curve = None

    def seconds(self, n_tokens: float) -> float:
        return float(self.seconds_many(np.array([n_tokens]))[0])

    def seconds_many(self, n_tokens: np.ndarray) -> np.ndarray:
        """``seconds`` of each of ``n_tokens``, at once: the curve between its points, its first
        point's time below them, its last slope past them."""
        curve = self._curve
        if curve is None:
            curve = self._curve = self._make_curve()
        n = np.asarray(n_tokens, dtype=float)
        if not curve:
            return 1.0 + PRIOR_TOKEN_SHARE * n
        xs, ys = np.array(curve).T
        slope = (ys[-1] - ys[-2]) / (xs[-1] - xs[-2])
        return np.where(n <= xs[-1], np.interp(n, xs, ys), ys[-1] + slope * (n - xs[-1]))

    def _make_curve(self) -> list[tuple[float, float]]:
        points = sorted((n / w, t / w) for w, n, t in self._classes.values() if w > 1e-3)
        if not points:
            return []
        if len(points) == 1:  # the prior's slope, to a point far enough to extrapolate from
            n, t = points[0]
            points.append((n + 1.0, t * (1.0 + PRIOR_TOKEN_SHARE)))
        curve = [points[0]]
        for n, t in points[1:]:
            if n > curve[-1][0]:
                curve.append((n, max(t, curve[-1][1])))  # more tokens never take less time
        if len(curve) == 1:
            n, t = curve[0]
            curve.append((n + 1.0, t * (1.0 + PRIOR_TOKEN_SHARE)))
        return curve


def allocate(candidates: list[tuple[int, float, int]], n_plain: int, cost: StepCost, budget: int,
             extra_per_token: float = 0.0) -> dict[int, int]:
    """Draft lengths that maximise the step's expected output tokens per second.

    ``candidates``: (key, alpha, longest draft) per speculating request; ``n_plain``: the step's
    decode tokens (each yields one output token). Draft token j of a request (j = 1, 2, ...) adds
    ``alpha ** j`` expected tokens for one token's cost. For each total k (at most ``budget``)
    the k most valuable tokens are the best choice, and the k whose expected tokens per second
    are highest wins. Not token by token while each pays: a CPU's step cost is concave (the
    first tokens beside eight decodes cost ~7 ms each, later ones ~2 ms), so a first draft token
    can look too dear where twenty would pay. ``extra_per_token``: what making one draft token
    costs besides verifying it (a draft model's decode).
    """
    candidates = [(key, alpha, longest) for key, alpha, longest in candidates if longest > 0]
    if not candidates or budget <= 0:
        return {}
    keys = np.concatenate([np.full(longest, key) for key, _, longest in candidates])
    values = np.concatenate([alpha ** np.arange(1, longest + 1) for _, alpha, longest in candidates])
    order = np.argsort(-values, kind="stable")[:budget]  # a request's tokens stay in order
    k = np.arange(len(order) + 1)
    expected = n_plain + np.concatenate(([0.0], np.cumsum(values[order])))
    rates = expected / (cost.seconds_many(n_plain + k) + extra_per_token * k)
    best = int(np.argmax(rates))  # the first of equals: no draft token that does not pay
    chosen, counts = np.unique(keys[order[:best]], return_counts=True)
    return {int(key): int(n) for key, n in zip(chosen, counts)}
