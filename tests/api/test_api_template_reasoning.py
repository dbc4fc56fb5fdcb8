"""A chat template given with --chat-template-file, end to end on the default model: request
fields reach the template (``reasoning_effort``, ``chat_template_kwargs``, past reasoning as
gpt-oss's ``thinking``), and a Harmony-style template (it speaks in ``<|channel|>``s) makes the
server read replies as gpt-oss writes them: analysis to reasoning_content, calls addressed to
functions, the reasoning budget closing the analysis channel.

The Gemma base model knows nothing of channels: grammars make it write them (a tool grammar
makes it call), so only what a grammar forces is asserted.
"""

from __future__ import annotations

import json

import httpx
import jsonschema
import openai
import pytest
from conftest import template_server

TEMPLATE = """\
<|start|>system<|message|>Reasoning: {{ reasoning_effort | default("medium") }}; \
thinking: {{ enable_thinking | default("unset") }}<|end|>
{%- if documents %}<|start|>system<|message|>Documents:{% for d in documents %} {{ d.title }}={{ d.text }}\
{% endfor %}<|end|>{% endif %}
{%- if tools %}<|start|>developer<|message|>{% for t in tools %}{{ t.function.name }} {% endfor %}<|end|>
{%- endif %}
{%- for m in messages %}<|start|>{{ m.role }}
{%- if m.thinking %}<|channel|>analysis<|message|>{{ m.thinking }}<|end|><|start|>{{ m.role }}{% endif %}
{%- if m.tool_calls %}<|channel|>commentary to=functions.{{ m.tool_calls[0].function.name }} <|constrain|>json<|message|>\
{{ m.tool_calls[0].function.arguments | tojson }}<|call|>
{%- else %}<|message|>{{ m.content }}<|end|>{% endif %}
{%- endfor %}
{%- if add_generation_prompt %}<|start|>assistant{% endif %}"""

WEATHER = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12}}, "required": ["city"]}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}}]
MESSAGES = [{"role": "user", "content": "What is the weather in Paris?"}]
ANALYSIS = '"<|channel|>analysis<|message|>" [a-z ]+ "<|end|>"'
HARMONY = f'root ::= {ANALYSIS} "<|start|>assistant<|channel|>final<|message|>" [a-z ]{{1,12}}'


@pytest.fixture(scope="module")
def server():
    with template_server(TEMPLATE) as handle:
        yield handle


@pytest.fixture(scope="module")
def sdk(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0,
                         _strict_response_validation=True)


def prompt(server, **body) -> str:
    r = httpx.post(f"{server.base_url}/apply-template", json={"messages": MESSAGES, **body})
    assert r.status_code == 200, r.text
    return r.json()["prompt"]


def test_reasoning_effort_and_template_kwargs_reach_the_template(server):
    assert "Reasoning: medium; thinking: True" in prompt(server)  # llama-server's default: thinking on
    assert "Reasoning: high; thinking: False" in prompt(
        server, reasoning_effort="high", chat_template_kwargs={"enable_thinking": False})
    assert "thinking: False" in prompt(server, reasoning_effort="none")  # llama-server's "no thinking"
    # chat_template_kwargs wins over the top-level field, as in llama-server
    assert "Reasoning: low;" in prompt(server, reasoning_effort="high",
                                       chat_template_kwargs={"reasoning_effort": "low"})


def test_vllms_documents_reach_the_template(server):
    docs = [{"title": "cats", "text": "Cats eat fish."}, {"title": "dogs", "text": "Dogs bark."}]
    assert "Documents: cats=Cats eat fish. dogs=Dogs bark.<|end|>" in prompt(server, documents=docs)
    assert "Documents:" not in prompt(server)


def test_reasoning_flags_set_template_defaults_that_requests_override(tmp_path):
    """llama-server's --reasoning off and --reasoning-effort low become the template's
    enable_thinking and reasoning_effort for requests that set neither."""
    with template_server(TEMPLATE, "--reasoning", "off", "--reasoning-effort", "low") as flagged:
        assert "Reasoning: low; thinking: False" in prompt(flagged)
        assert "Reasoning: high; thinking: True" in prompt(
            flagged, reasoning_effort="high", chat_template_kwargs={"enable_thinking": True})


