"""/v1/chat/completions end to end on the default model, through the official openai SDK.

Temperature 0 (or a fixed seed) for determinism; outputs are compared only between runs of the
same batch shape (each request alone), never across shapes (see design.md).
"""

from __future__ import annotations

import json

import httpx
import openai
import pytest

MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "List three colors of the rainbow."},
]


@pytest.fixture(scope="module")
def sdk(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0,
                         _strict_response_validation=True)


def prompt_tokens(server, messages: list[dict]) -> int:
    prompt = httpx.post(f"{server.base_url}/apply-template", json={"messages": messages}).json()["prompt"]
    tokens = httpx.post(f"{server.base_url}/tokenize", json={"content": prompt, "add_special": True}).json()
    return len(tokens["tokens"])


def test_usage_matches_the_token_counts(server, sdk):
    out = sdk.chat.completions.create(model="any", messages=MESSAGES, max_tokens=8, temperature=0, logprobs=True)
    choice = out.choices[0]
    assert out.object == "chat.completion" and out.id.startswith("chatcmpl-")
    assert choice.message.role == "assistant" and choice.message.content
    assert out.usage.prompt_tokens == prompt_tokens(server, MESSAGES)
    assert out.usage.completion_tokens == len(choice.logprobs.content)
    assert out.usage.total_tokens == out.usage.prompt_tokens + out.usage.completion_tokens
    if choice.finish_reason == "length":
        assert out.usage.completion_tokens == 8


