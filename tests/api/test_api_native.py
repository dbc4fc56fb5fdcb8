"""llama-server's own API through the real model: /completion's request and response shape
(streamed and not), n_predict, timings, response_fields, /infill, assistant prefill, CORS."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from frontend.routes.table import build_routes

PROMPT = "The days of the week are Monday, Tuesday,"
ORIGIN = "http://app.example"
NATIVE_FIELDS = {"index", "content", "tokens", "id_slot", "stop", "model", "tokens_predicted", "tokens_evaluated",
                 "generation_settings", "prompt", "has_new_line", "truncated", "stop_type", "stopping_word",
                 "tokens_cached", "timings"}
TIMINGS = {"cache_n", "prompt_n", "prompt_ms", "prompt_per_token_ms", "prompt_per_second", "predicted_n",
           "predicted_ms", "predicted_per_token_ms", "predicted_per_second"}


def post(server, path: str, body: dict) -> httpx.Response:
    return httpx.post(f"{server.base_url}{path}", json=body, timeout=120)


def native(server, **body) -> dict:
    r = post(server, "/completion", {"prompt": PROMPT, "temperature": 0} | body)
    assert r.status_code == 200, r.text
    return r.json()


def stream_events(server, path: str, body: dict) -> list[dict]:
    events = []
    with httpx.stream("POST", f"{server.base_url}{path}", json=body, timeout=120) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                events.append(json.loads(line[6:]))
    return events


def tokenize(server, text: str) -> list[int]:
    return post(server, "/tokenize", {"content": text, "add_special": True}).json()["tokens"]


def test_n_predict_limits_every_endpoint(server):
    out = native(server, n_predict=5, ignore_eos=True)
    assert out["tokens_predicted"] == 5 and out["stop_type"] == "limit"
    completion = post(server, "/v1/completions", {"prompt": PROMPT, "n_predict": 4, "ignore_eos": True}).json()
    assert completion["usage"]["completion_tokens"] == 4 and completion["choices"][0]["finish_reason"] == "length"
    chat = post(server, "/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}], "n_predict": 3,
                                                 "ignore_eos": True}).json()
    assert chat["usage"]["completion_tokens"] == 3
    assert post(server, "/completion", {"prompt": PROMPT, "n_predict": -2}).json()["error"]["param"] == "n_predict"


def test_native_response_shape_and_timings_add_up(server):
    out = native(server, n_predict=6, ignore_eos=True, return_tokens=True)
    assert set(out) == NATIVE_FIELDS
    assert out["stop"] is True and out["truncated"] is False
    assert out["tokens_evaluated"] == len(tokenize(server, PROMPT))
    # the prompt's tokens as text, special ones written, as llama-server ("<bos>...")
    assert out["prompt"] == post(server, "/detokenize", {"tokens": tokenize(server, PROMPT)}).json()["content"]
    assert out["prompt"] != PROMPT and out["prompt"].endswith(PROMPT)
    assert len(out["tokens"]) == out["tokens_predicted"] == 6
    assert post(server, "/detokenize", {"tokens": out["tokens"]}).json()["content"] == out["content"]
    timings = out["timings"]
    assert set(timings) == TIMINGS
    assert timings["prompt_n"] + timings["cache_n"] == out["tokens_evaluated"]
    assert timings["predicted_n"] == 6 and timings["predicted_ms"] > 0 and timings["prompt_ms"] > 0
    assert out["tokens_cached"] == timings["cache_n"]
    settings = out["generation_settings"]
    assert settings["n_predict"] == 6 and settings["temperature"] == 0 and settings["top_k"] == 40
    assert 0 <= out["id_slot"] < 4


def test_native_stream_matches_the_whole_answer(server):
    whole = native(server, n_predict=8, ignore_eos=True)
    events = stream_events(server, "/completion", {"prompt": PROMPT, "temperature": 0, "n_predict": 8,
                                                  "ignore_eos": True, "stream": True, "return_tokens": True})
    partial, final = events[:-1], events[-1]
    assert partial and all(e["stop"] is False and "timings" not in e for e in partial)
    assert "".join(e["content"] for e in partial) == whole["content"]
    assert sum(len(e["tokens"]) for e in partial) == 8
    assert set(final) == NATIVE_FIELDS and final["stop"] is True and final["stop_type"] == "limit"
    assert final["timings"]["predicted_n"] == 8


def test_timings_per_token_on_every_chunk(server):
    body = {"prompt": PROMPT, "n_predict": 4, "ignore_eos": True, "stream": True, "timings_per_token": True}
    stream_events(server, "/completion", body)
    events = stream_events(server, "/completion", body)  # its prompt from the prefix cache now
    assert all(set(e["timings"]) == TIMINGS for e in events)
    # the prompt's counts are the same on every chunk, the cached tokens counted from the first on
    counts = {(e["timings"]["cache_n"], e["timings"]["prompt_n"]) for e in events}
    assert len(counts) == 1 and next(iter(counts))[0] > 0
    chunks = stream_events(server, "/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}],
                                                            "max_tokens": 4, "stream": True,
                                                            "timings_per_token": True})
    # as llama-server: the first chunk (the role) has none, every later one has them
    assert "timings" not in chunks[0] and all("timings" in c for c in chunks[1:])


def test_stop_word_and_eos(server):
    out = native(server, grammar='root ::= "alpha, beta"', stop=[","], n_predict=20)
    assert out["content"] == "alpha" and out["stop_type"] == "word" and out["stopping_word"] == ","
    done = native(server, grammar='root ::= "alpha"', n_predict=20, return_tokens=True)
    assert done["content"] == "alpha" and done["stop_type"] == "eos" and done["stopping_word"] == ""
    # the end-of-generation token is generated: counted (as llama-server and vLLM count it), not shown
    assert done["tokens_predicted"] == done["timings"]["predicted_n"] == len(done["tokens"]) + 1
    chat = post(server, "/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 20,
                                                  "grammar": 'root ::= "alpha"', "return_token_ids": True}).json()
    assert chat["usage"]["completion_tokens"] == len(chat["choices"][0]["token_ids"]) + 1


def test_response_fields_and_probabilities(server):
    out = native(server, n_predict=3, response_fields=["content", "generation_settings/n_predict", "nope"])
    assert set(out) == {"content", "generation_settings/n_predict"} and out["generation_settings/n_predict"] == 3
    probs = native(server, n_predict=3, ignore_eos=True, n_probs=2)["completion_probabilities"]
    assert len(probs) == 3
    for p in probs:
        assert {"id", "token", "bytes", "logprob", "top_logprobs"} == set(p) and len(p["top_logprobs"]) == 2
        assert p["top_logprobs"][0]["logprob"] >= p["top_logprobs"][1]["logprob"]



def test_empty_response_fields_keeps_the_whole_result(server):
    """llama-server reads ``response_fields: []`` as no projection."""
    out = native(server, n_predict=2, response_fields=[])
    assert {"content", "generation_settings", "timings", "stop_type"} <= set(out)

def test_several_prompts_give_a_list(server):
    out = post(server, "/completion", {"prompt": ["One, two,", "Red, green,"], "n_predict": 2, "n_cmpl": 2,
                                       "temperature": 0}).json()
    assert isinstance(out, list) and [r["index"] for r in out] == [0, 1, 2, 3]
    assert out[0]["content"] == out[1]["content"]  # greedy: both choices of a prompt agree
    assert post(server, "/completions", {"prompt": "One,", "n_predict": 1}).json()["stop"] is True


def test_timings_on_openai_responses_add_up_with_usage(server):
    chat = post(server, "/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5,
                                                 "ignore_eos": True}).json()
    usage, timings = chat["usage"], chat["timings"]
    assert timings["predicted_n"] == usage["completion_tokens"] == 5
    assert timings["prompt_n"] + timings["cache_n"] == usage["prompt_tokens"]
    assert timings["cache_n"] == usage["prompt_tokens_details"]["cached_tokens"]
    chunks = stream_events(server, "/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}],
                                                            "max_tokens": 3, "stream": True})
    finishing = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert len(finishing) == 1 and set(finishing[0]["timings"]) == TIMINGS


@pytest.mark.parametrize("path, body", [("/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}]}),
                                        ("/v1/completions", {"prompt": "Hi"})])
def test_a_streamed_choice_carries_its_own_timings(server, path, body):
    """As llama-server: each choice's last chunk has the timings of that choice, not of all n."""
    chunks = stream_events(server, path, body | {"max_tokens": 4, "n": 3, "ignore_eos": True, "stream": True,
                                                 "stream_options": {"include_usage": True}})
    finishing = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert sorted(c["choices"][0]["index"] for c in finishing) == [0, 1, 2]
    assert [c["timings"]["predicted_n"] for c in finishing] == [4, 4, 4]
    assert chunks[-1]["timings"]["predicted_n"] == chunks[-1]["usage"]["completion_tokens"] == 12  # the call's


