"""Muse Glimmer: a reply is a run of messages, each ``<|start|>assistant to=RECIPIENT<|message|>``
(the prompt's ``<|start|>assistant`` for the first) and its text, ended by ``<|eom|>`` when more
follow: to ``self`` the thinking (frontend.structured.reasoning), to ``user`` the answer, to a
function a call, in ATEM's invoke elements (``invoke_xml`` with an ``atem:`` prefix)::

     to=self<|message|>The user wants the weather.<|eom|><|start|>assistant to=get_weather<|message|>
    <atem:function_calls>
    <atem:invoke name="get_weather">
    <atem:parameter name="city">Paris</atem:parameter>
    </atem:invoke>
    </atem:function_calls>

(no new line after ``<|message|>`` in the output). A call opens at `` to=NAME<|message|>`` for one
of the request's functions (``bind`` gives the openers) and runs, with the calls after it, to the
end of the reply; invoke markup in the answer or the thinking is text, as llama.cpp reads it. The
answer's framing is dropped from the content, with tools or without (``reader``).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from frontend.structured import gbnf
from frontend.structured.tool_formats.base import ParsedCall
from frontend.structured.tool_formats.xml_args.invoke_xml import NL, InvokeXmlFormat

ASSISTANT = "<|start|>assistant"
MESSAGE = "<|message|>"
MORE = "<|eom|>"
END = "<|eot|>"
CALLS_OPEN = "<atem:function_calls>"
CALLS_CLOSE = "</atem:function_calls>"
ANSWER = " to=user" + MESSAGE
THINKING = " to=self" + MESSAGE
# Where a call ends and the next call's message begins (whatever its recipient says).
_NEXT = re.compile(r"<\|eom\|><\|start\|>assistant to=[^<]*<\|message\|>")
# Up to a call's first argument, from the section's start or the previous call's end: the next
# message and its block where one begins there (so that the arguments stream).
_CALL_HEAD = re.compile(r"(?:(?:\s*</atem:function_calls>" + _NEXT.pattern + r")?\s*<atem:function_calls>)?"
                        r'\s*<atem:invoke name="(?P<name>[^"]*)">')


class MuseGlimmerFormat(InvokeXmlFormat):
    name = "muse-glimmer"
    prefix = "atem:"
    block = "function_calls"
    # The framing of the answer, dropped from the content (its recipient may be left out; the turn's
    # end, should it come as text)
    skipped = (ASSISTANT, ANSWER, MESSAGE, MORE, END)
    tokens = ("<|start|>", MESSAGE, MORE)

    def __init__(self, functions: list[dict[str, Any]] | None = None) -> None:
        super().__init__(functions)
        self.starts = tuple(f" to={f['name']}{MESSAGE}" for f in functions or () if f["name"] not in ("self", "user"))
        self.end = None
        assert self.xml is not None
        self.xml = dataclasses.replace(self.xml, call_head=_CALL_HEAD)

    def parse(self, section: str) -> list[ParsedCall]:
        calls = []
        for message in _NEXT.split(section.strip().removesuffix(END).removesuffix(MORE)):
            message = message.strip()
            if not message.startswith(CALLS_OPEN) or not message.endswith(CALLS_CLOSE):
                raise ValueError("a Muse Glimmer call message holds one <atem:function_calls> block")
            calls.extend(super().parse(message[len(CALLS_OPEN) : -len(CALLS_CLOSE)]))
        return calls

    def section_grammar(self, rules: gbnf.Rules, calls: dict[str, str], parallel: bool) -> str:
        alts = [f"{gbnf.literal(f' to={name}{MESSAGE}{CALLS_OPEN}{NL}')} {invoke} {gbnf.literal(CALLS_CLOSE)}"
                for name, invoke in self.invokes(rules, calls).items()]
        one = rules.add(f"tool-call-{self.name}", " | ".join(alts))
        body = f"{one} ({gbnf.literal(MORE + ASSISTANT)} {one})*" if parallel else one
        return f"{gbnf.literal(ASSISTANT)}? {body}"  # (a new message after the thinking or the answer)

    def free_grammar(self, rules: gbnf.Rules, section: str) -> str:
        text = gbnf.text_without(rules, (MORE, *self.starts), "muse-text")  # (a call opener there would open one)
        thinking = f"{gbnf.literal(THINKING)} {text} {gbnf.literal(MORE + ASSISTANT)}"
        answer = f"{gbnf.literal(ANSWER)} {text}"
        return f"({thinking})* ({answer} ({gbnf.literal(MORE)} {section})? | {section})"

    def answer_grammar(self, answer: str) -> str:
        return f"{gbnf.literal(ASSISTANT)}? {gbnf.literal(ANSWER)} {answer}"
