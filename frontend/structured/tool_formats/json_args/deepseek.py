"""DeepSeek R1 / V3: ``<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME
```json ARGS```<｜tool▁call▁end｜>...<｜tool▁calls▁end｜>``; V3.1 drops ``function`` and the fence:
``<｜tool▁call▁begin｜>NAME<｜tool▁sep｜>ARGS<｜tool▁call▁end｜>``."""

from __future__ import annotations

import json
import re

from frontend.structured import gbnf
from frontend.structured.tool_formats.base import ParsedCall, ToolFormat, arguments_text

CALLS_BEGIN = "<｜tool▁calls▁begin｜>"
CALLS_END = "<｜tool▁calls▁end｜>"
CALL_BEGIN = "<｜tool▁call▁begin｜>"
CALL_END = "<｜tool▁call▁end｜>"
SEP = "<｜tool▁sep｜>"
_HEADS = {  # (fenced) -> call_head
    True: re.compile(re.escape(CALL_BEGIN + "function" + SEP) + r"(?P<name>[^\n]+?)\s*\n```(?:json)?\s*(?=\{)"),
    False: re.compile(re.escape(CALL_BEGIN) + r"(?P<name>[^<\n]+?)" + re.escape(SEP) + r"\s*(?=\{)"),
}
_FENCED = re.compile(r"(?:function)?\s*(?P<name>[^\n]+?)\s*\n```(?:json)?\s*(?P<args>.*?)\s*```\s*$", re.S)


class DeepSeekFormat(ToolFormat):
    name = "deepseek"
    starts = (CALLS_BEGIN,)
    end = CALLS_END
    tokens = (CALL_BEGIN, CALL_END, SEP)  # read as text, should a model's vocabulary make them control tokens

    def __init__(self, fenced: bool = True) -> None:
        self.fenced = fenced
        self.call_head = _HEADS[fenced]

    def parse(self, section: str) -> list[ParsedCall]:
        calls = []
        for chunk in section.split(CALL_BEGIN)[1:]:
            body = chunk.split(CALL_END)[0]
            head, sep, rest = body.partition(SEP)
            if not sep:
                raise ValueError("a DeepSeek tool call needs <｜tool▁sep｜>")
            match = _FENCED.match(rest) if "```" in rest else None
            if match:  # R1 / V3: "function" before the separator, the name and fenced JSON after it
                calls.append(ParsedCall(match["name"].strip(), arguments_text(json.loads(match["args"]))))
            else:  # V3.1: name before the separator, plain JSON after it
                calls.append(ParsedCall(head.strip(), arguments_text(json.loads(rest))))
        if not calls:
            raise ValueError("no call")
        return calls

    def section_grammar(self, rules: gbnf.Rules, calls: dict[str, str], parallel: bool) -> str:
        if self.fenced:
            alts = [f'{gbnf.literal(CALL_BEGIN + "function" + SEP + name)} "\\n```json\\n" {args} "\\n```" '
                    f'{gbnf.literal(CALL_END)}' for name, args in calls.items()]
        else:
            alts = [f'{gbnf.literal(CALL_BEGIN + name + SEP)} {args} {gbnf.literal(CALL_END)}'
                    for name, args in calls.items()]
        one = rules.add("tool-call-deepseek", " | ".join(alts))
        body = f'{one} ("\\n"? {one})*' if parallel else one
        return f'{gbnf.literal(CALLS_BEGIN)} {body} {gbnf.literal(CALLS_END)}'