def test_infill_needs_fim_tokens(server):
    r = post(server, "/infill", {"input_prefix": "def f(", "input_suffix": "):\n", "prompt": ""})
    assert r.status_code == 501 and "fill-in-the-middle" in r.json()["error"]["message"]


def test_assistant_prefill_is_continued(server):
    messages = [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "My answer is"}]
    prompt = post(server, "/apply-template", {"messages": messages}).json()["prompt"]
    assert prompt.endswith("<start_of_turn>model\nMy answer is")
    closed = post(server, "/apply-template", {"messages": messages, "continue_final_message": False}).json()["prompt"]
    assert closed.endswith("My answer is<end_of_turn>\n<start_of_turn>model\n")
    explicit = post(server, "/apply-template", {"messages": messages, "continue_final_message": True,
                                                "add_generation_prompt": False}).json()["prompt"]
    assert explicit == prompt
    r = post(server, "/v1/chat/completions", {"messages": messages, "continue_final_message": True})
    assert r.status_code == 400 and r.json()["error"]["param"] == "continue_final_message"
    no_gen = post(server, "/apply-template", {"messages": messages[:1], "add_generation_prompt": False}).json()
    assert not no_gen["prompt"].endswith("model\n")
    out = post(server, "/v1/chat/completions", {"messages": messages, "max_tokens": 3, "temperature": 0}).json()
    raw = native(server, prompt=prompt, n_predict=3)
    assert out["choices"][0]["message"]["content"] == raw["content"]  # the continuation alone


