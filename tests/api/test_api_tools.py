"""Tool calls and reasoning end to end on the default model (no chat template: the generic,
grammar-constrained tool format), through the openai SDK and langchain-openai.

The base model's words are never asserted: only what the grammar forces (a call to an existing
function whose arguments validate against its schema; a <think> block split out).
"""

from __future__ import annotations

import json

import httpx
import jsonschema
import openai
import pytest
from conftest import template_server

WEATHER = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 16}, "unit": {"enum": ["c", "f"]}},
           "required": ["city", "unit"]}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city", "parameters": WEATHER}},
    {"type": "function", "function": {"name": "is_open", "parameters": {
        "type": "object", "properties": {"shop": {"enum": ["bakery", "bank"]}}, "required": ["shop"]}}},
]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
MESSAGES = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def sdk(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0,
                         _strict_response_validation=True)


def check_call(name: str, arguments: str, expected: str | None = None) -> None:
    assert name in SCHEMAS and (expected is None or name == expected)
    jsonschema.validate(json.loads(arguments), SCHEMAS[name])


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "is_open"}}])
def test_forced_call(sdk, choice):
    out = sdk.chat.completions.create(model="any", messages=MESSAGES, tools=TOOLS, tool_choice=choice,
                                      parallel_tool_calls=False, max_tokens=60, temperature=0)
    c = out.choices[0]
    assert c.finish_reason == "tool_calls" and c.message.content is None and len(c.message.tool_calls) == 1
    call = c.message.tool_calls[0]
    assert call.id and call.type == "function"
    check_call(call.function.name, call.function.arguments, None if choice == "required" else "is_open")


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "get_weather"}}])
def test_forced_call_streamed(sdk, choice):
    chunks = list(sdk.chat.completions.create(model="any", messages=MESSAGES, tools=TOOLS, tool_choice=choice,
                                              parallel_tool_calls=False, max_tokens=60, temperature=0.7, seed=3,
                                              stream=True))
    deltas = [d for c in chunks if c.choices for d in c.choices[0].delta.tool_calls or []]
    first = deltas[0]
    assert first.index == 0 and first.id and first.type == "function" and first.function.name
    arguments = "".join(d.function.arguments or "" for d in deltas)
    check_call(first.function.name, arguments, None if choice == "required" else "get_weather")
    assert all(d.id is None for d in deltas[1:])
    assert len(deltas) > 2  # the arguments came in pieces as the model wrote them
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["tool_calls"]


@pytest.mark.parametrize("stream", [False, True])
def test_calls_cut_by_max_tokens_never_leak_into_content(sdk, stream):
    """Forced calls cut at any length: each is a call (complete, or its arguments so far), never text."""
    for max_tokens in (2, 7, 12, 19, 33, 50):
        kwargs = {"model": "any", "messages": MESSAGES, "tools": TOOLS, "tool_choice": "required",
                  "parallel_tool_calls": True, "max_tokens": max_tokens, "temperature": 0}
        if stream:
            chunks = list(sdk.chat.completions.create(**kwargs, stream=True))
            content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            calls: dict[int, list[str]] = {}
            for d in (d for c in chunks if c.choices for d in c.choices[0].delta.tool_calls or []):
                calls.setdefault(d.index, [d.function.name or "", ""])[1] += d.function.arguments or ""
            finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        else:
            choice = sdk.chat.completions.create(**kwargs).choices[0]
            content, finish = choice.message.content or "", [choice.finish_reason]
            calls = {i: [c.function.name, c.function.arguments] for i, c in enumerate(choice.message.tool_calls or [])}
        assert content == "", (max_tokens, content)
        assert finish in (["length"], ["tool_calls"])
        names_and_args = list(calls.values())
        for name, arguments in names_and_args[:-1]:  # all but the last one were finished
            check_call(name, arguments)
        if finish == ["tool_calls"]:
            assert names_and_args
            check_call(*names_and_args[-1])
        elif names_and_args:
            assert names_and_args[-1][0] in SCHEMAS and names_and_args[-1][1].startswith("{")


