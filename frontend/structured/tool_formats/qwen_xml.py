"""Qwen3-Coder, Qwen3.5, Nemotron Nano 3 (XML calls in a Hermes section)::

    <tool_call>
    <function=get_weather>
    <parameter=city>
    Paris
    </parameter>
    </function>
    </tool_call>

A parameter's value is raw text; it is a string when the function's schema says so, else JSON
(numbers, booleans, objects), as Qwen's own parser reads it. So this format needs the
functions' schemas (``bind``). In the grammar a string value is any text up to the closing tag
(an ``enum`` is its alternatives); other constraints on strings (pattern, length) are not
enforced in this format, since the value is not a JSON string here.
"""

from __future__ import annotations

import json
import re
from typing import Any

from frontend.structured import gbnf
from frontend.structured.json_schema import subschema_rule
from frontend.structured.tool_formats.base import ParsedCall, ToolFormat

_FUNCTION = re.compile(r"\s*<function=([^>\n]+)>(.*?)</function>", re.S)
_PARAMETER = re.compile(r"<parameter=([^>\n]+)>\n?(.*?)\n?</parameter>", re.S)
NL = "\n"
VALUE_END = NL + "</parameter>"


class QwenXmlFormat(ToolFormat):
    name = "qwen-xml"
    starts = ("<tool_call>",)
    end = "</tool_call>"

    def __init__(self, functions: list[dict[str, Any]] | None = None) -> None:
        self._params = {f["name"]: f.get("parameters") or {} for f in functions or []}

    def bind(self, functions: list[dict[str, Any]]) -> QwenXmlFormat:
        return QwenXmlFormat(functions)

    def parse(self, section: str) -> list[ParsedCall]:
        match = _FUNCTION.match(section)
        if match is None or section[match.end():].strip():
            raise ValueError("a Qwen XML call is one <function=NAME>...</function>")
        name, body = match[1].strip(), match[2]
        properties = self._params.get(name, {}).get("properties", {})
        args = {key.strip(): typed_value(value, properties.get(key.strip(), {}))
                for key, value in _PARAMETER.findall(body)}
        if _PARAMETER.sub("", body).strip():
            raise ValueError("text between the parameters of a Qwen XML call")
        return [ParsedCall(name, json.dumps(args, ensure_ascii=False))]

    def section_grammar(self, rules: gbnf.Rules, calls: dict[str, str], parallel: bool) -> str:
        # ``calls`` holds JSON-object rules; this format writes the parameters one by one instead.
        text = gbnf.text_without(rules, VALUE_END, "xml-text")
        alts = []
        for name in calls:
            schema = self._params.get(name, {})
            required = set(schema.get("required", ()))
            params = []
            for key, sub in schema.get("properties", {}).items():
                if is_string(sub):
                    value = " | ".join(gbnf.literal(str(v)) for v in sub["enum"]) if "enum" in sub else text
                else:
                    value = subschema_rule(rules, schema, sub, f"{key}-value")
                param = f"{gbnf.literal(f'<parameter={key}>' + NL)} ({value}) {gbnf.literal(VALUE_END + NL)}"
                params.append(param if key in required else f"({param})?")
            alts.append(" ".join([gbnf.literal(f"<function={name}>" + NL), *params, gbnf.literal("</function>" + NL)]))
        one = rules.add("tool-call-qwen-xml", " | ".join(alts))
        return f"{gbnf.literal('<tool_call>' + NL)} {one} {gbnf.literal('</tool_call>')}"


def is_string(schema: Any) -> bool:
    return isinstance(schema, dict) and (schema.get("type") == "string" or (
        "type" not in schema and isinstance(schema.get("enum"), list)
        and all(isinstance(v, str) for v in schema["enum"])))


def typed_value(text: str, schema: Any) -> Any:
    """A parameter's raw text as the schema types it: strings as they are, else JSON (a value
    that does not parse stays text, for the client to see what the model wrote)."""
    if is_string(schema):
        return text
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text
