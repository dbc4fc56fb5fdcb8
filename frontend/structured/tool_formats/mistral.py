"""Mistral: ``[TOOL_CALLS][{"name", "arguments", "id"?}, ...]`` (v0.3 templates) or
``[TOOL_CALLS]name[ARGS]{...}`` repeated (Mistral Small 3.2, Magistral, Devstral)."""

from __future__ import annotations

import json

from frontend.structured import gbnf
from frontend.structured.tool_formats.base import ParsedCall, ToolFormat, arguments_text, call_from_object, \
    name_object_alternatives


class MistralFormat(ToolFormat):
    name = "mistral"
    starts = ("[TOOL_CALLS]",)
    end = None

    def __init__(self, args_marker: bool = False) -> None:
        self.args_marker = args_marker  # the newer name[ARGS]{...} form

    def parse(self, section: str) -> list[ParsedCall]:
        calls = []
        for part in section.split("[TOOL_CALLS]"):
            part = part.strip()
            if not part:
                continue
            if "[ARGS]" in part:
                name, _, args = part.partition("[ARGS]")
                if not name.strip():
                    raise ValueError("a tool call needs a name")
                calls.append(ParsedCall(name.strip(), arguments_text(json.loads(args))))
                continue
            value = json.loads(part)
            for obj in value if isinstance(value, list) else [value]:
                calls.append(call_from_object(obj))
        if not calls:
            raise ValueError("no call")
        return calls

    def section_grammar(self, rules: gbnf.Rules, calls: dict[str, str], parallel: bool) -> str:
        if self.args_marker:
            one = rules.add("tool-call-args", " | ".join(f'{gbnf.literal(n)} "[ARGS]" {a}' for n, a in calls.items()))
            return f'"[TOOL_CALLS]" {one} ("[TOOL_CALLS]" {one})*' if parallel else f'"[TOOL_CALLS]" {one}'
        call = name_object_alternatives(rules, calls, "arguments", "tool-call-json")
        more = f'(", " {call})*' if parallel else ""
        return f'"[TOOL_CALLS]" "[" {call} {more} "]"'
