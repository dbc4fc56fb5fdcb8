"""Banned token sequences (vLLM's bad_words) in the executor's sampling: a sequence's last token
is never picked where the tokens just generated are the rest of it, on every sampling path
(greedy, a logit bias, the sampled chain, a grammar, a speculative draft's verification)."""

from __future__ import annotations

import msgspec
import numpy as np

from executor.sampling.sequence import SeqSampler, sample_rows, verify_draft
from frontend.text.tokenizer import Tokenizer
from ipc.protocol import SamplingParams


def ids(tokenizer: Tokenizer, *words: str) -> list[int]:
    out = [tokenizer.tokenize(w, add_special=False, parse_special=False) for w in words]
    assert all(len(t) == 1 for t in out), out
    return [t[0] for t in out]


def wanting(tokenizer: Tokenizer, *preferred: int) -> np.ndarray:
    """A logits row preferring ``preferred`` in that order."""
    row = np.zeros(tokenizer.n_vocab, dtype=np.float32)
    for rank, token in enumerate(preferred):
        row[token] = 10.0 - rank
    return row


def pick(tokenizer: Tokenizer, params: SamplingParams, history: list[int], row: np.ndarray) -> int:
    sampler = SeqSampler(params, tokenizer.vocab, tokenizer.n_vocab, -1, history)
    try:
        return sample_rows(None, row[None, :], [0], [sampler])[0][0]
    finally:
        sampler.free()


def test_a_one_token_sequence_is_banned_everywhere(tokenizer):
    cat, dog = ids(tokenizer, " cat", " dog")
    params = SamplingParams(temperature=0, banned_sequences=[[cat]])
    assert pick(tokenizer, params, [], wanting(tokenizer, cat, dog)) == dog
    assert pick(tokenizer, SamplingParams(temperature=0), [], wanting(tokenizer, cat, dog)) == cat


def test_a_longer_sequences_last_token_is_banned_only_after_the_rest(tokenizer):
    the, cat, dog, a = ids(tokenizer, " the", " cat", " dog", " a")
    params = SamplingParams(temperature=0, banned_sequences=[[the, cat]])
    row = wanting(tokenizer, cat, dog)
    assert pick(tokenizer, params, [a, the], row) == dog
    assert pick(tokenizer, params, [the, a], row) == cat  # not right after " the"
    assert pick(tokenizer, params, [], row) == cat


def test_bans_hold_under_a_logit_bias_sampling_and_a_grammar(tokenizer):
    cat, dog, one, two = ids(tokenizer, " cat", " dog", "1", "2")
    biased = SamplingParams(temperature=0, logit_bias=[(cat, 20.0)], banned_sequences=[[cat]])
    assert pick(tokenizer, biased, [], wanting(tokenizer, dog)) != cat
    sampled = SamplingParams(temperature=1.0, top_k=2, seed=7, banned_sequences=[[cat]])
    row = wanting(tokenizer, cat, dog)
    row[cat] = 30.0  # the chain alone would pick it every time
    assert {pick(tokenizer, msgspec.structs.replace(sampled, seed=s), [], row) for s in range(20)} == {dog}
    grammar = SamplingParams(temperature=0, grammar="root ::= [0-9]", banned_sequences=[[one]])
    assert pick(tokenizer, grammar, [], wanting(tokenizer, cat, one, two)) == two


def test_a_draft_verified_past_a_banned_sequence_stops_there(tokenizer):
    the, cat, dog = ids(tokenizer, " the", " cat", " dog")
    sampler = SeqSampler(SamplingParams(temperature=0, banned_sequences=[[the, cat]]), tokenizer.vocab,
                         tokenizer.n_vocab, -1, [])
    rows = np.stack([wanting(tokenizer, the), wanting(tokenizer, cat, dog), wanting(tokenizer, the)])
    try:
        tokens, _ = verify_draft(None, rows, 0, [the, cat], sampler)
    finally:
        sampler.free()
    assert tokens == [the, dog]  # the draft's " cat" after " the" is refused, the sample is the next best
