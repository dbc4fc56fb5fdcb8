"""Tools on a chat request as templates get them (llama-server's shapes), and the call grammar
a template's own syntax asks for."""

from __future__ import annotations

import json
from types import SimpleNamespace

import msgspec
import pytest

from frontend_support import gemma_path, run_parser

from frontend.api.schemas import ChatCompletionRequest
from frontend.conversation import ChatPlan, _reply_parsers
from frontend.structured.reasoning import budget_for
from frontend.structured.tool_formats.own_syntax.lfm2 import Lfm2Format
from frontend.structured.tools import plan_tools
from frontend.text.chat_template import ChatTemplate
from frontend.text.tokenizer import Tokenizer

HERMES = "{% for t in tools %}{{ t | tojson }}{% endfor %}<tool_call>{% for m in messages %}{{ m.content }}{% endfor %}"
MISTRAL_SMALL_3_2 = "{{ tools }}[TOOL_CALLS]{{ name }}[CALL_ID]{{ id }}[ARGS]{{ arguments }}"


def request(**body: object) -> ChatCompletionRequest:
    return msgspec.convert({"messages": [{"role": "user", "content": "Hi"}], **body}, ChatCompletionRequest)


def test_templates_get_each_tool_with_a_description_and_parameters_and_no_other_field():
    tools = [{"type": "function", "function": {"name": "ping"}},
             {"type": "function", "function": {"name": "add", "description": "Adds.", "strict": True,
                                               "parameters": {"type": "object", "properties": {}}}}]
    plan = plan_tools(request(tools=tools), HERMES)
    assert plan.template_tools == [
        {"type": "function", "function": {"name": "ping", "description": "", "parameters": {}}},
        {"type": "function", "function": {"name": "add", "description": "Adds.",
                                          "parameters": {"type": "object", "properties": {}}}}]


def test_text_parts_stay_parts_for_the_template():
    parts = [{"type": "text", "text": "Hello"}, {"type": "text", "text": "world"}]
    plan = plan_tools(msgspec.convert({"messages": [{"role": "user", "content": parts}]}, ChatCompletionRequest),
                      HERMES)
    assert plan.messages[0]["content"] == parts


def test_mistral_small_3_2_calls_carry_the_call_id_its_template_writes():
    tools = [{"type": "function", "function": {"name": "ping"}}]
    grammar = plan_tools(request(tools=tools, tool_choice="required"), MISTRAL_SMALL_3_2).grammar()
    assert grammar is not None and '"ping" "[CALL_ID]" [a-zA-Z0-9]{9} "[ARGS]"' in grammar


def test_past_reasoning_reaches_a_template_without_a_known_tool_format():
    """Templates whose tool syntax ggserve does not know still get each turn's reasoning, as
    llama-server gives it (Seed-OSS and Command A show it)."""
    body = msgspec.convert({"messages": [{"role": "user", "content": "Hi"},
                                         {"role": "assistant", "content": "Hello", "reasoning_content": "greet"},
                                         {"role": "user", "content": "Bye"}]}, ChatCompletionRequest)
    plan = plan_tools(body, "{% for m in messages %}{{ m.reasoning_content }}{{ m.content }}{% endfor %}")
    assert plan.messages[1] == {"role": "assistant", "content": "Hello", "reasoning_content": "greet"}


def test_lfm2_5_reads_past_reasoning_as_thinking():
    """LFM2.5's template shows a past turn's reasoning from ``message.thinking``, as llama-server
    gives it."""
    template = "{% if tools %}List of tools: [{% endif %}<|tool_call_start|>{{ message.thinking }}"
    body = msgspec.convert({"messages": [{"role": "user", "content": "Hi"},
                                         {"role": "assistant", "content": "Hello", "reasoning_content": "greet"},
                                         {"role": "user", "content": "Bye"}]}, ChatCompletionRequest)
    plan = plan_tools(body, template)
    assert plan.messages[1]["thinking"] == "greet" and plan.messages[1]["reasoning_content"] == "greet"


