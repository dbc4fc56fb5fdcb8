"""LoRA adapters in the engine (real model, no HTTP): an adapter changes the function, scale 0 is
no adapter, a request's own ``lora`` overrides the global scales, requests of different adapter
sets run side by side (in different steps) and agree with their solo runs, and the prefix cache
never hands one set's KV to another.

The model is a base model and the adapters are random: nothing here asserts what it says. Runs
compared as "the same function" evaluate their whole prompt (cache_prompt off), so they have the
same batch shapes: with an adapter, a reused prefix (the prompt's last token evaluated alone)
moves the log-probabilities a little (float rounding of the adapter's matrix products, likely
amplified by llama.cpp's 8-bit activation quantization), while without one these shapes happen
to be bit-identical.
"""

from __future__ import annotations

import pytest
from test_engine import teacher_forced_splits

from engine_harness import Engine, Result, running_engine
from ggserve.config import ScaledFile
from ipc.protocol import ErrorCode, FinishReason, LoraScale, SetLoraScales
from ipc.transport import send

PROMPTS = ["The capital of France is", "def fibonacci(n):"]
N_TOKENS = 6
LOGPROB_TOL = 0.05  # same prompt, same batch shapes, other KV cells
# Largest solo top-2 gap at which an adapted request in another batch shape may pick the
# runner-up: test_engine's TIE_GAP (0.5) leaves the plain model's rounding room; the test adapter
# adds its own (one position moved by 0.3 nats between shapes in a probe), while a step run with
# the wrong adapters moves the top candidates by several nats.
LORA_TIE_GAP = 1.0
A_ONLY = [LoraScale(0, 1.0)]
B_ONLY = [LoraScale(1, 1.0)]
NONE = [LoraScale(0, 0.0)]  # every adapter at 0


@pytest.fixture(scope="module")
def base_results() -> list[Result]:
    """Each prompt alone on an engine without adapters."""
    with running_engine(n_parallel=2, ctx_size=1024) as eng:
        return [eng.client.generate([eng.tokenizer.encode(p)], N_TOKENS, ignore_eos=True, logprobs=3,
                                    cache_prompt=False)[0] for p in PROMPTS]


@pytest.fixture(scope="module")
def engine(lora_adapters):
    """Adapter 0 ("a") at global scale 1, adapter 1 ("b") at 0."""
    adapters = [ScaledFile(lora_adapters["a"]), ScaledFile(lora_adapters["b"], 0.0)]
    with running_engine(n_parallel=4, ctx_size=2048, lora=adapters) as eng:
        yield eng


def solo(eng: Engine, prompt: str, lora: list[LoraScale] | None) -> Result:
    """The prompt alone, evaluated whole."""
    (res,) = eng.client.generate([eng.tokenizer.encode(prompt)], N_TOKENS, ignore_eos=True, logprobs=3, lora=lora,
                                 cache_prompt=False)
    assert res.error is None and res.finish_reason == FinishReason.LENGTH
    return res


def same_function(a: Result, b: Result) -> bool:
    return a.tokens == b.tokens and all(
        abs(x.logprob - y.logprob) <= LOGPROB_TOL for x, y in zip(a.logprobs, b.logprobs, strict=True))


def test_the_engine_reports_its_adapters(engine: Engine, lora_adapters) -> None:
    (info,) = engine.info.executors
    assert [a.path for a in info.lora_adapters] == [lora_adapters["a"], lora_adapters["b"]]
    assert [a.task_name for a in info.lora_adapters] == ["style", ""]
    assert engine.client.stats().lora_scales == [1.0, 0.0]


def test_an_adapter_changes_the_logits_and_scale_zero_does_not(engine: Engine, base_results) -> None:
    for prompt, base in zip(PROMPTS, base_results):
        adapted = solo(engine, prompt, A_ONLY)
        first_base, first_adapted = base.logprobs[0], adapted.logprobs[0]
        # the adapter moves the first token's distribution by far more than rounding
        assert [t for t, _ in first_base.top] != [t for t, _ in first_adapted.top] or (
            abs(first_base.logprob - first_adapted.logprob) > 1.0)
        assert same_function(solo(engine, prompt, NONE), base)
    assert not same_function(solo(engine, PROMPTS[0], A_ONLY), solo(engine, PROMPTS[0], B_ONLY))


