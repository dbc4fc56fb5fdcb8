"""gpt-oss (OpenAI Harmony): a call is a message on the commentary channel addressed to the
function, ``<|channel|>commentary to=functions.NAME <|constrain|>json<|message|>{ARGS}<|call|>``
(the recipient may also follow the role: ``<|start|>assistant to=functions.NAME<|channel|>
commentary json<|message|>...``). ``<|call|>`` ends the output (an end-of-generation token), so a
section runs to the end. frontend.structured.harmony reads whole replies; this class gives the
grammar and reads one call's header and arguments."""

from __future__ import annotations

import json
import re

from frontend.structured import gbnf
from frontend.structured.tool_formats.base import ParsedCall, ToolFormat, arguments_text

START = "<|start|>"
CHANNEL = "<|channel|>"
MESSAGE = "<|message|>"
END = "<|end|>"
CALL = "<|call|>"
RETURN = "<|return|>"
CONSTRAIN = "<|constrain|>"
FUNCTIONS = "functions."
# The control tokens of the format, rendered as text so the parser can see them.
MARKERS = (START, CHANNEL, MESSAGE, END, CALL, RETURN, CONSTRAIN)

_RECIPIENT = re.compile(r"\bto=([^\s<]+)")


def recipient(header: str) -> str | None:
    """The ``to=`` of a message header (``functions.get_weather``), if any."""
    match = _RECIPIENT.search(header)
    return match[1] if match else None


class HarmonyFormat(ToolFormat):
    name = "harmony"
    starts = (CHANNEL + "commentary to=" + FUNCTIONS,)
    end = None
    reasoning_key = "thinking"  # gpt-oss's template

    def parse(self, section: str) -> list[ParsedCall]:
        """``NAME <|constrain|>json<|message|>ARGS`` (the text after the opener)."""
        header, sep, body = section.partition(MESSAGE)
        name = header.split(CONSTRAIN)[0].split()[0] if header.strip() else ""
        if not sep or not name:
            raise ValueError("a Harmony call needs a function name and <|message|>")
        return [call(name, body)]

    def section_grammar(self, rules: gbnf.Rules, calls: dict[str, str], parallel: bool) -> str:
        # One call per turn: <|call|> ends the output, so ``parallel`` changes nothing.
        alts = [f'{gbnf.literal(self.starts[0] + name + " " + CONSTRAIN + "json" + MESSAGE)} {args}'
                for name, args in calls.items()]
        one = rules.add("tool-call-harmony", " | ".join(alts))
        return f"{_analysis(rules)}? {one}"


def final_message(rules: gbnf.Rules, value: str) -> str:
    """A reply whose answer (the final channel) is ``value``: a response format for gpt-oss, which
    keeps its way of answering (thinking first) instead of writing the JSON from the first token."""
    return f"{_analysis(rules)}? {gbnf.literal(CHANNEL + 'final' + MESSAGE)} {value}"


def _analysis(rules: gbnf.Rules) -> str:
    """An analysis message and the next message's start: gpt-oss thinks before it answers."""
    thinking = gbnf.text_without(rules, END, "harmony-analysis-text")
    opener, closer = gbnf.literal(CHANNEL + "analysis" + MESSAGE), gbnf.literal(END + START + "assistant")
    return rules.add("harmony-analysis", f"{opener} {thinking} {closer}")


def call(name: str, body: str) -> ParsedCall:
    """A call to ``name`` (``functions.`` prefix optional) with JSON arguments ``body``."""
    name = name.removeprefix(FUNCTIONS)
    if not name:
        raise ValueError("a tool call needs a name")
    return ParsedCall(name, arguments_text(json.loads(body.removesuffix(CALL))))
