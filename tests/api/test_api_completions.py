"""/v1/completions end to end: prompt forms, echo, logprobs, streaming, n, suffix."""

from __future__ import annotations

import httpx
import openai
import pytest

PROMPT = "The days of the week are Monday, Tuesday,"


@pytest.fixture(scope="module")
def sdk(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0,
                         _strict_response_validation=True)


@pytest.fixture(scope="module")
def stream_sdk(server) -> openai.OpenAI:
    """For streams: the SDK's Completion type requires a finish_reason, which every chunk but the
    last has as null (OpenAI's own streams too), so strict validation cannot apply to them."""
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0)


def tokenize(server, text: str) -> list[int]:
    return httpx.post(f"{server.base_url}/tokenize", json={"content": text, "add_special": True}).json()["tokens"]


def test_string_prompt_and_usage(server, sdk):
    out = sdk.completions.create(model="any", prompt=PROMPT, max_tokens=6, temperature=0,
                                 extra_body={"ignore_eos": True})
    assert out.object == "text_completion" and out.id.startswith("cmpl-")
    assert out.choices[0].finish_reason == "length" and out.choices[0].text
    assert out.usage.prompt_tokens == len(tokenize(server, PROMPT))
    assert out.usage.completion_tokens == 6


def test_token_prompt_gives_the_same_text(server, sdk):
    kwargs = {"model": "any", "max_tokens": 8, "temperature": 0}
    text = sdk.completions.create(prompt=PROMPT, **kwargs).choices[0].text
    assert sdk.completions.create(prompt=tokenize(server, PROMPT), **kwargs).choices[0].text == text


def test_several_prompts_times_n(server, sdk):
    out = sdk.completions.create(model="any", prompt=["One, two,", tokenize(server, "Red, green,")], n=2,
                                 max_tokens=3, temperature=1.0, seed=9)
    assert [c.index for c in out.choices] == [0, 1, 2, 3]
    assert out.usage.prompt_tokens == len(tokenize(server, "One, two,")) + len(tokenize(server, "Red, green,"))


def test_echo(sdk, stream_sdk):
    out = sdk.completions.create(model="any", prompt=PROMPT, max_tokens=4, temperature=0, echo=True)
    plain = sdk.completions.create(model="any", prompt=PROMPT, max_tokens=4, temperature=0)
    assert out.choices[0].text == PROMPT + plain.choices[0].text
    chunks = list(stream_sdk.completions.create(model="any", prompt=PROMPT, max_tokens=4, temperature=0, echo=True,
                                         stream=True))
    assert chunks[0].choices[0].text == PROMPT
    assert "".join(c.choices[0].text for c in chunks) == out.choices[0].text


def test_echo_with_logprobs_scores_every_prompt_token(server):
    # Raw JSON: the first entry is null, as OpenAI sends it, which the SDK's strict types reject.
    prompt_ids = tokenize(server, PROMPT)
    body = {"prompt": PROMPT, "max_tokens": 1, "temperature": 0, "echo": True, "logprobs": 1}
    out = httpx.post(f"{server.base_url}/v1/completions", json=body, timeout=60).json()
    choice = out["choices"][0]
    lp = choice["logprobs"]
    n = len(prompt_ids) + out["usage"]["completion_tokens"]
    assert len(lp["tokens"]) == len(lp["token_logprobs"]) == len(lp["top_logprobs"]) == len(lp["text_offset"]) == n
    assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None  # nothing precedes it
    assert all(v <= 0 for v in lp["token_logprobs"][1:])
    assert all(len(top) == 1 for top in lp["top_logprobs"][1:])
    assert "".join(lp["tokens"]) == choice["text"]
    offsets = lp["text_offset"]
    assert all(offsets[i + 1] == offsets[i] + len(lp["tokens"][i]) for i in range(n - 1))


