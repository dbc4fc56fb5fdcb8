"""GigaChat 3 and 3.1: one call a turn, a JSON ``{"name", "arguments"}`` object after the text, up
to the end of the reply. GigaChat 3 writes it as a message of its own, in the ``function call``
role::

    Let me check.<|message_sep|>

    function call<|role_sep|>
    {"name": "get_weather", "arguments": {"city": "Paris"}}

GigaChat 3.1 after ``<|function_call|>``::

    Let me check.<|function_call|>{"name": "get_weather", "arguments": {"city": "Paris"}}

Their templates show a turn's first call only, so a reply makes one (``parallel`` changes nothing).
The call object is Hermes' (so it reads and streams as Hermes' does).
"""

from __future__ import annotations

import re

from frontend.structured import gbnf
from frontend.structured.tool_formats.base import name_object_alternatives
from frontend.structured.tool_formats.json_args.hermes import HermesFormat

V3_OPENER = "<|message_sep|>\n\nfunction call<|role_sep|>\n"
V3_1_OPENER = "<|function_call|>"


class GigaChatFormat(HermesFormat):
    name = "gigachat"
    end = None

    def __init__(self, opener: str = V3_1_OPENER) -> None:
        self.starts = (opener,)
        # The control tokens in GigaChat 3's opener, read as text so the opener can be seen whole
        self.tokens = tuple(re.findall(r"<\|[a-z_]+\|>", opener))

    def section_grammar(self, rules: gbnf.Rules, calls: dict[str, str], parallel: bool) -> str:
        return f'{gbnf.literal(self.starts[0])} {name_object_alternatives(rules, calls, "arguments", "tool-call-json")}'
