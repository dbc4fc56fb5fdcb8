"""Constrained output end to end on the default model: GBNF, json_schema and response_format on
/v1/completions and /v1/chat/completions, streamed and not; bad grammars and schemas are 400s.

The model is a base model: the tests assert only what the grammar forces (the output parses and
validates against its schema), never what the model says.
"""

from __future__ import annotations

import json
import re

import httpx
import jsonschema
import openai
import pytest

from tests.structured_schemas import SCHEMAS

MAX_TOKENS = 120
# A recursive schema lets a base model nest forever at temperature 0: tested on strings only
# (test_structured_grammar); the rest run end to end.
API_SCHEMAS = sorted(n for n in SCHEMAS if n != "recursive_ref")


@pytest.fixture(scope="module")
def sdk(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0,
                         _strict_response_validation=True)


def validate(schema: dict, text: str) -> None:
    jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker()).validate(json.loads(text))


@pytest.mark.parametrize("name", API_SCHEMAS)
def test_chat_json_schema_output_validates(sdk, name):
    schema = SCHEMAS[name]
    out = sdk.chat.completions.create(
        model="any", messages=[{"role": "user", "content": f"Reply with JSON ({name})."}], max_tokens=MAX_TOKENS,
        temperature=0, response_format={"type": "json_schema", "json_schema": {"name": name, "schema": schema}},
    )
    choice = out.choices[0]
    assert choice.finish_reason == "stop", choice.message.content
    validate(schema, choice.message.content)


@pytest.mark.parametrize("name", API_SCHEMAS)
def test_completion_json_schema_stream_validates(server, name):
    schema = SCHEMAS[name]
    body = {"prompt": f"JSON ({name}):", "max_tokens": MAX_TOKENS, "temperature": 0.7, "seed": 5,
            "json_schema": schema, "stream": True}
    text, finish = "", None
    with httpx.stream("POST", f"{server.base_url}/v1/completions", json=body, timeout=120) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                chunk = json.loads(line[6:])
                text += chunk["choices"][0]["text"]
                finish = chunk["choices"][0]["finish_reason"] or finish
    assert finish == "stop", text
    validate(schema, text)


def test_json_object_and_stream_chat(sdk):
    # llama-server's json_object with a schema keeps a base model's object short
    schema = SCHEMAS["enum"]
    chunks = list(sdk.chat.completions.create(
        model="any", messages=[{"role": "user", "content": "A JSON object please."}], max_tokens=MAX_TOKENS,
        temperature=0, response_format={"type": "json_object", "schema": schema}, stream=True,
    ))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    validate(schema, text)
    # without a schema: any JSON object (a prefix of one when max_tokens cuts it)
    out = sdk.chat.completions.create(model="any", messages=[{"role": "user", "content": "JSON:"}], max_tokens=40,
                                      temperature=0, response_format={"type": "json_object"})
    text = out.choices[0].message.content
    assert text.startswith("{")
    if out.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(text), dict)


@pytest.mark.parametrize("stream", [False, True])
def test_gbnf_grammar_on_chat_and_completions(server, sdk, stream):
    grammar = 'root ::= "answer: " ("yes" | "no") " (" [0-9] [0-9]? "%)"'
    shape = re.compile(r"answer: (yes|no) \([0-9]{1,2}%\)")
    kwargs = {"model": "any", "max_tokens": 20, "temperature": 0.9, "seed": 11, "extra_body": {"grammar": grammar}}
    if stream:
        chat = "".join(c.choices[0].delta.content or "" for c in sdk.chat.completions.create(
            messages=[{"role": "user", "content": "Well?"}], stream=True, **kwargs) if c.choices)
        # (not strict: the SDK's type wants a finish_reason in every streamed completion chunk)
        loose = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0)
        text = "".join(c.choices[0].text for c in loose.completions.create(prompt="Q:", stream=True, **kwargs))
    else:
        chat = sdk.chat.completions.create(messages=[{"role": "user", "content": "Well?"}], **kwargs
                                           ).choices[0].message.content
        text = sdk.completions.create(prompt="Q:", **kwargs).choices[0].text
    assert shape.fullmatch(chat), chat
    assert shape.fullmatch(text), text


