"""GLM 4.5 / 4.6 / 4.7 (and templates that copy them): a call is the function's name, then each
argument as a key and a value, in a Hermes-style section::

    <tool_call>get_weather
    <arg_key>city</arg_key>
    <arg_value>Paris</arg_value>
    </tool_call>

(GLM 4.7 writes no new lines.) A value is raw text where the function's schema says string,
else JSON, as the template writes them (``tojson`` for all but strings), typed as Qwen's XML
calls type them (``typed_args``).
"""

from __future__ import annotations

import re

from frontend.structured import gbnf
from frontend.structured.tool_formats.base import ParsedCall
from frontend.structured.tool_formats.typed_args import SchemaBound, XmlSyntax, argument_rules

_ARGUMENT = re.compile(r"<arg_key>(.*?)</arg_key>\s*<arg_value>(.*?)</arg_value>", re.S)
VALUE_END = "</arg_value>"
_SYNTAX = XmlSyntax(call_head=re.compile(r"\s*(?P<name>[^\s<]+)\s*(?=<arg_key>)"),
                    argument_head=re.compile(r"\s*<arg_key>(?P<key>.*?)</arg_key>\s*<arg_value>", re.S),
                    value_end=VALUE_END, call_end=None)


class GlmFormat(SchemaBound):
    name = "glm"
    starts = ("<tool_call>",)
    end = "</tool_call>"
    xml = _SYNTAX

    def parse(self, section: str) -> list[ParsedCall]:
        name, _, body = section.partition("<arg_key>")
        name = name.strip()
        if not name or "<" in name:
            raise ValueError("a GLM call starts with its function's name")
        body = "<arg_key>" + body if body else ""
        if _ARGUMENT.sub("", body).strip():
            raise ValueError("text between the arguments of a GLM call")
        return [ParsedCall(name, self.typed_arguments(name, _ARGUMENT.findall(body)))]

    def section_grammar(self, rules: gbnf.Rules, calls: dict[str, str], parallel: bool) -> str:
        # ``calls`` holds JSON-object rules; this format writes the arguments one by one instead.
        text = gbnf.text_without(rules, VALUE_END, "glm-text")
        alts = []
        for name in calls:
            arguments = []
            for key, value, required in argument_rules(rules, self.schema(name), text):
                argument = (f'{gbnf.literal(f"<arg_key>{key}</arg_key>")} "\\n"? "<arg_value>" ({value}) '
                            f'{gbnf.literal(VALUE_END)} "\\n"?')
                arguments.append(argument if required else f"({argument})?")
            alts.append(" ".join([gbnf.literal(name), '"\\n"?', *arguments]))
        one = rules.add("tool-call-glm", " | ".join(alts))
        return f'"<tool_call>" {one} "</tool_call>"'