def test_langchain_bind_tools(server):
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI

    @tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return "sunny"

    llm = ChatOpenAI(base_url=f"{server.base_url}/v1", api_key="unused", model="any", temperature=0, max_tokens=60)
    for model in (llm.bind_tools([get_weather], tool_choice="get_weather"),
                  llm.bind_tools([get_weather], tool_choice="required")):
        msg = model.invoke("Weather in Rome?")
        assert msg.tool_calls and msg.tool_calls[0]["name"] == "get_weather"
        assert isinstance(msg.tool_calls[0]["args"].get("city"), str) and msg.tool_calls[0]["id"]
    chunks = list(llm.bind_tools([get_weather], tool_choice="required").stream("Weather in Rome?"))
    merged = chunks[0]
    for c in chunks[1:]:
        merged += c
    assert merged.tool_calls[0]["name"] == "get_weather" and isinstance(merged.tool_calls[0]["args"]["city"], str)


def test_tool_result_round_trip_renders_and_answers(server, sdk):
    history = MESSAGES + [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_abc", "type": "function", "function": {"name": "get_weather",
                                                                "arguments": '{"city": "Paris", "unit": "c"}'}}]},
        {"role": "tool", "tool_call_id": "call_abc", "content": "21 degrees and sunny"},
    ]
    prompt = httpx.post(f"{server.base_url}/apply-template", json={"messages": history, "tools": TOOLS}).json()["prompt"]
    assert '"city": "Paris"' in prompt and "21 degrees and sunny" in prompt and "get_weather" in prompt
    out = sdk.chat.completions.create(model="any", messages=history, tools=TOOLS, tool_choice="none", max_tokens=8,
                                      temperature=0)
    assert out.choices[0].message.content and not out.choices[0].message.tool_calls


@pytest.mark.parametrize("history, words, param", [
    ([{"role": "assistant", "tool_calls": [{"id": "c1", "type": "function",
                                            "function": {"name": "f", "arguments": "{not json"}}]}], "not valid JSON",
     ".tool_calls[0].function.arguments"),
    ([{"role": "tool", "tool_call_id": "c9", "content": "x"}], "no assistant message before it", ""),
    ([{"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f"}}]},
      {"role": "tool", "tool_call_id": "c2", "content": "x"}], "answers no earlier tool call", ".tool_call_id"),
])
def test_bad_tool_history_is_400(server, history, words, param):
    """The error's param is the field's JSON path, spelled as msgspec's type errors spell it."""
    messages = MESSAGES + history
    r = httpx.post(f"{server.base_url}/v1/chat/completions",
                   json={"messages": messages, "tools": TOOLS, "max_tokens": 4})
    error = r.json()["error"]
    assert r.status_code == 400 and words in error["message"], r.text
    assert error["param"] == f"messages[{len(messages) - 1}]{param}"


def test_tool_choice_errors_are_400(server):
    for body in ({"tool_choice": "required"},
                 {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}},
                 {"tools": TOOLS, "grammar": 'root ::= "x"'}):  # as llama-server: no custom grammar with tools
        r = httpx.post(f"{server.base_url}/v1/chat/completions", json={"messages": MESSAGES, "max_tokens": 4, **body})
        assert r.status_code == 400, r.text


ANSWER = {"type": "object", "properties": {"answer": {"enum": ["yes", "no"]}}, "required": ["answer"]}


@pytest.mark.parametrize("seed", range(4))
def test_tools_with_a_response_format_give_calls_or_the_formats_json(sdk, seed):
    """OpenAI's and Anthropic's reading (agents with tools and an output type): the reply calls
    tools or answers in the format; forced calls leave the format to the turn after the results."""
    fmt = {"type": "json_schema", "json_schema": {"name": "a", "schema": ANSWER}}
    out = sdk.chat.completions.create(model="any", messages=MESSAGES, tools=TOOLS, response_format=fmt, max_tokens=80,
                                      parallel_tool_calls=False, temperature=1.0, seed=seed)
    message = out.choices[0].message
    if message.tool_calls:
        for call in message.tool_calls:
            check_call(call.function.name, call.function.arguments)
    else:
        jsonschema.validate(json.loads(message.content), ANSWER)
    forced = sdk.chat.completions.create(model="any", messages=MESSAGES, tools=TOOLS, response_format=fmt,
                                         tool_choice="required", parallel_tool_calls=False, max_tokens=80, temperature=0)
    assert forced.choices[0].message.tool_calls


THINK = 'root ::= "<think>" [a-z ]{3,30} "</think>" [a-z ]{1,12}'


