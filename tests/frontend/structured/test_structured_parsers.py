"""Tool-call formats and reasoning extraction on strings written in each family's format."""

from __future__ import annotations

import json

import pytest
from frontend_support import run_parser

from frontend.structured.call_stream import call_stream
from frontend.structured.deltas import OutputDelta, merge_calls
from frontend.structured.output import OutputParser
from frontend.structured.reasoning import opened_thinking, reasoning_for, thinking_tags
from frontend.structured.tool_formats import GENERIC, detect_native_format
from frontend.structured.tool_formats.json_args.apertus import ApertusFormat
from frontend.structured.tool_formats.json_args.cohere import CohereFormat, CommandRPlusFormat
from frontend.structured.tool_formats.json_args.deepseek import DeepSeekFormat
from frontend.structured.tool_formats.xml_args.dsml import DsmlFormat, DsmlV4Format
from frontend.structured.tool_formats.json_args.functionary import FunctionaryFormat
from frontend.structured.tool_formats.own_syntax.gemma4 import Gemma4Format
from frontend.structured.tool_formats.json_args.gigachat import V3_OPENER, GigaChatFormat
from frontend.structured.tool_formats.xml_args.glm import GlmFormat, Hy3Format
from frontend.structured.tool_formats.json_args.hermes import HermesFormat
from frontend.structured.tool_formats.json_args.json_list import AprielFormat, FireFunctionFormat, GraniteFormat
from frontend.structured.tool_formats.json_args.kimi import KimiFormat
from frontend.structured.tool_formats.xml_args.kimi_k3 import KimiK3Format
from frontend.structured.tool_formats.own_syntax.lfm2 import Lfm2Format
from frontend.structured.tool_formats.json_args.llama3 import Llama3Format
from frontend.structured.tool_formats.xml_args.minimax import MiniMaxM1Format, MiniMaxM2Format
from frontend.structured.tool_formats.xml_args.minicpm5 import MiniCpm5Format
from frontend.structured.tool_formats.xml_args.minimax_m3 import MiniMaxM3Format
from frontend.structured.tool_formats.json_args.mistral import MistralFormat
from frontend.structured.tool_formats.xml_args.muse_glimmer import MuseGlimmerFormat
from frontend.structured.tool_formats.xml_args.qwen_xml import QwenXmlFormat, SeedXmlFormat
from frontend.structured.tool_formats.json_args.solar_open import SolarOpenFormat


def calls_of(out: OutputDelta) -> list[tuple[str, dict]]:
    # OpenAI's ids, Mistral's 9 letters and digits (its templates refuse others) or Solar Open's 10
    assert all(c.id.startswith("call_") and len(c.id) > 5 or len(c.id) in (9, 10) and c.id.isalnum() for c in out.calls)
    assert [c.index for c in out.calls] == list(range(len(out.calls)))
    return [(c.name, json.loads(c.arguments)) for c in out.calls]


XML_FUNCTIONS = [
    {"name": "get_weather", "parameters": {"type": "object", "properties": {
        "city": {"type": "string"}, "days": {"type": "integer"}, "opts": {"type": "object"}}}},
    {"name": "add", "parameters": {"type": "object", "properties": {"a": {"type": "string"}}}},  # "007" stays text
]
# The functions of llama.cpp's test-chat that its MiniMax M3 cases call (values are typed by their schemas).
M3_FUNCTIONS = [
    {"name": "magic_int", "parameters": {"type": "object", "properties": {
        "ref": {"type": "integer"}, "name": {"type": "string"}}, "required": ["ref"]}},
    {"name": "empty_args", "parameters": {"type": "object", "properties": {}}},
    {"name": "nested_args", "parameters": {"type": "object", "properties": {
        "tags": {"type": "array", "items": {"type": "string"}},
        "entries": {"type": "array", "items": {"type": "object", "properties": {
            "id": {"type": "integer"}, "label": {"type": "string"}}}}}}},
    {"name": "imaginary_number", "parameters": {"type": "object", "properties": {"number": {
        "type": "object", "properties": {"real": {"type": "number"}, "imaginary": {"type": "number"}}}}}},
    {"name": "union_args", "parameters": {"type": "object", "properties": {
        "filter": {"anyOf": [{"type": "array", "items": {"type": "string"}}, {"type": "null"}]},
        "limit": {"oneOf": [{"type": "integer"}, {"type": "object", "properties": {"max": {"type": "integer"}}}]},
        "label": {"anyOf": [{"type": "string"}, {"type": "object", "properties": {"text": {"type": "string"}}}]}}}},
]
ATEM_CALL = ('<atem:function_calls>\n<atem:invoke name="special_function">\n<atem:parameter name="arg1">1'
             "</atem:parameter>\n</atem:invoke>\n</atem:function_calls>")
