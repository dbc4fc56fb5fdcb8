"""The KV cache as one pool, on the real model: a request may use the whole context, requests
that outgrow the pool finish through preemption, and n copies of a prompt evaluate it once.

Preempted requests are recomputed in another batch shape, so their greedy text may leave the
solo run's only where the solo run had a near-tie (see test_engine's TIE_GAP).
"""

from __future__ import annotations

from test_engine import PROMPTS, SYSTEM, TIE_GAP

from engine_harness import running_engine
from ipc.protocol import FinishReason


def test_a_3000_token_prompt_runs_with_c_4096_and_4_slots() -> None:
    with running_engine(n_parallel=4, ctx_size=4096) as eng:
        assert eng.info.n_ctx_slot == 4096  # not c / np = 1024
        prompt = (eng.tokenizer.encode(SYSTEM) * 20)[:3000]
        (res,) = eng.client.generate([prompt], 8, ignore_eos=True)
        assert res.finish_reason == FinishReason.LENGTH and len(res.tokens) == 8
        assert res.stats.n_prompt_tokens == 3000


def test_requests_outgrowing_the_pool_finish_through_preemption_and_agree_with_solo_runs() -> None:
    with running_engine(n_parallel=4, ctx_size=1024) as eng:
        prompts = [eng.tokenizer.encode(f"{p} {SYSTEM}")[:200] for p in PROMPTS[:4]]
        solos = [eng.client.generate([p], 100, ignore_eos=True, logprobs=2)[0] for p in prompts]
        results = eng.client.generate(prompts, 100, ignore_eos=True)  # 4 x 300 cells > 1024
        assert eng.client.stats().preemptions_total > 0
        for solo, res in zip(solos, results):
            assert res.finish_reason == FinishReason.LENGTH and len(res.tokens) == 100
            k = next((i for i, (a, b) in enumerate(zip(res.tokens, solo.tokens)) if a != b), None)
            if k is not None:
                assert solo.top2_gap(k) < TIE_GAP, (k, solo.top2_gap(k))


def test_n_copies_of_a_prompt_evaluate_it_once() -> None:
    with running_engine(n_parallel=4, ctx_size=2048) as eng:
        prompt = eng.tokenizer.encode(SYSTEM)
        results = eng.client.generate([prompt] * 4, 6, ignore_eos=True)
        evaluated = sum(r.stats.n_evaluated_prompt_tokens for r in results)
        assert evaluated == len(prompt) + 3  # one prefill, then each copy's last prompt token
        assert sorted(r.stats.n_cached_tokens for r in results) == [0] + [len(prompt) - 1] * 3
        assert all(r.tokens == results[0].tokens for r in results)  # greedy: the same text


def test_a_prefix_evicted_to_host_memory_is_restored_and_agrees_with_a_cold_run() -> None:
    with running_engine(n_parallel=2, ctx_size=1024, cache_ram=64) as eng:
        system = eng.tokenizer.encode(SYSTEM)
        first = system + eng.tokenizer.encode(" Q: How do I fix a leaking tap?")[1:]
        second = system + eng.tokenizer.encode(" Q: Which paint suits a bathroom?")[1:]
        eng.client.generate([first], 8)
        filler = (eng.tokenizer.encode(PROMPTS[1]) * 200)[:900]  # needs the cells first's prefix holds
        eng.client.generate([filler], 4)
        (warm,) = eng.client.generate([second], 16, ignore_eos=True, logprobs=2)
        assert warm.stats.n_cached_tokens >= len(system)  # restored, not recomputed
        (cold,) = eng.client.generate([second], 16, ignore_eos=True, logprobs=2, cache_prompt=False)
        assert cold.stats.n_cached_tokens == 0
        k = next((i for i, (a, b) in enumerate(zip(warm.tokens, cold.tokens)) if a != b), None)
        if k is not None:
            assert cold.top2_gap(k) < TIE_GAP, (k, cold.top2_gap(k))
