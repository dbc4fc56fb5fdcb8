"""Qwen3-Coder, Qwen3.5, Nemotron Nano 3 (XML calls in a Hermes section), and Seed-OSS (the same in
``<seed:tool_call>``)::

    <tool_call>
    <function=get_weather>
    <parameter=city>
    Paris
    </parameter>
    </function>
    </tool_call>

A parameter's value is raw text; it is a string when the function's schema says so, else JSON
(numbers, booleans, objects), as Qwen's own parser reads it (``typed_args``). In the grammar a
string value is any text up to the closing tag (an ``enum`` is its alternatives); other
constraints on strings (pattern, length) are not enforced in this format, since the value is not
a JSON string here.
"""

from __future__ import annotations

import re

from frontend.structured import gbnf
from frontend.structured.tool_formats.base import ParsedCall
from frontend.structured.tool_formats.typed_args import SchemaBound, XmlSyntax, argument_rules

_FUNCTION = re.compile(r"\s*<function=([^>\n]+)>(.*?)</function>", re.S)
_PARAMETER = re.compile(r"<parameter=([^>\n]+)>\n?(.*?)\n?</parameter>", re.S)
NL = "\n"
_SYNTAX = XmlSyntax(call_head=re.compile(r"\s*<function=(?P<name>[^>\n]+)>"),
                    # the new line after the tag is not the value's: wait for the character after it
                    argument_head=re.compile(r"\s*<parameter=(?P<key>[^>\n]+)>(?:\n|(?=.))", re.S),
                    value_end="</parameter>", call_end=re.compile(r"\s*</function>"), strip_nl=True)


class QwenXmlFormat(SchemaBound):
    name = "qwen-xml"
    starts = ("<tool_call>",)
    end = "</tool_call>"
    value_nl = NL  # around each value (Seed-OSS writes none)
    xml = _SYNTAX

    def parse(self, section: str) -> list[ParsedCall]:
        match = _FUNCTION.match(section)
        if match is None or section[match.end():].strip():
            raise ValueError("a Qwen XML call is one <function=NAME>...</function>")
        name, body = match[1].strip(), match[2]
        if _PARAMETER.sub("", body).strip():
            raise ValueError("text between the parameters of a Qwen XML call")
        return [ParsedCall(name, self.typed_arguments(name, _PARAMETER.findall(body)))]

    def section_grammar(self, rules: gbnf.Rules, calls: dict[str, str], parallel: bool) -> str:
        # ``calls`` holds JSON-object rules; this format writes the parameters one by one instead.
        value_end = self.value_nl + "</parameter>"
        text = gbnf.text_without(rules, value_end, "xml-text")
        alts = []
        for name in calls:
            params = []
            for key, value, required in argument_rules(rules, self.schema(name), text):
                param = (f"{gbnf.literal(f'<parameter={key}>' + self.value_nl)} ({value}) "
                         f"{gbnf.literal(value_end + NL)}")
                params.append(param if required else f"({param})?")
            alts.append(" ".join([gbnf.literal(f"<function={name}>" + NL), *params, gbnf.literal("</function>" + NL)]))
        one = rules.add(f"tool-call-{self.name}", " | ".join(alts))
        return f"{gbnf.literal(self.starts[0] + NL)} {one} {gbnf.literal(self.end)}"


class SeedXmlFormat(QwenXmlFormat):
    """ByteDance Seed-OSS: the same calls in ``<seed:tool_call>`` sections, values without new
    lines around them."""

    name = "seed-xml"
    starts = ("<seed:tool_call>",)
    end = "</seed:tool_call>"
    value_nl = ""