CASES = [
    (HermesFormat(), 'Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
                     '<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n</tool_call>',
     "Let me check.\n", [("get_weather", {"city": "Paris"}), ("add", {"a": 1, "b": 2})]),
    (Llama3Format(), '{"name": "get_weather", "parameters": {"city": "Paris"}}', "",
     [("get_weather", {"city": "Paris"})]),
    (Llama3Format(), '<|python_tag|>{"name": "a", "parameters": {}}; {"name": "b", "parameters": {"x": 1}}', "",
     [("a", {}), ("b", {"x": 1})]),
    (MistralFormat(), '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}, "id": "abc123def"}]', "",
     [("get_weather", {"city": "Paris"})]),
    (MistralFormat(args_marker=True), 'Sure.[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}[TOOL_CALLS]add[ARGS]{"a": 1}',
     "Sure.", [("get_weather", {"city": "Paris"}), ("add", {"a": 1})]),
    (DeepSeekFormat(), "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n"
                       '{"city": "Paris"}\n```<｜tool▁call▁end｜>\n<｜tool▁call▁begin｜>function<｜tool▁sep｜>add\n'
                       '```json\n{"a": 1}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>', "",
     [("get_weather", {"city": "Paris"}), ("add", {"a": 1})]),
    (QwenXmlFormat(XML_FUNCTIONS),
     "I'll check.\n<tool_call>\n<function=get_weather>\n<parameter=city>\nNew York\n</parameter>\n"
     '<parameter=days>\n3\n</parameter>\n<parameter=opts>\n{"metric": true}\n</parameter>\n</function>\n'
     "</tool_call>\n<tool_call>\n<function=add>\n<parameter=a>\n007\n</parameter>\n</function>\n</tool_call>",
     "I'll check.",
     [("get_weather", {"city": "New York", "days": 3, "opts": {"metric": True}}), ("add", {"a": "007"})]),
    (SeedXmlFormat(XML_FUNCTIONS),  # as Seed-OSS's template writes calls: no new lines around values
     "Sure.\n<seed:tool_call>\n<function=get_weather>\n<parameter=city>New York</parameter>\n"
     "<parameter=days>3</parameter>\n</function>\n</seed:tool_call>", "Sure.",
     [("get_weather", {"city": "New York", "days": 3})]),
    (GlmFormat(XML_FUNCTIONS),  # GLM 4.6 (new lines), then 4.7 (none); no schema: JSON where it parses
     "Checking.\n<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>New York</arg_value>\n"
     "<arg_key>days</arg_key>\n<arg_value>3</arg_value>\n</tool_call>"
     "<tool_call>special_function<arg_key>arg1</arg_key><arg_value>1</arg_value></tool_call>", "Checking.",
     [("get_weather", {"city": "New York", "days": 3}), ("special_function", {"arg1": 1})]),
    (DeepSeekFormat(fenced=False), '<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>{"city": "Rome"}'
                                   "<｜tool▁call▁end｜><｜tool▁calls▁end｜>", "", [("get_weather", {"city": "Rome"})]),
    (Gemma4Format(),  # llama.cpp's test-chat: "Tool call with string and content"
     'Hello, world!\nWhat\'s up?<|tool_call>call:get_time{city:<|"|>Paris<|"|>}<tool_call|>',
     "Hello, world!\nWhat's up?", [("get_time", {"city": "Paris"})]),
    (Gemma4Format(),  # llama.cpp's test-chat: "Parallel tool calls"
     '<|tool_call>call:get_time{city:<|"|>London<|"|>}<tool_call|>'
     '<|tool_call>call:get_weather{city:<|"|>Paris<|"|>}<tool_call|>', "",
     [("get_time", {"city": "London"}), ("get_weather", {"city": "Paris"})]),
    (Gemma4Format(XML_FUNCTIONS),  # nested values as the template writes them (keys bare, sorted)
     'Let me check.<|tool_call>call:get_weather{city:<|"|>Paris, France: {centre}<|"|>,days:3,'
     'opts:{metric:true,pick:[<|"|>a<|"|>,-1.5,null,{deep:[]}],<|"|>quoted key<|"|>:false}}<tool_call|>\n'
     '<|tool_call>call:add{a:<|"|>007<|"|>}<tool_call|>', "Let me check.",
     [("get_weather", {"city": "Paris, France: {centre}", "days": 3,
                       "opts": {"metric": True, "pick": ["a", -1.5, None, {"deep": []}], "quoted key": False}}),
      ("add", {"a": "007"})]),
    (MiniMaxM2Format(XML_FUNCTIONS),  # typed by the schema: "007" stays text, days is a number
     'Sure.\n<minimax:tool_call>\n<invoke name="get_weather">\n<parameter name="days">3</parameter>\n'
     '<parameter name="city">Paris</parameter>\n</invoke>\n<invoke name="add">\n<parameter name="a">007</parameter>\n'
     "</invoke>\n</minimax:tool_call>", "Sure.",
     [("get_weather", {"days": 3, "city": "Paris"}), ("add", {"a": "007"})]),
    (MiniMaxM2Format(),  # llama.cpp's test-chat: a call without arguments
     '<minimax:tool_call>\n<invoke name="empty_args">\n</invoke>\n</minimax:tool_call>', "", [("empty_args", {})]),
    (MiniMaxM1Format(), 'Checking.<tool_calls>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n'
                        '{"name": "add", "arguments": {"a": 1}}\n</tool_calls>', "Checking.",
     [("get_weather", {"city": "Paris"}), ("add", {"a": 1})]),
    (MiniMaxM3Format(M3_FUNCTIONS),  # llama.cpp's test-chat: content, then parallel calls typed by their schemas
     "Let me call the function.]<]minimax[>[<tool_call>\n]<]minimax[>[<invoke name=\"magic_int\">"
     "]<]minimax[>[<ref>-14]<]minimax[>[</ref>]<]minimax[>[<name>foo bar]<]minimax[>[</name>]<]minimax[>[</invoke>\n"
     "]<]minimax[>[<invoke name=\"empty_args\">]<]minimax[>[</invoke>\n]<]minimax[>[</tool_call>",
     "Let me call the function.", [("magic_int", {"ref": -14, "name": "foo bar"}), ("empty_args", {})]),
    (MiniMaxM3Format(M3_FUNCTIONS),  # llama.cpp's test-chat: objects and arrays expand into elements
     "]<]minimax[>[<tool_call>\n]<]minimax[>[<invoke name=\"nested_args\">]<]minimax[>[<tags>"
     "]<]minimax[>[<item>alpha]<]minimax[>[</item>]<]minimax[>[<item>beta]<]minimax[>[</item>]<]minimax[>[</tags>"
     "]<]minimax[>[<entries>]<]minimax[>[<item>]<]minimax[>[<id>1]<]minimax[>[</id>]<]minimax[>[<label>one"
     "]<]minimax[>[</label>]<]minimax[>[</item>]<]minimax[>[</entries>]<]minimax[>[</invoke>\n"
     "]<]minimax[>[<invoke name=\"imaginary_number\">]<]minimax[>[<number>]<]minimax[>[<real>1.5]<]minimax[>[</real>"
     "]<]minimax[>[<imaginary>-2.5]<]minimax[>[</imaginary>]<]minimax[>[</number>]<]minimax[>[</invoke>\n"
     "]<]minimax[>[</tool_call>", "",
     [("nested_args", {"tags": ["alpha", "beta"], "entries": [{"id": 1, "label": "one"}]}),
      ("imaginary_number", {"number": {"real": 1.5, "imaginary": -2.5}})]),
    (MiniMaxM3Format(M3_FUNCTIONS),  # llama.cpp's test-chat: unions; one with a string alternative is a string
     "]<]minimax[>[<tool_call>\n]<]minimax[>[<invoke name=\"union_args\">]<]minimax[>[<filter>]<]minimax[>[<item>a"
     "]<]minimax[>[</item>]<]minimax[>[</filter>]<]minimax[>[<limit>]<]minimax[>[<max>10]<]minimax[>[</max>"
     "]<]minimax[>[</limit>]<]minimax[>[<label>]<]minimax[>[<text>hi]<]minimax[>[</text>]<]minimax[>[</label>"
     "]<]minimax[>[</invoke>\n]<]minimax[>[<invoke name=\"union_args\">]<]minimax[>[<limit>5]<]minimax[>[</limit>"
     "]<]minimax[>[</invoke>\n]<]minimax[>[</tool_call>", "",
     [("union_args", {"filter": ["a"], "limit": {"max": 10}, "label": "]<]minimax[>[<text>hi]<]minimax[>[</text>"}),
      ("union_args", {"limit": 5})]),
    (MiniCpm5Format([{"name": "python", "parameters": {"type": "object", "properties": {"code": {"type": "string"}}}}]),
     # llama.cpp's test-chat: parallel calls a line apart
     "<function name=\"python\"><param name=\"code\">print('x')</param></function>\n"
     "<function name=\"python\"><param name=\"code\">print('y')</param></function>", "",
     [("python", {"code": "print('x')"}), ("python", {"code": "print('y')"})]),
    (MiniCpm5Format(),  # llama.cpp's test-chat: a CDATA block holds what would close the tag; no arguments
     'Sure.\n<function name="html"><param name="markup"><![CDATA[<a href="/x">hi</a> </param>]]></param></function>'
     '\n<function name="empty_args"></function>', "Sure.",
     [("html", {"markup": '<a href="/x">hi</a> </param>'}), ("empty_args", {})]),
    (MiniCpm5Format(XML_FUNCTIONS),  # typed by the schema; JSON or Python literals (as {{ value }} writes them)
     '<function name="get_weather"><param name="days">3</param><param name="opts">{"metric": true, "unit": null}'
     '</param></function>\n<function name="get_weather"><param name="opts">{\'metric\': False, \'x\': None}</param>'
     '<param name="city">007</param></function>\n<function name="add"><param name="a">007</param></function>', "",
     [("get_weather", {"days": 3, "opts": {"metric": True, "unit": None}}),
      ("get_weather", {"opts": {"metric": False, "x": None}, "city": "007"}), ("add", {"a": "007"})]),
    (KimiK3Format(),  # llama.cpp's test-chat: content, then parallel calls; typed as the type attributes say
     "<|open|>response<|sep|>On it.<|close|>response<|sep|><|open|>tools<|sep|>"
     '<|open|>call tool="special_function" index="1"<|sep|><|open|>argument key="arg1" type="number"<|sep|>1'
     '<|close|>argument<|sep|><|close|>call<|sep|><|open|>call tool="python" index="2"<|sep|>'
     "<|open|>argument key=\"code\" type=\"string\"<|sep|>print('hey')<|close|>argument<|sep|>"
     '<|open|>argument key="n" type="string"<|sep|>007<|close|>argument<|sep|><|close|>call<|sep|>'
     "<|close|>tools<|sep|><|close|>message<|sep|>", "On it.",
     [("special_function", {"arg1": 1}), ("python", {"code": "print('hey')", "n": "007"})]),
    (KimiK3Format(XML_FUNCTIONS),  # without a type attribute: typed by the schema; attributes unescaped
     '<|open|>tools<|sep|><|open|>call tool="get_weather" index="1"<|sep|><|open|>argument key="days"<|sep|>3'
     '<|close|>argument<|sep|><|open|>argument key="a&quot;b"<|sep|>[1]<|close|>argument<|sep|><|close|>call<|sep|>'
     '<|open|>call tool="add" index="2"<|sep|><|open|>argument key="a"<|sep|>007<|close|>argument<|sep|>'
     "<|close|>call<|sep|><|close|>tools<|sep|>", "",
     [("get_weather", {"days": 3, 'a"b': [1]}), ("add", {"a": "007"})]),
    (Hy3Format(XML_FUNCTIONS),  # GLM's calls with Hy3's tags, all in one section; typed by the schema
     "Checking.<tool_calls:opensource>\n<tool_call:opensource>get_weather<tool_sep:opensource>\n"
     "<arg_key:opensource>city</arg_key:opensource>\n<arg_value:opensource>New York</arg_value:opensource>\n"
     "<arg_key:opensource>days</arg_key:opensource>\n<arg_value:opensource>3</arg_value:opensource>\n"
     "</tool_call:opensource>\n<tool_call:opensource>ping<tool_sep:opensource>\n</tool_call:opensource>\n"
     "</tool_calls:opensource>", "Checking.", [("get_weather", {"city": "New York", "days": 3}), ("ping", {})]),
    (DsmlFormat(),  # llama.cpp's test-chat: content, then calls; the string attribute types each value
     'Let me call the function.\n\n<｜DSML｜function_calls>\n<｜DSML｜invoke name="magic_int">\n'
     '<｜DSML｜parameter name="ref" string="false">42</｜DSML｜parameter>\n'
     '<｜DSML｜parameter name="name" string="true">foo bar</｜DSML｜parameter>\n</｜DSML｜invoke>\n'
     '<｜DSML｜invoke name="get_time">\n<｜DSML｜parameter name="city" string="true">007</｜DSML｜parameter>\n'
     "</｜DSML｜invoke>\n</｜DSML｜function_calls>", "Let me call the function.",
     [("magic_int", {"ref": 42, "name": "foo bar"}), ("get_time", {"city": "007"})]),
    (DsmlV4Format(),  # V4: a tool_calls section, a blank line in a call without arguments
     '<｜DSML｜tool_calls>\n<｜DSML｜invoke name="ping">\n\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>', "", [("ping", {})]),
    (CohereFormat(),  # llama.cpp's test-chat (Command R7B)
     '<|START_ACTION|>[\n    {"tool_call_id": "0", "tool_name": "special_function", "parameters": {"arg1": 1}},\n'
     '    {"tool_call_id": "1", "tool_name": "add", "parameters": {}}\n]<|END_ACTION|>', "",
     [("special_function", {"arg1": 1}), ("add", {})]),
    (Lfm2Format(),  # llama.cpp's test-chat: content, then parallel calls, Python and JSON literals
     "Let me check.<|tool_call_start|>[special_function(arg1=1), set_config(config={\"enabled\": True, "
     '"note": null}, tags=(\'a\', "b"), n=-1.5), Calendar.create_event(title="demo")]<|tool_call_end|>',
     "Let me check.",
     [("special_function", {"arg1": 1}), ("set_config", {"config": {"enabled": True, "note": None}, "tags": ["a", "b"],
                                                         "n": -1.5}), ("Calendar.create_event", {"title": "demo"})]),
    (Lfm2Format(),  # a JSON value reads by JSON's rules (a surrogate pair, "\\/"), a Python one by Python's
     '<|tool_call_start|>[note(tags=["\\ud83d\\ude00", "a\\/b"], by=\'\\ud83d\\ude00\')]<|tool_call_end|>', "",
     [("note", {"tags": ["\U0001f600", "a/b"], "by": "\U0001f600"})]),
    (Lfm2Format(),  # llama.cpp's test-chat: escapes in a string decode; no arguments
     '<|tool_call_start|>[python(code="def hello():\\n\\tprint(\\"hey, (you)\\")"), empty_args()]<|tool_call_end|>', "",
     [("python", {"code": 'def hello():\n\tprint("hey, (you)")'}), ("empty_args", {})]),
    (ApertusFormat(),  # llama.cpp's test-chat (Apertus)
     'Sure.<|tools_prefix|>[{"special_function": {"arg1": 1}}, {"add": {}}]<|tools_suffix|>', "Sure.",
     [("special_function", {"arg1": 1}), ("add", {})]),
    (FunctionaryFormat(XML_FUNCTIONS),  # the output after the prompt's ">>>": content, then calls
     'all\nLet me check.>>>get_weather\n{"city": "Paris", "note": "a >>> b"}>>>add\n{"a": 1}', "Let me check.",
     [("get_weather", {"city": "Paris", "note": "a >>> b"}), ("add", {"a": 1})]),
    (FunctionaryFormat([{"name": "special_function"}]),  # llama.cpp's test-chat
     'special_function\n{"arg1": 1}', "", [("special_function", {"arg1": 1})]),
    (FunctionaryFormat([{"name": "special_function"}]),  # llama.cpp's test-chat
     "all\nHello, world!\nWhat's up?", "Hello, world!\nWhat's up?", []),
    (GraniteFormat(),  # as Granite 3.3's system prompt asks: the opener, then a JSON list of calls
     'Let me check.<|tool_call|>[{"name": "get_weather", "arguments": {"city": "Paris"}}, '
     '{"name": "add", "arguments": {"a": 1}}]', "Let me check.", [("get_weather", {"city": "Paris"}), ("add", {"a": 1})]),
    (AprielFormat(),  # llama.cpp's test-chat (Apriel 1.5)
     '<tool_calls>[{"name": "special_function", "arguments": {"arg1": 1}}]</tool_calls>', "",
     [("special_function", {"arg1": 1})]),
    (HermesFormat(),  # llama.cpp's test-chat (Reka Edge: Hermes' blocks, no new line before the closer)
     '<tool_call>\n{"name": "special_function", "arguments": {"arg1": 1}}</tool_call>'
     '<tool_call>\n{"name": "special_function_with_opt", "arguments": {"arg1": 1, "arg2": 2}}</tool_call>', "",
     [("special_function", {"arg1": 1}), ("special_function_with_opt", {"arg1": 1, "arg2": 2})]),
    (CommandRPlusFormat(),  # llama.cpp's test-chat (Command R+)
     'Action:\n```json\n[{"tool_name": "special_function", "parameters": {"arg1": 1}}]\n```', "",
     [("special_function", {"arg1": 1})]),
    (CommandRPlusFormat(),  # as Cohere's examples write it: the fence on the "Action:" line
     'Let me search.\nAction: ```json\n[\n    {\n        "tool_name": "search",\n        "parameters": '
     '{"q": "a"}\n    },\n    {"tool_name": "add", "parameters": {}}\n]\n```', "Let me search.\n",
     [("search", {"q": "a"}), ("add", {})]),
    (GigaChatFormat(V3_OPENER),  # llama.cpp's test-chat (GigaChat 3): the call a message of its own
     "Hello, world!\nWhat's up?<|message_sep|>\n\nfunction call<|role_sep|>\n"
     '{"name": "special_function", "arguments": {"arg1": 1}}', "Hello, world!\nWhat's up?",
     [("special_function", {"arg1": 1})]),
    (GigaChatFormat(),  # llama.cpp's test-chat (GigaChat 3.1)
     'Hello, world!\nWhat\'s up?<|function_call|>{"name": "special_function", "arguments": {"arg1": 1}}',
     "Hello, world!\nWhat's up?", [("special_function", {"arg1": 1})]),
    (FireFunctionFormat(),  # llama.cpp's test-chat
     ' functools[{"name": "special_function", "arguments": {"arg1": 1}}]', "", [("special_function", {"arg1": 1})]),
    (FireFunctionFormat(),  # the marker at the reply's start, without the template's space
     'functools[{"name": "a", "arguments": {}}, {"name": "b", "arguments": {"x": 1}}]', "",
     [("a", {}), ("b", {"x": 1})]),
    (SolarOpenFormat(),  # text, then a calls message; the framing dropped
     '<|content|>Let me check.<|end|><|begin|>assistant<|tool_calls|><|tool_call:begin|>a1b2c3d4e5<|tool_call:name|>'
     'get_weather<|tool_call:args|>{"city": "Paris"}<|tool_call:end|><|tool_call:begin|>f6g7h8i9j0<|tool_call:name|>'
     'add<|tool_call:args|>{"a": 1}<|tool_call:end|><|calls|>', "Let me check.",
     [("get_weather", {"city": "Paris"}), ("add", {"a": 1})]),
    (MuseGlimmerFormat([{"name": "special_function"}]),  # llama.cpp's test-chat: a call as the turn's first message
     " to=special_function<|message|>" + ATEM_CALL, "", [("special_function", {"arg1": 1})]),
    (MuseGlimmerFormat([{"name": "special_function"}]),  # llama.cpp's test-chat: "inform then act"
     " to=user<|message|>Hello, world!\nWhat's up?<|eom|><|start|>assistant to=special_function<|message|>" + ATEM_CALL,
     "Hello, world!\nWhat's up?", [("special_function", {"arg1": 1})]),
    (MuseGlimmerFormat([{"name": "special_function"}]),  # llama.cpp's test-chat: markup quoted in an answer is text
     " to=user<|message|>You invoke it like this:\n" + ATEM_CALL + "<|eot|>", "You invoke it like this:\n" + ATEM_CALL,
     []),
]


