"""Anthropic's Messages API (/v1/messages, /v1/messages/count_tokens) end to end on the default
model, through the official anthropic SDK.

The embedded model is a base model: only shapes, counts, event sequences, determinism at
temperature 0 and what the tool grammar forces are asserted, never its words. This SDK version
no longer lists temperature among its parameters (Anthropic's API still takes it): extra_body
sends it.
"""

from __future__ import annotations

import json

import anthropic
import httpx
import jsonschema
import pytest

from tests.conftest import start_server

KEY = "test-key"
WEATHER = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 16}, "unit": {"enum": ["c", "f"]}},
           "required": ["city", "unit"]}
TOOLS = [{"name": "get_weather", "description": "Weather in a city", "input_schema": WEATHER},
         {"name": "is_open", "input_schema": {"type": "object", "properties": {"shop": {"enum": ["bakery", "bank"]}},
                                              "required": ["shop"]}}]
SCHEMAS = {t["name"]: t["input_schema"] for t in TOOLS}
MESSAGES = [{"role": "user", "content": "List three colors of the rainbow."}]
SYSTEM = "You are a helpful assistant."


@pytest.fixture(scope="module")
def server():
    with start_server("-np", "2", "-c", "2048", "--api-key", KEY) as handle:
        yield handle


@pytest.fixture(scope="module")
def client(server) -> anthropic.Anthropic:
    # The SDK sends its key as x-api-key (and anthropic-version), as against Anthropic's API.
    return anthropic.Anthropic(base_url=server.base_url, api_key=KEY, max_retries=0,
                               _strict_response_validation=True)


def post(server, path: str, body: dict, key: str = KEY) -> httpx.Response:
    headers = {"x-api-key": key, "anthropic-version": "2023-06-01"}
    return httpx.post(f"{server.base_url}{path}", json=body, headers=headers, timeout=60)


def test_message_shape_usage_and_determinism(client):
    kwargs = {"model": "any", "system": SYSTEM, "messages": MESSAGES, "max_tokens": 12,
              "extra_body": {"temperature": 0}}
    client.messages.create(**kwargs)  # caches the prompt: the next two run the same way (one shape, see design.md)
    first = client.messages.create(**kwargs, metadata={"user_id": "u1"})
    assert first.type == "message" and first.role == "assistant" and first.id.startswith("msg_")
    assert [b.type for b in first.content] == ["text"] and first.content[0].text
    assert first.stop_reason in ("end_turn", "max_tokens") and first.stop_sequence is None
    assert 0 < first.usage.output_tokens <= 12
    if first.stop_reason == "max_tokens":
        assert first.usage.output_tokens == 12
    second = client.messages.create(**kwargs)
    assert second.content[0].text == first.content[0].text
    # The same prompt again: its tokens are read from the prefix cache, the sum is the prompt.
    prompt = client.messages.count_tokens(model="any", system=SYSTEM, messages=MESSAGES).input_tokens
    assert first.usage.input_tokens + first.usage.cache_read_input_tokens == prompt
    assert second.usage.input_tokens + second.usage.cache_read_input_tokens == prompt
    assert second.usage.cache_read_input_tokens > 0


def test_stream_event_sequence(client):
    kwargs = {"model": "any", "system": [{"type": "text", "text": SYSTEM}], "messages": MESSAGES, "max_tokens": 10,
              "extra_body": {"temperature": 0}}
    whole = client.messages.create(**kwargs)
    events = [e for e in client.messages.create(**kwargs, stream=True) if e.type != "ping"]
    types = [e.type for e in events]
    n_deltas = types.count("content_block_delta")
    assert types == ["message_start", "content_block_start", *["content_block_delta"] * n_deltas,
                     "content_block_stop", "message_delta", "message_stop"]
    assert events[1].content_block.type == "text" and all(e.delta.type == "text_delta" for e in events[2:-3])
    assert "".join(e.delta.text for e in events[2:-3]) == whole.content[0].text
    assert events[-2].delta.stop_reason == whole.stop_reason
    assert events[-2].usage.output_tokens == whole.usage.output_tokens
    # the prompt again came from the prefix cache, and message_start says so (clients such as
    # LangChain take the input usage from it)
    start = events[0].message.usage
    assert start.cache_read_input_tokens > 0
    end = events[-2].usage
    assert (start.input_tokens, start.cache_read_input_tokens) == (end.input_tokens, end.cache_read_input_tokens)
    with client.messages.stream(**kwargs) as stream:  # the SDK's accumulator agrees
        final = stream.get_final_message()
    assert final.content[0].text == whole.content[0].text and final.stop_reason == whole.stop_reason