def test_continuing_the_reasoning_of_the_final_message(server):
    messages = [{"role": "user", "content": "Name a colour."},
                {"role": "assistant", "content": "", "reasoning_content": "Let me think"}]
    prompt = post(server, "/apply-template", {"messages": messages}).json()["prompt"]
    assert prompt.endswith("<start_of_turn>model\n<think>Let me think")  # the reasoning is open
    grammar = 'root ::= [a-z ]{1,16} "</think>" [a-z]{1,8}'  # the model must close the thinking, then answer
    for extra in ({}, {"continue_final_message": "reasoning_content", "add_generation_prompt": False}):
        out = post(server, "/v1/chat/completions", {"messages": messages, "max_tokens": 40, "temperature": 0,
                                                    "grammar": grammar} | extra).json()
        message = out["choices"][0]["message"]
        assert message["reasoning_content"] and message["content"], out  # split at the tag it continued into
        assert "<think>" not in message["content"] and "</think>" not in message["content"]
    with_content = [messages[0], messages[1] | {"content": "It is"}]
    prompt = post(server, "/apply-template", {"messages": with_content}).json()["prompt"]
    assert prompt.endswith("<start_of_turn>model\nIt is")  # a template without thinking tags: the content


def test_openai_sdk_reads_llama_server_extras(server):
    sdk = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0,
                        _strict_response_validation=True)
    out = sdk.chat.completions.create(model="any", messages=[{"role": "user", "content": "Hi"}],
                                      extra_body={"n_predict": 2, "ignore_eos": True, "mirostat": 2, "seed": 3})
    assert out.usage.completion_tokens == 2
    assert out.model_extra["timings"]["predicted_n"] == 2


@pytest.mark.parametrize("path", ["/completion", "/v1/completions"])
def test_bad_llama_fields_are_400s_naming_them(server, path):
    for field, value in [("mirostat", 3), ("samplers", ["top_k", "nucleus_x"]), ("samplers", "kq"),
                         ("logit_bias", {"15": True}), ("dry_sequence_breakers", []), ("xtc_probability", 2.0),
                         # each breaker costs the executor a pass over the vocabulary: at most 16
                         ("dry_sequence_breakers", [f"b{i}" for i in range(17)])]:
        r = post(server, path, {"prompt": PROMPT, field: value})
        assert r.status_code == 400 and r.json()["error"]["param"].startswith(field), (field, r.text)


