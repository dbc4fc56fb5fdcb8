"""A template that thinks first (Qwen3's way: the generation prompt opens ``<think>`` unless
``enable_thinking`` is false) on the embedded model: thinking is on by default, as in
llama-server, and a forced answer (tool calls, a JSON schema) comes after the thinking closes,
not inside it. A reasoning budget closes the thinking after a few tokens, so the base model's
words never decide the test."""

from __future__ import annotations

import json

import httpx
import jsonschema
import pytest
from conftest import template_server

TEMPLATE = """{%- if tools %}<|im_start|>system
<tools>{% for t in tools %}{{ t.function | tojson }}{% endfor %}</tools>
Call a tool with <tool_call>{"name": ..., "arguments": ...}</tool_call><|im_end|>
{% endif %}
{%- for m in messages %}<|im_start|>{{ m.role }}
{{ m.content }}<|im_end|>
{% endfor %}
{%- if add_generation_prompt %}<|im_start|>assistant
{% if enable_thinking %}<think>
{% else %}<think>

</think>

{% endif %}{% endif %}"""
WEATHER = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12}}, "required": ["city"]}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}}]
CHAT = {"messages": [{"role": "user", "content": "Weather in Paris?"}], "temperature": 0, "max_tokens": 80,
        "reasoning_budget_tokens": 4}


@pytest.fixture(scope="module")
def server():
    with template_server(TEMPLATE, "-np", "2", "-c", "1024") as handle:
        yield handle


def post(server, path: str, body: dict) -> httpx.Response:
    return httpx.post(f"{server.base_url}{path}", json=body, timeout=120)


def test_thinking_is_on_unless_the_request_turns_it_off(server):
    assert post(server, "/apply-template", CHAT).json()["prompt"].endswith("<think>\n")
    off = post(server, "/apply-template", {**CHAT, "chat_template_kwargs": {"enable_thinking": False}})
    assert off.json()["prompt"].endswith("</think>\n\n")


@pytest.mark.parametrize("stream", [False, True])
def test_a_forced_call_comes_after_the_thinking_the_prompt_opened(server, stream):
    body = {**CHAT, "tools": TOOLS, "tool_choice": "required", "parallel_tool_calls": False}
    if not stream:
        message = post(server, "/v1/chat/completions", body).json()["choices"][0]["message"]
        calls, reasoning = message["tool_calls"], message["reasoning_content"]
    else:
        with httpx.stream("POST", f"{server.base_url}/v1/chat/completions", json={**body, "stream": True},
                          timeout=120) as r:
            deltas = [json.loads(line[6:])["choices"][0]["delta"] for line in r.iter_lines()
                      if line.startswith("data: {")]
        reasoning = "".join(d.get("reasoning_content") or "" for d in deltas)
        calls = [c for d in deltas for c in d.get("tool_calls") or []]
        calls = [{"function": {"name": calls[0]["function"]["name"],
                               "arguments": "".join(c["function"].get("arguments") or "" for c in calls)}}]
    assert reasoning and "<tool_call>" not in reasoning
    assert [c["function"]["name"] for c in calls] == ["get_weather"]
    jsonschema.validate(json.loads(calls[0]["function"]["arguments"]), WEATHER)


def test_a_json_schema_answer_comes_after_the_thinking(server):
    body = {**CHAT, "response_format": {"type": "json_schema", "json_schema": {"name": "w", "schema": WEATHER}}}
    message = post(server, "/v1/chat/completions", body).json()["choices"][0]["message"]
    assert message["reasoning_content"]
    jsonschema.validate(json.loads(message["content"]), WEATHER)


def test_reasoning_format_none_keeps_the_opened_thinking_in_the_content(server):
    """As llama-server: the content starts with the ``<think>`` the prompt opened."""
    message = post(server, "/v1/chat/completions", {**CHAT, "reasoning_format": "none"}).json()["choices"][0]["message"]
    assert message["content"].startswith("<think>\n") and "</think>" in message["content"]
    assert not message.get("reasoning_content")


# Qwen3.5's way of calling: each argument an XML element (a string as raw text), after thinking
XML_TEMPLATE = TEMPLATE.replace('Call a tool with <tool_call>{"name": ..., "arguments": ...}</tool_call>',
                                "Call a tool with <tool_call>\n<function=NAME>\n<parameter=KEY>\nVALUE\n</parameter>\n"
                                "</function>\n</tool_call>")
TRIP = {"type": "object", "properties": {"city": {"type": "string", "enum": ["Paris", "Rome"]},
                                         "days": {"type": "integer", "minimum": 1, "maximum": 7}},
        "required": ["city", "days"]}


@pytest.fixture(scope="module")
def xml_server():
    with template_server(XML_TEMPLATE, "-np", "1", "-c", "1024") as handle:
        yield handle


def test_xml_calls_stream_their_arguments_as_json(xml_server):
    """The template's XML calls go out as OpenAI streams calls: the id and name first, then the
    arguments' JSON in pieces as the elements are written, typed by the schema."""
    body = {**CHAT, "tools": [{"type": "function", "function": {"name": "plan_trip", "parameters": TRIP}}],
            "tool_choice": "required", "parallel_tool_calls": False, "stream": True}
    with httpx.stream("POST", f"{xml_server.base_url}/v1/chat/completions", json=body, timeout=120) as r:
        deltas = [json.loads(line[6:])["choices"][0]["delta"] for line in r.iter_lines() if line.startswith("data: {")]
    pieces = [c for d in deltas for c in d.get("tool_calls") or []]
    assert pieces[0]["id"].startswith("call_") and pieces[0]["function"]["name"] == "plan_trip"
    assert all("id" not in p and "name" not in p["function"] for p in pieces[1:]) and len(pieces) > 3
    arguments = json.loads("".join(p["function"].get("arguments") or "" for p in pieces))
    jsonschema.validate(arguments, TRIP)
    assert "<" not in "".join(d.get("content") or "" for d in deltas)
