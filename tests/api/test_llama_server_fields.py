"""The rule of issue 9: every request field llama-server accepts is honoured or refused with a 400
that names it; none is silently dropped.

FIELDS is llama-server's documented /completion request (tools/server/README.md) plus the rest
of its request schema (server-schema.cpp's make_llama_cmpl_schema), each with a value that asks
for something (not the neutral default). A field answered 200 must be one the endpoint's request
schema declares (decoded and used), never an unknown field that was ignored.
"""

from __future__ import annotations

import httpx
import pytest

from frontend.api.schemas import ChatCompletionRequest, NativeCompletionRequest

# field -> a value that asks for something
FIELDS: dict[str, object] = {
    "prompt": "Once upon a time",
    "temperature": 0.5,
    "dynatemp_range": 0.3,
    "dynatemp_exponent": 2.0,
    "top_k": 5,
    "top_p": 0.5,
    "min_p": 0.1,
    "n_predict": 3,
    "n_indent": 2,
    "n_keep": 8,
    "n_discard": 8,
    "stream": True,
    "stream_options": {"include_usage": True},
    "stop": ["\n\n"],
    "typical_p": 0.5,
    "repeat_penalty": 1.3,
    "repeat_last_n": 32,
    "presence_penalty": 0.5,
    "frequency_penalty": 0.5,
    "dry_multiplier": 0.8,
    "dry_base": 2.0,
    "dry_allowed_length": 3,
    "dry_penalty_last_n": 32,
    "dry_sequence_breakers": ["\n", ";"],
    "xtc_probability": 0.5,
    "xtc_threshold": 0.2,
    "mirostat": 2,
    "mirostat_tau": 4.0,
    "mirostat_eta": 0.2,
    "top_n_sigma": 1.5,
    "adaptive_target": 0.5,
    "adaptive_decay": 0.5,
    "grammar": 'root ::= "yes" | "no"',
    "json_schema": {"type": "object"},
    "seed": 7,
    "ignore_eos": True,
    "logit_bias": [["Hello", False], [15, 2.0]],
    "n_probs": 2,
    "min_keep": 2,
    "t_max_predict_ms": 500,
    "id_slot": 0,
    "cache_prompt": False,
    "return_tokens": True,
    "return_progress": True,
    "samplers": ["top_k", "temperature"],
    "timings_per_token": True,
    "post_sampling_probs": True,
    "response_fields": ["content", "generation_settings/n_predict"],
    "lora": [{"id": 0, "scale": 0.5}],
    "n_cmpl": 2,
    "n_cache_reuse": 64,
    "sse_ping_interval": 2,
    "verbose": True,
    "backend_sampling": True,
    "grammar_lazy": True,
    "grammar_triggers": [{"type": 1, "value": "yes"}],
    "preserved_tokens": ["<start_of_turn>"],
    "chat_format": 1,
    "reasoning_format": "deepseek",
    "generation_prompt": "<think>",
    "parse_tool_calls": False,
    "chat_parser": "x",
    "echo": True,
    "reasoning_control": True,
    "reasoning_budget_tokens": 16,
    "reasoning_budget_start_tag": "<think>",
    "reasoning_budget_end_tags": ["</think>"],
    "reasoning_budget_message": "enough",
}

BASE = {"prompt": "Once upon a time", "n_predict": 3, "temperature": 0}


@pytest.mark.parametrize("field", FIELDS)
def test_completion_field_is_honoured_or_refused_by_name(server, field):
    body = BASE | {field: FIELDS[field]}
    if field == "grammar_lazy":
        body |= {"grammar": FIELDS["grammar"], "grammar_triggers": [{"type": 2, "value": "y"}]}
    r = httpx.post(f"{server.base_url}/completion", json=body, timeout=120)
    assert r.status_code in (200, 400), r.text
    if r.status_code == 200:
        assert field in NativeCompletionRequest.__struct_fields__, f"{field} answered 200 but is not decoded"
    else:
        assert r.json()["error"]["param"] == field, r.text


@pytest.mark.parametrize("field", ["n_predict", "mirostat", "samplers", "logit_bias", "lora", "n_keep",
                                   "continue_final_message", "add_generation_prompt", "chat_template_kwargs"])
def test_chat_field_is_honoured_or_refused_by_name(server, field):
    values = FIELDS | {"continue_final_message": True, "add_generation_prompt": False,
                       "chat_template_kwargs": {"x": 1}}
    body = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3, "temperature": 0,
            field: values[field]}
    if field == "continue_final_message":
        body |= {"add_generation_prompt": False, "messages": [*body["messages"], {"role": "assistant", "content": "Hel"}]}
    r = httpx.post(f"{server.base_url}/v1/chat/completions", json=body, timeout=120)
    assert r.status_code in (200, 400), r.text
    if r.status_code == 200:
        assert field in ChatCompletionRequest.__struct_fields__
    else:
        assert r.json()["error"]["param"] == field, r.text


def test_neutral_values_of_unsupported_fields_are_accepted(server):
    """Clients such as SillyTavern send every field with its default: those must not fail."""
    body = BASE | {"n_keep": 0, "n_discard": 0, "lora": [], "id_slot": -1, "verbose": False,
                   "n_cache_reuse": 0,
                   "grammar_lazy": False, "preserved_tokens": [], "reasoning_budget_tokens": -1, "mirostat": 0,
                   "xtc_probability": 0, "dry_multiplier": 0, "top_n_sigma": -1, "backend_sampling": False}
    r = httpx.post(f"{server.base_url}/completion", json=body, timeout=120)
    assert r.status_code == 200, r.text


def test_a_field_sent_as_null_means_its_default(server):
    """llama-server reads null as "the server's default" (server-schema.cpp), as OpenAI does:
    SDKs send unset fields as null."""
    nulls = {field: None for field in FIELDS if field not in ("prompt", "n_predict")}
    r = httpx.post(f"{server.base_url}/completion", json=BASE | nulls, timeout=120)
    assert r.status_code == 200 and r.json()["tokens_predicted"] <= 3, r.text
    chat = {field: None for field in ("stream", "n", "logprobs", "top_logprobs", "parallel_tool_calls", "n_probs",
                                      "cache_prompt", "id_slot", "return_progress", "timings_per_token", "verbose")}
    r = httpx.post(f"{server.base_url}/v1/chat/completions", timeout=120,
                   json={"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2} | chat)
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["role"] == "assistant", r.text
    r = httpx.post(f"{server.base_url}/v1/completions", json={"prompt": "Hi", "max_tokens": 2, "echo": None,
                                                              "stream": None, "n": None}, timeout=120)
    assert r.status_code == 200 and len(r.json()["choices"]) == 1, r.text
    # null where a value is needed, or inside a field, is still an error naming it
    for body, param in (({"messages": None}, "messages"), ({"messages": [{"role": None, "content": "x"}]},
                                                           "messages[0].role")):
        r = httpx.post(f"{server.base_url}/v1/chat/completions", json=body, timeout=60)
        assert r.status_code == 400 and param in r.json()["error"]["message"], r.text


def test_completion_needs_a_prompt(server):
    for body in ({"n_predict": 2}, {"n_predict": 2, "prompt": None}):
        r = httpx.post(f"{server.base_url}/completion", json=body, timeout=60)
        assert r.status_code == 400 and r.json()["error"]["param"] == "prompt", r.text
