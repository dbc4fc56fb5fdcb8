"""What a client written for ``vllm serve`` sends: vLLM's extra request fields (the OpenAI SDK's
``extra_body``), where constrained output (``guided_*``, ``structured_outputs``), ``stop_token_ids``,
``include_stop_str_in_output``, ``min_tokens``, ``allowed_token_ids``, ``cache_salt``, ``add_special_tokens``,
``repetition_penalty``, ``truncate_prompt_tokens``, ``return_token_ids``,
``return_tokens_as_token_ids``, ``prompt_logprobs``, ``return_prompt_text`` and ``continuous_usage_stats`` are honoured
and every other vLLM extra is a 400 naming it unless it has its neutral value; and vLLM's
endpoints beside OpenAI's (/tokenize and /detokenize in vLLM's form, /ping, /version).

The model is a base model: the tests assert what a grammar forces, and agreement between two
runs of the same shape (temperature 0, no prefix cache), never what the model says.
"""

from __future__ import annotations

import json
import re

import httpx
import jsonschema
import openai
import pytest

from frontend.api import unsupported_fields

SCHEMA = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 12}, "age": {"type": "integer"}},
          "required": ["name", "age"], "additionalProperties": False}
MESSAGES = [{"role": "user", "content": "Tell me about a person."}]


@pytest.fixture(scope="module")
def sdk(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0,
                         _strict_response_validation=True)


def chat(sdk: openai.OpenAI, stream: bool = False, **extra: object) -> tuple[str, str]:
    """(content, finish_reason) of a greedy chat call with vLLM's fields in ``extra_body``."""
    kwargs = dict(model="any", messages=MESSAGES, max_tokens=80, temperature=0, extra_body=extra)
    if not stream:
        choice = sdk.chat.completions.create(**kwargs).choices[0]
        return choice.message.content or "", choice.finish_reason
    text, finish = "", ""
    for chunk in sdk.chat.completions.create(stream=True, **kwargs):
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
    return text, finish


def completion(server, **body: object) -> dict:
    r = httpx.post(f"{server.base_url}/v1/completions",
                   json={"prompt": "The capital of France is", "temperature": 0, "cache_prompt": False} | body,
                   timeout=120)
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]


def greedy_ids(server, n: int) -> list[int]:
    """The token ids of the prompt's greedy output (llama-server's endpoint; same shape as completion())."""
    native = httpx.post(f"{server.base_url}/completion",
                        json={"prompt": "The capital of France is", "n_predict": n, "temperature": 0,
                              "cache_prompt": False, "return_tokens": True}, timeout=120).json()
    assert len(native["tokens"]) == n
    return native["tokens"]


def detokenize(server, ids: list[int]) -> str:
    return httpx.post(f"{server.base_url}/detokenize", json={"tokens": ids}, timeout=30).json()["content"]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("extra", [{"guided_choice": ["positive", "negative", "neutral"]},
                                   {"structured_outputs": {"choice": ["positive", "negative", "neutral"]}}],
                         ids=["guided_choice", "structured_outputs"])
def test_a_choice_makes_the_output_one_of_its_strings(sdk, extra, stream):
    text, finish = chat(sdk, stream, **extra)
    assert text in ("positive", "negative", "neutral") and finish == "stop"


@pytest.mark.parametrize("extra", [{"guided_regex": r"[A-Z][a-z]{2,8} is \d{2}( years old)?\."},
                                   {"structured_outputs": {"regex": r"^[A-Z][a-z]{2,8} is \d{2}( years old)?\.$"}}],
                         ids=["guided_regex", "structured_outputs"])
def test_a_regex_matches_the_whole_output(sdk, extra):
    text, finish = chat(sdk, **extra)
    assert re.fullmatch(r"[A-Z][a-z]{2,8} is \d{2}( years old)?\.", text), text
    assert finish == "stop"


def test_a_regex_constrains_text_completions_too(server):
    choice = completion(server, max_tokens=40, guided_regex=r"(yes|no), \d{1,3}")
    assert re.fullmatch(r"(yes|no), \d{1,3}", choice["text"]) and choice["finish_reason"] == "stop", choice


@pytest.mark.parametrize("extra", [{"guided_json": SCHEMA}, {"guided_json": json.dumps(SCHEMA)},
                                   {"structured_outputs": {"json": SCHEMA}}],
                         ids=["guided_json", "guided_json_text", "structured_outputs"])
