"""Draft verification in the executor (executor.sampling.sequence.verify_draft) on synthetic logits rows:
sampled output keeps the target's distribution, and a seed gives the tokens it gives without
speculation (the same draws land on the same output positions)."""

from __future__ import annotations

import numpy as np

from executor.sampling.sequence import SeqSampler, verify_draft
from ipc.protocol import SamplingParams

N_VOCAB = 64
PROBS = np.array([0.5, 0.3, 0.2])  # of tokens 10, 11, 12; every other token is cut by top-k
TOKENS = [10, 11, 12]


def rows(n: int) -> np.ndarray:
    block = np.full((n, N_VOCAB), -30.0, dtype=np.float32)
    block[:, TOKENS] = np.log(PROBS).astype(np.float32)
    return block


def sampler(seed: int, greedy: bool = False) -> SeqSampler:
    params = SamplingParams(temperature=0.0 if greedy else 1.0, top_k=3, seed=seed)
    return SeqSampler(params, None, N_VOCAB, logprobs=-1, history=[])


def test_greedy_verification_accepts_the_argmax_run_and_samples_after_it() -> None:
    tokens, _ = verify_draft(None, rows(4), 0, [10, 10, 11], sampler(0, greedy=True))
    assert tokens == [10, 10, 10]  # two accepted, the third position samples the argmax
    tokens, _ = verify_draft(None, rows(3), 0, [10, 10], sampler(0, greedy=True))
    assert tokens == [10, 10, 10]  # all accepted, plus the token after the draft


def test_sampled_verification_keeps_the_target_distribution() -> None:
    n = 4000
    first = np.zeros(3)
    second = np.zeros(3)  # after the first draft token was accepted
    for seed in range(n):
        tokens, _ = verify_draft(None, rows(3), 0, [11, 10], sampler(seed))
        first[TOKENS.index(tokens[0])] += 1
        if tokens[0] == 11:
            second[TOKENS.index(tokens[1])] += 1
    for counts in (first, second):
        expected = PROBS * counts.sum()
        chi2 = float(((counts - expected) ** 2 / expected).sum())
        assert chi2 < 13.8, (counts, expected)  # 2 degrees of freedom, p = 0.001


def test_a_seed_gives_the_same_tokens_with_and_without_a_draft() -> None:
    for seed in range(200):
        drafted, _ = verify_draft(None, rows(5), 0, [10, 11, 10, 12], sampler(seed))
        plain = sampler(seed)
        one_by_one = [plain.fast.sample(row) for row in rows(len(drafted))]
        assert drafted == one_by_one