@pytest.mark.parametrize("step", [None, 1, 3])
@pytest.mark.parametrize("fmt, text, content, calls", CASES, ids=[f"{c[0].name}-{i}" for i, c in enumerate(CASES)])
def test_native_formats(fmt, text, content, calls, step):
    out = run_parser(OutputParser(None, fmt), text, step)
    assert calls_of(out) == calls
    assert out.content.strip() == content.strip()  # whitespace between calls is dropped by the route


def test_mistral_calls_keep_the_ids_the_model_wrote_and_get_ids_its_templates_accept():
    small_3_2 = OutputParser(None, MistralFormat(args_marker=True, call_ids=True))
    out = run_parser(small_3_2, '[TOOL_CALLS]get_weather[CALL_ID]a1b2c3d4e[ARGS]{"city": "Paris"}'
                                '[TOOL_CALLS]add[ARGS]{"a": 1}')
    assert calls_of(out) == [("get_weather", {"city": "Paris"}), ("add", {"a": 1})]
    assert out.calls[0].id == "a1b2c3d4e" and len(out.calls[1].id) == 9 and out.calls[1].id.isalnum()
    v3 = run_parser(OutputParser(None, MistralFormat()),
                    '[TOOL_CALLS][{"name": "f", "arguments": {}, "id": "abc123def"}, {"name": "g", "arguments": {}}]')
    assert v3.calls[0].id == "abc123def" and len(v3.calls[1].id) == 9 and v3.calls[1].id.isalnum()


@pytest.mark.parametrize("fmt, text", [
    (HermesFormat(), '<tool_call>\n{"name": "f", "arguments": {"a": </tool_call>'),  # truncated JSON
    (HermesFormat(), "<tool_call>\nnot json\n</tool_call>"),
    (HermesFormat(), '<tool_call>{"arguments": {}}</tool_call>'),  # no name
    (Gemma4Format(), '<|tool_call>call:f{a:<|"|>unclosed}<tool_call|>'),
    (Gemma4Format(), "<|tool_call>call:f{a:1,}<tool_call|>"),  # a comma and no member
    (Gemma4Format(), "<|tool_call>call:f{a:1}} and more<tool_call|>"),
    (Gemma4Format(), "<|tool_call>f{a:1}<tool_call|>"),  # no "call:"
    (Gemma4Format(), "<|tool_call>call:f{a:1e999}<tool_call|>"),  # no finite number: not JSON's
    (MiniMaxM2Format(), '<minimax:tool_call>\n<invoke name="f">\n<parameter name="a">1</parameter>\noops\n</invoke>\n'
                        "</minimax:tool_call>"),  # text between the parameters
    (MiniMaxM2Format(), "<minimax:tool_call>\nhello\n</minimax:tool_call>"),  # no invoke
    (DsmlFormat(), '<｜DSML｜function_calls>\n<｜DSML｜invoke name="f">\n</｜DSML｜function_calls>'),  # unclosed invoke
    (MiniMaxM1Format(), '<tool_calls>\n{"name": "f", "arguments": {"a": \n</tool_calls>'),  # truncated JSON
    (MiniCpm5Format(), '<function name="f"><param name="a">1</param>oops</function>'),  # text between the params
    (MiniCpm5Format(), '<function name="f"><param name="a">1</function>'),  # an unclosed param
    (MiniCpm5Format(), '<function name=""></function>'),  # no name
    (Hy3Format(), "<tool_calls:opensource>\n<tool_call:opensource>f\n</tool_call:opensource>\n"
                  "</tool_calls:opensource>"),  # no tool_sep after the name
    (Hy3Format(), "<tool_calls:opensource>\n<tool_call:opensource>f<tool_sep:opensource>oops</tool_call:opensource>"
                  "\n</tool_calls:opensource>"),  # text between the arguments
    (Hy3Format(), "<tool_calls:opensource>\nhello\n</tool_calls:opensource>"),  # no call
    (KimiK3Format(), '<|open|>tools<|sep|><|open|>call tool="f" index="1"<|sep|>oops<|close|>call<|sep|>'
                     "<|close|>tools<|sep|>"),  # text in a call
    (KimiK3Format(), '<|open|>tools<|sep|><|open|>call tool="f" index="1"<|sep|><|close|>tools<|sep|>'),  # unclosed
    *((MiniMaxM3Format(), f"]<]minimax[>[<tool_call>{section}]<]minimax[>[</tool_call>") for section in [
        '\n]<]minimax[>[<invoke name="f">]<]minimax[>[<a>1]<]minimax[>[</invoke>\n',  # <a> unclosed
        '\n]<]minimax[>[<invoke name="f">]<]minimax[>[</invoke>\noops\n',  # text after a call
        '\n<invoke name="f"></invoke>\n']),  # no namespace token
    (CohereFormat(), '<|START_ACTION|>[{"name": "f", "parameters": {}}]<|END_ACTION|>'),  # no tool_name
    (Lfm2Format(), "<|tool_call_start|>[f(x=__import__('os').getcwd())]<|tool_call_end|>"),  # not a literal: never run
    (Lfm2Format(), "<|tool_call_start|>[f(1)]<|tool_call_end|>"),  # positional
    (Lfm2Format(), "<|tool_call_start|>[f(a='unclosed)]<|tool_call_end|>"),
    (Lfm2Format(), "<|tool_call_start|>[f(a=1) g(b=2)]<|tool_call_end|>"),  # no comma between the calls
    (Lfm2Format(), "<|tool_call_start|>f(a=1)<|tool_call_end|>"),  # not a list
    (Lfm2Format(), "<|tool_call_start|>[f(a={1, 2})]<|tool_call_end|>"),  # a set is not JSON
    (ApertusFormat(), '<|tools_prefix|>[{"f": {}, "g": {}}]<|tools_suffix|>'),  # two names in one call
    (ApertusFormat(), '<|tools_prefix|>[{"f": [1]}]<|tools_suffix|>'),  # arguments that are not an object
    (FunctionaryFormat([{"name": "f"}]), 'f\n{"a": 1}>>>all\nText after a call'),
    (FunctionaryFormat([{"name": "f"}]), "f\nnot json"),
    (Lfm2Format(), "<|tool_call_start|>[f(a='\\ud83d')]<|tool_call_end|>"),  # a lone surrogate cannot go out
    (Lfm2Format(), '<|tool_call_start|>[f(a=["\\ud83d"])]<|tool_call_end|>'),
    (CommandRPlusFormat(), "Action: none needed."),  # no fenced list
    (CommandRPlusFormat(), 'Action:\n```json\n[{"name": "f", "parameters": {}}]\n```'),  # no tool_name
])
def test_malformed_calls_come_back_as_content(fmt, text):
    out = run_parser(OutputParser(None, fmt), text)
    assert out.calls == [] and out.content == fmt.lead + text  # (Functionary's ">>>": the call's)


# llama.cpp's test-chat (Gemma 4): each call section and the arguments it expects.
GEMMA4_LLAMA_CPP = [
    ('call:get_time{city:<|"|>San Francisco<|"|>}', "get_time", '{"city": "San Francisco"}'),
    ("call:empty_args{}", "empty_args", "{}"),
    ("call:special_function{arg1:42}", "special_function", '{"arg1": 42}'),
    ("call:special_function{arg1:-7}", "special_function", '{"arg1": -7}'),
    ("call:amount{orig:3.14}", "amount", '{"orig": 3.14}'),
    ("call:toggle{enabled:true}", "toggle", '{"enabled": true}'),
    ("call:toggle{enabled:false}", "toggle", '{"enabled": false}'),
    ("call:set_nullable{value:null}", "set_nullable", '{"value": null}'),
    ('call:todo_list{todos:[<|"|>buy milk<|"|>,<|"|>walk dog<|"|>]}', "todo_list", '{"todos":["buy milk","walk dog"]}'),
    ('call:set_config{config:{theme:<|"|>dark<|"|>,count:3}}', "set_config", '{"config":{"theme":"dark","count":3}}'),
    ("call:todo_list{todos:[]}", "todo_list", '{"todos":[]}'),
    ("call:set_config{config:{}}", "set_config", '{"config":{}}'),
    ("call:amount{orig:1.5e10}", "amount", '{"orig": 1.5e10}'),
]


@pytest.mark.parametrize("section, name, arguments", GEMMA4_LLAMA_CPP)
def test_gemma4_values_as_llama_cpp_reads_them(section, name, arguments):
    [call] = Gemma4Format().parse(section)
    assert (call.name, json.loads(call.arguments)) == (name, json.loads(arguments))


GEMMA4_TEMPLATE = ("{%- if tools %}{{ '<|tool>' }}{% endif %}{{ '<|channel>thought\\n' + thinking + '\\n<channel|>' }}"
                   "{{ '<|tool_call>call:' + name + '{' }}")


@pytest.mark.parametrize("step", [None, 1, 3])
@pytest.mark.parametrize("text, reasoning, content, calls", [  # llama.cpp's test-chat (Gemma 4)
    ("<|channel>thought\nI'm\nthinking<channel|>Hello, world!\nWhat's up?", "I'm\nthinking",
     "Hello, world!\nWhat's up?", []),
    ("<|channel>thought<channel|>Hello, world!\nWhat's up?", "", "Hello, world!\nWhat's up?", []),  # budget 0
    ('<|channel>thought\nI\'m\nthinking<channel|><|tool_call>call:get_time{city:<|"|>Paris<|"|>}<tool_call|>',
     "I'm\nthinking", "", [("get_time", {"city": "Paris"})]),
])
def test_gemma4_thinks_in_its_thought_channel(text, reasoning, content, calls, step):
    assert thinking_tags(GEMMA4_TEMPLATE) == ("<|channel>thought", "<channel|>")
    tags = reasoning_for("auto", "<|turn>model\n", GEMMA4_TEMPLATE)
    parser = OutputParser(tags, detect_native_format(GEMMA4_TEMPLATE))
    out = run_parser(parser, text, step)
    assert (out.reasoning, out.content, calls_of(out)) == (reasoning, content, calls)