def test_stream_text_equals_non_stream_text(sdk):
    kwargs = {"model": "any", "messages": MESSAGES, "max_tokens": 16, "temperature": 0}
    whole = sdk.chat.completions.create(**kwargs)
    chunks = list(sdk.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [whole.choices[0].finish_reason]
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens


def test_seed_reproduces_sampling_at_temperature_1(sdk):
    def sample(seed: int) -> str:
        out = sdk.chat.completions.create(model="any", messages=MESSAGES, max_tokens=16, temperature=1.0, seed=seed)
        return out.choices[0].message.content

    first = sample(1234)
    assert sample(1234) == first
    assert len({first, sample(1), sample(2)}) > 1  # the seed matters


def test_n_choices(server, sdk):
    out = sdk.chat.completions.create(model="any", messages=MESSAGES, max_tokens=6, temperature=1.0, seed=3, n=2,
                                      logprobs=True)
    assert [c.index for c in out.choices] == [0, 1]
    assert out.usage.completion_tokens == sum(len(c.logprobs.content) for c in out.choices)
    assert out.usage.prompt_tokens == prompt_tokens(server, MESSAGES)  # the shared prompt counts once


def test_max_completion_tokens(sdk):
    out = sdk.chat.completions.create(model="any", messages=MESSAGES, max_completion_tokens=3, temperature=0,
                                      extra_body={"ignore_eos": True})
    assert (out.usage.completion_tokens, out.choices[0].finish_reason) == (3, "length")


def test_stop_string_cuts_the_text_and_says_stop(sdk):
    kwargs = {"model": "any", "messages": MESSAGES, "max_tokens": 24, "temperature": 0}
    text = sdk.chat.completions.create(**kwargs).choices[0].message.content
    words = text.split()
    assert len(words) >= 3, text
    stop = words[2]
    cut = sdk.chat.completions.create(**kwargs, stop=[stop, "never-appears"])
    assert cut.choices[0].finish_reason == "stop"
    assert cut.choices[0].message.content == text[: text.index(stop)]


def test_logprobs_shapes(sdk):
    out = sdk.chat.completions.create(model="any", messages=MESSAGES, max_tokens=5, temperature=0, logprobs=True,
                                      top_logprobs=3)
    content = out.choices[0].logprobs.content
    assert len(content) == out.usage.completion_tokens
    for item in content:
        assert item.logprob <= 0
        assert bytes(item.bytes).decode("utf-8", errors="replace") == item.token
        assert len(item.top_logprobs) == 3
        values = [t.logprob for t in item.top_logprobs]
        assert values == sorted(values, reverse=True)
        assert item.top_logprobs[0].token == item.token  # greedy takes the most likely token
    plain = sdk.chat.completions.create(model="any", messages=MESSAGES, max_tokens=2, temperature=0)
    assert plain.choices[0].logprobs is None


def test_n_probs_extension_gives_logprobs(sdk):
    out = sdk.chat.completions.create(model="any", messages=MESSAGES, max_tokens=2, temperature=0,
                                      extra_body={"n_probs": 2})
    assert all(len(item.top_logprobs) == 2 for item in out.choices[0].logprobs.content)


def test_logit_bias_bans_the_greedy_token(server, sdk):
    kwargs = {"model": "any", "messages": MESSAGES, "max_tokens": 1, "temperature": 0, "logprobs": True}
    first = sdk.chat.completions.create(**kwargs).choices[0].logprobs.content[0].token
    ids = httpx.post(f"{server.base_url}/tokenize", json={"content": first}).json()["tokens"]
    assert len(ids) == 1, first
    banned = sdk.chat.completions.create(**kwargs, logit_bias={str(ids[0]): -100})
    assert banned.choices[0].logprobs.content[0].token != first


def test_sampling_parameters_are_accepted(sdk):
    out = sdk.chat.completions.create(
        model="any", messages=MESSAGES, max_tokens=4, temperature=0.7, top_p=0.9, seed=5, presence_penalty=0.5,
        frequency_penalty=0.5, user="tester",
        extra_body={"top_k": 20, "min_p": 0.1, "typical_p": 0.9, "repeat_penalty": 1.1, "cache_prompt": False},
    )
    assert out.choices[0].finish_reason in ("stop", "length")


def test_content_parts_render_like_plain_text(server):
    parts = [{"role": "user", "content": [{"type": "text", "text": "Hello"}]}]
    plain = [{"role": "user", "content": "Hello"}]
    render = [httpx.post(f"{server.base_url}/apply-template", json={"messages": m}).json() for m in (parts, plain)]
    assert render[0] == render[1]


def test_prompt_over_the_context_is_400(server, sdk):
    with pytest.raises(openai.BadRequestError) as info:
        sdk.chat.completions.create(model="any", messages=MESSAGES * 300, max_tokens=4)
    error = info.value.body
    assert error["type"] == "exceed_context_size_error"
    assert error["n_ctx"] == 2048 and error["n_prompt_tokens"] > 2048  # the whole -c: one KV pool
    r = httpx.post(f"{server.base_url}/v1/chat/completions",
                   json={"messages": MESSAGES * 300, "max_tokens": 4, "stream": True})
    assert r.status_code == 400 and r.json()["error"]["type"] == "exceed_context_size_error"


def test_max_tokens_past_the_context_stops_where_it_is_full(server):
    """As llama-server: a max_tokens larger than the room the prompt leaves is no error."""
    prompt = [1000 + i % 500 for i in range(2040)]  # token ids: 8 cells left of the 2048
    out = httpx.post(f"{server.base_url}/v1/completions", timeout=300, json={
        "prompt": prompt, "max_tokens": 4096, "ignore_eos": True}).json()
    assert out["choices"][0]["finish_reason"] == "length" and out["usage"]["completion_tokens"] == 8


def test_stream_first_chunk_has_a_null_content(server):
    """llama-server's and OpenAI's first chunk: the role, with ``"content": null``, and no timings."""
    with httpx.stream("POST", f"{server.base_url}/v1/chat/completions",
                      json={"messages": MESSAGES, "max_tokens": 2, "stream": True, "timings_per_token": True}) as r:
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": None}
    assert "timings" not in events[0] and all("timings" in e for e in events[1:])


@pytest.mark.parametrize("path", ["/v1/chat/completions/input_tokens", "/chat/completions/input_tokens"])
def test_input_tokens_counts_the_chat_prompt(server, path):
    r = httpx.post(f"{server.base_url}{path}", json={"messages": MESSAGES})
    assert r.status_code == 200
    assert r.json() == {"object": "response.input_tokens", "input_tokens": prompt_tokens(server, MESSAGES)}
    bad = httpx.post(f"{server.base_url}{path}", json={"messages": "not a list"})
    assert bad.status_code == 400 and "error" in bad.json()
