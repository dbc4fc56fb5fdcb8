"""Apertus: one section of a JSON list of calls, each an object whose one key is the function's
name and whose value is the arguments::

    <|tools_prefix|>[{"get_weather": {"city": "Paris"}}, {"add": {"a": 1}}]<|tools_suffix|>
"""

from __future__ import annotations

import json
import re
from typing import Any

from frontend.structured import gbnf
from frontend.structured.tool_formats.base import ParsedCall, ToolFormat, arguments_text, json_list_calls, \
    json_list_grammar

START = "<|tools_prefix|>"
END = "<|tools_suffix|>"
_HEAD = re.compile(r'\{\s*(?P<name>"(?:[^"\\]|\\.)*")\s*:\s*(?=\{)')


class ApertusFormat(ToolFormat):
    name = "apertus"
    starts = (START,)
    end = END
    call_head = _HEAD

    def parse(self, section: str) -> list[ParsedCall]:
        return json_list_calls(section, _call)

    def section_grammar(self, rules: gbnf.Rules, calls: dict[str, str], parallel: bool) -> str:
        ws = rules.fixed("ws", '| " " | "\\n" [ \\t]{0,16}')
        alts = [f'"{{" {ws} {gbnf.literal(json.dumps(name))} {ws} ":" {ws} {args} {ws} "}}"'
                for name, args in calls.items()]
        return json_list_grammar(rules, START, END, rules.add("tool-call-apertus", " | ".join(alts)), parallel)


def _call(obj: Any) -> ParsedCall:
    if not isinstance(obj, dict) or len(obj) != 1:
        raise ValueError("an Apertus call is {NAME: ARGUMENTS}")
    [(name, args)] = obj.items()
    if not name:
        raise ValueError("a tool call needs a name")
    return ParsedCall(name, arguments_text(args))