def test_cors_preflight_on_every_route_and_headers_on_every_answer(server):
    # llama-server's defaults: any origin, echoed back with credentials allowed.
    for path in build_routes(False):
        r = httpx.options(f"{server.base_url}{path}", headers={"origin": ORIGIN, "access-control-request-method": "POST",
                                                                "access-control-request-headers": "Authorization"})
        assert r.status_code == 200 and r.content == b"", path
        assert r.headers["access-control-allow-origin"] == ORIGIN and r.headers["vary"] == "Origin", path
        assert r.headers["access-control-allow-credentials"] == "true", path
        assert r.headers["access-control-allow-methods"] == "GET, POST, DELETE, OPTIONS", path
        assert r.headers["access-control-allow-headers"] == "*", path
    answers = [httpx.get(f"{server.base_url}/health", headers={"origin": ORIGIN}),
               httpx.get(f"{server.base_url}/nope", headers={"origin": ORIGIN}),
               httpx.post(f"{server.base_url}/v1/completions", json={"prompt": 5}, headers={"origin": ORIGIN})]
    assert [a.status_code for a in answers] == [200, 404, 400]
    assert all(a.headers["access-control-allow-origin"] == ORIGIN for a in answers)
    assert httpx.get(f"{server.base_url}/health").headers["access-control-allow-origin"] == "*"  # no Origin sent
    with httpx.stream("POST", f"{server.base_url}/completion", headers={"origin": ORIGIN},
                      json={"prompt": "Hi", "n_predict": 2, "stream": True}) as stream:
        assert stream.headers["access-control-allow-origin"] == ORIGIN


def test_models_list_has_llama_server_meta_and_the_ollama_listing(server):
    listing = httpx.get(f"{server.base_url}/v1/models").json()
    meta = listing["data"][0]["meta"]
    assert meta["n_ctx"] == 2048 and meta["n_embd"] == 640 and meta["vocab_type"] > 0
    assert meta["n_params"] > 200e6 and meta["size"] > 0 and meta["n_vocab"] == meta["n_vocab"] > 0
    (entry,) = listing["models"]
    assert entry["name"] == entry["model"] == listing["data"][0]["id"] and entry["details"]["format"] == "gguf"


def test_t_max_predict_ms_ends_the_text_at_a_newline_after_the_limit(server):
    code = "def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n"
    full = native(server, prompt=code, n_predict=64, ignore_eos=True)
    assert full["content"].count("\n") >= 3
    cut = native(server, prompt=code, n_predict=64, ignore_eos=True, t_max_predict_ms=1)
    assert cut["stop_type"] == "limit" and cut["tokens_predicted"] < 64
    assert full["content"].startswith(cut["content"]) and "\n" in cut["content"]


def test_prompt_progress_arrives_before_the_first_token(server):
    long_prompt = "one two three four five six seven eight nine ten " * 30
    events = stream_events(server, "/completion", {"prompt": long_prompt, "n_predict": 2, "stream": True, "ignore_eos": True,
                                                  "return_progress": True, "cache_prompt": False,
                                                  "timings_per_token": True})
    first_text = next(i for i, e in enumerate(events) if e.get("content"))
    progress = [e for e in events[:first_text] if "prompt_progress" in e]
    assert len(progress) >= 2  # llama-server's 0% update as the prefill starts, then one per step
    last = progress[-1]["prompt_progress"]
    assert last["processed"] == last["total"] == events[-1]["tokens_evaluated"]
    assert all(p["prompt_progress"]["time_ms"] >= 0 and p["prompt_progress"]["cache"] == 0 for p in progress)
    first = progress[0]
    assert first["prompt_progress"]["processed"] == 0
    assert [first["timings"][k] for k in ("prompt_n", "prompt_ms", "predicted_n", "predicted_ms")] == [0, 0, 0, 0]
    prompt_ms = [p["timings"]["prompt_ms"] for p in progress]
    assert prompt_ms == sorted(prompt_ms) and prompt_ms[-1] > 0  # never backwards (llama-server's suite)
    assert [p["timings"]["prompt_n"] for p in progress] == [p["prompt_progress"]["processed"] for p in progress]
    chunks = stream_events(server, "/v1/chat/completions", {"messages": [{"role": "user", "content": long_prompt}],
                                                            "max_tokens": 2, "stream": True, "return_progress": True})
    assert any("prompt_progress" in c for c in chunks)


def test_id_slot_chooses_the_slot(server):
    for slot in (2, 0):
        assert native(server, n_predict=1, id_slot=slot)["id_slot"] == slot
    r = post(server, "/completion", {"prompt": PROMPT, "id_slot": 4})
    assert r.status_code == 400 and r.json()["error"]["param"] == "id_slot"


