"""Functionary v3.2 (MeetKai): a reply is a run of messages, each after ``>>>`` and its
recipient: ``all`` for text to the user, else the function called, a new line and the
arguments' JSON::

    >>>all
    Let me check.>>>get_weather
    {"city": "Paris"}>>>add
    {"a": 1}

The generation prompt ends with ``>>>`` (the format's ``lead``), so the output begins with a
recipient. ``>>>all\\n`` is dropped from the content; a call section opens at ``>>>NAME\\n`` for one
of the request's functions (``bind`` gives the openers) and holds the calls up to the end of the
output (text to ``all`` after a call is no call: the section comes back as content). The template
concatenates past calls' arguments as text (``string_arguments``).

The grammar: with tool_choice auto, text to ``all`` that may end in calls, or calls; forced, calls
from the first token; a response format's JSON goes to ``all``.
"""

from __future__ import annotations

import json
import re
from typing import Any

from frontend.structured import gbnf
from frontend.structured.tool_formats.base import ParsedCall, ToolFormat, arguments_text, skip_space

LEAD = ">>>"
CONTENT = ">>>all\n"
NL = "\n"
_HEAD = re.compile(r">>>(?!all\n)(?P<name>[^\n>]+)\n\s*(?=\{)")  # (">>>all": text, not a call)


class FunctionaryFormat(ToolFormat):
    name = "functionary-v3.2"
    end = None
    keep_start = True
    lead = LEAD
    skipped = (CONTENT,)
    string_arguments = True
    call_head = _HEAD

    def __init__(self, functions: list[dict[str, Any]] | None = None) -> None:
        self.starts = tuple(f"{LEAD}{f['name']}\n" for f in functions or () if f["name"] != "all")

    def bind(self, functions: list[dict[str, Any]]) -> FunctionaryFormat:
        return FunctionaryFormat(functions)

    def parse(self, section: str) -> list[ParsedCall]:
        decoder = json.JSONDecoder()
        calls, pos = [], 0
        while pos < len(section):
            if not section.startswith(LEAD, pos):
                raise ValueError(f"no >>> at {pos} in Functionary calls")
            newline = section.find("\n", pos)
            name = section[pos + len(LEAD) : newline].strip() if newline >= 0 else ""
            if not name or name == "all":
                raise ValueError("a Functionary call is >>>NAME and a new line")
            args, pos = decoder.raw_decode(section, skip_space(section, newline + 1))
            calls.append(ParsedCall(name, arguments_text(args)))
            pos = skip_space(section, pos)
        if not calls:
            raise ValueError("no call")
        return calls

    def section_grammar(self, rules: gbnf.Rules, calls: dict[str, str], parallel: bool) -> str:
        # The first call's ">>>" is the prompt's (or the text's, in free_grammar).
        one = rules.add("tool-call-functionary", " | ".join(f"{gbnf.literal(name + NL)} {args}"
                                                            for name, args in calls.items()))
        return f'{one} ({gbnf.literal(LEAD)} {one})*' if parallel else one

    def free_grammar(self, rules: gbnf.Rules, section: str) -> str:
        text = gbnf.text_without(rules, LEAD)
        return f'"all\\n" {text} ({gbnf.literal(LEAD)} {section})? | {section}'

    def answer_grammar(self, answer: str) -> str:
        return f'"all\\n" {answer}'