def test_gemma4_thinking_with_reasoning_format_none_is_content():  # llama.cpp's test-chat (Gemma 4)
    text = "<|channel>thought\nI'm\nthinking<channel|>Hello, world!\nWhat's up?"
    out = run_parser(OutputParser(reasoning_for("none", "", GEMMA4_TEMPLATE), None), text)
    assert (out.reasoning, out.content) == ("", text)


# A past assistant turn with calls, exactly as each template renders it (from the prompt's
# assistant header to its end-of-turn), and the thinking tags of its template.
PAST_CALLS = [("get_weather", {"city": "New York", "days": 3, "opts": {"metric": True}}), ("add", {"a": "007"})]
RENDERED_TURNS = [
    (MiniMaxM2Format(XML_FUNCTIONS), "",
     'Let me check.\n<minimax:tool_call>\n<invoke name="get_weather">\n<parameter name="city">New York</parameter>\n'
     '<parameter name="days">3</parameter>\n<parameter name="opts">{"metric": true}</parameter>\n</invoke>\n'
     '<invoke name="add">\n<parameter name="a">007</parameter>\n</invoke>\n</minimax:tool_call>', "Let me check."),
    (MiniMaxM3Format(XML_FUNCTIONS), "<mm:think>",  # a turn without thinking opens with a bare </mm:think>
     '</mm:think>Let me check.]<]minimax[>[<tool_call>\n]<]minimax[>[<invoke name="get_weather">]<]minimax[>[<city>'
     "New York]<]minimax[>[</city>]<]minimax[>[<days>3]<]minimax[>[</days>]<]minimax[>[<opts>]<]minimax[>[<metric>"
     'true]<]minimax[>[</metric>]<]minimax[>[</opts>]<]minimax[>[</invoke>\n]<]minimax[>[<invoke name="add">'
     "]<]minimax[>[<a>007]<]minimax[>[</a>]<]minimax[>[</invoke>\n]<]minimax[>[</tool_call>", "Let me check."),
    (MiniCpm5Format(XML_FUNCTIONS), "",  # (opts as {{ value }} writes a dict: a Python literal)
     'Let me check.\n<function name="get_weather"><param name="city">New York</param><param name="days">3</param>'
     '<param name="opts">{\'metric\': True}</param></function>\n<function name="add"><param name="a">007</param>'
     "</function>", "Let me check."),
    (KimiK3Format(XML_FUNCTIONS), "{% set x = '<|open|><|close|><|end_of_msg|>' %}",
     "<|open|>think<|sep|><|close|>think<|sep|><|open|>response<|sep|>Let me check.<|close|>response<|sep|>"
     '<|open|>tools<|sep|><|open|>call tool="get_weather" index="1"<|sep|><|open|>argument key="city" type="string"'
     '<|sep|>New York<|close|>argument<|sep|><|open|>argument key="days" type="number"<|sep|>3<|close|>argument<|sep|>'
     '<|open|>argument key="opts" type="object"<|sep|>{"metric": true}<|close|>argument<|sep|><|close|>call<|sep|>'
     '<|open|>call tool="add" index="2"<|sep|><|open|>argument key="a" type="string"<|sep|>007<|close|>argument<|sep|>'
     "<|close|>call<|sep|><|close|>tools<|sep|><|close|>message<|sep|><|end_of_msg|>", "Let me check."),
    (Hy3Format(XML_FUNCTIONS), "{%- set HYTK = ':opensource' %}'<tool_sep{}>'.format(HYTK)",
     "<think:opensource></think:opensource>Let me check.<tool_calls:opensource>\n<tool_call:opensource>get_weather"
     "<tool_sep:opensource>\n<arg_key:opensource>city</arg_key:opensource>\n<arg_value:opensource>New York"
     "</arg_value:opensource>\n<arg_key:opensource>days</arg_key:opensource>\n<arg_value:opensource>3"
     "</arg_value:opensource>\n<arg_key:opensource>opts</arg_key:opensource>\n<arg_value:opensource>"
     '{"metric": true}</arg_value:opensource>\n</tool_call:opensource>\n<tool_call:opensource>add<tool_sep:opensource>'
     "\n<arg_key:opensource>a</arg_key:opensource>\n<arg_value:opensource>007</arg_value:opensource>\n"
     "</tool_call:opensource>\n</tool_calls:opensource>", "Let me check."),
    (MiniMaxM1Format(), "",  # (the template leaves out the content of a turn with calls)
     '<tool_calls>\n{"name": "get_weather", "arguments": {"city": "New York", "days": 3, "opts": {"metric": true}}}\n'
     '{"name": "add", "arguments": {"a": "007"}}\n</tool_calls>', ""),
    (DsmlFormat(), "",
     '<think></think>Let me check.\n\n<｜DSML｜function_calls>\n<｜DSML｜invoke name="get_weather">\n'
     '<｜DSML｜parameter name="city" string="true">New York</｜DSML｜parameter>\n'
     '<｜DSML｜parameter name="days" string="false">3</｜DSML｜parameter>\n'
     '<｜DSML｜parameter name="opts" string="false">{"metric": true}</｜DSML｜parameter>\n</｜DSML｜invoke>\n'
     '<｜DSML｜invoke name="add">\n<｜DSML｜parameter name="a" string="true">007</｜DSML｜parameter>\n'
     "</｜DSML｜invoke>\n</｜DSML｜function_calls>", "Let me check."),
    (DsmlV4Format(), "",
     '<think></think>Let me check.\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name="get_weather">\n'
     '<｜DSML｜parameter name="city" string="true">New York</｜DSML｜parameter>\n'
     '<｜DSML｜parameter name="days" string="false">3</｜DSML｜parameter>\n'
     '<｜DSML｜parameter name="opts" string="false">{"metric": true}</｜DSML｜parameter>\n</｜DSML｜invoke>\n'
     '<｜DSML｜invoke name="add">\n<｜DSML｜parameter name="a" string="true">007</｜DSML｜parameter>\n'
     "</｜DSML｜invoke>\n</｜DSML｜tool_calls>", "Let me check."),
    (CohereFormat(), "<|START_THINKING|>",  # Command R7B; Cohere2 MoE writes the same action
     '<|START_THINKING|><|END_THINKING|><|START_ACTION|>[\n    {"tool_call_id": "0", "tool_name": "get_weather", '
     '"parameters": {"city": "New York", "days": 3, "opts": {"metric": true}}},\n    {"tool_call_id": "1", '
     '"tool_name": "add", "parameters": {"a": "007"}}\n]<|END_ACTION|>', ""),
    (Lfm2Format(), "",  # LFM2.5-8B-A1B (the other LFM2 templates do not render calls)
     "Let me check.<|tool_call_start|>[get_weather(city='New York', days=3, opts={\"metric\": true}), add(a='007')]"
     "<|tool_call_end|>", "Let me check."),
    (ApertusFormat(), "",
     'Let me check.<|tools_prefix|>[{"get_weather": {"city": "New York", "days": 3, "opts": {"metric": true}}}, '
     '{"add": {"a": "007"}}]<|tools_suffix|>', "Let me check."),
    (FunctionaryFormat(XML_FUNCTIONS), "",  # (less the ">>>" before "all", the prompt's in a reply)
     'all\nLet me check.>>>get_weather\n{"city": "New York", "days": 3, "opts": {"metric": true}}>>>add\n'
     '{"a": "007"}', "Let me check."),
    (GraniteFormat(), "",  # Granite 3.3 shows no past calls: they are written into the turn's text
     'Let me check.<|tool_call|>[{"name": "get_weather", "arguments": {"city": "New York", "days": 3, "opts": '
     '{"metric": true}}}, {"name": "add", "arguments": {"a": "007"}}]', "Let me check."),
    (AprielFormat(), "",  # Apriel 1.5 and 1.6 alike (with the ids of the calls the turn made)
     'Let me check.\n<tool_calls>[{"name": "get_weather", "arguments": {"city": "New York", "days": 3, "opts": '
     '{"metric": true}}, "id": "call_0"}, {"name": "add", "arguments": {"a": "007"}, "id": "call_1"}]</tool_calls>',
     "Let me check."),
    (HermesFormat(), "",  # Reka Edge
     'Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "New York", "days": 3, "opts": '
     '{"metric": true}}}\n</tool_call><tool_call>\n{"name": "add", "arguments": {"a": "007"}}\n</tool_call>',
     "Let me check."),
    (CommandRPlusFormat(), "",  # (the template ends such a turn without <|END_OF_TURN_TOKEN|>)
     'Let me check.\nAction:\n```json\n[\n    {\n        "tool_name": "get_weather",\n        "parameters": {\n'
     '            "city": "New York",\n            "days": 3,\n            "opts": {\n                "metric": true\n'
     '            }\n        }\n    },\n    {\n        "tool_name": "add",\n        "parameters": {\n'
     '            "a": "007"\n        }\n    }\n]```\n', "Let me check."),
    (FireFunctionFormat(), "",
     'Let me check. functools[{"name": "get_weather", "arguments": {"city": "New York", "days": 3, "opts": '
     '{"metric": true}}}, {"name": "add", "arguments": {"a": "007"}}]', "Let me check."),
    (SolarOpenFormat(), "",  # (the template leaves out the text of a turn with calls)
     '<|tool_calls|><|tool_call:begin|>call_0<|tool_call:name|>get_weather<|tool_call:args|>{"city": "New York", '
     '"days": 3, "opts": {"metric": true}}<|tool_call:end|><|tool_call:begin|>call_1<|tool_call:name|>add'
     '<|tool_call:args|>{"a": "007"}<|tool_call:end|><|calls|>', ""),
    (MuseGlimmerFormat(XML_FUNCTIONS), "",  # (less the prompt's "<|start|>assistant"; the turn's text left out)
     ' to=get_weather<|message|><atem:function_calls>\n<atem:invoke name="get_weather">\n<atem:parameter name="city">'
     'New York</atem:parameter>\n<atem:parameter name="days">3</atem:parameter>\n<atem:parameter name="opts">'
     '{"metric": true}</atem:parameter>\n</atem:invoke>\n</atem:function_calls><|eom|><|start|>assistant to=add'
     '<|message|><atem:function_calls>\n<atem:invoke name="add">\n<atem:parameter name="a">007</atem:parameter>\n'
     "</atem:invoke>\n</atem:function_calls><|eot|>", ""),
]


@pytest.mark.parametrize("fmt, tags, text, content", RENDERED_TURNS,
                         ids=[getattr(t, "values", t)[0].name for t in RENDERED_TURNS])
def test_calls_as_the_template_renders_them_read_back(fmt, tags, text, content):
    out = run_parser(OutputParser(reasoning_for("auto", "", tags), fmt), text, 2)
    assert (out.reasoning, out.content.strip(), calls_of(out)) == ("", content, PAST_CALLS)

APRIEL_1_6 = ("{%- set reasoning_asst_turn_start = 'Here are my reasoning steps:\\n' -%}<tool_calls>["
              "{{ '[BEGIN FINAL RESPONSE]' }}")
SOLAR_OPEN = ('{{ "<|begin|>assistant<|think|>" + m.reasoning + "<|end|>" }}{{ "<|tool_call:begin|>" + id }}'
              '{% if add_generation_prompt %}{{- "<|begin|>assistant" }}{% endif %}')
MUSE_GLIMMER = ("{{ '<|start|>assistant to=self<|message|>' + m.reasoning_content + '<|eom|>' }}"
                "{{ '<atem:function_calls>' }}")
REKA_EDGE = ('within <tool_call></tool_call> XML tags:\n{% if enable_thinking is true %}{{ "assistant: <think>\\n" }}'
             '{% endif %}')


