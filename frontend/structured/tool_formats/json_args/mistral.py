"""Mistral: ``[TOOL_CALLS][{"name", "arguments", "id"?}, ...]`` (v0.3 templates) or
``[TOOL_CALLS]name[ARGS]{...}`` repeated (Mistral Small 3.2, Magistral, Devstral), with
``[CALL_ID]id`` before ``[ARGS]`` where the template writes one (Small 3.2). Mistral's templates
refuse a call id that is not 9 letters and digits, so calls get such ids."""

from __future__ import annotations

import json
import re
import secrets
import string

from frontend.structured import gbnf
from frontend.structured.tool_formats.base import ParsedCall, ToolFormat, arguments_text, call_from_object, \
    name_first_head, name_object_alternatives


_ID_CHARS = string.ascii_letters + string.digits
_ARGS_HEAD = re.compile(r"(?:\[TOOL_CALLS\])?\s*(?P<name>[^\[\]\s]+)(?:\[CALL_ID\](?P<id>[a-zA-Z0-9]+))?\[ARGS\](?=\{)")


class MistralFormat(ToolFormat):
    name = "mistral"
    starts = ("[TOOL_CALLS]",)
    end = None

    def __init__(self, args_marker: bool = False, call_ids: bool = False) -> None:
        self.args_marker = args_marker  # the newer name[ARGS]{...} form
        self.call_ids = call_ids  # name[CALL_ID]id[ARGS]{...}
        self.call_head = _ARGS_HEAD if args_marker else name_first_head("arguments")

    def new_call_id(self) -> str:
        return "".join(secrets.choice(_ID_CHARS) for _ in range(9))

    def parse(self, section: str) -> list[ParsedCall]:
        calls = []
        for part in section.split("[TOOL_CALLS]"):
            part = part.strip()
            if not part:
                continue
            if "[ARGS]" in part:
                head, _, args = part.partition("[ARGS]")
                name, _, call_id = head.partition("[CALL_ID]")
                if not name.strip():
                    raise ValueError("a tool call needs a name")
                calls.append(ParsedCall(name.strip(), arguments_text(json.loads(args)), call_id.strip()))
                continue
            value = json.loads(part)
            for obj in value if isinstance(value, list) else [value]:
                call = call_from_object(obj)
                given = obj.get("id")
                calls.append(ParsedCall(call.name, call.arguments, given) if isinstance(given, str) else call)
        if not calls:
            raise ValueError("no call")
        return calls

    def section_grammar(self, rules: gbnf.Rules, calls: dict[str, str], parallel: bool) -> str:
        if self.args_marker:
            call_id = ' "[CALL_ID]" [a-zA-Z0-9]{9}' if self.call_ids else ""
            one = rules.add("tool-call-args", " | ".join(f'{gbnf.literal(n)}{call_id} "[ARGS]" {a}'
                                                         for n, a in calls.items()))
            return f'"[TOOL_CALLS]" {one} ("[TOOL_CALLS]" {one})*' if parallel else f'"[TOOL_CALLS]" {one}'
        call = name_object_alternatives(rules, calls, "arguments", "tool-call-json")
        more = f'(", " {call})*' if parallel else ""
        return f'"[TOOL_CALLS]" "[" {call} {more} "]"'
