"""How long the step's drafts are: each executor's step time as a curve of the step's tokens
(StepCost, also what the host cache weighs a save against), and the draft lengths that maximise
the step's expected output tokens per second (allocate)."""

from __future__ import annotations

import numpy as np

# Step-time model prior: a token costs PRIOR_TOKEN_SHARE of a one-token step (until steps of
# several sizes have been seen).
PRIOR_TOKEN_SHARE = 0.1
COST_DECAY = 0.995  # per step: the curve follows load changes (other processes, thermal state)


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
