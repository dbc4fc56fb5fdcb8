"""OpenAI's Responses API (/v1/responses) end to end on the default model, through the openai SDK.

The embedded model is a base model: only shapes, counts, event sequences, determinism at
temperature 0 and what grammars force are asserted, never its words.
"""

from __future__ import annotations

import json

import httpx
import jsonschema
import openai
import pytest

from frontend.api import responses as api
from frontend.generation import ChoiceResult, TokenText
from frontend.reply_blocks import Block
from frontend.routes.generation import responses as responses_route
from tests.conftest import start_server

WEATHER = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 16}, "unit": {"enum": ["c", "f"]}},
           "required": ["city", "unit"], "additionalProperties": False}
TOOLS = [{"type": "function", "name": "get_weather", "description": "Weather in a city", "parameters": WEATHER}]
QUESTION = "List three colors of the rainbow."


@pytest.fixture(scope="module")
def server():
    # Two HTTP workers: a stored response must be found whichever worker a later request reaches.
    with start_server("-np", "2", "-c", "2048", "--http-workers", "2") as handle:
        yield handle


@pytest.fixture(scope="module")
def sdk(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0,
                         _strict_response_validation=True)


def text_item_events(events: list, kind: str, last: str) -> list[str]:
    """The event types of a stream with one output item of text (``kind``: output_text or
    reasoning_text), with as many deltas as ``events`` has."""
    n_deltas = sum(e.type == f"response.{kind}.delta" for e in events)
    return ["response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
            *[f"response.{kind}.delta"] * n_deltas, f"response.{kind}.done", "response.content_part.done",
            "response.output_item.done", last]


def test_response_shape_usage_and_determinism(sdk):
    kwargs = {"model": "any", "input": QUESTION, "instructions": "Answer briefly.", "max_output_tokens": 12,
              "temperature": 0}
    sdk.responses.create(**kwargs)  # caches the prompt: the next two run the same way (one shape, see design.md)
    first = sdk.responses.create(**kwargs, metadata={"k": "v"})
    assert first.object == "response" and first.id.startswith("resp_") and first.metadata == {"k": "v"}
    assert [item.type for item in first.output] == ["message"]
    assert first.output_text and first.output[0].content[0].type == "output_text"
    assert first.status in ("completed", "incomplete")
    usage = first.usage
    assert 0 < usage.output_tokens <= 12 and usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert usage.output_tokens_details.reasoning_tokens == 0
    if first.status == "incomplete":  # the item cut is incomplete too, as OpenAI marks it
        assert first.incomplete_details.reason == "max_output_tokens" and usage.output_tokens == 12
        assert first.output[-1].status == "incomplete"
    second = sdk.responses.create(**kwargs)
    assert second.output_text == first.output_text and second.usage.input_tokens == usage.input_tokens
    assert second.usage.input_tokens_details.cached_tokens > 0  # the same prompt, from the prefix cache
    assert sdk.responses.retrieve(first.id).output_text == first.output_text


def test_stream_event_sequence(sdk):
    kwargs = {"model": "any", "input": [{"role": "user", "content": [{"type": "input_text", "text": QUESTION}]}],
              "max_output_tokens": 10, "temperature": 0}
    whole = sdk.responses.create(**kwargs)
    events = list(sdk.responses.create(**kwargs, stream=True))
    assert [e.type for e in events] == text_item_events(events, "output_text", f"response.{whole.status}")
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == whole.output_text
    final = events[-1].response
    assert final.output_text == whole.output_text and final.usage.output_tokens == whole.usage.output_tokens
    (done,) = [e.item for e in events if e.type == "response.output_item.done"]
    assert done.status == final.output[-1].status == ("incomplete" if whole.status == "incomplete" else "completed")


