"""What the formats that write each argument apart, not as one JSON object, share (Qwen's XML
calls, GLM's key/value pairs, Gemma 4's own syntax): they need the functions' schemas
(``SchemaBound.bind``), since a value's text is typed by its property's schema, and their
grammars write each top-level property's value in the same way."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Self

from frontend.structured import gbnf
from frontend.structured.json_schema import members_rule, subschema_rule
from frontend.structured.tool_formats.base import ToolFormat, json_value


def is_string(schema: Any) -> bool:
    return isinstance(schema, dict) and (schema.get("type") == "string" or (
        "type" not in schema and isinstance(schema.get("enum"), list)
        and all(isinstance(v, str) for v in schema["enum"])))


def typed_value(text: str, schema: Any) -> Any:
    """A value's raw text as the schema types it: strings as they are, else JSON (a value that
    does not parse stays text, for the client to see what the model wrote)."""
    if is_string(schema):
        return text
    try:
        return json_value(text)
    except (ValueError, RecursionError):
        return text


@dataclass(frozen=True, slots=True)
class XmlSyntax:
    """How a format writes a call as elements, one an argument, so that its arguments can stream
    (``call_stream.XmlCalls``). Each pattern is matched where the previous element ended."""

    call_head: re.Pattern[str]  # up to the first argument; group ``name``
    # up to the value; group ``key``, and where the format writes one, ``string`` (DSML's attribute: the value
    # is a string or JSON) or ``type`` (Kimi K3's: the value's JSON type), which types it instead of the schema
    argument_head: re.Pattern[str]
    value_end: str  # what ends a value ("{key}" in it: the key as written, MiniMax M3's closing tags)
    call_end: re.Pattern[str] | None  # what ends a call after its last argument (None: its section's end)
    strip_nl: bool = False  # a new line before ``value_end`` is not the value's (Qwen's)
    key_text: Callable[[str], str] = str.strip  # a key as the format reads it (Kimi K3's unescaped); a name, stripped
    # a block a value may be written in, its opener and closer (MiniCPM5's CDATA): such a value ends where the
    # closer and ``value_end`` first come together and goes whole, markers and all, to ``typed``; where the
    # section ends without them, at ``value_end`` (as the regular expression reading the call whole falls back)
    cdata: tuple[str, str] | None = None
    # a value's text as its schema types it (not a string's, which streams); ValueError where the text is not all
    # of it (MiniMax M3's: ``value_end`` closed an element nested in the value, the value ends at a later one)
    typed: Callable[[str, Any], Any] = typed_value
    # what opens an element of the value's own name ("{key}" in it), which a ``value_end`` inside the value closes
    # (MiniMax M3's nested elements): a value that is not a string ends where its ends balance its opens
    value_open: str = ""
    string: Callable[[Any], bool] = is_string  # whether a schema's values are strings (MiniMax M3's: unions too)


class SchemaBound(ToolFormat):
    """A format bound to the request's functions: their parameters' schemas, by name."""

    xml: XmlSyntax | None = None  # where the format writes arguments as elements

    def __init__(self, functions: list[dict[str, Any]] | None = None) -> None:
        self._params = {f["name"]: f.get("parameters") or {} for f in functions or []}

    def bind(self, functions: list[dict[str, Any]]) -> Self:
        return type(self)(functions)

    def schema(self, name: str) -> dict[str, Any]:
        return self._params.get(name, {})

    def members(self, rules: gbnf.Rules, name: str, item: Callable[[str, Any, dict[str, Any], str], str],
                separator: str, keys: Callable[[dict[str, Any]], list[str]] = list) -> str | None:
        """The rule of a call's arguments written as one ``item(key, property schema, function
        schema, rule name hint)`` per top-level property of function ``name``, between
        ``separator``s, in the order ``keys`` gives: the required present, the optional
        skippable, no others. None when its schema lists none."""
        schema = self.schema(name)
        properties = schema.get("properties")
        if not properties:
            return None
        required = set(schema.get("required", ()))
        items = [(rules.add(f"{name}-{key}-kv", item(key, properties[key], schema, f"{name}-{key}")), key in required)
                 for key in keys(properties)]
        return members_rule(rules, items, separator, f"{name}-args")

    def typed_arguments(self, name: str, pairs: list[tuple[str, str]]) -> str:
        """The JSON object text of a call's (key, value text) pairs, each value typed by its schema."""
        properties = self.schema(name).get("properties", {})
        return json.dumps({key.strip(): typed_value(value, properties.get(key.strip(), {})) for key, value in pairs},
                          ensure_ascii=False)


def argument_rules(rules: gbnf.Rules, schema: dict[str, Any], text: str) -> list[tuple[str, str, bool]]:
    """(key, value expression, required) of each top-level property of ``schema``, as these formats
    write values: a string is raw ``text`` (an ``enum`` its alternatives), anything else JSON."""
    required = set(schema.get("required", ()))
    out = []
    for key, sub in schema.get("properties", {}).items():
        if is_string(sub):
            value = " | ".join(gbnf.literal(str(v)) for v in sub["enum"]) if "enum" in sub else text
        else:
            value = subschema_rule(rules, schema, sub, f"{key}-value")
        out.append((key, value, key in required))
    return out