def test_a_json_schema_output_validates(sdk, extra):
    text, finish = chat(sdk, **extra)
    assert finish == "stop", text
    jsonschema.validate(json.loads(text), SCHEMA)


def test_structured_outputs_json_object_gives_an_object(sdk):
    text, finish = chat(sdk, stream=True, structured_outputs={"json_object": True})
    assert finish == "stop" and isinstance(json.loads(text), dict), text


def test_a_gbnf_grammar_forces_its_language(sdk):
    text, finish = chat(sdk, guided_grammar='root ::= "Answer: " ("yes" | "no") "."',
                        guided_decoding_backend="xgrammar")
    assert text in ("Answer: yes.", "Answer: no.") and finish == "stop"


@pytest.mark.parametrize("body, param", [
    ({"guided_choice": ["a"], "guided_regex": "b"}, "guided_choice"),
    ({"guided_json": SCHEMA, "response_format": {"type": "json_object"}}, "response_format"),
    ({"grammar": 'root ::= "x"', "structured_outputs": {"choice": ["x"]}}, "structured_outputs.choice"),
    ({"guided_regex": "(?=a)b"}, "guided_regex"),
    ({"guided_regex": "[a"}, "guided_regex"),
    ({"guided_json": "{not json"}, "guided_json"),
    ({"guided_choice": []}, "guided_choice"),
    ({"structured_outputs": {"regex": "a", "disable_any_whitespace": True}}, "structured_outputs"),
    ({"structured_outputs": {"choices": ["a"]}}, "structured_outputs"),
    ({"truncate_prompt_tokens": 0}, "truncate_prompt_tokens"),
    ({"allowed_token_ids": []}, "allowed_token_ids"),
    ({"prompt_logprobs": 1, "stream": True}, "prompt_logprobs"),
    ({"prompt_logprobs": 21}, "prompt_logprobs"),
    ({"allowed_token_ids": [10**9]}, "allowed_token_ids"),
    ({"allowed_token_ids": [-3]}, "allowed_token_ids"),
    ({"allowed_token_ids": [5], "guided_choice": ["a"]}, "allowed_token_ids"),
    ({"truncation_side": "middle"}, "truncation_side"),
    ({"stop_token_ids": [10**9]}, "stop_token_ids"),
    ({"repetition_penalty": 0}, "repetition_penalty"),
])
def test_bad_vllm_constraints_are_400_naming_the_field(server, body, param):
    r = httpx.post(f"{server.base_url}/v1/chat/completions",
                   json={"messages": MESSAGES, "max_tokens": 4} | body, timeout=60)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param, r.text


def test_stop_token_ids_end_the_output_before_the_token(server):
    ids = greedy_ids(server, 12)
    assert detokenize(server, ids) == completion(server, max_tokens=12)["text"]  # the same greedy tokens
    k = next(i for i in range(2, 12) if ids.index(ids[i]) == i)  # a token's first appearance, not the first
    stopped = completion(server, max_tokens=12, stop_token_ids=[ids[k]])
    assert stopped["finish_reason"] == "stop" and stopped["text"] == detokenize(server, ids[:k])


@pytest.mark.parametrize("stream", [False, True])
def test_min_tokens_holds_off_stop_tokens_and_stop_strings(server, stream):
    ids = greedy_ids(server, 12)
    k = next(i for i in range(2, 12) if ids.index(ids[i]) == i)
    first_stop = detokenize(server, [ids[k]]).strip() or None  # the stop token's text, as a stop string
    body = {"max_tokens": 20, "stop_token_ids": [ids[k]], "min_tokens": k + 4}
    if stream:
        chunks = []
        with httpx.stream("POST", f"{server.base_url}/v1/completions", timeout=120, json={
                "prompt": "The capital of France is", "temperature": 0, "cache_prompt": False, "stream": True,
                "stream_options": {"include_usage": True}, **body}) as r:
            chunks = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
        text = "".join(c["choices"][0]["text"] for c in chunks if c["choices"])
        n_out = next(c["usage"]["completion_tokens"] for c in chunks if c.get("usage"))
    else:
        r = httpx.post(f"{server.base_url}/v1/completions", timeout=120, json={
            "prompt": "The capital of France is", "temperature": 0, "cache_prompt": False, **body})
        text, n_out = r.json()["choices"][0]["text"], r.json()["usage"]["completion_tokens"]
    assert n_out >= k + 4  # the stop token was banned until then
    assert text.startswith(detokenize(server, ids[:k]))  # the same greedy tokens up to the banned one
    if first_stop is not None:  # a stop string found early does not end the text before min_tokens either
        r = httpx.post(f"{server.base_url}/v1/completions", timeout=120, json={
            "prompt": "The capital of France is", "temperature": 0, "cache_prompt": False, "max_tokens": 20,
            "stop": [first_stop], "min_tokens": k + 4})
        assert r.json()["usage"]["completion_tokens"] >= k + 4, r.text