def test_past_reasoning_and_calls_render_as_harmony(server):
    history = MESSAGES + [{"role": "assistant", "reasoning_content": "need the weather", "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]
    text = httpx.post(f"{server.base_url}/apply-template", json={"messages": history, "tools": TOOLS}).json()["prompt"]
    assert "<|channel|>analysis<|message|>need the weather<|end|>" in text
    assert '<|constrain|>json<|message|>{"city": "Paris"}<|call|>' in text


def reply(sdk, stream: bool = False, **extra):
    return sdk.chat.completions.create(model="any", messages=MESSAGES, max_tokens=80, temperature=0, stream=stream,
                                       extra_body=extra)


def test_harmony_analysis_is_reasoning(sdk):
    message = reply(sdk, grammar=HARMONY).choices[0].message
    assert message.reasoning_content and message.content.strip() and "<|" not in message.content
    chunks = list(reply(sdk, stream=True, grammar=HARMONY))
    reasoning = "".join(getattr(c.choices[0].delta, "reasoning_content", None) or "" for c in chunks if c.choices)
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert (reasoning, content) == (message.reasoning_content, message.content)
    none = reply(sdk, grammar=HARMONY, reasoning_format="none").choices[0].message
    assert getattr(none, "reasoning_content", None) is None
    assert none.content.startswith("<|channel|>analysis<|message|>")


def test_harmony_reasoning_budget_ends_the_analysis(server, sdk):
    free = reply(sdk, grammar=HARMONY).choices[0].message.reasoning_content
    cut = reply(sdk, grammar=HARMONY, thinking_budget_tokens=3).choices[0].message
    tokens = httpx.post(f"{server.base_url}/tokenize", json={"content": cut.reasoning_content}, timeout=30)
    # (the model may end its analysis within 3 tokens by itself: then the two are the same)
    assert len(tokens.json()["tokens"]) <= 3 and free.startswith(cut.reasoning_content)
    assert cut.content.strip()


def test_vllms_reasoning_fields(sdk):
    """vLLM's thinking_token_budget is the same budget; include_reasoning false leaves the
    reasoning out of the answer, streamed or not, and the answer's content as it was."""
    budget = reply(sdk, grammar=HARMONY, thinking_budget_tokens=3).choices[0].message
    assert reply(sdk, grammar=HARMONY, thinking_token_budget=3).choices[0].message == budget
    full = reply(sdk, grammar=HARMONY).choices[0].message
    hidden = reply(sdk, grammar=HARMONY, include_reasoning=False).choices[0].message
    assert full.reasoning_content and getattr(hidden, "reasoning_content", None) is None
    assert hidden.content == full.content
    chunks = [c for c in reply(sdk, stream=True, grammar=HARMONY, include_reasoning=False) if c.choices]
    assert not any(getattr(c.choices[0].delta, "reasoning_content", None) for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == full.content


@pytest.mark.parametrize("stream", [False, True])
def test_harmony_forced_call(sdk, stream):
    """The tool grammar lets the model think first (as gpt-oss does); the budget keeps a base
    model's thinking short, so the call follows within max_tokens."""
    out = sdk.chat.completions.create(model="any", messages=MESSAGES, tools=TOOLS, tool_choice="required",
                                      max_tokens=80, temperature=0, stream=stream,
                                      extra_body={"thinking_budget_tokens": 5})
    if stream:
        deltas = [d for c in out if c.choices for d in c.choices[0].delta.tool_calls or []]
        name, arguments = deltas[0].function.name, "".join(d.function.arguments or "" for d in deltas)
    else:
        choice = out.choices[0]
        assert choice.finish_reason == "tool_calls" and len(choice.message.tool_calls) == 1
        name, arguments = choice.message.tool_calls[0].function.name, choice.message.tool_calls[0].function.arguments
    assert name == "get_weather"
    jsonschema.validate(json.loads(arguments), WEATHER)


def test_harmony_response_format_answers_in_the_final_channel(sdk):
    """A schema's JSON goes in gpt-oss's final channel (after its thinking, kept short here by
    the budget), and comes back as the content alone."""
    schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 10}}, "required": ["city"]}
    out = sdk.chat.completions.create(model="any", messages=MESSAGES, max_tokens=80, temperature=0,
                                      response_format={"type": "json_schema",
                                                       "json_schema": {"name": "c", "schema": schema}},
                                      extra_body={"thinking_budget_tokens": 5})
    choice = out.choices[0]
    assert choice.finish_reason == "stop"
    jsonschema.validate(json.loads(choice.message.content), schema)