def test_stop_sequence(client):
    kwargs = {"model": "any", "messages": MESSAGES, "max_tokens": 24, "extra_body": {"temperature": 0}}
    text = client.messages.create(**kwargs).content[0].text
    word = text.split()[len(text.split()) // 2]
    out = client.messages.create(**kwargs, stop_sequences=[word])
    assert out.stop_reason == "stop_sequence" and out.stop_sequence == word
    assert "".join(b.text for b in out.content).strip() == text[:text.index(word)].strip()


def test_output_format_json_schema(client):
    schema = {"type": "object", "properties": {"color": {"type": "string", "maxLength": 12}}, "required": ["color"],
              "additionalProperties": False}
    out = client.messages.create(model="any", messages=MESSAGES, max_tokens=40, extra_body={"temperature": 0},
                                 output_config={"format": {"type": "json_schema", "schema": schema}})
    jsonschema.validate(json.loads(out.content[0].text), schema)


def check_call(block, expected: str | None = None) -> None:
    assert block.type == "tool_use" and block.id.startswith("toolu_") and block.name in SCHEMAS
    assert expected is None or block.name == expected
    jsonschema.validate(block.input, SCHEMAS[block.name])


def test_tool_use_round_trip(client):
    question = [{"role": "user", "content": "What is the weather in Paris?"}]
    out = client.messages.create(model="any", messages=question, tools=TOOLS, max_tokens=60,
                                 extra_body={"temperature": 0},
                                 tool_choice={"type": "any", "disable_parallel_tool_use": True})
    assert out.stop_reason == "tool_use"
    assert [b.type for b in out.content] == ["tool_use"]
    call = out.content[0]
    check_call(call)
    follow_up = [*question, {"role": "assistant", "content": [b.model_dump() for b in out.content]},
                 {"role": "user",
                  "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "Sunny, 21 C"}]}]
    reply = client.messages.create(model="any", messages=follow_up, tools=TOOLS, tool_choice={"type": "none"},
                                   max_tokens=12, extra_body={"temperature": 0})
    assert reply.stop_reason in ("end_turn", "max_tokens") and [b.type for b in reply.content] == ["text"]
    counted = client.messages.count_tokens(model="any", messages=follow_up, tools=TOOLS, tool_choice={"type": "none"})
    assert counted.input_tokens > client.messages.count_tokens(model="any", messages=question).input_tokens


def test_strict_tools_and_template_kwargs_are_taken(client):
    """Anthropic's strict tool use (calls follow the schema: here a grammar makes them), the
    input-streaming hint, and llama-server's chat_template_kwargs (each was a 400)."""
    strict = [{**t, "strict": True, "eager_input_streaming": True} for t in TOOLS]
    out = client.messages.create(model="any", messages=[{"role": "user", "content": "Is the bank open?"}],
                                 tools=strict, tool_choice={"type": "any", "disable_parallel_tool_use": True},
                                 max_tokens=60, extra_body={"temperature": 0,
                                                            "chat_template_kwargs": {"enable_thinking": False}})
    assert out.stop_reason == "tool_use"
    check_call(out.content[0])


def test_named_tool_streamed(client):
    events = list(client.messages.create(
        model="any", messages=[{"role": "user", "content": "Is the bank open?"}], tools=TOOLS, max_tokens=60,
        extra_body={"temperature": 0.7},
        tool_choice={"type": "tool", "name": "is_open", "disable_parallel_tool_use": True},
        stream=True))
    starts = [e for e in events if e.type == "content_block_start"]
    assert [s.content_block.type for s in starts] == ["tool_use"] and starts[0].content_block.name == "is_open"
    arguments = "".join(e.delta.partial_json for e in events if e.type == "content_block_delta")
    assert all(e.delta.type == "input_json_delta" for e in events if e.type == "content_block_delta")
    jsonschema.validate(json.loads(arguments), SCHEMAS["is_open"])
    assert [e.delta.stop_reason for e in events if e.type == "message_delta"] == ["tool_use"]


def test_thinking_block(client):
    # A prefilled "<think>" opens the thinking (the budget then closes it; the base model may open
    # another right away, which is thinking too): the reply starts with a thinking block.
    kwargs = {"model": "any", "max_tokens": 12, "extra_body": {"temperature": 0},
              "messages": [*MESSAGES, {"role": "assistant", "content": "<think>"}],
              "thinking": {"type": "enabled", "budget_tokens": 3}}
    out = client.messages.create(**kwargs)
    types = [b.type for b in out.content]
    assert types in (["thinking"], ["thinking", "text"]) and out.content[0].thinking
    assert out.content[0].signature == ""
    events = [e for e in client.messages.create(**kwargs, stream=True) if e.type != "ping"]
    assert [e.content_block.type for e in events if e.type == "content_block_start"] == types
    thinking = "".join(e.delta.thinking for e in events if e.type == "content_block_delta" and e.index == 0)
    assert thinking == out.content[0].thinking
    assert [e.type for e in events].count("content_block_stop") == len(types)


def test_text_documents_are_read_and_redacted_thinking_is_passed_over(client):
    """A plain-text document (or one of content blocks) reads as its title, context and text; a
    redacted_thinking block another server sent cannot be read here, so the turn goes on without it."""
    def count(content: list, answer: list | str = "Fine.") -> int:
        messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": answer},
                    {"role": "user", "content": content}]
        return client.messages.count_tokens(model="any", messages=messages).input_tokens

    plain = count([{"type": "text", "text": "Notes\nWeather report\nRain at noon.\nSummarise."}])
    document = {"type": "document", "title": "Notes", "context": "Weather report",
                "source": {"type": "text", "media_type": "text/plain", "data": "Rain at noon."}}
    assert count([document, {"type": "text", "text": "Summarise."}]) == plain
    blocks = {**document, "source": {"type": "content", "content": [{"type": "text", "text": "Rain at noon."}]}}
    assert count([blocks, {"type": "text", "text": "Summarise."}]) == plain
    redacted = [{"type": "redacted_thinking", "data": "EmwKAhgBEgy3"}, {"type": "text", "text": "Fine."}]
    assert count([{"type": "text", "text": "x"}], redacted) == count([{"type": "text", "text": "x"}])


@pytest.mark.parametrize(("block", "needle"), [
    ({"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0x"}}, "PDF"),
    ({"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "x"},
      "citations": {"enabled": True}}, "citations"),
    ({"type": "document", "source": {"type": "content", "content": [{"type": "audio"}]}}, "content blocks"),
    ({"type": "redacted_thinking", "data": "x"}, "redacted_thinking"),  # only an assistant turn holds one
])
def test_documents_this_server_cannot_read_are_a_400_naming_why(server, block, needle):
    r = post(server, "/v1/messages", {"messages": [{"role": "user", "content": [block]}], "max_tokens": 2})
    assert r.status_code == 400 and needle in r.json()["error"]["message"], r.text


@pytest.mark.parametrize(("body", "needle"), [
    ({"messages": MESSAGES}, "max_tokens"),
    ({"messages": [{"role": "system", "content": "hi"}], "max_tokens": 4}, "role"),
    ({"messages": MESSAGES, "max_tokens": 4, "top_logprobs": 2}, "top_logprobs"),
    ({"messages": [{"role": "user", "content": [{"type": "image", "source": {
        "type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}]}], "max_tokens": 4}, "--mmproj"),
    ({"messages": MESSAGES, "max_tokens": 4, "tools": [{"name": "x", "type": "web_search_20250305"}]}, "tools"),
])
def test_bad_requests_in_anthropic_shape(server, body, needle):
    r = post(server, "/v1/messages", body)
    assert r.status_code == 400, r.text
    assert r.json()["type"] == "error" and r.json()["error"]["type"] == "invalid_request_error"
    assert needle in r.json()["error"]["message"]


def test_empty_messages_are_a_conversation_as_in_llama_server(server):
    out = post(server, "/v1/messages", {"messages": [], "max_tokens": 3})
    assert out.status_code == 200 and out.json()["type"] == "message", out.text
    assert out.json()["usage"]["output_tokens"] <= 3
    chat = post(server, "/v1/chat/completions", {"messages": [], "max_tokens": 3})
    assert chat.status_code == 200 and chat.json()["usage"]["completion_tokens"] <= 3


def test_sdk_raises_bad_request(client):
    with pytest.raises(anthropic.BadRequestError):
        client.messages.create(model="any", messages=[{"role": "user", "content": "hi"}], max_tokens=0)


def test_authentication(server):
    r = post(server, "/v1/messages", {"messages": MESSAGES, "max_tokens": 4}, key="wrong")
    assert r.status_code == 401
    error = r.json()["error"]
    assert r.json() == {"type": "error", "error": {"type": "authentication_error", "message": error["message"]}}
    bad = anthropic.Anthropic(base_url=server.base_url, api_key="wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        bad.messages.count_tokens(model="any", messages=MESSAGES)
