"""Llama 3.1-3.3: a bare ``{"name": ..., "parameters": {...}}`` as the whole reply, or after
``<|python_tag|>``; several calls may be separated by ``;``."""

from __future__ import annotations

from frontend.structured import gbnf
from frontend.structured.tool_formats.base import ParsedCall, ToolFormat, name_first_head, \
    name_object_alternatives, object_run


class Llama3Format(ToolFormat):
    name = "llama3"
    starts = ("<|python_tag|>", "{")
    end = None
    at_output_start_only = True
    keep_start = True
    call_head = name_first_head("parameters")

    def parse(self, section: str) -> list[ParsedCall]:
        return object_run(section.removeprefix("<|python_tag|>"), gaps=" \n\t;")

    def section_grammar(self, rules: gbnf.Rules, calls: dict[str, str], parallel: bool) -> str:
        call = name_object_alternatives(rules, calls, "parameters", "tool-call-json")
        return f'{call} ("; " {call})*' if parallel else call
