"""Kimi K2 (Instruct, Thinking): a section of calls, each named by an id that holds the
function's name and the call's index, its arguments one JSON object::

    <|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0<|tool_call_argument_begin|>
    {"city": "Paris"}<|tool_call_end|><|tool_calls_section_end|>

The id (``functions.NAME:INDEX``) is the call's id in the reply, as llama-server keeps it: Kimi's
template names each tool result by it."""

from __future__ import annotations

import json
import re

from frontend.structured import gbnf
from frontend.structured.tool_formats.base import ParsedCall, ToolFormat, arguments_text

SECTION_BEGIN = "<|tool_calls_section_begin|>"
SECTION_END = "<|tool_calls_section_end|>"
CALL_BEGIN = "<|tool_call_begin|>"
ARGS_BEGIN = "<|tool_call_argument_begin|>"
CALL_END = "<|tool_call_end|>"
_ID = re.compile(r"\s*(?:functions\.)?(?P<name>[^\s:<]+)(?::\d+)?\s*$")
_HEAD = re.compile(re.escape(CALL_BEGIN) + r"\s*(?P<id>(?:functions\.)?(?P<name>[^\s:<]+)(?::\d+)?)\s*"
                   + re.escape(ARGS_BEGIN) + r"\s*(?=\{)")


class KimiFormat(ToolFormat):
    name = "kimi"
    starts = (SECTION_BEGIN,)
    end = SECTION_END
    tokens = (CALL_BEGIN, ARGS_BEGIN, CALL_END)  # read as text, should a vocabulary make them control tokens
    call_head = _HEAD

    def parse(self, section: str) -> list[ParsedCall]:
        calls = []
        for chunk in section.split(CALL_BEGIN)[1:]:
            head, sep, rest = chunk.partition(ARGS_BEGIN)
            match = _ID.match(head)
            if not sep or match is None:
                raise ValueError("a Kimi tool call is functions.NAME:INDEX<|tool_call_argument_begin|>{...}")
            args, _, after = rest.partition(CALL_END)
            if after.strip():
                raise ValueError("text after a Kimi tool call")
            calls.append(ParsedCall(match["name"], arguments_text(json.loads(args)), head.strip()))
        if not calls:
            raise ValueError("no call")
        return calls

    def section_grammar(self, rules: gbnf.Rules, calls: dict[str, str], parallel: bool) -> str:
        alts = [f'{gbnf.literal(f"{CALL_BEGIN}functions.{name}:")} [0-9]{{1,3}} {gbnf.literal(ARGS_BEGIN)} {args} '
                f'{gbnf.literal(CALL_END)}' for name, args in calls.items()]
        one = rules.add("tool-call-kimi", " | ".join(alts))
        body = f"{one} ({one})*" if parallel else one
        return f"{gbnf.literal(SECTION_BEGIN)} {body} {gbnf.literal(SECTION_END)}"
