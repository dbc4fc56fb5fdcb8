"""Formats whose call section is one JSON list of ``{"name": ..., "arguments": {...}}`` objects
after an opener, and before a closer where the format has one.

Granite 3.3: the list after ``<|tool_call|>``, up to the end of the reply::

    <|tool_call|>[{"name": "get_weather", "arguments": {"city": "Paris"}}, {"name": "add", "arguments": {"a": 1}}]

Its template shows no past calls (only a turn's text), so they are written after the turn's
text in this syntax (``write_calls``). Asked to think, it writes ``<think>...</think>``, then its
answer between ``<response>`` and ``</response>``: framing, dropped from the content (tools or
not: ``reader``), as llama.cpp's analysis of the template reads it.

Apriel 1.5 and 1.6 (ServiceNow): the list between ``<tool_calls>`` and ``</tool_calls>``, after the
answer's text (1.6 thinks first, up to ``[BEGIN FINAL RESPONSE]``: frontend.structured.reasoning)::

    Let me check.
    <tool_calls>[{"name": "get_weather", "arguments": {"city": "Paris"}}]</tool_calls>

Their templates write each past call's ``id`` in the objects too (read and dropped here).

FireFunction v2 (Fireworks, on Llama 3): the list after `` functools``, up to the end of the reply::

    Let me check. functools[{"name": "get_weather", "arguments": {"city": "Paris"}}]
"""

from __future__ import annotations

import json
from typing import Any

from frontend.structured import gbnf
from frontend.structured.tool_formats.base import ParsedCall, ToolFormat, call_from_object, json_list_calls, \
    json_list_grammar, name_first_head, name_object_alternatives


class JsonListFormat(ToolFormat):
    """A section of a JSON list of call objects between ``starts[0]`` and ``end`` (if any)."""

    call_head = name_first_head("arguments")

    def parse(self, section: str) -> list[ParsedCall]:
        return json_list_calls(section, call_from_object)

    def section_grammar(self, rules: gbnf.Rules, calls: dict[str, str], parallel: bool) -> str:
        one = name_object_alternatives(rules, calls, "arguments", "tool-call-json")
        return json_list_grammar(rules, self.starts[0], self.end or "", one, parallel)

    def write_calls(self, calls: list[tuple[str, dict[str, Any]]]) -> str:
        """(Written only into the turns of a template that shows no past calls: Granite 3.3's.)"""
        objects = ", ".join(json.dumps({"name": name, "arguments": args}, ensure_ascii=False) for name, args in calls)
        return f"{self.starts[0]}[{objects}]{self.end or ''}"


class GraniteFormat(JsonListFormat):
    name = "granite"
    starts = ("<|tool_call|>",)
    end = None
    skipped = ("<response>", "</response>")


class AprielFormat(JsonListFormat):
    name = "apriel"
    starts = ("<tool_calls>",)
    end = "</tool_calls>"


class FireFunctionFormat(JsonListFormat):
    name = "firefunction-v2"
    starts = (" functools", "functools")  # the template writes the space; a reply may open with the word
    end = None