@pytest.mark.parametrize("fmt", [None, "deepseek"])
def test_reasoning_split_forced_by_a_grammar(sdk, fmt):
    extra = {"grammar": THINK} | ({"reasoning_format": fmt} if fmt else {})
    out = sdk.chat.completions.create(model="any", messages=MESSAGES, max_tokens=60, temperature=0, extra_body=extra)
    message = out.choices[0].message
    assert message.reasoning_content and "<think>" not in message.content and message.content.strip()
    chunks = list(sdk.chat.completions.create(model="any", messages=MESSAGES, max_tokens=60, temperature=0,
                                              extra_body=extra, stream=True))
    reasoning = "".join(getattr(c.choices[0].delta, "reasoning_content", None) or "" for c in chunks if c.choices)
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert (reasoning, content) == (message.reasoning_content, message.content)


def test_reasoning_format_none_keeps_the_tags(sdk):
    out = sdk.chat.completions.create(model="any", messages=MESSAGES, max_tokens=60, temperature=0,
                                      extra_body={"grammar": THINK, "reasoning_format": "none"})
    assert out.choices[0].message.content.startswith("<think>")


FREE_THINK = 'root ::= "<think>" [a-z ]+ "</think>" [a-z ]{1,12}'

# Greedy, the base model's free thinking on this question runs past 200 tokens without closing.
LONG_THINKER = [{"role": "user", "content": "Explain how computers work in detail."}]
LONG_THINKER_PROMPT = "<start_of_turn>user\nExplain how computers work in detail.<end_of_turn>\n<start_of_turn>model\n"


def n_tokens(server, text: str) -> int:
    r = httpx.post(f"{server.base_url}/tokenize", json={"content": text, "add_special": False})
    return len(r.json()["tokens"])


@pytest.mark.parametrize("field", ["thinking_budget_tokens", "reasoning_budget_tokens"])
def test_thinking_budget_forces_the_closing_tag(server, sdk, field):
    """Greedy, so the budgeted thinking is the start of the free one, cut after ~3 tokens (the
    text is counted again by tokenizing it, which may spell it with other tokens)."""
    free = sdk.chat.completions.create(model="any", messages=LONG_THINKER, max_tokens=80, temperature=0,
                                       extra_body={"grammar": FREE_THINK}).choices[0].message
    assert n_tokens(server, free.reasoning_content) > 4, free.reasoning_content
    extra = {"grammar": FREE_THINK, field: 3}
    cut = sdk.chat.completions.create(model="any", messages=LONG_THINKER, max_tokens=80, temperature=0,
                                      extra_body=extra).choices[0].message
    assert free.reasoning_content.startswith(cut.reasoning_content)
    assert 2 <= n_tokens(server, cut.reasoning_content) <= 4 and cut.content.strip()
    assert len(cut.reasoning_content) < len(free.reasoning_content)
    chunks = list(sdk.chat.completions.create(model="any", messages=LONG_THINKER, max_tokens=80, temperature=0,
                                              extra_body=extra, stream=True))
    reasoning = "".join(getattr(c.choices[0].delta, "reasoning_content", None) or "" for c in chunks if c.choices)
    assert reasoning == cut.reasoning_content


def test_thinking_budget_zero_and_message(server, sdk):
    extra = {"grammar": 'root ::= "<think>" [a-z .()]+ "</think>" [a-z]{1,12}', "thinking_budget_tokens": 0,
             "reasoning_budget_message": "(no time)"}
    message = sdk.chat.completions.create(model="any", messages=MESSAGES, max_tokens=40, temperature=0,
                                          extra_body=extra).choices[0].message
    assert message.reasoning_content == "(no time)" and message.content.strip()


def test_thinking_budget_below_minus_one_is_400(server):
    r = httpx.post(f"{server.base_url}/v1/chat/completions",
                   json={"messages": MESSAGES, "max_tokens": 4, "thinking_budget_tokens": -2})
    assert r.status_code == 400 and r.json()["error"]["param"] == "thinking_budget_tokens", r.text


def control(server, completion_id: str | None, action: str = "reasoning_end") -> httpx.Response:
    body = {"action": action} | ({"id": completion_id} if completion_id is not None else {})
    return httpx.post(f"{server.base_url}/v1/chat/completions/control", json=body, timeout=30)