@pytest.mark.parametrize("fmt, text", [  # each template shows a turn's first call only
    (GigaChatFormat(V3_OPENER), 'Let me check.<|message_sep|>\n\nfunction call<|role_sep|>\n{"name": "get_weather", '
                                '"arguments": {"city": "New York", "days": 3, "opts": {"metric": true}}}'),
    (GigaChatFormat(), 'Let me check.<|function_call|>{"name": "get_weather", "arguments": {"city": "New York", '
                       '"days": 3, "opts": {"metric": true}}}'),
])
def test_gigachat_calls_as_its_templates_render_them_read_back(fmt, text):
    out = run_parser(OutputParser(None, fmt), text, 2)
    assert (out.content, calls_of(out)) == ("Let me check.", PAST_CALLS[:1])


@pytest.mark.parametrize("step", [None, 3])
@pytest.mark.parametrize("template, prompt, text, reasoning, content, calls", [
    # MiniMax M2 (llama.cpp's test-chat): the prompt opens the thinking
    ('<minimax:tool_call><invoke name="', "]~b]ai\n<think>\n", "Let's call a tool:\n</think>\n\n<minimax:tool_call>\n"
     '<invoke name="empty_args">\n</invoke>\n</minimax:tool_call>', "Let's call a tool:\n", "", [("empty_args", {})]),
    # MiniMax M3 (llama.cpp's test-chat): the model opens the thinking
    ("]<]minimax[>[<tool_call><invoke name=<mm:think>", "]~b]ai\n", "<mm:think>Let me check the time</mm:think>"
     '\n]<]minimax[>[<tool_call>\n]<]minimax[>[<invoke name="get_time">]<]minimax[>[<city>Tokyo]<]minimax[>[</city>'
     "]<]minimax[>[</invoke>\n]<]minimax[>[</tool_call>", "Let me check the time", "",
     [("get_time", {"city": "Tokyo"})]),
    # MiniCPM5 (llama.cpp's test-chat): the prompt opens the thinking
    ('<function name="function-name"><param name="param-name">', "<|im_start|>assistant\n<think>\n",
     "I'm thinking</think><function name=\"python\"><param name=\"code\">print('hey')</param></function>",
     "I'm thinking", "", [("python", {"code": "print('hey')"})]),
    # Kimi K3 (llama.cpp's test-chat): the prompt opens the thinking
    ("<|open|><|close|><|end_of_msg|>", '<|open|>message role="assistant"<|sep|><|open|>think<|sep|>',
     "I should call it<|close|>think<|sep|><|open|>response<|sep|>On it.<|close|>response<|sep|><|open|>tools<|sep|>"
     '<|open|>call tool="special_function" index="1"<|sep|><|open|>argument key="arg1" type="number"<|sep|>1'
     "<|close|>argument<|sep|><|close|>call<|sep|><|close|>tools<|sep|><|close|>message<|sep|>", "I should call it",
     "On it.", [("special_function", {"arg1": 1})]),
    # Tencent Hy3 with reasoning_effort high: the prompt opens the thinking
    ("{%- set HYTK = ':opensource' %}{%- set think_begin_token = '<think{}>'.format(HYTK) %}"
     "{%- set toolsep_token = '<tool_sep{}>'.format(HYTK) %}", "<｜hy_Assistant:opensource｜><think:opensource>",
     "I'll look.</think:opensource>Sure.<tool_calls:opensource>\n<tool_call:opensource>f<tool_sep:opensource>\n"
     "<arg_key:opensource>a</arg_key:opensource>\n<arg_value:opensource>1</arg_value:opensource>\n"
     "</tool_call:opensource>\n</tool_calls:opensource>", "I'll look.", "Sure.", [("f", {"a": 1})]),
    # DeepSeek V3.2 (llama.cpp's test-chat): thinking, content, then calls
    ("dsml_token = '｜DSML｜' function_calls invoke name=", "<｜Assistant｜><think>",
     "Thinking about it</think>Let me call it.\n\n"
     '<｜DSML｜function_calls>\n<｜DSML｜invoke name="toggle">\n<｜DSML｜parameter name="enabled" string="false">'
     "true</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜function_calls>", "Thinking about it", "Let me call it.",
     [("toggle", {"enabled": True})]),
    # Command R7B (llama.cpp's test-chat): the model opens the thinking
    ("<|START_THINKING|><|START_ACTION|><|END_ACTION|>", "<|CHATBOT_TOKEN|>", "<|START_THINKING|>I'm\nthinking"
     '<|END_THINKING|><|START_ACTION|>[\n    {"tool_call_id": "0", "tool_name": "special_function", '
     '"parameters": {"arg1": 1}}\n]<|END_ACTION|>', "I'm\nthinking", "", [("special_function", {"arg1": 1})]),
    # Cohere2 MoE (llama.cpp's test-chat): the prompt opens the thinking
    ("<|START_TEXT|><|START_THINKING|><|START_ACTION|><|END_ACTION|>", "<|CHATBOT_TOKEN|><|START_THINKING|>",
     'I\'m\nthinking<|END_THINKING|><|START_ACTION|>[{"tool_call_id": "0", "tool_name": "f", "parameters": {}}]'
     "<|END_ACTION|>", "I'm\nthinking", "", [("f", {})]),
    # Apertus: its deliberation
    ("<|inner_prefix|><|tools_prefix|><|tools_suffix|>", "<|assistant_start|>", "<|inner_prefix|>plan<|inner_suffix|>"
     'Sure.<|tools_prefix|>[{"f": {"a": 1}}]<|tools_suffix|>', "plan", "Sure.", [("f", {"a": 1})]),
    # Granite 3.3 (llama.cpp's test-chat): <think> thinking; a call after it
    ("<|tool_call|>", "<|start_of_role|>assistant<|end_of_role|>", "<think>I'm\nthinking</think>Hello, world!\n"
     "What's up?", "I'm\nthinking", "Hello, world!\nWhat's up?", []),
    ("<|tool_call|>", "<|start_of_role|>assistant<|end_of_role|>", '<think>plan</think><|tool_call|>[{"name": "f", '
     '"arguments": {}}]', "plan", "", [("f", {})]),
    # Granite 3.3 asked to think: its answer between <response> tags, framing dropped (llama.cpp's test-chat TODO)
    ("<|tool_call|>", "<|start_of_role|>assistant<|end_of_role|>", "<think>I'm\nthinking</think><response>Hello, "
     "world!\nWhat's up?</response>", "I'm\nthinking", "Hello, world!\nWhat's up?", []),
    # Apriel 1.6 (llama.cpp's test-chat): the prompt opens the reasoning steps
    (APRIEL_1_6, "<|begin_assistant|>\nHere are my reasoning steps:\n", "I'm\nthinking\n[BEGIN FINAL RESPONSE]\n"
     "Hello, world!\nWhat's up?", "I'm\nthinking\n", "Hello, world!\nWhat's up?", []),
    (APRIEL_1_6, "<|begin_assistant|>\nHere are my reasoning steps:\n", "I'm\nthinking\n[BEGIN FINAL RESPONSE]\n"
     '<tool_calls>[{"name": "special_function", "arguments": {"arg1": 1}}]</tool_calls>', "I'm\nthinking\n", "",
     [("special_function", {"arg1": 1})]),
    # Reka Edge (llama.cpp's test-chat): the prompt opens the thinking
    (REKA_EDGE, "<sep>assistant: <think>\n", "I'm\nthinking\n</think>\n\n<tool_call>\n{\"name\": "
     '"special_function", "arguments": {"arg1": 1}}</tool_call>', "I'm\nthinking\n", "",
     [("special_function", {"arg1": 1})]),
    # Solar Open: a thinking message, then a calls message
    (SOLAR_OPEN, "<|begin|>assistant", "<|think|>I should call a tool.<|end|><|begin|>assistant<|tool_calls|>"
     '<|tool_call:begin|>a1b2c3d4e5<|tool_call:name|>f<|tool_call:args|>{"a": 1}<|tool_call:end|>',
     "I should call a tool.", "", [("f", {"a": 1})]),
    # Muse Glimmer (llama.cpp's test-chat): its message to itself, markup in it included, then its answer
    (MUSE_GLIMMER, "<|start|>assistant", " to=self<|message|>I could use " + ATEM_CALL + " here<|eom|>"
     "<|start|>assistant to=user<|message|>Hello!<|eot|>", "I could use " + ATEM_CALL + " here", "Hello!", []),
])
def test_new_formats_read_their_thinking_and_calls(template, prompt, text, reasoning, content, calls, step):
    template = "{% for t in tools %}{% endfor %}" + template
    parser = OutputParser(reasoning_for("auto", prompt, template), detect_native_format(template))
    out = run_parser(parser, text, step)
    assert (out.reasoning, out.content.strip(), calls_of(out)) == (reasoning, content, calls)


@pytest.mark.parametrize("forced", [True, False])
def test_functionary_reads_the_prompts_lead_as_its_own(forced):
    """The prompt ends with ">>>": a reply that names no recipient is text, without it; one cut
    inside a function's name is nothing (forced) or that text."""
    fmt = FunctionaryFormat([{"name": "get_weather"}])
    for step in (None, 1):
        assert run_parser(OutputParser(None, fmt, forced=forced), "Hello", step).content == "Hello"
        assert run_parser(OutputParser(None, fmt, forced=forced), "", step).content == ""
        cut = run_parser(OutputParser(None, fmt, forced=forced), "get_wea", step)
        assert (cut.content, cut.calls) == ("" if forced else "get_wea", [])


def test_solar_open_calls_keep_the_ids_the_model_wrote():
    """Solar Open's template writes each call's id back with the call and its result."""
    text = ('<|tool_calls|><|tool_call:begin|>a1b2c3d4e5<|tool_call:name|>f<|tool_call:args|>{}<|tool_call:end|>'
            '<|tool_call:begin|><|tool_call:name|>g<|tool_call:args|>{}<|tool_call:end|>')
    out = run_parser(OutputParser(None, SolarOpenFormat()), text)
    assert out.calls[0].id == "a1b2c3d4e5" and out.calls[1].id.startswith("call_")  # none written: a new one


def test_cohere_calls_get_ids_of_their_own():
    """Command R7B's templates number past calls themselves: the model's "0", "1" would repeat
    from one turn to the next, so each call gets an OpenAI id."""
    text = '<|START_ACTION|>[{"tool_call_id": "0", "tool_name": "f", "parameters": {}}]<|END_ACTION|>'
    out = run_parser(OutputParser(None, CohereFormat()), text)
    assert out.calls[0].id.startswith("call_")


def test_unclosed_section_at_the_end_is_parsed():
    out = run_parser(OutputParser(None, HermesFormat()), '<tool_call>\n{"name": "f", "arguments": {"a": 1}}\n')
    assert calls_of(out) == [("f", {"a": 1})]


# The output of a tool grammar (required, parallel calls) cut by max_tokens at every length.
FORCED = ('<tool_call>\n{"name": "get_weather", "arguments": {\n  "city": "Paris"\n}}\n</tool_call>\n'
          '<tool_call>\n{"name": "add", "arguments": {"a": 1}}\n</tool_call>')


@pytest.mark.parametrize("forced", [True, False])
@pytest.mark.parametrize("stream", [False, True])
def test_a_call_cut_short_is_never_content(stream, forced):
    opener = len("<tool_call>")
    # with tool_choice auto, text before any call may end with a piece of the opener: it stays text (below)
    for n in range(0 if forced else opener, len(FORCED) + 1):
        text = FORCED[:n]
        parser = OutputParser(None, HermesFormat(), stream_args=stream, forced=forced)
        out = run_parser(parser, text, 1 if stream else None)
        assert out.content == "", text
        complete = text.count("</tool_call>")
        named = text.count('"arguments": {')  # calls whose arguments began: those written so far
        assert [c.name for c in out.calls] == ["get_weather", "add"][:named], text
        for i, (call, whole) in enumerate(zip(out.calls, ['{\n  "city": "Paris"\n}', '{"a": 1}'])):
            if i < complete:  # read whole (and written anew)
                assert json.loads(call.arguments) == json.loads(whole)
            else:  # the arguments written so far (spaced as json.dumps spaces them), not more, never other text
                assert json.dumps(json.loads(whole)).startswith(call.arguments), text