def test_min_tokens_above_max_tokens_is_a_400(server):
    r = httpx.post(f"{server.base_url}/v1/completions", timeout=30,
                   json={"prompt": "Hi", "max_tokens": 4, "min_tokens": 5})
    assert r.status_code == 400 and r.json()["error"]["param"] == "min_tokens", r.text


@pytest.mark.parametrize("stream", [False, True])
def test_include_stop_str_in_output_keeps_the_stop_string(server, stream):
    full = completion(server, max_tokens=10)["text"]
    stop = full.split()[2]  # a word from the middle of the greedy output
    cut = full.index(stop)

    def run(**body: object) -> str:
        if not stream:
            return completion(server, max_tokens=10, stop=[stop], **body)["text"]
        text = ""
        with httpx.stream("POST", f"{server.base_url}/v1/completions", timeout=120, json={
                "prompt": "The capital of France is", "temperature": 0, "cache_prompt": False, "max_tokens": 10,
                "stop": [stop], "stream": True, **body}) as r:
            for line in r.iter_lines():
                if line.startswith("data: {"):
                    text += json.loads(line[6:])["choices"][0]["text"]
        return text

    assert run() == full[:cut]
    assert run(include_stop_str_in_output=True) == full[:cut + len(stop)]


def test_add_special_tokens_false_leaves_out_bos_on_text_completions(server):
    def prompt_tokens(**body: object) -> int:
        r = httpx.post(f"{server.base_url}/v1/completions", timeout=60,
                       json={"prompt": "The capital of France is", "max_tokens": 1, **body})
        assert r.status_code == 200, r.text
        return r.json()["usage"]["prompt_tokens"]

    assert prompt_tokens(add_special_tokens=False) == prompt_tokens() - 1 == prompt_tokens(add_special_tokens=True) - 1