def stream_with_control(server, body: dict) -> tuple[str, str, str | None, list[dict]]:
    """Stream a chat completion and send a reasoning_end control after its first reasoning text:
    the reasoning, the content, the finish reason and the control's answers."""
    reasoning, content, finish, answers = "", "", None, []
    with httpx.stream("POST", f"{server.base_url}/v1/chat/completions", json=body | {"stream": True},
                      timeout=120) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            for choice in event["choices"]:
                reasoning += choice["delta"].get("reasoning_content") or ""
                content += choice["delta"].get("content") or ""
                finish = choice.get("finish_reason") or finish
            if reasoning and not answers:
                answers.append(control(server, event["id"]).json())
    return reasoning, content, finish, answers


def test_reasoning_control_ends_a_running_thinking(server):
    """llama-server's reasoning control: a completion sent with ``reasoning_control`` closes its
    thinking when POST /v1/chat/completions/control says ``reasoning_end``, and goes on to answer."""
    body = {"messages": LONG_THINKER, "max_tokens": 200, "temperature": 0, "grammar": FREE_THINK}
    free = httpx.post(f"{server.base_url}/v1/chat/completions", json=body, timeout=120).json()["choices"][0]
    assert free["finish_reason"] == "length" and not free["message"]["content"]
    reasoning, content, finish, answers = stream_with_control(server, body | {"reasoning_control": True})
    assert answers == [{"success": True}]
    assert finish == "stop" and content.strip()
    assert free["message"]["reasoning_content"].startswith(reasoning)
    assert n_tokens(server, reasoning) < 100 < n_tokens(server, free["message"]["reasoning_content"])


def test_reasoning_control_says_why_it_did_nothing(server):
    body = {"messages": LONG_THINKER, "max_tokens": 30, "temperature": 0, "grammar": FREE_THINK}
    _, _, finish, answers = stream_with_control(server, body)
    assert answers == [{"success": False, "message": "reasoning control not enabled for this completion"}]
    assert finish == "length"
    assert control(server, "chatcmpl-nobody").json() == {"success": False, "message": "no active completion for this id"}
    for completion_id, action, param in (("chatcmpl-x", "pause", "action"), (None, "reasoning_end", "id")):
        r = control(server, completion_id, action)
        assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text


