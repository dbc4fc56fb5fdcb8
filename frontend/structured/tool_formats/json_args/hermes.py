"""Hermes / Qwen 2.5-3 (and ggserve's generic format): ``<tool_call>{"name", "arguments"}</tool_call>``."""

from __future__ import annotations

from frontend.structured import gbnf
from frontend.structured.tool_formats.base import ParsedCall, ToolFormat, call_from_object, json_value, \
    name_first_head, name_object_alternatives


class HermesFormat(ToolFormat):
    name = "hermes"
    starts = ("<tool_call>",)
    end = "</tool_call>"
    call_head = name_first_head("arguments")

    def parse(self, section: str) -> list[ParsedCall]:
        return [call_from_object(json_value(section.strip()))]

    def section_grammar(self, rules: gbnf.Rules, calls: dict[str, str], parallel: bool) -> str:
        call = name_object_alternatives(rules, calls, "arguments", "tool-call-json")
        return f'"<tool_call>" "\\n"? {call} "\\n"? "</tool_call>"'