def test_a_forced_call_in_cohere_syntax():
    tools = [{"type": "function", "function": {"name": "ping"}}]
    template = "{{ tools }}<|START_THINKING|><|END_THINKING|><|START_ACTION|><|END_ACTION|>"
    grammar = plan_tools(request(tools=tools, tool_choice="required"), template).grammar()
    assert grammar is not None and '"<|START_ACTION|>["' in grammar and '"\\"ping\\""' in grammar


def test_functionary_v3_2_gets_past_arguments_as_text():
    """Its template concatenates a past call's arguments to its name: they reach it as JSON text
    (objects would break the concatenation)."""
    template = ("{% if tools %}>>>${recipient}{% endif %}{% for m in messages %}{% for c in m.tool_calls or [] %}"
                "{{ '>>>' + c.function.name + '\\n' + c.function.arguments }}{% endfor %}{% endfor %}>>>all")
    body = msgspec.convert({"messages": [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function",
                                              "function": {"name": "f", "arguments": '{"a": 1}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "ok"}]}, ChatCompletionRequest)
    plan = plan_tools(body, template)
    assert plan.messages[1]["tool_calls"][0]["function"]["arguments"] == '{"a": 1}'
    assert '>>>f\n{"a": 1}>>>all' in ChatTemplate(template, "", "").render(plan.messages)


def test_dsml_calls_have_their_control_token_written_as_text():
    """｜DSML｜ is a control token of DeepSeek V3.2's own (not its sections' openers): the reply
    must render it for the calls to be read."""
    template = "{%- set dsml_token = '｜DSML｜' -%}{% if tools %}<' + dsml_token + 'invoke name=\"{% endif %}function_calls"
    fe = SimpleNamespace(cfg=SimpleNamespace(skip_chat_parsing=False, reasoning_format="auto"),
                         template=SimpleNamespace(source=template))
    tools = [{"type": "function", "function": {"name": "ping"}}]
    body = request(tools=tools)
    _, markers = _reply_parsers(fe, body, ChatPlan("<｜Assistant｜>", plan_tools(body, template)))
    assert {"<｜DSML｜function_calls>", "</｜DSML｜function_calls>", "｜DSML｜"} <= set(markers)


@pytest.mark.parametrize("template, prompt, tokens", [
    # MiniMax M3: its namespace token before every tag of its calls; <tool_call> may be one too
    ("{%- set ns_token = ']<]minimax[>[' -%}{% if tools %}<tool_call><invoke name=\"{% endif %}<mm:think>", "]~b]ai\n",
     {"]<]minimax[>[", "<tool_call>", "</tool_call>", "<mm:think>", "</mm:think>"}),
    # Kimi K3: every tag is built from its markers, its replies' framing too
    ("{{ '<|open|>' }}{{ '<|close|>' }}{{ '<|end_of_msg|>' }}{% if tools %}{% endif %}", "<|open|>think<|sep|>",
     {"<|open|>", "<|close|>", "<|sep|>", "<|end_of_msg|>"}),
    # Tencent Hy3: its call tags
    ("{%- set HYTK = ':opensource' %}{%- set toolsep_token = '<tool_sep{}>'.format(HYTK) %}{% if tools %}{% endif %}",
     "<think:opensource>", {"<tool_calls:opensource>", "<tool_call:opensource>", "<tool_sep:opensource>",
                            "<arg_value:opensource>", "</arg_value:opensource>", "<think:opensource>"}),
])
def test_control_tokens_of_the_new_formats_are_written_as_text(template, prompt, tokens):
    """As llama.cpp preserves them: the calls (and the framing) cannot be read without them."""
    fe = SimpleNamespace(cfg=SimpleNamespace(skip_chat_parsing=False, reasoning_format="auto"),
                         template=SimpleNamespace(source=template))
    body = request(tools=[{"type": "function", "function": {"name": "ping"}}])
    _, markers = _reply_parsers(fe, body, ChatPlan(prompt, plan_tools(body, template)))
    assert tokens <= set(markers)


def test_lfm2_templates_that_show_no_past_calls_get_them_in_the_text():
    """LFM2-8B-A1B's and LFM2.5-Instruct's templates leave a turn's calls out (its results would
    answer nothing the model sees): the calls are written after the turn's text, in LFM2's syntax,
    and read back as they were."""
    args = {"city": "Paris", "n": 2, "ok": True, "none": None, "tags": ["a", 1], "opts": {"k": True}}
    body = msgspec.convert({"messages": [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Checking.", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": json.dumps(args)}},
            {"id": "c2", "type": "function", "function": {"name": "ping", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "ok"}]}, ChatCompletionRequest)
    lfm2 = "{% if tools %}List of tools: <|tool_list_start|>[]<|tool_list_end|>{% endif %}{{ message.content }}"
    turn = plan_tools(body, lfm2).messages[1]
    assert "tool_calls" not in turn and turn["content"].startswith("Checking.<|tool_call_start|>[get_weather(city=")
    section = turn["content"].removeprefix("Checking.<|tool_call_start|>").removesuffix("<|tool_call_end|>")
    assert [(c.name, json.loads(c.arguments)) for c in Lfm2Format().parse(section)] == [("get_weather", args),
                                                                                        ("ping", {})]
    lfm2_5 = "{% if tools %}List of tools: [{% endif %}<|tool_call_start|>{{ message.tool_calls }}<|im_start|>"
    assert plan_tools(body, lfm2_5).messages[1]["tool_calls"][0]["function"]["arguments"] == args  # shown as it is


FUNCTIONARY = "{% if tools %}>>>${recipient}{% endif %}>>>all"


def reply(template: str, body: ChatCompletionRequest, prompt: str, text: str, step: int | None = None):
    fe = SimpleNamespace(cfg=SimpleNamespace(skip_chat_parsing=False, reasoning_format="auto"),
                         template=SimpleNamespace(source=template))
    (parser,), _ = _reply_parsers(fe, body, ChatPlan(prompt, plan_tools(body, template)))
    return run_parser(parser, text, step)


def test_functionary_replies_without_calls_lose_their_recipient():
    """Every Functionary reply opens with a recipient: ``all`` is the content's, with tools or
    without (as llama-server reads it)."""
    ping = [{"type": "function", "function": {"name": "ping"}}]
    for body in (request(), request(tools=ping, tool_choice="none")):
        out = reply(FUNCTIONARY, body, "<|im_start|>assistant\n>>>", "all\nHello, world!")
        assert (out.content, out.calls) == ("Hello, world!", [])


def test_a_forced_call_cut_short_is_never_content_where_the_section_has_no_closer():
    """A forced reply is calls only: one cut by max_tokens is a call (its name and the arguments
    so far, where the format tells them as it goes, as Hermes's does), or nothing; never text."""
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}}}}]
    body = request(tools=tools, tool_choice="required")
    for template, prompt, text in ((FUNCTIONARY, ">>>", 'get_weather\n{"city": "Pa'),
                                   (MISTRAL_SMALL_3_2, "[/INST]", '[TOOL_CALLS]get_weather[CALL_ID]abcdefghi[ARGS]{"ci')):
        assert reply(template, body, prompt, text).content == "", template


