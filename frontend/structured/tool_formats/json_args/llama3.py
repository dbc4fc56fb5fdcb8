"""Llama 3.1-3.3: a bare ``{"name": ..., "parameters": {...}}`` as the whole reply, or after
``<|python_tag|>``; several calls may be separated by ``;``."""

from __future__ import annotations

import json

from frontend.structured import gbnf
from frontend.structured.tool_formats.base import ParsedCall, ToolFormat, call_from_object, \
    name_object_alternatives


class Llama3Format(ToolFormat):
    name = "llama3"
    starts = ("<|python_tag|>", "{")
    end = None
    at_output_start_only = True
    keep_start = True

    def parse(self, section: str) -> list[ParsedCall]:
        text = section.removeprefix("<|python_tag|>").strip()
        decoder = json.JSONDecoder()
        calls, pos = [], 0
        while pos < len(text):
            obj, pos = decoder.raw_decode(text, pos)
            calls.append(call_from_object(obj))
            while pos < len(text) and text[pos] in " \n\t;":
                pos += 1
        if not calls:
            raise ValueError("no call")
        return calls

    def section_grammar(self, rules: gbnf.Rules, calls: dict[str, str], parallel: bool) -> str:
        call = name_object_alternatives(rules, calls, "parameters", "tool-call-json")
        return f'{call} ("; " {call})*' if parallel else call
