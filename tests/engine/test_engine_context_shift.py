"""Context shift and n_cache_reuse on the real engine, with a tiny one-layer llama model
(tests/tiny_models.py).

With one layer, a token's key and value depend on the token and its position only, so after a
shift the cache holds exactly what a fresh prefill of the kept tokens followed by the moved ones
computes: the generation after a shift must go on as a new request with that prompt does, and a
prompt whose cached chunks were moved into place must run as a cold prefill of it does. That
checks which tokens were kept and dropped, and that the moved keys were re-rotated to their new
positions. Runs differ in batch shape, so a mismatch is allowed only at a near-tie, after the
log-probabilities of the tokens before it agreed.
"""

from __future__ import annotations

import pytest
from tiny_models import tiny_llama

from engine_harness import Result, running_engine
from ipc.protocol import FinishReason

CTX = 64  # tokens one request may hold
TIE_GAP = 0.05  # top-2 log-probability gap under which float rounding may flip this model's pick
TEXT = "Once upon a time, in a small village by the sea, there lived an old fisherman and his three daughters."


def first_mismatch(a: list[int], b: list[int]) -> int | None:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)


def agrees(run: Result, reference: Result, start: int) -> bool:
    """``run`` gives the tokens of ``reference`` from ``start`` on (both with logprobs), with the
    same log-probabilities, or leaves them at a near-tie. The log-probabilities tell a context
    one token off (about 0.2 apart and more) from the right one (under 0.02: float rounding)."""
    expected = reference.tokens[start : start + len(run.tokens)]
    k = first_mismatch(run.tokens, expected)
    if k == 0 or (k is not None and run.top2_gap(k) >= TIE_GAP):
        return False
    same = range(len(expected) if k is None else k)
    return max(abs(run.logprobs[i].logprob - reference.logprobs[start + i].logprob) for i in same) < 0.05


def continues(eng, run: Result, prompt: list[int], n_keep: int, dropped: int) -> bool:
    """Whether ``run`` went on after its first shift as a fresh request whose prompt is the
    first ``n_keep`` tokens and those after the ``dropped`` next ones does."""
    seq = prompt + run.tokens
    kept = seq[:n_keep] + seq[n_keep + dropped : CTX + 1]
    n_next = CTX - len(kept) + 1  # tokens sampled before the next shift
    (fresh,) = eng.client.generate([kept], n_next, ignore_eos=True, logprobs=2, cache_prompt=False)
    return agrees(fresh, run, CTX + 1 - len(prompt))


@pytest.fixture(scope="module")
def eng():
    with running_engine(model=tiny_llama(), n_parallel=4, ctx_size=512, ctx_per_request=CTX, threads=1,
                        context_shift=True) as engine:
        assert engine.info.context_shift
        yield engine


@pytest.mark.parametrize("n_keep, n_discard", [(4, 0), (12, 9)])
def test_generation_goes_past_the_context_as_if_the_kept_and_moved_tokens_were_the_prompt(eng, n_keep, n_discard):
    prompt = eng.tokenizer.encode(TEXT)[:16]
    (run,) = eng.client.generate([prompt], 3 * CTX, ignore_eos=True, n_keep=n_keep, n_discard=n_discard,
                                 cache_prompt=False, logprobs=2)
    assert run.finish_reason == FinishReason.LENGTH and len(run.tokens) == 3 * CTX  # far past the context
    assert run.stats.truncated
    # The first shift comes when CTX tokens are in the cache: it drops n_discard (default: half
    # of those after n_keep) and the token sampled then is fed after the moved ones.
    assert continues(eng, run, prompt, n_keep, n_discard or (CTX - n_keep) // 2)
    assert not continues(eng, run, prompt, n_keep, (n_discard or (CTX - n_keep) // 2) + 1)  # the check tells


def test_a_shifted_cache_is_reused_only_up_to_n_keep(eng):
    prompt = eng.tokenizer.encode(TEXT)[5:21]  # no other test's slots hold it
    n_out = CTX + 8 - len(prompt)  # ends 8 tokens after the first shift
    (run,) = eng.client.generate([prompt], n_out, ignore_eos=True, n_keep=4, logprobs=2)
    seq = prompt + run.tokens
    shifted = seq[:4] + seq[4 + (CTX - 4) // 2 : CTX + 4]  # what its slot held when it ended, less 4 tokens
    (again,) = eng.client.generate([shifted], 4, ignore_eos=True, logprobs=2)
    assert again.stats.n_cached_tokens == 4  # not the 37 the slot held: they saw dropped tokens
    assert agrees(again, run, CTX + 4 - len(prompt))


def test_shifting_requests_and_short_ones_side_by_side_all_complete(eng):
    tokens = eng.tokenizer.encode(TEXT) * 3
    shared = tokens[1:46]  # two requests share 44 cells of it, past where a default shift starts (34)
    long_prompts = [shared, shared, tokens[3:23]]
    short_prompts = [tokens[i : i + 10] for i in range(4)]
    rids = [eng.client.submit(p, 2 * CTX, ignore_eos=True, n_keep=4, logprobs=2) for p in long_prompts]
    rids += [eng.client.submit(p, 8, ignore_eos=True) for p in short_prompts]
    results = eng.client.wait(rids)
    assert [len(r.tokens) for r in results] == [2 * CTX] * 3 + [8] * 4
    assert all(r.finish_reason == FinishReason.LENGTH for r in results)
    assert [r.stats.truncated for r in results] == [True] * 3 + [False] * 4
    # The first of the two to shift drops the 40 tokens up to the end of the shared cells (which
    # cannot move), the other then drops its 30; each goes on as its kept tokens dictate.
    first, second = results[:2]
    assert {continues(eng, first, shared, 4, 40), continues(eng, second, shared, 4, 40)} == {True, False}
    assert {continues(eng, first, shared, 4, 30), continues(eng, second, shared, 4, 30)} == {True, False}
    assert continues(eng, results[2], long_prompts[2], 4, 30)
    stats = eng.client.stats()
    assert stats.n_running == 0 and stats.executors[0].kv_tokens <= 512


def test_without_context_shift_a_generation_stops_at_the_context():
    with running_engine(model=tiny_llama(), n_parallel=2, ctx_size=256, ctx_per_request=CTX, threads=1) as eng:
        assert not eng.info.context_shift
        prompt = eng.tokenizer.encode(TEXT)[:16]
        (run,) = eng.client.generate([prompt], -1, ignore_eos=True)
        assert run.finish_reason == FinishReason.LENGTH and len(run.tokens) == CTX - len(prompt)
        assert run.stats.truncated


def test_cached_chunks_after_a_removed_passage_are_moved_into_place_and_agree_with_a_cold_run(eng):
    a, b, c, d = (eng.tokenizer.encode(t)[1:] for t in (
        " The lighthouse keeper counted the ships that passed each night,",
        " though the fog often hid them from view,",
        " and wrote their names in a worn leather book that his father had given him.",
        " Years later,"))
    bos = eng.tokenizer.encode("")
    eng.client.generate([bos + a + b + c], 2)
    edited = bos + a + c + d
    (warm,) = eng.client.generate([edited], 8, ignore_eos=True, logprobs=2, n_cache_reuse=8)
    assert warm.stats.n_cached_tokens == len(bos + a + c)  # c's cells moved down, not recomputed
    (cold,) = eng.client.generate([edited], 8, ignore_eos=True, logprobs=2, cache_prompt=False)
    assert agrees(warm, cold, 0)