@pytest.mark.parametrize("body, param, words", [
    ({"grammar": "root ::= undefined-rule"}, "grammar", "Undefined rule identifier"),
    ({"grammar": 'root ::= "unterminated'}, "grammar", "unexpected end of input"),
    ({"grammar": 'start ::= "x"'}, "grammar", "'root' symbol"),
    ({"json_schema": {"type": "string", "pattern": "(?!x)"}}, "json_schema", "lookaround"),
    ({"json_schema": {"type": "object", "not": {}}}, "json_schema", "'not'"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"$ref": "#/nope"}}}},
     "response_format.json_schema.schema", "points to nothing"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}, "response_format.json_schema",
     "needs json_schema.schema"),
    ({"grammar": 'root ::= "x"', "json_schema": {}}, "json_schema", "cannot be used together"),
    ({"response_format": {"type": "xml"}}, "response_format.type", "Invalid enum value 'xml'"),
    ({"json_schema": {"type": "object", "properties": {f"p{i}": {"type": "integer"} for i in range(3000)}}},
     "json_schema", "too large to convert"),
    ({"grammar": 'root ::= x{0,1999}\nx ::= "a"?'}, "grammar", "may match nothing"),  # stalled the executor
    ({"json_schema": {"type": "string", "pattern": "^(b?){0,150}zq$"}}, "json_schema", "may match nothing"),
])
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
def test_bad_grammars_and_schemas_are_400(server, path, body, param, words):
    base = {"messages": [{"role": "user", "content": "hi"}]} if "chat" in path else {"prompt": "hi"}
    r = httpx.post(f"{server.base_url}{path}", json={**base, "max_tokens": 4, **body})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == param and words in error["message"], error


def test_grammar_dead_end_fails_only_its_request(server):
    import concurrent.futures

    dead_end = {"prompt": "x", "max_tokens": 8, "temperature": 0, "grammar": 'root ::= "ok" "\\x00"'}
    normal = {"prompt": "Count: 1, 2,", "max_tokens": 24, "temperature": 0, "ignore_eos": True}
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        others = [pool.submit(httpx.post, f"{server.base_url}/v1/completions", json=normal, timeout=120)
                  for _ in range(3)]
        failed = httpx.post(f"{server.base_url}/v1/completions", json=dead_end, timeout=120)
        results = [f.result() for f in others]
    assert failed.status_code == 400 and "dead end" in failed.json()["error"]["message"]
    for r in results:
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 24


WEEK = "The days of the week are Monday, Tuesday,"


def native(server, **body) -> dict:
    r = httpx.post(f"{server.base_url}/completion", json={"prompt": WEEK, "temperature": 0, "n_predict": 24,
                                                          "cache_prompt": False} | body, timeout=120)
    assert r.status_code == 200, r.text
    return r.json()


def test_a_lazy_grammar_applies_from_its_trigger_on(server):
    free = native(server)["content"]
    cut = free.find("Friday")
    assert cut > 0, free  # the base model lists the days: the trigger comes mid-output
    grammar = 'root ::= "Friday" "=" [0-9] [0-9]'
    lazy = native(server, grammar=grammar, grammar_lazy=True, grammar_triggers=[{"type": 2, "value": "Friday"}])
    content = lazy["content"]
    assert content.startswith(free[:cut])  # free text before the trigger, as without the grammar
    assert re.fullmatch(r"Friday=[0-9]{2}", content[cut:]), content  # the grammar from the trigger on
    settings = lazy["generation_settings"]
    assert settings["grammar_lazy"] and settings["grammar_triggers"] == [{"type": 2, "value": "Friday"}]
    eager = native(server, grammar=grammar)["content"]  # the same grammar, not lazy: from the first token
    assert re.fullmatch(r"Friday=[0-9]{2}", eager), eager


def test_lazy_grammar_fields_are_checked(server):
    def error(**body) -> dict:
        r = httpx.post(f"{server.base_url}/completion", json={"prompt": WEEK, "n_predict": 2, "grammar": 'root ::= "a"'}
                       | body, timeout=60)
        assert r.status_code == 400, r.text
        return r.json()["error"]

    assert error(grammar_lazy=True)["param"] == "grammar_lazy"  # no trigger: it would never apply
    for pattern in ("(unclosed", "a{99999999999}"):
        assert error(grammar_triggers=[{"type": 2, "value": pattern}])["param"] == "grammar_triggers"
    assert error(grammar_triggers=[{"type": 7, "value": "x"}])["param"] == "grammar_triggers"
    assert error(grammar_triggers=[{"type": "token", "value": "x"}])["param"] == "grammar_triggers"  # no "token"
    word = error(grammar_triggers=[{"type": "word", "value": "<start_of_turn>"}])  # one token, not preserved
    assert "preserved_tokens" in word["message"]


def test_preserved_tokens_are_written_out(server):
    start = httpx.post(f"{server.base_url}/tokenize", json={"content": "<start_of_turn>", "parse_special": True},
                       timeout=60).json()["tokens"]
    assert len(start) == 1
    body = {"n_predict": 1, "logit_bias": [[start[0], 100]]}
    assert native(server, **body)["content"] == ""  # a control token is not text
    assert native(server, **body, preserved_tokens=["<start_of_turn>"])["content"] == "<start_of_turn>"