def test_cache_salt_keeps_cached_prefixes_apart(server):
    text = "Salted prompts share a cache only with their own salt. " * 6

    def cached(**body: object) -> int:
        r = httpx.post(f"{server.base_url}/v1/completions", timeout=60,
                       json={"prompt": text, "max_tokens": 1, "temperature": 0, **body})
        assert r.status_code == 200, r.text
        return r.json()["usage"]["prompt_tokens_details"]["cached_tokens"]

    cached(cache_salt="alpha")
    # another salt, or none, computes it again (an unsalted prompt may share BOS with earlier ones)
    assert cached(cache_salt="beta") == 0 and cached() <= 1
    assert cached(cache_salt="alpha") > 40 and cached() > 40  # its own salt (and no salt) reuse theirs
    r = httpx.post(f"{server.base_url}/v1/completions", json={"prompt": "x", "cache_salt": ""}, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["param"] == "cache_salt", r.text


def test_bad_words_never_appear_in_the_output(server):
    """vLLM's bad_words: the greedy output's third token, banned as a word, is replaced from
    there on (the tokens before it are the same computation) and never comes back."""
    plain = completion(server, max_tokens=12, return_token_ids=True)
    banned_id = plain["token_ids"][2]
    word = httpx.post(f"{server.base_url}/detokenize", json={"tokens": [banned_id]}, timeout=30).json()["content"]
    variants = [httpx.post(f"{server.base_url}/tokenize", json={"content": text}, timeout=30).json()["tokens"]
                for text in (word.lstrip(), " " + word.lstrip())]
    assert [banned_id] in variants  # the word is that one token at the start of a text or after a space
    for route in ("/v1/completions", "/completion"):
        r = httpx.post(f"{server.base_url}{route}", timeout=120, json={
            "prompt": "The capital of France is", "temperature": 0, "cache_prompt": False, "max_tokens": 12,
            "n_predict": 12, "bad_words": [word], "return_token_ids": route == "/v1/completions",
            "return_tokens": route == "/completion"})
        assert r.status_code == 200, r.text
        out = r.json()["choices"][0]["token_ids"] if route == "/v1/completions" else r.json()["tokens"]
        assert out[:2] == plain["token_ids"][:2] and banned_id not in out
        assert not any(out[i:i + len(v)] == v for v in variants for i in range(len(out)))
    sampled = httpx.post(f"{server.base_url}/v1/chat/completions", timeout=120, json={
        "messages": MESSAGES, "max_tokens": 16, "temperature": 1.5, "seed": 3, "bad_words": [word],
        "return_token_ids": True}).json()["choices"][0]["token_ids"]
    assert sampled and banned_id not in sampled
    bad = httpx.post(f"{server.base_url}/v1/completions", json={"prompt": "x", "bad_words": ["  "]}, timeout=30)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "bad_words[0]"


def test_repetition_penalty_is_repeat_penalty_over_the_whole_context(server):
    plain = completion(server, max_tokens=40)["text"]
    vllm = completion(server, max_tokens=40, repetition_penalty=1.5)["text"]
    llama = completion(server, max_tokens=40, repeat_penalty=1.5, repeat_last_n=-1)["text"]
    assert vllm == llama != plain


# vLLM field -> a value that asks for something
ASKING = {"best_of": 2, "use_beam_search": True, "length_penalty": 0.5,
          "logits_processors": ["m.P"], "prompt_logprobs": 1,
          "skip_special_tokens": False, "spaces_between_special_tokens": False, "guided_whitespace_pattern": " ",
          "structural_tag": "{}", "chat_template": "{{ x }}", "documents": [{"text": "x"}],
          "mm_processor_kwargs": {"a": 1}, "priority": 1, "kv_transfer_params": {"a": 1},
          "vllm_xargs": {"a": 1}, "return_tokens_as_token_ids": True, "request_id": "r1",
          "add_special_tokens": True, "return_token_ids": True, "logprob_token_ids": [5],
          "repetition_detection": {"max_pattern_size": 4}, "watermarking": True, "stream_interval": 4,
          "include_reasoning": False, "thinking_token_budget": 8, "return_prompt_text": True}
NEUTRAL = {"best_of": 1, "use_beam_search": False, "length_penalty": 1.0,
           "logits_processors": None, "prompt_logprobs": None,
           "skip_special_tokens": True, "spaces_between_special_tokens": True, "guided_whitespace_pattern": None,
           "structural_tag": None, "chat_template": None, "documents": None, "mm_processor_kwargs": None,
           "priority": 0, "kv_transfer_params": None, "vllm_xargs": None,
           "return_tokens_as_token_ids": False, "request_id": None, "add_special_tokens": False,
           "return_token_ids": False, "logprob_token_ids": None, "repetition_detection": None, "watermarking": False,
           "stream_interval": 1, "include_reasoning": True, "thinking_token_budget": None,
           "return_prompt_text": False}
# where a field is refused: chat completions, unless chat honours it
REFUSED_AT = {"return_token_ids": "/completion", "return_tokens_as_token_ids": "/completion",
              "prompt_logprobs": "/completion",
              "include_reasoning": "/v1/completions", "thinking_token_budget": "/v1/completions",
              "return_prompt_text": "/v1/completions", "documents": "/v1/completions",
              "add_special_tokens": "/v1/chat/completions"}


def test_every_refused_vllm_field_has_an_asking_and_a_neutral_value():
    assert set(ASKING) == set(NEUTRAL) == set(unsupported_fields.VLLM)


@pytest.mark.parametrize("field", sorted(ASKING))
def test_unsupported_vllm_fields_are_400_naming_them(server, field):
    route = REFUSED_AT.get(field, "/v1/chat/completions")
    body = {"messages": MESSAGES} if route == "/v1/chat/completions" else {"prompt": "Hi"}
    r = httpx.post(f"{server.base_url}{route}", json=body | {"max_tokens": 2, field: ASKING[field]}, timeout=60)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == field and field in error["message"], error


def test_neutral_vllm_fields_are_accepted(sdk):
    """A vLLM client may send every extra with its default."""
    text, finish = chat(sdk, **NEUTRAL, guided_decoding_backend="auto")
    assert finish in ("stop", "length")


def test_tokenize_in_vllm_form_counts_what_a_request_submits(server, sdk):
    base = server.base_url
    prompt = httpx.post(f"{base}/tokenize", json={"model": "any", "prompt": "Hello world", "return_token_strs": True},
                        timeout=30).json()
    assert prompt["count"] == len(prompt["tokens"]) == len(prompt["token_strs"]) and prompt["max_model_len"] > 0
    bare = httpx.post(f"{base}/tokenize", json={"prompt": "Hello world", "add_special_tokens": False},
                      timeout=30).json()
    assert bare["tokens"] == prompt["tokens"][1:]  # without BOS
    llama_form = httpx.post(f"{base}/tokenize", json={"content": "Hello world"}, timeout=30).json()
    assert bare["tokens"] == llama_form["tokens"]
    chat = httpx.post(f"{base}/tokenize", json={"messages": MESSAGES}, timeout=30).json()
    usage = sdk.chat.completions.create(model="any", messages=MESSAGES, max_tokens=1).usage
    assert chat["count"] == usage.prompt_tokens
    detok = httpx.post(f"{base}/detokenize", json={"tokens": bare["tokens"]}, timeout=30).json()
    assert detok == {"content": "Hello world", "prompt": "Hello world"}


@pytest.mark.parametrize("body, param", [({"prompt": "a", "messages": MESSAGES}, "messages"),
                                         ({"messages": MESSAGES, "add_special_tokens": True}, "add_special_tokens")])
def test_tokenize_in_vllm_form_refuses_what_it_cannot_mean(server, body, param):
    r = httpx.post(f"{server.base_url}/tokenize", json=body, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text


def test_ping_and_version(server):
    assert httpx.get(f"{server.base_url}/ping", timeout=30).status_code == 200
    assert httpx.post(f"{server.base_url}/ping", timeout=30).status_code == 200
    version = httpx.get(f"{server.base_url}/version", timeout=30).json()["version"]
    assert version and isinstance(version, str)


def test_models_list_vllms_max_model_len(server):
    listed = httpx.get(f"{server.base_url}/v1/models", timeout=30).json()["data"][0]
    counted = httpx.post(f"{server.base_url}/tokenize", json={"prompt": "x"}, timeout=30).json()
    assert listed["max_model_len"] == counted["max_model_len"] == listed["meta"]["n_ctx"] > 0


def sse_chunks(server, route: str, body: dict) -> list[dict]:
    with httpx.stream("POST", f"{server.base_url}{route}", json=body | {"stream": True}, timeout=120) as r:
        assert r.status_code == 200, r.read()
        return [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]


def tokenize(server, **body: object) -> list[int]:
    return httpx.post(f"{server.base_url}/tokenize", json=body, timeout=30).json()["tokens"]


def test_return_token_ids_on_text_completions(server):
    ids = greedy_ids(server, 8)
    choice = completion(server, max_tokens=8, return_token_ids=True)
    assert choice["prompt_token_ids"] == tokenize(server, prompt="The capital of France is")
    assert choice["token_ids"] == ids and detokenize(server, ids) == choice["text"]
    assert "token_ids" not in completion(server, max_tokens=2)  # only when asked for
    chunks = sse_chunks(server, "/v1/completions", {"prompt": "The capital of France is", "temperature": 0,
                                                    "cache_prompt": False, "max_tokens": 8, "return_token_ids": True})
    choices = [c["choices"][0] for c in chunks if c["choices"]]
    assert choices[0]["prompt_token_ids"] == choice["prompt_token_ids"]  # with the choice's first chunk
    assert [t for c in choices for t in c.get("token_ids") or []] == ids


def test_return_token_ids_on_chat_completions(server, sdk):
    out = sdk.chat.completions.create(model="any", messages=MESSAGES, max_tokens=8, temperature=0,
                                      extra_body={"return_token_ids": True, "cache_prompt": False})
    answer = out.model_dump()
    assert answer["prompt_token_ids"] == tokenize(server, messages=MESSAGES)
    ids = answer["choices"][0]["token_ids"]
    assert len(ids) == out.usage.completion_tokens and detokenize(server, ids) == out.choices[0].message.content
    chunks = sse_chunks(server, "/v1/chat/completions", {"messages": MESSAGES, "max_tokens": 8, "temperature": 0,
                                                         "cache_prompt": False, "return_token_ids": True})
    assert chunks[0]["prompt_token_ids"] == answer["prompt_token_ids"]
    assert not any("prompt_token_ids" in c for c in chunks[1:])
    assert [t for c in chunks if c["choices"] for t in c["choices"][0].get("token_ids") or []] == ids


@pytest.mark.parametrize("route", ["/v1/completions", "/v1/chat/completions"])
def test_return_tokens_as_token_ids_names_logprob_tokens_by_id(server, route):
    body = {"max_tokens": 6, "temperature": 0, "return_token_ids": True, "return_tokens_as_token_ids": True}
    if route == "/v1/completions":
        r = httpx.post(f"{server.base_url}{route}", json={"prompt": "The capital of France is", "logprobs": 2} | body,
                       timeout=60)
        choice = r.json()["choices"][0]
        names, tops = choice["logprobs"]["tokens"], [list(t) for t in choice["logprobs"]["top_logprobs"]]
    else:
        r = httpx.post(f"{server.base_url}{route}",
                       json={"messages": MESSAGES, "logprobs": True, "top_logprobs": 2} | body, timeout=60)
        choice = r.json()["choices"][0]
        content = choice["logprobs"]["content"]
        names, tops = [t["token"] for t in content], [[a["token"] for a in t["top_logprobs"]] for t in content]
    assert names == [f"token_id:{t}" for t in choice["token_ids"]]
    assert all(len(top) == 2 and all(re.fullmatch(r"token_id:\d+", name) for name in top) for top in tops)


def test_truncate_prompt_tokens_keeps_the_prompts_last_or_first_tokens(server):
    prompt = "One two three four five six seven eight nine ten eleven twelve."
    ids = tokenize(server, prompt=prompt)
    left = completion(server, prompt=prompt, max_tokens=2, truncate_prompt_tokens=5, return_token_ids=True,
                      echo=True)
    assert left["prompt_token_ids"] == ids[-5:] and left["text"].startswith(detokenize(server, ids[-5:]))
    right = completion(server, prompt=prompt, max_tokens=2, truncate_prompt_tokens=5, truncation_side="right",
                       return_token_ids=True)
    assert right["prompt_token_ids"] == ids[:5]
    assert completion(server, prompt=prompt, max_tokens=2, truncate_prompt_tokens=500,
                      return_token_ids=True)["prompt_token_ids"] == ids  # shorter: unchanged
    r = httpx.post(f"{server.base_url}/v1/chat/completions", timeout=60,
                   json={"messages": MESSAGES, "max_tokens": 2, "truncate_prompt_tokens": 4})
    assert r.status_code == 200 and r.json()["usage"]["prompt_tokens"] == 4, r.text


def test_truncate_prompt_tokens_minus_one_fits_a_long_prompt_in_the_context(server):
    n_ctx = httpx.get(f"{server.base_url}/v1/models", timeout=30).json()["data"][0]["max_model_len"]
    prompt = [1000 + i % 500 for i in range(n_ctx + 50)]  # token ids: more than a slot holds
    r = httpx.post(f"{server.base_url}/v1/completions", timeout=120, json={"prompt": prompt, "max_tokens": 4})
    assert r.status_code == 400 and r.json()["error"]["type"] == "exceed_context_size_error", r.text
    r = httpx.post(f"{server.base_url}/v1/completions", timeout=300,
                   json={"prompt": prompt, "max_tokens": 4, "truncate_prompt_tokens": -1, "return_token_ids": True})
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    assert choice["prompt_token_ids"] == prompt[-(n_ctx - 4):] and r.json()["usage"]["prompt_tokens"] == n_ctx - 4


@pytest.mark.parametrize("route", ["/v1/completions", "/v1/chat/completions"])
def test_continuous_usage_stats_put_the_usage_so_far_on_every_chunk(server, route):
    body = {"max_tokens": 6, "temperature": 0, "ignore_eos": True,
            "stream_options": {"include_usage": True, "continuous_usage_stats": True}}
    body |= {"prompt": "The capital of France is"} if route == "/v1/completions" else {"messages": MESSAGES}
    chunks = sse_chunks(server, route, body)
    assert all("usage" in c for c in chunks)
    outputs = [c["usage"]["completion_tokens"] for c in chunks]
    assert outputs == sorted(outputs) and outputs[-1] == 6
    assert {c["usage"]["prompt_tokens"] for c in chunks} == {chunks[-1]["usage"]["prompt_tokens"]}
    plain = sse_chunks(server, route, body | {"stream_options": {"include_usage": True}})
    assert [c for c in plain if c.get("usage")] == [plain[-1]]  # without it: the last chunk only


def test_return_prompt_text_is_the_rendered_conversation(server):
    rendered = httpx.post(f"{server.base_url}/apply-template", json={"messages": MESSAGES}, timeout=30).json()
    r = httpx.post(f"{server.base_url}/v1/chat/completions", timeout=60,
                   json={"messages": MESSAGES, "max_tokens": 2, "return_prompt_text": True})
    assert r.json()["prompt_text"] == rendered["prompt"]
    chunks = sse_chunks(server, "/v1/chat/completions", {"messages": MESSAGES, "max_tokens": 2,
                                                         "return_prompt_text": True})
    assert chunks[0]["prompt_text"] == rendered["prompt"]


def test_allowed_token_ids_make_the_whole_output(server):
    ids = greedy_ids(server, 12)
    allowed = sorted(set(ids[4:9]))  # tokens the model would write later, not first
    choice = completion(server, max_tokens=10, allowed_token_ids=allowed, return_token_ids=True)
    assert set(choice["token_ids"]) <= set(allowed) and len(choice["token_ids"]) == 10
    assert choice["finish_reason"] == "length"  # no end-of-generation token was allowed
    eos = tokenize(server, prompt="<eos>", add_special_tokens=False)
    assert len(eos) == 1
    with_eos = completion(server, max_tokens=10, allowed_token_ids=allowed + eos, return_token_ids=True)
    assert set(with_eos["token_ids"]) <= set(allowed)  # and it may end with <eos> (not in the ids)
    chat_ids = httpx.post(f"{server.base_url}/v1/chat/completions", timeout=60, json={
        "messages": MESSAGES, "max_tokens": 6, "temperature": 0, "allowed_token_ids": allowed,
        "return_token_ids": True}).json()["choices"][0]["token_ids"]
    assert set(chat_ids) <= set(allowed) and len(chat_ids) == 6


def test_prompt_logprobs_give_each_prompt_tokens_logprob_rank_and_alternatives(server):
    prompt = "The capital of France is Paris, and the capital of Italy is"
    ids = tokenize(server, prompt=prompt)
    choice = completion(server, prompt=prompt, max_tokens=1, prompt_logprobs=3)
    echoed = completion(server, prompt=prompt, max_tokens=1, echo=True, logprobs=1)["logprobs"]
    entries = choice["prompt_logprobs"]
    assert len(entries) == len(ids) and entries[0] is None
    for i, (token_id, entry) in enumerate(zip(ids[1:], entries[1:]), 1):
        assert list(entry)[0] == str(token_id)  # the prompt token first, then the most likely ones
        mine = entry[str(token_id)]
        assert mine["logprob"] == pytest.approx(echoed["token_logprobs"][i], abs=1e-4)
        assert mine["decoded_token"] == echoed["tokens"][i]
        by_rank = sorted(entry.values(), key=lambda e: e["rank"])
        assert [e["rank"] for e in by_rank][:3] == [1, 2, 3] and len(entry) == 3 + (mine["rank"] > 3)
        assert all(a["logprob"] >= b["logprob"] for a, b in zip(by_rank, by_rank[1:]))
    only = completion(server, prompt=prompt, max_tokens=1, prompt_logprobs=0, return_tokens_as_token_ids=True)
    assert all(list(e) == [str(t)] and e[str(t)]["decoded_token"] == f"token_id:{t}"
               for t, e in zip(ids[1:], only["prompt_logprobs"][1:]))


def test_chat_prompt_logprobs_cover_the_rendered_conversation(server):
    r = httpx.post(f"{server.base_url}/v1/chat/completions", timeout=60,
                   json={"messages": MESSAGES, "max_tokens": 1, "prompt_logprobs": 0, "return_token_ids": True})
    assert r.status_code == 200, r.text
    answer = r.json()
    entries, ids = answer["prompt_logprobs"], answer["prompt_token_ids"]
    assert len(entries) == len(ids) == answer["usage"]["prompt_tokens"] and entries[0] is None
    assert [list(e) for e in entries[1:]] == [[str(t)] for t in ids[1:]]