def test_a_requests_lora_overrides_the_global_scales(engine: Engine, base_results) -> None:
    prompt = PROMPTS[1]
    assert same_function(solo(engine, prompt, None), solo(engine, prompt, A_ONLY))  # global: "a" at 1
    assert same_function(solo(engine, prompt, []), solo(engine, prompt, A_ONLY))  # [] is the global set too
    # a list turns off what it does not name
    assert same_function(solo(engine, prompt, [LoraScale(1, 0.0)]), base_results[1])
    half = solo(engine, prompt, [LoraScale(0, 0.5)])
    assert not same_function(half, base_results[1]) and not same_function(half, solo(engine, prompt, A_ONLY))


def test_setting_the_global_scales_changes_later_requests(engine: Engine, base_results) -> None:
    prompt = PROMPTS[0]
    try:
        send(engine.client.sock, SetLoraScales([LoraScale(1, 1.0)]))  # "b" on, "a" (not listed) off
        assert engine.client.stats().lora_scales == [0.0, 1.0]
        assert same_function(solo(engine, prompt, None), solo(engine, prompt, B_ONLY))
        send(engine.client.sock, SetLoraScales([]))
        assert engine.client.stats().lora_scales == [0.0, 0.0]
        assert same_function(solo(engine, prompt, None), base_results[0])
        send(engine.client.sock, SetLoraScales([LoraScale(5, 1.0)]))  # unknown adapter: ignored
        assert engine.client.stats().lora_scales == [0.0, 0.0]
    finally:
        send(engine.client.sock, SetLoraScales([LoraScale(0, 1.0)]))
        assert engine.client.stats().lora_scales == [1.0, 0.0]


def test_requests_of_different_adapter_sets_run_together_and_agree_with_their_solo_runs(engine: Engine) -> None:
    # Steps alternate between the sets; each request must still compute its own set's function.
    # Batch shapes move an adapted request's logits more than a plain one's (module docstring),
    # so near-ties are wider here; a step run with the wrong adapters would move them by several
    # nats at nearly every token (the adapter changes the first token's top candidates).
    mix = [(0, A_ONLY), (1, B_ONLY), (1, A_ONLY), (0, B_ONLY)]
    prompts = [engine.tokenizer.encode(PROMPTS[i]) for i, _ in mix]
    solos = [solo(engine, PROMPTS[i], lora) for i, lora in mix]
    together = engine.client.wait([engine.client.submit(p, N_TOKENS, ignore_eos=True, lora=lora)
                                   for p, (_, lora) in zip(prompts, mix)])
    assert all(res.error is None and len(res.tokens) == N_TOKENS for res in together)
    for target in (0, 1):
        others = [k for k in range(len(mix)) if k != target]
        splits = teacher_forced_splits(engine.client, prompts[target], solos[target], [prompts[k] for k in others],
                                       mix[target][1], [mix[k][1] for k in others])
        assert all(gap < LORA_TIE_GAP for _, gap in splits) and len(splits) <= N_TOKENS // 3, (target, splits)


def test_the_prefix_cache_is_not_shared_between_adapter_sets(engine: Engine) -> None:
    prompt = engine.tokenizer.encode("A long shared system prompt about the store's opening hours. " * 6)

    def cached(lora: list[LoraScale]) -> int:
        (res,) = engine.client.generate([prompt], 2, lora=lora)
        assert res.error is None
        return res.stats.n_cached_tokens

    # sets no other test uses, so no slot holds even a BOS token computed with them
    first, second, both = [LoraScale(0, 0.75)], [LoraScale(1, 0.75)], [LoraScale(0, 0.75), LoraScale(1, 0.75)]
    assert cached(first) == 0
    assert cached(first) >= len(prompt) - 1  # the same set reuses it
    assert cached(second) == 0  # another set computes its own
    assert cached(second) >= len(prompt) - 1
    assert cached(both) == 0


def test_an_unknown_adapter_or_a_bad_scale_fails_the_request_alone(engine: Engine) -> None:
    prompt = engine.tokenizer.encode(PROMPTS[0])
    for lora in ([LoraScale(2, 1.0)], [LoraScale(-1, 1.0)], [LoraScale(0, float("nan"))]):
        (res,) = engine.client.generate([prompt], 2, lora=lora)
        assert res.finish_reason == FinishReason.ERROR and res.error.code == ErrorCode.INVALID_REQUEST
    assert solo(engine, PROMPTS[0], A_ONLY).error is None