def test_text_before_a_call_cut_short_stays_content():
    out = run_parser(OutputParser(None, HermesFormat()), 'Let me look. <tool_call>\n{"name": "get_')
    assert out.content == "Let me look. " and out.calls == []


@pytest.mark.parametrize("step", [None, 1, 4])
def test_deepseek_reasoning_for_any_model(step):
    out = run_parser(OutputParser(reasoning_for("deepseek", "prompt"), None), "<think>\nso 2+2 is 4\n</think>\n\nIt is 4.", step)
    assert (out.reasoning, out.content) == ("\nso 2+2 is 4\n", "It is 4.")


def test_reasoning_opened_by_the_prompt_and_tool_call_after_it():
    reasoning = reasoning_for("auto", "<|im_start|>assistant\n<think>\n")
    out = run_parser(OutputParser(reasoning, GENERIC), 'need weather</think>\n<tool_call>{"name": "w", "arguments": {}}'
                                                "</tool_call>", 2)
    assert out.reasoning == "need weather" and calls_of(out) == [("w", {})] and out.content.strip() == ""


@pytest.mark.parametrize("step", [None, 3])
@pytest.mark.parametrize("prompt, text", [
    ("", '<think>maybe <tool_call>{"name": "x", "arguments": {}}</tool_call>'),
    ("<|im_start|>assistant\n<think>\n", 'maybe <tool_call>\n{"name": "x", "arguments": {}}\n</tool_call>'),
])
def test_a_call_opened_in_unclosed_thinking_ends_the_thinking(prompt, text, step):
    """After a call's opener the tool grammar allows only calls, so a call opened inside the
    thinking is one (Qwen3.5 calls without closing its thinking), as llama-server reads it."""
    out = run_parser(OutputParser(reasoning_for("auto", prompt), GENERIC), text, step)
    assert (out.reasoning, out.content, calls_of(out)) == ("maybe ", "", [("x", {})])


def test_reasoning_format_none_and_legacy():
    assert reasoning_for("none", "") is None
    out = run_parser(OutputParser(reasoning_for("deepseek-legacy", ""), None), "<think>a</think>b")
    assert out.reasoning == "a" and out.content == "<think>a</think>b"


@pytest.mark.parametrize("fmt", ["none", "deepseek-legacy"])
def test_thinking_kept_in_the_content_starts_with_the_tag_the_prompt_opened(fmt):
    """As llama-server shows Qwen3.5's reply with reasoning_format none: the content begins with
    the ``<think>\\n`` its template ended the prompt with."""
    prompt = "<|im_start|>assistant\n<think>\n"
    prefix = opened_thinking(fmt, prompt, "{{ '<think>' }}")
    assert prefix == "<think>\n"
    parser = OutputParser(reasoning_for(fmt, prompt), None, content_prefix=prefix)
    out = run_parser(parser, "I'm\nthinking\n</think>\n\nHi")
    assert out.content == "<think>\nI'm\nthinking\n</think>\n\nHi"
    assert opened_thinking(fmt, "<|im_start|>assistant\n", "") == ""  # nothing opened
    assert opened_thinking(fmt, prompt, "", in_reasoning=True) == ""  # the client's own reasoning, continued
    assert opened_thinking("auto", prompt, "") == ""  # extracted: not in the content


@pytest.mark.parametrize("step", [None, 2])
def test_magistral_templates_think_in_their_own_tags(step):
    template = "[SYSTEM_PROMPT]{{ m.content }}[/SYSTEM_PROMPT][THINK]{{ m.reasoning_content }}[/THINK][TOOL_CALLS][ARGS]"
    parser = OutputParser(reasoning_for("auto", "[INST]Hi[/INST]", template), MistralFormat(args_marker=True))
    out = run_parser(parser, "[THINK]a thought[/THINK]Sure.[TOOL_CALLS]f[ARGS]{}", step)
    assert (out.reasoning, out.content, calls_of(out)) == ("a thought", "Sure.", [("f", {})])
    parser = OutputParser(reasoning_for("auto", "[INST]Hi[/INST]", template), MistralFormat(args_marker=True))
    out = run_parser(parser, "[THINK]a [TOOL_CALLS]f[ARGS]{}", step)  # a call ends the thinking
    assert (out.reasoning, out.content, calls_of(out)) == ("a ", "", [("f", {})])


def test_kimi_calls_keep_the_ids_the_model_wrote():
    text = ("Checking.<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0"
            '<|tool_call_argument_begin|>{"city": "Paris"}<|tool_call_end|><|tool_call_begin|>functions.add:1'
            '<|tool_call_argument_begin|>{"a": 1}<|tool_call_end|><|tool_calls_section_end|>')
    for step in (None, 4):
        out = run_parser(OutputParser(None, KimiFormat()), text, step)
        assert out.content == "Checking." and [(c.id, c.name, json.loads(c.arguments)) for c in out.calls] == [
            ("functions.get_weather:0", "get_weather", {"city": "Paris"}), ("functions.add:1", "add", {"a": 1})]


@pytest.mark.parametrize("step", [None, 3])
@pytest.mark.parametrize("prompt, text, reasoning, content", [  # llama.cpp's test-chat (Kimi K3), without tools
    ("<|open|>response<|sep|>", "Hello, world!\nWhat's up?<|close|>response<|sep|><|close|>message<|sep|>", "",
     "Hello, world!\nWhat's up?"),
    ("<|open|>think<|sep|>", "I'm thinking about this<|close|>think<|sep|><|open|>response<|sep|>Use the response "
     "tag, then message the handler.<|close|>response<|sep|><|close|>message<|sep|>", "I'm thinking about this",
     "Use the response tag, then message the handler."),
    ("<|open|>think<|sep|>", "I was still thinking when the budget ran out",
     "I was still thinking when the budget ran out", ""),
    ("<|open|>think<|sep|>", "Thinking, never closed<|open|>response<|sep|>The answer.<|close|>response<|sep|>"
     "<|close|>message<|sep|>", "Thinking, never closed", "The answer."),  # the response's opener ends it
])
def test_kimi_k3_replies_lose_their_framing(prompt, text, reasoning, content, step):
    template = "{{ '<|open|>' }}{{ '<|close|>' }}{{ '<|end_of_msg|>' }}{% if tools %}{% endif %}"
    parser = OutputParser(reasoning_for("auto", '<|open|>message role="assistant"<|sep|>' + prompt, template),
                          detect_native_format(template).reader())
    out = run_parser(parser, text, step)
    assert (out.reasoning, out.content, out.calls) == (reasoning, content, [])
    kept = run_parser(OutputParser(None, detect_native_format(template).reader()), text, step)  # reasoning_format none
    assert (kept.reasoning, kept.content) == ("", reasoning + content)  # (llama.cpp's: the think closer dropped too)


@pytest.mark.parametrize("step", [None, 2])
def test_granite_answers_lose_their_response_tags_without_tools_too(step):
    template = "{% for t in tools %}{% endfor %}<|tool_call|>"
    parser = OutputParser(reasoning_for("auto", "<|start_of_role|>assistant<|end_of_role|>", template),
                          detect_native_format(template).reader())
    out = run_parser(parser, "<think>plan</think><response>The answer.</response>", step)
    assert (out.reasoning, out.content, out.calls) == ("plan", "The answer.", [])


def test_seed_oss_thinks_in_its_own_tags():
    template = "{%- set think_begin_token = '<seed:think>' -%}{%- set toolcall_begin_token = '<seed:tool_call>' -%}"
    out = run_parser(OutputParser(reasoning_for("auto", "", template), SeedXmlFormat(XML_FUNCTIONS)),
                     "<seed:think>plan</seed:think>Done.", 3)
    assert (out.reasoning, out.content) == ("plan", "Done.")


@pytest.mark.parametrize("step", [None, 1])
def test_a_reply_that_opens_with_the_thinkings_end_thought_nothing(step):
    """As llama.cpp reads it: the end tag first is an empty thinking, not content; after text it is
    text. (White space before it goes out in a stream, which does not hold a reply's first token.)"""
    reasoning = reasoning_for("auto", "", "<think></think>")
    out = run_parser(OutputParser(reasoning, None), "\n</think>\n\nHello", step)
    assert (out.reasoning, out.content.lstrip()) == ("", "Hello")
    out = run_parser(OutputParser(reasoning_for("auto", "", "<think></think>"), None), "Hi </think> there", step)
    assert (out.reasoning, out.content) == ("", "Hi </think> there")


def test_unterminated_thinking_is_reasoning():
    out = run_parser(OutputParser(reasoning_for("deepseek", ""), None), "<think>still going", 3)
    assert out.reasoning == "still going" and out.content == ""


def test_partial_marker_at_the_end_is_released():
    out = run_parser(OutputParser(None, HermesFormat()), "a <tool_ca", 1)
    assert out.content == "a <tool_ca" and out.calls == []