def test_post_sampling_probs_are_the_chains_distribution(server):
    out = native(server, n_predict=4, ignore_eos=True, temperature=1.0, top_k=3, top_p=1.0, min_p=0.0, seed=2, n_probs=3,
                 post_sampling_probs=True)
    for p in out["completion_probabilities"]:
        assert set(p) == {"id", "token", "bytes", "prob", "top_probs"} and len(p["top_probs"]) == 3
        assert abs(sum(t["prob"] for t in p["top_probs"]) - 1.0) < 1e-4  # top-k 3: all that is left
        assert p["prob"] in [t["prob"] for t in p["top_probs"]]
    greedy = native(server, n_predict=2, n_probs=2, post_sampling_probs=True)
    assert [p["prob"] for p in greedy["completion_probabilities"]] == [1.0, 1.0]
    r = post(server, "/v1/completions", {"prompt": PROMPT, "post_sampling_probs": True})
    assert r.status_code == 400 and r.json()["error"]["param"] == "post_sampling_probs"


def test_chat_post_sampling_probs_give_probs_in_place_of_logprobs(server):
    """llama-server's chat shape: each token's ``prob`` and ``top_probs`` (after the sampler
    chain) instead of ``logprob`` and ``top_logprobs``, streamed and not."""
    messages = [{"role": "user", "content": "Name a colour."}]
    body = {"messages": messages, "max_tokens": 4, "ignore_eos": True, "temperature": 1.0, "top_k": 3, "top_p": 1.0,
            "min_p": 0.0, "seed": 2, "logprobs": True, "top_logprobs": 3, "post_sampling_probs": True}
    chat = post(server, "/v1/chat/completions", body).json()
    content = chat["choices"][0]["logprobs"]["content"]
    assert len(content) == 4
    for p in content:
        assert set(p) == {"id", "token", "bytes", "prob", "top_probs"} and len(p["top_probs"]) == 3
        assert {"id", "token", "bytes", "prob"} == set(p["top_probs"][0])
        assert abs(sum(t["prob"] for t in p["top_probs"]) - 1.0) < 1e-4  # top-k 3: all that is left
        assert p["prob"] in [t["prob"] for t in p["top_probs"]]
    streamed = [c["choices"][0]["logprobs"]["content"]
                for c in stream_events(server, "/v1/chat/completions", body | {"stream": True})
                if c.get("choices") and c["choices"][0].get("logprobs")]
    assert [p for chunk in streamed for p in chunk] == content  # same seed, same batch shape
    plain = post(server, "/v1/chat/completions", body | {"post_sampling_probs": False}).json()
    first = plain["choices"][0]["logprobs"]["content"][0]
    assert set(first) == {"id", "token", "bytes", "logprob", "top_logprobs"}  # llama-server's id beside OpenAI's
    assert first["id"] == first["top_logprobs"][0]["id"] or first["logprob"] < first["top_logprobs"][0]["logprob"]
    for grammar in ({"grammar": 'root ::= "yes"'}, {"response_format": {"type": "json_object"}}):
        r = post(server, "/v1/chat/completions", body | grammar)
        assert r.status_code == 400 and r.json()["error"]["param"] == "post_sampling_probs"


def test_n_indent_stops_at_a_line_indented_less(server):
    code = "def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n"
    full = native(server, prompt=code, n_predict=48, ignore_eos=True)
    cut = native(server, prompt=code, n_predict=48, ignore_eos=True, n_indent=4)
    lines = cut["content"].split("\n")
    assert all(len(line) - len(line.lstrip(" \t")) >= 4 or not line.strip() for line in lines[1:])
    if cut["tokens_predicted"] < 48:
        assert cut["stop_type"] == "limit"
    assert full["content"].startswith(cut["content"].rstrip(" \t")) or cut["content"] in full["content"]


def test_mixed_prompt_of_text_and_token_ids(server):
    ids = tokenize(server, "The days of the week are")  # with BOS
    mixed = native(server, prompt=[*ids, " Monday, Tuesday,"], n_predict=4)
    assert mixed["tokens_evaluated"] == len(ids) + len(tokenize(server, " Monday, Tuesday,")) - 1
    assert mixed["content"] == native(server, n_predict=4)["content"]


