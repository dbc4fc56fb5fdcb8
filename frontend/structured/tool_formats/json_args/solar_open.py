"""Solar Open (Upstage): a reply is a run of assistant messages, each opened by
``<|begin|>assistant`` (the prompt's for the first) and its kind: ``<|think|>`` for the thinking
(frontend.structured.reasoning), ``<|content|>`` for text, ``<|tool_calls|>`` for calls, each an
id of 10 letters and digits, the function's name and its JSON arguments::

    <|think|>The user wants the weather.<|end|><|begin|>assistant<|tool_calls|><|tool_call:begin|>a1b2c3d4e5
    <|tool_call:name|>get_weather<|tool_call:args|>{"city": "Paris"}<|tool_call:end|><|calls|>

(one line in the output). The message framing (``<|begin|>assistant``, ``<|content|>``, the
``<|end|>`` after text, ``<|flush|>``) is dropped from the content, with tools or without
(``reader``); the calls run to the end of the reply, ``<|calls|>`` closing them. Each call keeps
the id the model wrote, which the template writes back with the call and its result. The
template shows a past turn's thinking from ``reasoning``.
"""

from __future__ import annotations

import json
import re

from frontend.structured import gbnf
from frontend.structured.tool_formats.base import ParsedCall, ToolFormat, arguments_text

ASSISTANT = "<|begin|>assistant"
CALLS = "<|tool_calls|>"
CALL_BEGIN = "<|tool_call:begin|>"
NAME = "<|tool_call:name|>"
ARGS = "<|tool_call:args|>"
CALL_END = "<|tool_call:end|>"
CALLS_END = "<|calls|>"
_HEAD = re.compile(re.escape(CALL_BEGIN) + r"(?P<id>[^<]*)" + re.escape(NAME) + r"(?P<name>[^<]*)" + re.escape(ARGS)
                   + r"\s*(?=\{)")


class SolarOpenFormat(ToolFormat):
    name = "solar-open"
    starts = (CALLS,)
    end = None
    skipped = (ASSISTANT, "<|content|>", "<|end|>", "<|flush|>")
    tokens = ("<|begin|>", "<|content|>", "<|end|>", "<|flush|>", CALL_BEGIN, NAME, ARGS, CALL_END, CALLS_END)
    reasoning_key = "reasoning"
    call_head = _HEAD

    def parse(self, section: str) -> list[ParsedCall]:
        calls = []
        for chunk in section.strip().removesuffix(CALLS_END).split(CALL_BEGIN)[1:]:
            call_id, sep, rest = chunk.partition(NAME)
            name, sep2, args = rest.partition(ARGS)
            body, sep3, after = args.partition(CALL_END)
            if not (sep and sep2 and sep3) or not name.strip() or after.strip():
                raise ValueError("a Solar Open call is ID, <|tool_call:name|>NAME, <|tool_call:args|>ARGS and its end")
            calls.append(ParsedCall(name.strip(), arguments_text(json.loads(body)), call_id.strip()))
        if not calls:
            raise ValueError("no call")
        return calls

    def section_grammar(self, rules: gbnf.Rules, calls: dict[str, str], parallel: bool) -> str:
        alts = [f'{gbnf.literal(CALL_BEGIN)} [a-z0-9]{{10}} {gbnf.literal(NAME + name + ARGS)} {args} '
                f'{gbnf.literal(CALL_END)}' for name, args in calls.items()]
        one = rules.add("tool-call-solar-open", " | ".join(alts))
        # The calls' message opener: after thinking or text, the model opens a new message
        return f'{gbnf.literal(ASSISTANT)}? {gbnf.literal(CALLS)} {one}{"+" if parallel else ""}'