@pytest.mark.parametrize("template, name", [
    ("{% for t in tools %}{{ t | tojson }}{% endfor %}<tool_call>", "hermes"),
    ("{% if tools %}[AVAILABLE_TOOLS]{% endif %}[TOOL_CALLS]", "mistral"),
    ("{% for t in tools %}{% endfor %}<tool_call>{{ name }}<arg_key>{{ k }}</arg_key>", "glm"),
    ("{%- set HYTK = ':opensource' %}{%- set toolsep_token = '<tool_sep{}>'.format(HYTK) %}{% if tools %}"
     "<tools>{% endif %}", "hy3"),
    ("{% if message.get('tool_calls') %}<|tool_calls_section_begin|>{% endif %}", "kimi"),
    ("{%- macro open_tag(tag) -%}{{- '<|open|>' + tag -}}{%- endmacro -%}{{- '<|close|>' + tag -}}"
     "{% if tools %}{% endif %}{{- '<|end_of_msg|>' -}}", "kimi-k3"),
    ("{%- set toolcall_begin_token = '<seed:tool_call>' -%}{% for t in tools %}<function={% endfor %}", "seed-xml"),
    ("{% if tools %}{% endif %}<｜tool▁calls▁begin｜>", "deepseek"),
    ("{% if tools %}<|python_tag|>{% endif %}", "llama3"),
    ("{% if tools %}<tool_call>\n<function={{ name }}>\n<parameter={{ k }}>{% endif %}", "qwen-xml"),
    ("{% if tools %}<|channel|>commentary{% endif %}", "harmony"),
    ("{% if tools %}{{ '<|tool_call>call:' + name + '{' }}{{ '}<tool_call|>' }}{% endif %}", "gemma4"),
    ("{%- set toolcall_begin_token = '<minimax:tool_call>' -%}{% if tools %}<invoke name=\"{% endif %}", "minimax-m2"),
    ("<beginning_of_sentence>{% if tools %}<tool_calls>\n{{ call }}\n</tool_calls>{% endif %}", "minimax-m1"),
    ("{% if tools %}<function name=\"function-name\"><param name=\"param-name\">param-value</param></function>"
     "{% endif %}", "minicpm5"),
    ("{%- set ns_token = ']<]minimax[>[' -%}{%- set toolcall_begin_token = ns_token ~ '<tool_call>' -%}"
     "{% if tools %}{{ ns_token + '<invoke name=\"' + name + '\">' }}{% endif %}", "minimax-m3"),
    ("{%- set dsml_token = '｜DSML｜' -%}{% if tools %}<' + dsml_token + 'function_calls>"
     "<' + dsml_token + 'invoke name=\"{% endif %}", "dsml"),
    ("{%- set dsml_token = '｜DSML｜' -%}{% if tools %}<' + dsml_token + 'tool_calls>"
     "<' + dsml_token + 'invoke name=\"{% endif %}", "dsml-v4"),
    ("{% if tools %}<|START_THINKING|><|END_THINKING|><|START_ACTION|>[]<|END_ACTION|>{% endif %}", "cohere"),
    ("{% if tools %}<|tool_call_start|>[{{ calls }}]<|tool_call_end|>{% endif %}", "lfm2"),
    ("{% if tools %}List of tools: <|tool_list_start|>[]<|tool_list_end|>{% endif %}", "lfm2"),  # LFM2-8B-A1B
    ("<|im_start|>{% if tools %}List of tools: [{% endif %}", "lfm2"),  # LFM2.5-Instruct
    ("{%- set tool_calls_token = '<|tools_prefix|>' -%}{%- set end_tool_calls_token = '<|tools_suffix|>' -%}"
     "{% if tools %}{% endif %}", "apertus"),
    ("{% if tools %}Respond in this format:\n>>>${recipient}\n${content}{% endif %}{{ '>>>all\n' + content }}",
     "functionary-v3.2"),
    ("{% if available_tools %}respond only with <|tool_call|> followed by a JSON list{% endif %}", "granite"),
    ("{% if tools %}within <tool_call></tool_call> XML tags:\n<tool_calls>[{{ calls }}]</tool_calls>{% endif %}",
     "apriel"),  # Apriel 1.5's instructions name Hermes' tag too
    ("{% for t in tools %}{% endfor %}" + REKA_EDGE, "hermes"),  # Reka Edge
    ("{% if tools %}Write 'Action:' followed by a list\n```json\n[{\"tool_name\": ...}]```{% endif %}",
     "command-r-plus"),
    ('{%- set add_tokens = namespace(role_sep="<|role_sep|>\\n", message_sep="<|message_sep|>\\n\\n") -%}'
     "{% if tools %}{{ 'function call' }}{% endif %}", "gigachat"),
    ('{%- set add_tokens = namespace(role_sep="<|role_sep|>\\n", function_call="<|function_call|>") -%}'
     "{% if tools %}{% endif %}", "gigachat"),
    ("{% if tools %}" + SOLAR_OPEN + "{% endif %}", "solar-open"),
    ("{% if tools %}{% endif %}" + MUSE_GLIMMER, "muse-glimmer"),
    ("{%- set system_prompt_suffix = 'functools[{\"name\": ...}]' + functions -%}{{ m['tool_calls'] }}",
     "firefunction-v2"),
])
def test_template_detection(template, name):
    assert detect_native_format(template).name == name


def test_templates_without_tools_use_the_generic_format():
    assert detect_native_format("{{ messages }}") is None


def pieces_of(parser, text: str) -> list:
    """The call pieces a stream sends, feeding ``text`` one character at a time."""
    pieces = [c for ch in text for c in parser.push(ch).calls]
    return pieces + parser.finish().calls


def test_arguments_stream_as_they_are_written():
    args = '{"city": "Paris \\"Centre\\"", "days": [1, {"x": "}"}]}'
    text = f'Sure.<tool_call>\n{{"name": "get_weather", "arguments": {args}}}\n</tool_call>'
    pieces = pieces_of(OutputParser(None, HermesFormat(), stream_args=True), text)
    head, rest = pieces[0], pieces[1:]
    assert (head.index, head.name, head.arguments) == (0, "get_weather", "") and head.id.startswith("call_")
    assert len(rest) > 20 and all(p.id is None and p.name is None and p.index == 0 for p in rest)
    assert "".join(p.arguments for p in rest) == args  # braces inside strings do not end it early


def test_streamed_arguments_are_spaced_as_the_same_call_read_whole():
    """The model's own spacing (none, newlines, spaces before commas) streams as json.dumps
    spaces the arguments of the same reply read whole; spaces inside strings stay."""
    args = '{"city":"Paris ,  Centre :",\n  "days" :[1,2 , {"x":"a  b"}]}'
    text = f'<tool_call>{{"name": "f", "arguments": {args}}}</tool_call>'
    streamed = "".join(p.arguments for p in pieces_of(OutputParser(None, HermesFormat(), stream_args=True), text))
    whole = OutputParser(None, HermesFormat())
    calls = merge_calls(whole.push(text).calls + whole.finish().calls)
    assert streamed == calls[0].arguments == '{"city": "Paris ,  Centre :", "days": [1, 2, {"x": "a  b"}]}'


def test_calls_not_written_name_first_come_whole():
    text = '<tool_call>{"arguments": {"a": 1}, "name": "f"}</tool_call>'
    pieces = pieces_of(OutputParser(None, HermesFormat(), stream_args=True), text)
    assert [(p.name, p.arguments) for p in pieces] == [("f", ""), (None, '{"a": 1}')]


STREAMED = [case for case in CASES if call_stream(case[0], 0) is not None]


@pytest.mark.parametrize("fmt, text, content, calls", STREAMED, ids=[f"{c[0].name}-{i}" for i, c in enumerate(STREAMED)])
def test_calls_stream_as_written_and_read_as_the_same_reply_not_streamed(fmt, text, content, calls):
    """Every format that names a call's function first streams its arguments: each call's come in
    pieces as the text arrives (a character at a time here), and they add up to the text of the
    same reply read whole (the same spacing, and values typed as a whole call types them)."""
    parser = OutputParser(None, fmt, stream_args=True)
    pieces = pieces_of(parser, text)
    streamed = merge_calls(pieces)
    whole = run_parser(OutputParser(None, fmt), text)
    assert [(c.name, c.arguments) for c in streamed] == [(c.name, c.arguments) for c in whole.calls]
    assert [(c.name, json.loads(c.arguments)) for c in streamed] == calls
    for call in streamed:
        assert len([p for p in pieces if p.index == call.index and p.name is None]) > 1


WRITE_FUNCTIONS = [{"name": "write", "parameters": {"type": "object", "properties": {
    "path": {"type": "string"}, "body": {"type": "string"}, "mode": {"type": "object"}}}}]


def test_a_string_argument_streams_before_its_element_closes():
    """An XML-style string value goes out as it is written, escaped as JSON; the new line before
    its closing tag (the format's, not the value's) and a closing tag still arriving are held."""
    fmt = QwenXmlFormat(WRITE_FUNCTIONS)
    parser = OutputParser(None, fmt, stream_args=True)
    sent = ""
    for piece in ["<tool_call>\n<function=write>\n<parameter=path>\n", 'a "b"\\c.py', "\n</param", "eter>\n",
                  "<parameter=body>\nline 1\n", "x </para", "m> y\n", "\n</parameter>\n",
                  '<parameter=mode>\n{"append":', " true}\n</parameter>\n</function>\n</tool_call>"]:
        sent += "".join(c.arguments for c in parser.push(piece).calls)
        if piece == 'a "b"\\c.py':
            assert sent == '{"path": "a \\"b\\"\\\\c.py'
        elif piece == "\n</param":  # the end of the value, or more of it: held back
            assert sent.endswith("c.py")
        elif piece == "x </para":
            assert sent.endswith('"body": "line 1\\nx ')
        elif piece == '<parameter=mode>\n{"append":':  # not a string: sent whole when it closes
            assert sent.endswith('"body": "line 1\\nx </param> y\\n", "mode": ')
    sent += "".join(c.arguments for c in parser.finish().calls)
    assert json.loads(sent) == {"path": 'a "b"\\c.py', "body": "line 1\nx </param> y\n", "mode": {"append": True}}


def assert_streams(parser: OutputParser, steps: list[tuple[str, str]]) -> None:
    """Each piece pushed, the arguments sent so far are the text expected; nothing is left to send."""
    sent = ""
    for piece, expected in steps:
        sent += "".join(c.arguments for c in parser.push(piece).calls)
        assert sent == expected, piece
    assert parser.finish().calls == []


def test_a_gemma4_string_streams_before_its_quote_closes():
    """Gemma 4's arguments go out as JSON as they are written: a string as it comes, escaped as
    JSON, but for what may be the start of its closing ``<|"|>``; a bare key, number or word once
    it ends."""
    steps = [('<|tool_call>call:write{body:<|"|>line "1"\n', '{"body": "line \\"1\\"\\n'),
             ("x <|", '{"body": "line \\"1\\"\\nx '),  # the quote, or more of the string
             ('"| y<|"|>, si', '{"body": "line \\"1\\"\\nx <|\\"| y", '),
             ("ze : 1.50", '{"body": "line \\"1\\"\\nx <|\\"| y", "size": '),
             ("}<tool_call|>", '{"body": "line \\"1\\"\\nx <|\\"| y", "size": 1.5}')]
    assert_streams(OutputParser(None, Gemma4Format(), stream_args=True), steps)


def test_an_lfm2_string_streams_before_it_closes():
    """LFM2's keyword arguments go out as a JSON object as they are written: a key at its ``=``, a
    string as it comes (an escape once it is whole), any other value once it ends."""
    steps = [("<|tool_call_start|>[write(path='a.py', body='line\\", '{"path": "a.py", "body": "line'),
             ("n", '{"path": "a.py", "body": "line\\n'),
             ("x\\x4", '{"path": "a.py", "body": "line\\nx'),
             ("1 (y)', mode={'append'", '{"path": "a.py", "body": "line\\nxA (y)", "mode": '),
             (": True}", '{"path": "a.py", "body": "line\\nxA (y)", "mode": '),
             (")]<|tool_call_end|>",
              '{"path": "a.py", "body": "line\\nxA (y)", "mode": {"append": true}}')]
    assert_streams(OutputParser(None, Lfm2Format(), stream_args=True), steps)


def test_a_kimi_k3_string_streams_before_its_argument_closes():
    """Kimi K3's string values go out as they are written, but for what may be the start of the
    argument's closer; a value of another type (its ``type`` attribute's, else the schema's) once
    it closes. Names and keys are unescaped as a whole call reads them."""
    steps = [('<|open|>tools<|sep|><|open|>call tool="get_weather" index="1"<|sep|><|open|>argument '
              'key="a&quot;b" type="string"<|sep|>line "1"\n', '{"a\\"b": "line \\"1\\"\\n'),
             ("x <|close|>", '{"a\\"b": "line \\"1\\"\\nx '),  # the closer, or more of the string
             ('argument<|sep|><|open|>argument key="days"<|sep|>3',
              '{"a\\"b": "line \\"1\\"\\nx ", "days": '),
             ('<|close|>argument<|sep|><|open|>argument key="n" type="number"<|sep|>1.50',
              '{"a\\"b": "line \\"1\\"\\nx ", "days": 3, "n": '),
             ("<|close|>argument<|sep|><|close|>call<|sep|><|close|>tools<|sep|>",
              '{"a\\"b": "line \\"1\\"\\nx ", "days": 3, "n": 1.5}')]
    assert_streams(OutputParser(None, KimiK3Format(XML_FUNCTIONS), stream_args=True), steps)


def test_a_minicpm5_string_streams_unless_it_is_in_a_cdata_block():
    """MiniCPM5's string values go out as they are written, but for what may be the start of
    ``</param>``; one in a CDATA block (which may hold ``</param>``) whole when the block closes,
    as any other value (JSON or a Python literal) when it ends."""
    steps = [('<function name="write"><param name="path">a "b".py</par', '{"path": "a \\"b\\".py'),
             ('am><param name="body"><', '{"path": "a \\"b\\".py"'),  # a CDATA block, or text
             ("![CDATA[x </param> y", '{"path": "a \\"b\\".py", "body": '),
             ("]]></param><param name=\"mode\">{'append': True}",
              '{"path": "a \\"b\\".py", "body": "x </param> y", "mode": '),
             ("</param></function>",
              '{"path": "a \\"b\\".py", "body": "x </param> y", "mode": {"append": true}}')]
    assert_streams(OutputParser(None, MiniCpm5Format(WRITE_FUNCTIONS), stream_args=True), steps)