def test_a_call_opener_ends_a_budgeted_thinking_too():
    """The executor's budget ends the thinking where the reply's parser does: at its closing tag
    or at a call's opener (a budget spent inside a call must not force text into it)."""
    tokenizer = Tokenizer(gemma_path())
    try:
        budget = budget_for(8, "", "<think>", "<think>\n", tokenizer, enders=("<tool_call>",))
    finally:
        tokenizer.close()
    assert budget is not None and budget.ends == ["</think>", "<tool_call>"] and budget.open


def test_granite_3_3_gets_past_calls_in_the_text():
    """Granite 3.3's template shows a turn's text only: its calls are written after it, as the
    model writes them, and read back as they were."""
    body = msgspec.convert({"messages": [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Checking.", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "ok"}]}, ChatCompletionRequest)
    template = "{% if available_tools %}<|tool_call|>{% endif %}{% for m in messages %}{{ m.content }}{% endfor %}"
    plan = plan_tools(body, template)
    text = plan.messages[1]["content"]
    assert text == 'Checking.<|tool_call|>[{"name": "get_weather", "arguments": {"city": "Paris"}}]'
    parsed = plan_tools(request(tools=[{"type": "function", "function": {"name": "get_weather"}}]), template).format
    assert [(c.name, c.arguments) for c in parsed.parse(text.split("<|tool_call|>")[1])] == [
        ("get_weather", '{"city": "Paris"}')]


def test_gigachat_3_calls_have_their_control_tokens_written_as_text():
    """GigaChat 3's call opener holds two control tokens: the reply must render them for the
    opener to be seen whole."""
    template = '{%- set add_tokens = namespace(role_sep="<|role_sep|>", message_sep="<|message_sep|>") -%}{{ tools }}'
    fe = SimpleNamespace(cfg=SimpleNamespace(skip_chat_parsing=False, reasoning_format="auto"),
                         template=SimpleNamespace(source=template))
    body = request(tools=[{"type": "function", "function": {"name": "ping"}}])
    _, markers = _reply_parsers(fe, body, ChatPlan("assistant<|role_sep|>\n", plan_tools(body, template)))
    assert {"<|message_sep|>", "<|role_sep|>"} <= set(markers)


SOLAR_OPEN = "{{ tools }}<|begin|>assistant<|think|><|tool_call:begin|>{{ message.reasoning }}"


def test_solar_open_replies_lose_their_message_framing_with_tools_or_without():
    """Solar Open writes its thinking, text and calls as messages of their own: their framing is
    no content, whether the request has tools or not; its thinking is reasoning."""
    text = "<|think|>Let me think.<|end|><|begin|>assistant<|content|>The answer is 42.<|end|>"
    ping = [{"type": "function", "function": {"name": "ping"}}]
    for body in (request(), request(tools=ping)):
        out = reply(SOLAR_OPEN, body, "<|begin|>assistant", text, 2)
        assert (out.reasoning, out.content, out.calls) == ("Let me think.", "The answer is 42.", [])


def test_solar_open_reads_past_reasoning_from_reasoning():
    body = msgspec.convert({"messages": [{"role": "user", "content": "Hi"},
                                         {"role": "assistant", "content": "Hello", "reasoning_content": "greet"},
                                         {"role": "user", "content": "Bye"}]}, ChatCompletionRequest)
    assert plan_tools(body, SOLAR_OPEN).messages[1]["reasoning"] == "greet"


def test_muse_glimmer_replies_lose_their_message_framing_with_tools_or_without():
    template = "{{ tools }}<|start|>assistant to=self<|message|><atem:function_calls><|eom|>"
    ping = [{"type": "function", "function": {"name": "ping"}}]
    for body in (request(), request(tools=ping)):
        out = reply(template, body, "<|start|>assistant", " to=self<|message|>Hmm.<|eom|><|start|>assistant to=user"
                                                          "<|message|>Hello!<|eot|>", 2)
        assert (out.reasoning, out.content, out.calls) == ("Hmm.", "Hello!", [])


def test_command_r_plus_gets_a_description_for_every_parameter():
    """Its template adds each parameter's description to text: one without would fail to render."""
    template = ("{% for t in tools %}{% for k, p in t.function.parameters.properties.items() %}"
                "{{ k + '): ' + p.description + ';' }}{% endfor %}{% endfor %}"
                'Action: ```json [{"tool_name": ...}]```{% for m in messages %}{{ m.content }}{% endfor %}')
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {
        "city": {"type": "string"}, "days": {"type": "integer", "description": "How many."}}}}}]
    plan = plan_tools(request(tools=tools), template)
    assert "city): ;days): How many.;" in ChatTemplate(template, "", "").render(plan.messages, True, plan.template_tools)
    assert plan.functions[0]["parameters"]["properties"]["city"] == {"type": "string"}  # (the grammar's schema)
