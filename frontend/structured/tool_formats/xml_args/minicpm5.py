"""MiniCPM5 (OpenBMB): each call a ``function`` element named by the function, each argument a
``param`` element named by its key; the template writes the calls a line apart, after the text::

    Let me check.
    <function name="get_weather"><param name="city">Paris</param><param name="days">3</param></function>
    <function name="note"><param name="text"><![CDATA[a <b> & c]]></param></function>

A string value is raw text, or a CDATA block where it holds ``<``, ``&`` or a new line (the
template's rule; the block's text is the value). Other values are typed by the function's schema
as Qwen's XML calls' are (``typed_args``), read as JSON or, as the template writes them with
``{{ value }}``, as Python literals (``True``, ``{'metric': True}``: ``literals``); a value that
reads as neither stays text. In a stream (``xml``) a string value goes out as it is written, one in
a CDATA block whole once the block closes (a block never closed is text up to ``</param>``, its
opener and all, as reading the call whole finds).

The grammar writes the parameters in the schema's order (the required ones present, the optional
ones skippable, no others): a string as text up to ``</param>`` or as a CDATA block (an ``enum``,
its alternatives), anything else as JSON, as llama.cpp's grammar does. Thinking is
``<think>...</think>``.
"""

from __future__ import annotations

import json
import re
from typing import Any

from frontend.structured import gbnf
from frontend.structured.tool_formats.base import ParsedCall
from frontend.structured.tool_formats.literals import literal_value
from frontend.structured.tool_formats.typed_args import SchemaBound, XmlSyntax, argument_rules, is_string

START = '<function name="'
END = "</function>"
VALUE_END = "</param>"
CDATA_START = "<![CDATA["
CDATA_END = "]]>"
_HEAD = re.compile(r'(?P<name>[^"<>]+)">')
_PARAM = re.compile(r'<param name="([^"]*)">(<!\[CDATA\[.*?\]\]>|.*?)</param>', re.S)


def _value(raw: str, schema: Any) -> Any:
    if raw.startswith(CDATA_START) and raw.endswith(CDATA_END):
        raw = raw[len(CDATA_START) : -len(CDATA_END)]
    if is_string(schema):
        return raw
    try:
        return literal_value(raw)
    except ValueError:
        return raw


class MiniCpm5Format(SchemaBound):
    name = "minicpm5"
    starts = (START,)
    end = END
    tokens = ("<function", "<param", VALUE_END)  # as llama.cpp preserves them, should they be control tokens
    xml = XmlSyntax(call_head=_HEAD, argument_head=re.compile(r'\s*<param name="(?P<key>[^"]*)">'), value_end=VALUE_END,
                    call_end=None, cdata=(CDATA_START, CDATA_END), typed=_value)

    def parse(self, section: str) -> list[ParsedCall]:
        head = _HEAD.match(section)
        if head is None or not head[1].strip():
            raise ValueError('a MiniCPM5 call is <function name="NAME">...</function>')
        name, body = head[1].strip(), section[head.end() :]
        if _PARAM.sub("", body).strip():
            raise ValueError("text between the parameters of a MiniCPM5 call")
        properties = self.schema(name).get("properties", {})
        args = {key.strip(): _value(raw, properties.get(key.strip(), {})) for key, raw in _PARAM.findall(body)}
        return [ParsedCall(name, json.dumps(args, ensure_ascii=False))]

    def section_grammar(self, rules: gbnf.Rules, calls: dict[str, str], parallel: bool) -> str:
        # ``calls`` holds JSON-object rules; this format writes the parameters one by one instead.
        cdata = gbnf.text_without(rules, CDATA_END, f"{self.name}-cdata")
        plain = gbnf.text_without(rules, VALUE_END, f"{self.name}-text")
        text = rules.add(f"{self.name}-string",
                         f"{gbnf.literal(CDATA_START)} {cdata} {gbnf.literal(CDATA_END)} | {plain}")
        alts = []
        for name in calls:
            params = []
            for key, value, required in argument_rules(rules, self.schema(name), text):
                head = gbnf.literal(f'<param name="{key}">')
                param = f"{head} ({value}) {gbnf.literal(VALUE_END)}"
                params.append(param if required else f"({param})?")
            alts.append(" ".join([gbnf.literal(f'{START}{name}">'), *params, gbnf.literal(END)]))
        return rules.add(f"tool-call-{self.name}", " | ".join(alts))
