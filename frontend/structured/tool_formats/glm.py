"""GLM 4.5 / 4.6 / 4.7 (and templates that copy them): a call is the function's name, then each
argument as a key and a value, in a Hermes-style section::

    <tool_call>get_weather
    <arg_key>city</arg_key>
    <arg_value>Paris</arg_value>
    </tool_call>

(GLM 4.7 writes no new lines.) A value is raw text where the function's schema says string,
else JSON, as the template writes them (``tojson`` for all but strings): this format needs the
functions' schemas (``bind``), and types values as Qwen's XML calls do.
"""

from __future__ import annotations

import json
import re
from typing import Any

from frontend.structured import gbnf
from frontend.structured.json_schema import subschema_rule
from frontend.structured.tool_formats.base import ParsedCall, ToolFormat
from frontend.structured.tool_formats.qwen_xml import is_string, typed_value

_ARGUMENT = re.compile(r"<arg_key>(.*?)</arg_key>\s*<arg_value>(.*?)</arg_value>", re.S)
VALUE_END = "</arg_value>"


class GlmFormat(ToolFormat):
    name = "glm"
    starts = ("<tool_call>",)
    end = "</tool_call>"

    def __init__(self, functions: list[dict[str, Any]] | None = None) -> None:
        self._params = {f["name"]: f.get("parameters") or {} for f in functions or []}

    def bind(self, functions: list[dict[str, Any]]) -> GlmFormat:
        return GlmFormat(functions)

    def parse(self, section: str) -> list[ParsedCall]:
        name, _, body = section.partition("<arg_key>")
        name = name.strip()
        if not name or "<" in name:
            raise ValueError("a GLM call starts with its function's name")
        body = "<arg_key>" + body if body else ""
        properties = self._params.get(name, {}).get("properties", {})
        args = {key.strip(): typed_value(value, properties.get(key.strip(), {}))
                for key, value in _ARGUMENT.findall(body)}
        if _ARGUMENT.sub("", body).strip():
            raise ValueError("text between the arguments of a GLM call")
        return [ParsedCall(name, json.dumps(args, ensure_ascii=False))]

    def section_grammar(self, rules: gbnf.Rules, calls: dict[str, str], parallel: bool) -> str:
        # ``calls`` holds JSON-object rules; this format writes the arguments one by one instead.
        text = gbnf.text_without(rules, VALUE_END, "glm-text")
        alts = []
        for name in calls:
            schema = self._params.get(name, {})
            required = set(schema.get("required", ()))
            arguments = []
            for key, sub in schema.get("properties", {}).items():
                if is_string(sub):
                    value = " | ".join(gbnf.literal(str(v)) for v in sub["enum"]) if "enum" in sub else text
                else:
                    value = subschema_rule(rules, schema, sub, f"{key}-value")
                argument = (f'{gbnf.literal(f"<arg_key>{key}</arg_key>")} "\\n"? "<arg_value>" ({value}) '
                            f'{gbnf.literal(VALUE_END)} "\\n"?')
                arguments.append(argument if key in required else f"({argument})?")
            alts.append(" ".join([gbnf.literal(name), '"\\n"?', *arguments]))
        one = rules.add("tool-call-glm", " | ".join(alts))
        return f'"<tool_call>" {one} "</tool_call>"'
