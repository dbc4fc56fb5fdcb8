"""MiniMax M2: each call an ``invoke`` in a ``<minimax:tool_call>`` section (``invoke_xml``)::

    <minimax:tool_call>
    <invoke name="get_weather">
    <parameter name="city">Paris</parameter>
    <parameter name="days">3</parameter>
    </invoke>
    </minimax:tool_call>

MiniMax M1: one JSON object a line in a ``<tool_calls>`` section::

    <tool_calls>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_calls>

Both think in ``<think>...</think>`` (M2's prompt opens it).
"""

from __future__ import annotations

from frontend.structured import gbnf
from frontend.structured.tool_formats.base import ParsedCall, ToolFormat, name_first_head, name_object_alternatives, \
    object_run
from frontend.structured.tool_formats.xml_args.invoke_xml import InvokeXmlFormat

M2_START = "<minimax:tool_call>"
M1_START = "<tool_calls>"


class MiniMaxM2Format(InvokeXmlFormat):
    name = "minimax-m2"
    block = "minimax:tool_call"


class MiniMaxM1Format(ToolFormat):
    name = "minimax-m1"
    starts = (M1_START,)
    end = "</tool_calls>"
    call_head = name_first_head("arguments")

    def parse(self, section: str) -> list[ParsedCall]:
        return object_run(section)

    def section_grammar(self, rules: gbnf.Rules, calls: dict[str, str], parallel: bool) -> str:
        call = name_object_alternatives(rules, calls, "arguments", "tool-call-json")
        body = f'{call} "\\n" ({call} "\\n")*' if parallel else f'{call} "\\n"'
        opener = gbnf.literal(M1_START + "\n")
        return f"{opener} {body} {gbnf.literal(self.end)}"