def test_reasoning_item(sdk):
    # A prefilled "<think>" opens the thinking, which max_output_tokens cuts: a reasoning item only.
    kwargs = {"model": "any", "max_output_tokens": 6, "temperature": 0,
              "input": [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": "<think>"}]}
    out = sdk.responses.create(**kwargs)
    assert [item.type for item in out.output] == ["reasoning"] and out.status == "incomplete"
    assert out.output[0].content[0].type == "reasoning_text" and out.output[0].content[0].text
    assert 0 < out.usage.output_tokens_details.reasoning_tokens
    events = list(sdk.responses.create(**kwargs, stream=True))
    assert [e.type for e in events] == text_item_events(events, "reasoning_text", "response.incomplete")
    assert events[-4].text == out.output[0].content[0].text


def test_include_encrypted_reasoning_round_trips_for_stateless_clients(sdk):
    """include "reasoning.encrypted_content": a reasoning item carries its reasoning in a form a
    client keeping no state sends back (store false), and it reaches the next turn; another
    server's blob (llama-server sends "") is accepted and ignored."""
    kwargs = {"model": "any", "max_output_tokens": 6, "temperature": 0, "store": False,
              "input": [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": "<think>"}]}
    plain = sdk.responses.create(**kwargs).output[0]
    assert plain.type == "reasoning" and plain.encrypted_content is None
    item = sdk.responses.create(**kwargs, include=["reasoning.encrypted_content"]).output[0]
    assert item.encrypted_content and responses_route.unseal(item.encrypted_content) == item.content[0].text
    streamed = list(sdk.responses.create(**kwargs, include=["reasoning.encrypted_content"], stream=True))
    assert streamed[-2].item.encrypted_content == item.encrypted_content  # output_item.done
    back = [api.ReasoningItem(type="reasoning", encrypted_content=item.encrypted_content),
            api.MessageItem(role="assistant", content="Red.")]
    turn = responses_route.chat_messages(back, ["input[0]", "input[1]"])[0]
    assert turn.reasoning_content == item.content[0].text and turn.content == "Red."
    foreign = [api.ReasoningItem(type="reasoning", encrypted_content="gAAAAB..."), back[1]]
    assert responses_route.chat_messages(foreign, ["input[0]", "input[1]"])[0].reasoning_content is None
    again = sdk.responses.create(model="any", max_output_tokens=2, input=[
        {"role": "user", "content": QUESTION}, {"type": "reasoning", "summary": [], "encrypted_content": ""},
        {"role": "assistant", "content": "Red."}, {"role": "user", "content": "More?"}])
    assert again.status in ("completed", "incomplete")


def test_output_text_logprobs_whole_and_streamed(sdk):
    """include "message.output_text.logprobs" (with top_logprobs): the text part carries each of
    its tokens' logprobs, as chat completions gives them for the same prompt; a stream's text
    deltas carry their own tokens', and the done events all of them."""
    kwargs = {"model": "any", "input": QUESTION, "max_output_tokens": 8, "temperature": 0}
    sdk.responses.create(**kwargs)  # caches the prompt: the runs below take the same shape (see design.md)
    plain = sdk.responses.create(**kwargs)
    assert plain.output[0].content[0].logprobs == [] and plain.top_logprobs is None
    out = sdk.responses.create(**kwargs, include=["message.output_text.logprobs"], top_logprobs=2)
    part = out.output[0].content[0]
    assert out.top_logprobs == 2 and part.text == plain.output_text
    assert "".join(lp.token for lp in part.logprobs) == part.text and len(part.logprobs) == out.usage.output_tokens
    assert all(lp.logprob <= 0 and len(lp.top_logprobs) == 2 and bytes(lp.bytes).decode() == lp.token
               for lp in part.logprobs)
    chat = sdk.chat.completions.create(model="any", messages=[{"role": "user", "content": QUESTION}], max_tokens=8,
                                       temperature=0, logprobs=True, top_logprobs=2)
    expected = chat.choices[0].logprobs.content
    assert [lp.token for lp in part.logprobs] == [lp.token for lp in expected]
    assert [lp.logprob for lp in part.logprobs] == pytest.approx([lp.logprob for lp in expected], abs=1e-3)
    alone = sdk.responses.create(**kwargs, top_logprobs=0).output[0].content[0].logprobs  # top_logprobs asks too
    assert [lp.token for lp in alone] == [lp.token for lp in part.logprobs] and not alone[0].top_logprobs
    events = list(sdk.responses.create(**kwargs, include=["message.output_text.logprobs"], top_logprobs=2,
                                       stream=True))
    deltas = [e for e in events if e.type == "response.output_text.delta"]
    streamed = [lp for e in deltas for lp in e.logprobs]
    assert "".join(e.delta for e in deltas) == part.text
    assert [lp.token for lp in streamed] == [lp.token for lp in part.logprobs]
    done = next(e for e in events if e.type == "response.output_text.done")
    final = events[-1].response.output[0].content[0].logprobs
    assert [lp.model_dump() for lp in done.logprobs] == [lp.model_dump() for lp in streamed] == \
        [lp.model_dump() for lp in final]


def test_a_reply_read_whole_gives_its_text_part_the_tokens_of_the_answer_only():
    """The reasoning's tokens and a call's are not the output text's."""
    pieces = ["<think>", "2+2", " is 4", "</think>", "\n\n", "It", " is 4", "<tool_call>", "{}", "</tool_call>"]
    offsets = [sum(map(len, pieces[:i])) for i in range(len(pieces))]
    tokens = [TokenText(p, p.encode(), -0.5, [], o) for p, o in zip(pieces, offsets)]
    result = ChoiceResult(0, "".join(pieces), tokens, "stop", [], [])
    blocks = [Block(0, "thinking", "2+2 is 4"), Block(1, "text", "It is 4"), Block(2, "tool_call", "{}", "c", "f")]
    assert [t.text for t in responses_route.text_tokens(result, blocks)[1]] == ["It", " is 4"]


def test_json_schema_format(sdk):
    schema = {"type": "object", "properties": {"color": {"type": "string", "maxLength": 12}}, "required": ["color"],
              "additionalProperties": False}
    out = sdk.responses.create(model="any", input=QUESTION, max_output_tokens=40, temperature=0,
                               text={"format": {"type": "json_schema", "name": "c", "schema": schema, "strict": True}})
    jsonschema.validate(json.loads(out.output_text), schema)


def test_function_call_round_trip(sdk):
    question = [{"role": "user", "content": "What is the weather in Paris?"}]
    out = sdk.responses.create(model="any", input=question, tools=TOOLS, tool_choice="required",
                               parallel_tool_calls=False, max_output_tokens=60, temperature=0)
    assert [item.type for item in out.output] == ["function_call"]
    call = out.output[0]
    assert call.name == "get_weather" and call.call_id and call.id
    jsonschema.validate(json.loads(call.arguments), WEATHER)
    follow_up = [*question, call.model_dump(exclude_none=True),
                 {"type": "function_call_output", "call_id": call.call_id, "output": "Sunny, 21 C"}]
    reply = sdk.responses.create(model="any", input=follow_up, tools=TOOLS, tool_choice="none",
                                 max_output_tokens=12, temperature=0)
    assert [item.type for item in reply.output] == ["message"] and reply.output_text
    # The same turn through previous_response_id: the same prompt.
    chained = sdk.responses.create(model="any", previous_response_id=out.id, tools=TOOLS, tool_choice="none",
                                   input=[{"type": "function_call_output", "call_id": call.call_id,
                                           "output": "Sunny, 21 C"}], max_output_tokens=12, temperature=0)
    assert chained.usage.input_tokens == reply.usage.input_tokens


def test_function_call_streamed(sdk):
    events = list(sdk.responses.create(model="any", input="Weather in Rome?", tools=TOOLS,
                                       tool_choice={"type": "function", "name": "get_weather"},
                                       parallel_tool_calls=False, max_output_tokens=60, temperature=0.7, stream=True))
    types = [e.type for e in events]
    n_deltas = types.count("response.function_call_arguments.delta")
    assert n_deltas > 1 and types == ["response.created", "response.in_progress", "response.output_item.added",
                                      *["response.function_call_arguments.delta"] * n_deltas,
                                      "response.function_call_arguments.done", "response.output_item.done",
                                      "response.completed"]
    arguments = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    assert arguments == events[-3].arguments == events[-1].response.output[0].arguments
    jsonschema.validate(json.loads(arguments), WEATHER)


def test_previous_response_id_continues_the_conversation(sdk):
    first = sdk.responses.create(model="any", input="Name a fruit.", max_output_tokens=8, temperature=0)
    second = sdk.responses.create(model="any", input="Name another one.", previous_response_id=first.id,
                                  max_output_tokens=8, temperature=0)
    assert second.previous_response_id == first.id
    # The same conversation written out: the same prompt, longer than the first by the first turn.
    explicit = sdk.responses.create(model="any", max_output_tokens=8, temperature=0, input=[
        {"role": "user", "content": "Name a fruit."}, *[item.model_dump(exclude_none=True) for item in first.output],
        {"role": "user", "content": "Name another one."}])
    assert second.usage.input_tokens == explicit.usage.input_tokens
    assert second.usage.input_tokens > first.usage.input_tokens + first.usage.output_tokens
    third = sdk.responses.create(model="any", input="And a third.", previous_response_id=second.id,
                                 max_output_tokens=4, temperature=0)
    assert third.usage.input_tokens > second.usage.input_tokens + second.usage.output_tokens


def test_input_items_list_the_chain_newest_first_with_stable_ids(server, sdk):
    first = sdk.responses.create(model="any", input="Name a fruit.", max_output_tokens=4, temperature=0)
    second = sdk.responses.create(model="any", previous_response_id=first.id, max_output_tokens=4, temperature=0,
                                  input=[{"role": "user", "content": [{"type": "input_text", "text": "Another."}]}])
    items = list(sdk.responses.input_items.list(second.id, order="asc"))  # every page, through the SDK's cursor
    assert [(i.type, getattr(i, "role", None)) for i in items] == [
        ("message", "user"), *[(o.type, getattr(o, "role", None)) for o in first.output], ("message", "user")]
    assert items[0].content[0].text == "Name a fruit." and items[-1].content[0].text == "Another."
    assert [i.id for i in items[1:-1]] == [o.id for o in first.output]  # the first response's output, as it was
    newest = sdk.responses.input_items.list(second.id, limit=1)  # desc by default
    assert newest.data[0].id == items[-1].id and newest.has_more and newest.first_id == newest.last_id
    rest = sdk.responses.input_items.list(second.id, limit=100, after=newest.data[0].id)
    assert [i.id for i in rest.data] == [i.id for i in reversed(items[:-1])] and not rest.has_more
    url = f"{server.base_url}/v1/responses/{second.id}/input_items"
    for query, param in [("limit=0", "limit"), ("limit=x", "limit"), ("order=up", "order"), ("after=msg_no", "after")]:
        r = httpx.get(f"{url}?{query}", timeout=30)
        assert r.status_code == 400 and r.json()["error"]["param"] == param
    assert httpx.get(f"{server.base_url}/v1/responses/resp_{'0' * 32}/input_items", timeout=30).status_code == 404


def test_store_false_and_delete(server, sdk):
    unstored = sdk.responses.create(model="any", input="Hi", max_output_tokens=2, store=False)
    assert unstored.store is False
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(unstored.id)
    with pytest.raises(openai.NotFoundError) as info:
        sdk.responses.create(model="any", input="Hi", max_output_tokens=2, previous_response_id=unstored.id)
    assert info.value.body["param"] == "previous_response_id"
    stored = sdk.responses.create(model="any", input="Hi", max_output_tokens=2)
    sdk.responses.delete(stored.id)
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(stored.id)
    assert httpx.delete(f"{server.base_url}/v1/responses/not-an-id").status_code == 404


def test_stored_responses_are_seen_by_every_worker(server, sdk):
    ids = [sdk.responses.create(model="any", input=f"Count to {i}.", max_output_tokens=1).id for i in range(4)]
    for response_id in ids * 3:  # a new connection each time, so the workers take turns
        assert httpx.get(f"{server.base_url}/v1/responses/{response_id}", timeout=30).json()["id"] == response_id


def test_llama_server_telemetry_on_the_unversioned_route(server, sdk):
    """llama-server's extras: /responses, prompt_progress in response.in_progress events,
    timings on each step's last event (timings_per_token) and on response.completed."""
    body = {"input": "This is a test " * 20, "max_output_tokens": 4, "temperature": 0, "stream": True,
            "timings_per_token": True, "return_progress": True}
    events = []
    with httpx.stream("POST", f"{server.base_url}/responses", json=body, timeout=120) as r:
        assert r.status_code == 200
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: ")]
    progress = [e for e in events if "prompt_progress" in e]
    assert progress and all(e["type"] == "response.in_progress" for e in progress)
    assert progress[-1]["prompt_progress"]["processed"] == progress[-1]["prompt_progress"]["total"] > 0
    assert any(e["type"] == "response.output_text.delta" and "timings" in e for e in events)
    completed = events[-1]
    assert completed["type"] in ("response.completed", "response.incomplete")
    assert completed["timings"]["predicted_n"] == completed["response"]["usage"]["output_tokens"]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    plain = httpx.post(f"{server.base_url}/responses", json={"input": "Hi", "max_output_tokens": 2}, timeout=60)
    assert plain.json()["object"] == "response"
    for path in ("/v1/responses/input_tokens", "/responses/input_tokens"):
        count = httpx.post(f"{server.base_url}{path}", json={"input": "Hi", "max_output_tokens": 2}).json()
        assert count == {"object": "response.input_tokens", "input_tokens": plain.json()["usage"]["input_tokens"]}


def test_llama_servers_chat_fields_pass_through(sdk):
    """As llama-server, which copies a Responses body into a chat request: sampling extras, the
    template's kwargs and a thinking budget are taken (each was a 400 naming it)."""
    extra = {"seed": 7, "top_k": 5, "min_p": 0.05, "stop": ["\n"], "repeat_penalty": 1.1,
             "chat_template_kwargs": {"enable_thinking": False}, "reasoning_budget_tokens": 0}
    kwargs = {"model": "any", "input": QUESTION, "max_output_tokens": 16, "temperature": 1.0, "extra_body": extra}
    first, second = sdk.responses.create(**kwargs), sdk.responses.create(**kwargs)
    assert first.output_text == second.output_text and "\n" not in first.output_text


@pytest.mark.parametrize(("body", "param"), [
    ({"input": [{"role": "robot", "content": "hi"}]}, "input[0]"),
    ({"input": "hi", "logit_bias": {"1": 1}}, None),
    ({"input": "hi", "tools": [{"type": "web_search"}]}, "tools[0].type"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file-1"}]}]}, "input[0].content[0]"),
    ({"input": [{"type": "item_reference", "id": "x"}]}, "input[0].type"),
    ({"input": "hi", "truncation": "auto"}, "truncation"),
    ({"input": "hi", "include": ["message.output_text.annotations"]}, "include[0]"),
    ({"input": "hi", "top_logprobs": 21}, "top_logprobs"),
    ({"input": "hi", "previous_response_id": "resp_unknown"}, "previous_response_id"),
])
def test_bad_requests_in_openai_shape(server, body, param):
    r = httpx.post(f"{server.base_url}/v1/responses", json={"max_output_tokens": 2, **body}, timeout=60)
    assert r.status_code in (400, 404), r.text
    error = r.json()["error"]
    assert error["code"] == r.status_code and error["message"] and error["param"] == param
    if param is None:  # an unknown field: the message names it
        assert next(iter(set(body) - {"input"})) in error["message"]
