"""Hermes / Qwen 2.5-3 (and ggserve's generic format): ``<tool_call>{"name", "arguments"}</tool_call>``."""

from __future__ import annotations

import json
import re

from frontend.structured import gbnf
from frontend.structured.tool_formats.base import ParsedCall, ToolFormat, call_from_object, json_value, \
    name_object_alternatives


# The head of a call written name first (as the tool grammar makes it), up to its arguments' "{".
_HEAD = re.compile(r'\s*\{\s*"name"\s*:\s*("(?:[^"\\]|\\.)*")\s*,\s*"arguments"\s*:\s*(?=\{)')


class HermesFormat(ToolFormat):
    name = "hermes"
    starts = ("<tool_call>",)
    end = "</tool_call>"

    def parse(self, section: str) -> list[ParsedCall]:
        return [call_from_object(json_value(section.strip()))]

    def args_start(self, section: str) -> tuple[str, int] | None:
        head = _HEAD.match(section)
        if head is None:
            return None
        name = json.loads(head[1])
        return (name, head.end()) if name else None

    def section_grammar(self, rules: gbnf.Rules, calls: dict[str, str], parallel: bool) -> str:
        call = name_object_alternatives(rules, calls, "arguments", "tool-call-json")
        return f'"<tool_call>" "\\n"? {call} "\\n"? "</tool_call>"'