def test_object_prompts_and_lists_of_every_form(server):
    greedy = native(server, n_predict=4)
    ids = tokenize(server, PROMPT)
    several = post(server, "/completion", {"prompt": [ids, {"prompt_string": PROMPT}, PROMPT], "n_predict": 4,
                                           "temperature": 0}).json()
    assert [out["content"] for out in several] == [greedy["content"]] * 3
    assert [out["tokens_evaluated"] for out in several] == [len(ids)] * 3
    single = native(server, prompt={"prompt_string": PROMPT}, n_predict=4)
    assert single["content"] == greedy["content"] and single["prompt"].endswith(PROMPT)
    completion = post(server, "/v1/completions", {"prompt": {"prompt_string": PROMPT}, "max_tokens": 4,
                                                  "temperature": 0}).json()
    assert completion["choices"][0]["text"] == greedy["content"]
    media = post(server, "/completion", {"prompt": {"prompt_string": "<__media__> hi", "multimodal_data": ["AAAA"]}})
    assert media.status_code == 400 and "no multimodal projector loaded" in media.json()["error"]["message"]
    assert media.json()["error"]["param"] == "prompt.multimodal_data"
    for bad in ({}, {"content": [{"type": "text", "text": "x"}]}, {"prompt_string": 5}, {"text": "x"}):
        r = post(server, "/completion", {"prompt": bad})
        assert r.status_code == 400 and r.json()["error"]["param"].startswith("prompt"), (bad, r.text)


def test_slot_actions_need_a_slot_save_path(server):
    r = post(server, "/slots/0?action=save", {"filename": "a.bin"})
    assert r.status_code == 501 and "--slot-save-path" in r.json()["error"]["message"]


def test_backend_sampling_is_a_place_not_a_result(server):
    """llama-server's backend_sampling promises the same tokens and probabilities: ggserve takes it
    and samples where it always does (its own suite's test, at a seed)."""
    body = {"prompt": "The countries of Europe are:", "n_predict": 6, "n_probs": 5, "post_sampling_probs": True,
            "seed": 4242, "temperature": 0.8}
    on, off = native(server, **body, backend_sampling=True), native(server, **body, backend_sampling=False)
    assert on["completion_probabilities"] == off["completion_probabilities"] and on["content"] == off["content"]
    assert on["generation_settings"]["backend_sampling"] is True


def test_verbose_adds_the_native_result_to_openai_responses(server):
    """llama-server's ``verbose: true``: ``__verbose`` holds the native result of the first choice
    (its rendered prompt, its text, its timings); without it there is no such field."""
    messages = [{"role": "system", "content": "Book"}, {"role": "user", "content": "What is the best book"}]
    chat = post(server, "/v1/chat/completions", {"messages": messages, "max_tokens": 3, "temperature": 0,
                                                 "verbose": True}).json()
    verbose = chat["__verbose"]
    assert NATIVE_FIELDS <= set(verbose)
    assert "Book" in verbose["prompt"] and "What is the best book" in verbose["prompt"]
    assert verbose["content"] == chat["choices"][0]["message"]["content"]
    assert verbose["tokens_predicted"] == chat["usage"]["completion_tokens"] == 3
    assert verbose["tokens_evaluated"] == chat["usage"]["prompt_tokens"]
    assert verbose["stop_type"] == "limit" and verbose["generation_settings"]["n_predict"] == 3
    assert set(verbose["timings"]) >= TIMINGS
    plain = post(server, "/v1/chat/completions", {"messages": messages, "max_tokens": 3, "verbose": False}).json()
    assert "__verbose" not in plain

    completion = post(server, "/v1/completions", {"prompt": PROMPT, "max_tokens": 4, "temperature": 0,
                                                  "verbose": True}).json()
    assert completion["__verbose"]["prompt"].endswith(PROMPT)
    assert completion["__verbose"]["content"] == completion["choices"][0]["text"]
    assert completion["__verbose"]["tokens_predicted"] == 4


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
def test_verbose_streams_send_each_choices_native_result_after_the_text(server, path):
    body = {"max_tokens": 3, "temperature": 0, "verbose": True, "stream": True, "n": 2,
            "stream_options": {"include_usage": True}}
    body |= {"messages": [{"role": "user", "content": "Hi"}]} if "chat" in path else {"prompt": PROMPT}
    events = stream_events(server, path, body)
    verbose = [e for e in events if "__verbose" in e]
    assert [e["__verbose"]["index"] for e in verbose] == [0, 1]
    assert all(e["choices"] == [] and e["__verbose"]["tokens_predicted"] == 3 for e in verbose)
    last_text = max(i for i, e in enumerate(events) if e["choices"])
    assert all(events.index(e) > last_text for e in verbose)
    assert "usage" in events[-1]  # the usage chunk stays last