def test_logprobs_shapes(sdk):
    out = sdk.completions.create(model="any", prompt="1, 2, 3, 4,", max_tokens=6, temperature=0, logprobs=2)
    choice = out.choices[0]
    lp = choice.logprobs
    n = out.usage.completion_tokens
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == n
    assert "".join(lp.tokens) == choice.text
    assert lp.text_offset[0] == 0
    assert all(lp.text_offset[i + 1] == lp.text_offset[i] + len(lp.tokens[i]) for i in range(n - 1))
    assert all(1 <= len(top) <= 2 and max(top.values()) == value for top, value in zip(lp.top_logprobs,
                                                                                        lp.token_logprobs))


def test_stream_equals_non_stream(sdk, stream_sdk):
    kwargs = {"model": "any", "prompt": PROMPT, "max_tokens": 8, "temperature": 0}
    whole = sdk.completions.create(**kwargs)
    chunks = list(stream_sdk.completions.create(**kwargs, stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole.choices[0].text
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_stop_strings(sdk):
    kwargs = {"model": "any", "prompt": PROMPT, "max_tokens": 12, "temperature": 0}
    text = sdk.completions.create(**kwargs).choices[0].text
    stop = text.strip().split()[1]
    out = sdk.completions.create(**kwargs, stop=stop)
    assert (out.choices[0].text, out.choices[0].finish_reason) == (text[: text.index(stop)], "stop")


def test_suffix_needs_an_infill_model(sdk):
    with pytest.raises(openai.BadRequestError) as info:
        sdk.completions.create(model="any", prompt="def f(", suffix="    return x", max_tokens=4)
    assert info.value.body["param"] == "suffix"


@pytest.mark.parametrize(
    "body",
    [
        {"prompt": []},
        {"prompt": {"content": [{"type": "text", "text": "x"}]}},  # content parts: embeddings only
        {"prompt": {"prompt_string": "x", "multimodal_data": ["AAAA"]}},
        {"prompt": [[2, "x", 10**9]]},
        {"prompt": [10**9]},
        {"prompt": "x", "max_tokens": -2},
        {"prompt": "x", "logprobs": 99},
        {"prompt": "x", "echo": True, "logprobs": 1, "stream": True},
        {"prompt": "x", "n": "two"},
        {"prompt": "x", "top_p": 1.5},  # OpenAI's ranges (and vLLM's)
        {"prompt": "x", "presence_penalty": 2.5},
        {"prompt": "x", "frequency_penalty": -3},
    ],
)
def test_bad_requests_are_400(server, body: dict):
    r = httpx.post(f"{server.base_url}/v1/completions", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["type"] == "invalid_request_error"


def test_max_tokens_0_evaluates_the_prompt_and_generates_nothing(server):
    """llama-server's n_predict 0 (editors warm their cache with it: the next request with the
    prompt finds it cached), and the legacy API's max_tokens 0 with echo: the prompt's logprobs."""
    prompt = "The quick brown fox jumps over the lazy dog because"
    warm = httpx.post(f"{server.base_url}/completion", json={"prompt": prompt, "n_predict": 0}, timeout=60).json()
    assert (warm["content"], warm["tokens_predicted"], warm["stop_type"]) == ("", 0, "limit")
    again = httpx.post(f"{server.base_url}/completion", json={"prompt": prompt, "n_predict": 1}, timeout=60).json()
    assert again["timings"]["cache_n"] == warm["tokens_evaluated"] - 1  # all but the last token, from the cache
    echo = httpx.post(f"{server.base_url}/v1/completions", timeout=60, json={
        "prompt": prompt, "max_tokens": 0, "echo": True, "logprobs": 1}).json()["choices"][0]
    assert echo["text"] == prompt and echo["finish_reason"] == "length"
    lps = echo["logprobs"]["token_logprobs"]
    assert lps[0] is None and len(lps) == len(echo["logprobs"]["tokens"]) > 5 and all(lp <= 0 for lp in lps[1:])
