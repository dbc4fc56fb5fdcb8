"""A speculating request's drafts: the server's settings, the proposals of a request's own
tokens (prompt lookup), and its acceptance rate (scheduler.speculative gives the whole picture)."""

from __future__ import annotations

from array import array
from dataclasses import dataclass

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