def test_a_minimax_m3_string_streams_before_its_element_closes():
    """MiniMax M3's string values (a union with a string alternative too) go out as they are
    written, nested tags and all, but for what may be the start of their closing tag; an object
    or array written as elements whole once its own element closes, not one nested in it of the
    same name."""
    fmt = MiniMaxM3Format([{"name": "write", "parameters": {"type": "object", "properties": {
        "body": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        "mode": {"type": "object", "properties": {"mode": {"type": "integer"}}}}}}])
    ns = "]<]minimax[>["
    steps = [(f'{ns}<tool_call>\n{ns}<invoke name="write">{ns}<body>line "1"\n',
              '{"body": "line \\"1\\"\\n'),
             (f"{ns}<b>x{ns}</", '{"body": "line \\"1\\"\\n' + ns + "<b>x"),  # its tag, or more text
             (f"b>{ns}</body>{ns}<mode>{ns}<mode>2{ns}</mode>",
              '{"body": "line \\"1\\"\\n' + ns + "<b>x" + ns + '</b>", "mode": '),
             (f"{ns}</mode>{ns}</invoke>\n{ns}</tool_call>",
              '{"body": "line \\"1\\"\\n' + ns + "<b>x" + ns + '</b>", "mode": {"mode": 2}}')]
    assert_streams(OutputParser(None, fmt, stream_args=True), steps)


def test_a_call_the_stream_cannot_read_comes_whole_after_those_it_streamed():
    text = '<tool_calls>\n{"name": "a", "arguments": {"x": 1}}\n{"arguments": {"y": 2}, "name": "b"}\n</tool_calls>'
    pieces = pieces_of(OutputParser(None, MiniMaxM1Format(), stream_args=True), text)
    assert [(c.name, c.arguments) for c in merge_calls(pieces)] == [("a", '{"x": 1}'), ("b", '{"y": 2}')]
    assert [p.arguments for p in pieces if p.index == 1] == ["", '{"y": 2}']


def test_a_glm_call_ends_with_its_section():
    fmt = GlmFormat(XML_FUNCTIONS)
    pieces = pieces_of(OutputParser(None, fmt, stream_args=True),
                       "<tool_call>get_weather\n<arg_key>days</arg_key>\n<arg_value>3</arg_value>\n</tool_call>")
    assert [p.arguments for p in pieces if p.name is None] == ["{", '"days": ', "3", "}"]


def streamed_and_whole(fmt, text: str) -> tuple[list, list]:
    pieces = pieces_of(OutputParser(None, fmt, stream_args=True), text)
    whole = run_parser(OutputParser(None, fmt), text)
    return [(c.name, c.arguments) for c in merge_calls(pieces)], [(c.name, c.arguments) for c in whole.calls]


@pytest.mark.parametrize("fmt, text", [
    # numbers and escapes as json.dumps writes them again
    (HermesFormat(), '<tool_call>{"name": "f", "arguments": {"n": 1.50, "e": 1e-7, "m": -0, "t": [true, null], '
                     '"s": "\\u00e9\\/ \\ud83d\\ude00 \\"q\\" \\\\ \\n \\u0001"}}</tool_call>'),
    # a call not written name first, then one that is: both whole, in order
    (MistralFormat(), '[TOOL_CALLS][{"arguments": {"a": 1}, "name": "f"}, {"name": "g", "arguments": {}}]'),
    (HermesFormat(), '<tool_call>{"arguments": {"name": "x", "arguments": {}}, "name": "f"}</tool_call>'),
    # a GLM call the output ended after a whole argument: its object closed, as read whole
    (GlmFormat(XML_FUNCTIONS), "<tool_call>get_weather\n<arg_key>opts</arg_key>\n<arg_value>[1]</arg_value>"),
    # Gemma 4: white space between the parts, quoted keys, numbers as json.dumps writes them
    (Gemma4Format(), '<|tool_call>call:f{ a : 1.0e2 , <|"|>b c<|"|> :[ -0 ,{ }, <|"|><|"|> ] ,d:null}<tool_call|>'),
    # LFM2: Python's escapes and JSON's, triple quotes, spacing, a trailing comma, a call with none
    (Lfm2Format(), "<|tool_call_start|>[ f ( a = 'it\\'s \\x41\\101\\N{BULLET} \\u00e9' , b=\"\\/x\\ud83d\\ude00\", "
                   "c='''tri''', d='', e = -3.50e1 , ), g() ]<|tool_call_end|>"),
    # a value past what Python reads as a number stays text
    (MiniMaxM2Format([{"name": "f"}]), '<minimax:tool_call>\n<invoke name="f">\n<parameter name="x">' + "9" * 5000
     + "</parameter>\n</invoke>\n</minimax:tool_call>"),
    # Kimi K3: names and keys unescaped (keys not stripped), values typed by the first type attribute (whatever
    # the others hold), else by the schema; JSON's escapes in a string; a call without arguments
    (KimiK3Format(XML_FUNCTIONS), '<|open|>tools<|sep|><|open|>call tool=" a&amp;b &quot;c&quot;" index="1"<|sep|>\n'
     '<|open|>argument key=" k &amp; " type="string"<|sep|>say "hi"\\n\n\t\u00e9 \U0001f600<|close|>argument<|sep|>\n'
     '<|open|>argument key="n" type="number"<|sep|>1.50<|close|>argument<|sep|>'
     '<|open|>argument key="f" foo="type=" type="number"<|sep|>x<|close|>argument<|sep|>'
     '<|open|>argument key="e" type=""<|sep|><|close|>argument<|sep|><|close|>call<|sep|>'
     '<|open|>call tool="add" index="2"<|sep|><|close|>call<|sep|>\n<|open|>call tool="get_weather" index="3"<|sep|>'
     '<|open|>argument key="city"<|sep|>007<|close|>argument<|sep|><|open|>argument key="days"<|sep|>3'
     "<|close|>argument<|sep|><|close|>call<|sep|><|close|>tools<|sep|><|close|>message<|sep|>"),
    # MiniCPM5: CDATA blocks (holding what would close the param; a block's markers in one: its text; one never
    # closed: text up to </param>, its opener and all), JSON and Python literals, names and keys stripped, no arguments
    (MiniCpm5Format(XML_FUNCTIONS), '<function name=" get_weather "><param name=" city "><![CDATA[a </param> & "b"\n'
     ']]></param>\n<param name="days"><![CDATA[<![CDATA[7]]>]]></param><param name="opts">{\'m\': None, "u": [1, 2.50]}'
     '</param></function>\n<function name="add"><param name="a"><![CDATA[x</param></function>\n'
     '<function name="ping"></function>'),
    # MiniMax M3: a string holding the closing tag of the element around it, an object nested in one of the same
    # name, arrays of arrays (an empty one writes nothing), JSON's escapes, keys not in the schema, no arguments
    (MiniMaxM3Format([*M3_FUNCTIONS, {"name": "deep", "parameters": {"type": "object", "properties": {
        "a": {"type": "object", "properties": {"a": {"type": "integer"}, "s": {"type": "string"}}},
        "item": {"type": "array", "items": {"type": "array", "items": {"type": "integer"}}}}}}]),
     "]<]minimax[>[<tool_call>\n]<]minimax[>[<invoke name=\" deep \">]<]minimax[>[<a>]<]minimax[>[<a>1"
     "]<]minimax[>[</a>]<]minimax[>[<s>x ]<]minimax[>[</a> \"y\"\\n\n]<]minimax[>[</s>]<]minimax[>[</a>\n"
     "]<]minimax[>[<item>]<]minimax[>[<item>]<]minimax[>[<item>1]<]minimax[>[</item>]<]minimax[>[</item>"
     "]<]minimax[>[<item>]<]minimax[>[</item>]<]minimax[>[</item>]<]minimax[>[<x>]<]minimax[>[<y>[1.50]"
     "]<]minimax[>[</y>]<]minimax[>[</x>]<]minimax[>[</invoke>\n]<]minimax[>[<invoke name=\"empty_args\">"
     "]<]minimax[>[</invoke>\n]<]minimax[>[</tool_call>"),
])
def test_streamed_calls_read_as_the_same_reply_not_streamed(fmt, text):
    streamed, whole = streamed_and_whole(fmt, text)
    assert streamed == whole and whole


BODY_FUNCTIONS = [{"name": "write", "parameters": {"type": "object", "properties": {"body": {"type": "string"}}}}]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("fmt, text", [
    (HermesFormat(), 'Sure.<tool_call>\n{"name": "write", "arguments": {"body": "a </tool_call> b"}}\n</tool_call>'),
    (QwenXmlFormat(BODY_FUNCTIONS),
     "Sure.<tool_call>\n<function=write>\n<parameter=body>\na </tool_call> b\n</parameter>\n</function>\n</tool_call>"),
    (Gemma4Format(), 'Sure.<|tool_call>call:write{body:<|"|>a <tool_call|> b<|"|>}<tool_call|>'),
    (MiniMaxM2Format(BODY_FUNCTIONS), 'Sure.<minimax:tool_call>\n<invoke name="write">\n<parameter name="body">a '
                                      "</minimax:tool_call> b</parameter>\n</invoke>\n</minimax:tool_call>"),
])
def test_a_string_argument_may_hold_its_sections_closer(fmt, text, stream):
    """A coding agent's file may hold the very tag that closes a call section: where the text up
    to a closer does not read as calls, the closer was inside a value and the section goes on."""
    out = run_parser(OutputParser(None, fmt, stream_args=stream), text, 1 if stream else None)
    assert (out.content, calls_of(out)) == ("Sure.", [("write", {"body": "a " + fmt.end + " b"})])


def test_a_section_that_never_reads_ends_at_its_first_closer():
    text = '<tool_call>\n{"name": oops}</tool_call> and then <tool_call>{"name": "f"</tool_call> text'
    for step in (None, 1):
        out = run_parser(OutputParser(None, HermesFormat(), stream_args=step == 1), text, step)
        assert (out.content, out.calls) == (text.replace("</tool_call> ", "</tool_call>"), [])


def test_a_streamed_value_that_utf8_cannot_hold_goes_out_escaped():
    """A lone surrogate's escape (the JSON grammar allows any \\uXXXX) reads as no call whole; the
    piece already streamed keeps it escaped, so that the stream can still be sent."""
    text = '<function name="f"><param name="a">["\\ud83d"]</param></function>'
    pieces = pieces_of(OutputParser(None, MiniCpm5Format([{"name": "f"}]), stream_args=True), text)
    assert '["\\ud83d"]' in [p.arguments for p in pieces]
    for piece in pieces:
        piece.arguments.encode()


def test_arguments_beyond_json_never_go_out_as_calls():
    """1e400 is no float, and JSON has no Infinity: the call is malformed, as JSON would have it."""
    out = run_parser(OutputParser(None, HermesFormat()), '<tool_call>{"name": "f", "arguments": {"x": 1e400}}</tool_call>')
    assert out.calls == [] and "1e400" in out.content


def test_a_call_nested_past_pythons_recursion_is_content_not_an_error():
    fmt = MiniMaxM3Format([{"name": "f"}])
    ns = "]<]minimax[>["
    body = "".join(f"{ns}<a>" for _ in range(3000)) + "1" + "".join(f"{ns}</a>" for _ in range(3000))
    text = f'{ns}<tool_call>\n{ns}<invoke name="f">{body}{ns}</invoke>\n{ns}</tool_call>'
    out = run_parser(OutputParser(None, fmt), text)
    assert out.calls == [] and out.content == text
