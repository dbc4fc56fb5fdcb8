"""gpt-oss (OpenAI Harmony) replies on strings: analysis to reasoning, final and preambles to
content, calls addressed to functions (in the channel header or after the role), malformed calls
and plain text given back as content, streamed in pieces of any size."""

from __future__ import annotations

import json

import pytest
from frontend_support import run_parser

from frontend.structured.harmony import HarmonyParser
from frontend.structured.reasoning import reasoning_for, thinking_tags
from frontend.structured.tool_formats import detect_native_format
from frontend.structured.tool_formats.json_args.harmony import HarmonyFormat

GPT_OSS_MARKS = "{%- if tools %}{{ tools }}{% endif %}<|start|>assistant<|channel|>final<|message|>"

STEPS = [None, 1, 5]
ANALYSIS = "<|channel|>analysis<|message|>The user asks for 2+2. That is 4.<|end|>"


@pytest.mark.parametrize("step", STEPS)
def test_analysis_then_final(step):
    out = run_parser(HarmonyParser(True, False), ANALYSIS + "<|start|>assistant<|channel|>final<|message|>It is 4.", step)
    assert (out.reasoning, out.content, out.calls) == ("The user asks for 2+2. That is 4.", "It is 4.", [])


@pytest.mark.parametrize("step", STEPS)
def test_reasoning_format_none_keeps_the_analysis_in_content(step):
    text = ANALYSIS + "<|start|>assistant<|channel|>final<|message|>4"
    out = run_parser(HarmonyParser(False, False), text, step)
    assert out.reasoning == "" and out.content == ANALYSIS + "4"


@pytest.mark.parametrize("step", STEPS)
@pytest.mark.parametrize("call", [
    '<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{"city": "Paris"}',
    '<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{"city": "Paris"}<|call|>',
    ' to=functions.get_weather<|channel|>commentary json<|message|>{"city": "Paris"}',  # recipient after the role
    '<|channel|>commentary to=functions.get_weather json<|message|>{"city":"Paris"}',
])
def test_calls_after_analysis(call, step):
    text = call if call.startswith(" to=") else ANALYSIS + "<|start|>assistant" + call
    out = run_parser(HarmonyParser(True, True), text, step)
    assert [(c.index, c.name, json.loads(c.arguments)) for c in out.calls] == [(0, "get_weather", {"city": "Paris"})]
    assert out.calls[0].id.startswith("call_") and out.content == ""
    assert out.reasoning == ("" if call.startswith(" to=") else "The user asks for 2+2. That is 4.")


@pytest.mark.parametrize("step", STEPS)
def test_preamble_is_content_and_call_follows(step):
    text = ("<|channel|>commentary<|message|>Checking the weather.<|end|><|start|>assistant"
            '<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{"city": "Rome"}<|call|>')
    out = run_parser(HarmonyParser(True, True), text, step)
    assert out.content == "Checking the weather." and [c.name for c in out.calls] == ["get_weather"]


def test_malformed_arguments_come_back_as_content():
    text = '<|channel|>commentary to=functions.f <|constrain|>json<|message|>{"a": }<|call|>'
    out = run_parser(HarmonyParser(True, True), text)
    assert out.calls == [] and out.content == text.removesuffix("<|call|>")


@pytest.mark.parametrize("stream", [False, True])
def test_a_call_cut_short_is_a_call_with_its_arguments_so_far(stream):
    """As in the other formats (max_tokens ended the output inside the call), streamed or not."""
    text = '<|channel|>commentary to=functions.f <|constrain|>json<|message|>{\n"a": "b c'
    out = run_parser(HarmonyParser(True, True, stream_args=stream), text, 1 if stream else None)
    assert out.content == "" and [(c.name, c.arguments) for c in out.calls] == [("f", '{"a": "b c')]


def test_calls_not_parsed_without_tools_and_builtin_recipients_shown():
    text = '<|channel|>commentary to=functions.f <|constrain|>json<|message|>{"a": 1}'
    assert run_parser(HarmonyParser(True, False), text).content == text
    text = '<|channel|>analysis to=browser.search<|message|>{"query": "x"}'
    assert run_parser(HarmonyParser(True, True), text).content == text


@pytest.mark.parametrize("text", ['{"answer": 4}', "Hello there", "", "   "])
@pytest.mark.parametrize("step", STEPS)
def test_plain_text_is_content_as_it_is(text, step):
    assert run_parser(HarmonyParser(True, True), text, step).content == text


def test_plain_text_streams_before_the_end():
    parser = HarmonyParser(True, True)
    assert parser.push("Hello").content == "Hello"


def test_reasoning_streams_before_its_end_marker():
    parser = HarmonyParser(True, False)
    assert parser.push("<|channel|>analysis<|message|>abc<|e").reasoning == "abc"
    assert parser.push("nd|><|start|>assistant<|channel|>final<|message|>x").content == "x"


def test_prompt_that_opened_the_analysis():
    out = run_parser(HarmonyParser(True, False, starts_open=True), "hmm<|end|><|start|>assistant<|channel|>final<|message|>4")
    assert (out.reasoning, out.content) == ("hmm", "4")


def test_detection_format_and_tags():
    fmt = detect_native_format(GPT_OSS_MARKS)
    assert isinstance(fmt, HarmonyFormat)
    assert fmt.parse('get_weather <|constrain|>json<|message|>{"city": "Oslo"}')[0].name == "get_weather"
    with pytest.raises(ValueError):
        fmt.parse('{"city": "Oslo"}')
    assert thinking_tags(GPT_OSS_MARKS) == ("<|channel|>analysis<|message|>", "<|end|>")
    assert thinking_tags("{{ messages }}") == ("<think>", "</think>")
    r = reasoning_for("auto", "<|start|>assistant<|channel|>analysis<|message|>", GPT_OSS_MARKS)
    assert r is not None and r.starts_open and r.end == "<|end|>"


def test_call_arguments_stream():
    parser = HarmonyParser(True, True, stream_args=True)
    text = '<|channel|>commentary to=functions.f <|constrain|>json<|message|>{"a": [1, 2]}<|call|>'
    pieces = [c for ch in text for c in parser.push(ch).calls] + parser.finish().calls
    assert (pieces[0].name, pieces[0].arguments) == ("f", "") and pieces[0].id
    assert "".join(p.arguments for p in pieces[1:]) == '{"a": [1, 2]}' and len(pieces) > 3