def test_text_completions_budget_the_thinking_between_the_tags_they_name(server):
    """/completion and /v1/completions have no chat template: a budget names its tags (any end
    tag closes the thinking, the first is forced after the message); a prompt that ends with the
    start tag has opened the thinking already."""
    def complete(path: str, **body) -> str:
        r = httpx.post(f"{server.base_url}{path}", json={"max_tokens": 40, "temperature": 0} | body, timeout=120)
        assert r.status_code == 200, r.text
        return r.json()["content"] if path == "/completion" else r.json()["choices"][0]["text"]

    free = complete("/completion", prompt=LONG_THINKER_PROMPT, grammar=FREE_THINK)
    assert free.startswith("<think>") and "</think>" not in free
    budget = {"reasoning_budget_tokens": 3, "reasoning_budget_message": " enough",
              "reasoning_budget_start_tag": "<think>", "reasoning_budget_end_tags": ["</think>", "</reasoning>"]}
    cut = complete("/completion", prompt=LONG_THINKER_PROMPT, grammar=FREE_THINK, **budget)
    thinking = cut.removeprefix("<think>").split(" enough</think>")[0]
    assert free.startswith("<think>" + thinking) and 1 <= n_tokens(server, thinking) <= 4, cut
    one_tag = budget | {"reasoning_budget_end_tags": None, "reasoning_budget_end_tag": "</think>"}
    assert complete("/v1/completions", prompt=LONG_THINKER_PROMPT, grammar=FREE_THINK, **one_tag) == cut
    opened = complete("/completion", prompt=LONG_THINKER_PROMPT + "<think>",
                      grammar='root ::= [a-z ]+ "</think>" [a-z ]{1,12}', **budget)
    assert 1 <= n_tokens(server, opened.split(" enough</think>")[0]) <= 4, opened
    for body, param in (({"reasoning_budget_tokens": 3}, "reasoning_budget_tokens"),
                        ({"reasoning_control": True, "reasoning_budget_start_tag": "<think>"}, "reasoning_control")):
        r = httpx.post(f"{server.base_url}/completion", json={"prompt": "Hi", "n_predict": 2} | body, timeout=30)
        assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text
    r = httpx.post(f"{server.base_url}/v1/chat/completions", timeout=30,
                   json={"messages": MESSAGES, "max_tokens": 2, "reasoning_budget_start_tag": "<think>"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "reasoning_budget_start_tag", r.text


def test_reasoning_control_of_a_text_completion_by_its_id(server):
    body = {"prompt": LONG_THINKER_PROMPT, "max_tokens": 200, "temperature": 0, "grammar": FREE_THINK,
            "stream": True, "reasoning_control": True, "reasoning_budget_start_tag": "<think>",
            "reasoning_budget_end_tags": ["</think>"]}
    text, answers = "", []
    with httpx.stream("POST", f"{server.base_url}/v1/completions", json=body, timeout=120) as r:
        for line in r.iter_lines():
            if line.startswith("data: {"):
                event = json.loads(line[6:])
                text += "".join(choice["text"] for choice in event["choices"])
                if len(text) > len("<think>") and not answers:
                    answers.append(control(server, event["id"]).json())
    assert answers == [{"success": True}]
    thinking, closed, answer = text.partition("</think>")
    assert closed and answer.strip() and n_tokens(server, thinking) < 100, text


# A template whose call syntax no known family has (Nemotron Nano v2's list of call objects)
LEARNED_TEMPLATE = """{%- for m in messages %}<|{{ m.role }}|>
{%- if m.tool_calls %}<TOOLCALL>[{% for c in m.tool_calls %}{"name": "{{ c.function.name }}", \
"arguments": {{ c.function.arguments | tojson }}}{% if not loop.last %}, {% endif %}{% endfor %}]</TOOLCALL>
{%- else %}{{ m.content }}{% endif %}<|end|>
{% endfor %}{% if tools %}<|tools|>{{ tools | tojson }}{% endif %}{% if add_generation_prompt %}<|assistant|>{% endif %}"""


@pytest.fixture(scope="module")
def learned_server():
    with template_server(LEARNED_TEMPLATE, "-np", "1", "-c", "1024") as handle:
        yield handle


@pytest.mark.parametrize("stream", [False, True])
def test_a_template_of_an_unknown_syntax_gets_its_calls_written_and_read_in_it(learned_server, stream):
    """The format learned from the template's own rendering of a call: the model writes its calls
    in the template's syntax (the grammar's), they come back as OpenAI calls, and sent back they
    render in that syntax with the tools the template lists."""
    body = {"messages": MESSAGES, "tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "is_open"}},
            "parallel_tool_calls": False, "max_tokens": 60, "temperature": 0, "stream": stream}
    url = f"{learned_server.base_url}/v1/chat/completions"
    if stream:
        with httpx.stream("POST", url, json=body, timeout=120) as r:
            deltas = [json.loads(line[6:])["choices"][0]["delta"] for line in r.iter_lines()
                      if line.startswith("data: {")]
        pieces = [c for d in deltas for c in d.get("tool_calls") or []]
        call = {"id": pieces[0]["id"], "type": "function", "function": {
            "name": pieces[0]["function"]["name"], "arguments": "".join(p["function"]["arguments"] for p in pieces)}}
        assert len(pieces) > 2  # the arguments streamed
    else:
        [call] = httpx.post(url, json=body, timeout=120).json()["choices"][0]["message"]["tool_calls"]
    check_call(call["function"]["name"], call["function"]["arguments"], "is_open")
    history = MESSAGES + [{"role": "assistant", "content": None, "tool_calls": [call]},
                          {"role": "tool", "tool_call_id": call["id"], "content": "open"}]
    prompt = httpx.post(f"{learned_server.base_url}/apply-template", json={"messages": history, "tools": TOOLS},
                        timeout=30).json()["prompt"]
    shop = json.loads(call["function"]["arguments"])["shop"]
    assert f'<TOOLCALL>[{{"name": "is_open", "arguments": {{"shop": "{shop}"}}}}]</TOOLCALL>' in prompt
    assert '<|tools|>[{"type": "function", "function": {"name": "get_weather"' in prompt
    assert "tool calls: the template's own syntax (learned)" in learned_server.log()  # what the operator sees
