"""MiniMax M3: a section of ``invoke`` elements, as MiniMax M2's (``invoke_xml``), with the namespace
token ``]<]minimax[>[`` before every tag and each argument an element named by its key; an object
value is one element per member, an array one ``item`` element per item (one invoke a line)::

    ]<]minimax[>[<tool_call>
    ]<]minimax[>[<invoke name="get_weather">]<]minimax[>[<city>Paris]<]minimax[>[</city>]<]minimax[>[</invoke>
    ]<]minimax[>[<invoke name="tag">]<]minimax[>[<ids>]<]minimax[>[<item>7]<]minimax[>[</item>]<]minimax[>[</ids>
    ]<]minimax[>[</invoke>
    ]<]minimax[>[</tool_call>

Values are read as llama.cpp reads them, by the function's schema: where the property's schema
allows a string (a union with a string alternative too) the value is the raw text up to its
closing tag, whatever it holds; nested elements make an object or, where they are ``item``s and
the schema allows an array, an array; anything else is JSON (numbers, the template's
``true``/``false``), or text where it does not parse. The template leaves out null members. In a
stream (``xml``) a string value goes out as it is written, any other value whole once its element
closes.

The grammar writes what llama.cpp's does: each function's properties in the schema's order (the
required ones present, the optional ones skippable, no others), a string as any text without the
namespace token (an ``enum``, its alternatives), an object with listed properties and an array as
elements, a union as its alternatives, anything else (an object without listed properties
included) as JSON. Thinking is ``<mm:think>...</mm:think>``.
"""

from __future__ import annotations

import json
import re
from typing import Any

from frontend.structured import gbnf
from frontend.structured.json_schema import members_rule, subschema_rule
from frontend.structured.tool_formats.base import ParsedCall
from frontend.structured.tool_formats.typed_args import SchemaBound, XmlSyntax, is_string, typed_value

NS = "]<]minimax[>["
START = NS + "<tool_call>"
END = NS + "</tool_call>"
INVOKE_END = NS + "</invoke>"
ITEM = "item"
NL = "\n"
_INVOKE = re.compile(rf'\s*{re.escape(NS)}<invoke name="(?P<name>[^"]*)">')
_OPEN = re.compile(rf"\s*{re.escape(NS)}<(?P<key>[^<>/\s]+)>")
_SPACE = re.compile(r"\s*")


def _may_be_string(schema: Any) -> bool:
    return any(is_string(alt) or isinstance(alt, dict) and "const" in alt and isinstance(alt["const"], str)
               for alt in _alternatives(schema))


def _whole(text: str, schema: Any) -> Any:
    """All of ``text`` as one value (a stream's, ``XmlSyntax.typed``): ValueError where an element
    in it is still open (the closing tag that ended ``text`` closed one nested in the value)."""
    return _value(text, 0, schema, "")[0]


class MiniMaxM3Format(SchemaBound):
    name = "minimax-m3"
    starts = (START,)
    end = END
    tokens = (NS, "<tool_call>", "</tool_call>")  # control tokens of its vocabulary (llama.cpp preserves them)
    xml = XmlSyntax(call_head=_INVOKE, argument_head=_OPEN, value_end=NS + "</{key}>",
                    call_end=re.compile(rf"\s*{re.escape(INVOKE_END)}"), typed=_whole, string=_may_be_string,
                    value_open=NS + "<{key}>")

    def parse(self, section: str) -> list[ParsedCall]:
        calls, pos = [], 0
        while (head := _INVOKE.match(section, pos)) is not None:
            name = head[1].strip()
            if not name:
                raise ValueError("an invoke needs a name")
            args, pos = _members(section, head.end(), self.schema(name), INVOKE_END)
            calls.append(ParsedCall(name, json.dumps(args, ensure_ascii=False)))
        if not calls or section[pos:].strip():
            raise ValueError("a MiniMax M3 section holds invoke elements only")
        return calls

    def section_grammar(self, rules: gbnf.Rules, calls: dict[str, str], parallel: bool) -> str:
        # ``calls`` holds JSON-object rules; this format writes each argument as an element instead.
        text = gbnf.text_without(rules, NS, f"{self.name}-text")
        alts = []
        for name in calls:
            schema = self.schema(name)
            members = _members_rule(rules, schema, schema, text, f"{name}-args") if schema.get("properties") else ""
            head = gbnf.literal(f'{NS}<invoke name="{name}">')
            alts.append(f"{head} {members} {gbnf.literal(INVOKE_END + NL)}")
        one = rules.add(f"tool-call-{self.name}", " | ".join(alts))
        body = f"{one}+" if parallel else one
        return f"{gbnf.literal(START + NL)} {body} {gbnf.literal(END)}"


def _alternatives(schema: Any) -> list[Any]:
    """A schema's union alternatives (anyOf, oneOf, a list of types), or the schema alone."""
    if not isinstance(schema, dict):
        return [schema]
    for key in ("anyOf", "oneOf"):
        if isinstance(schema.get(key), list):
            return schema[key]
    if isinstance(schema.get("type"), list):
        return [{**schema, "type": t} for t in schema["type"]]
    return [schema]


def _of_type(schema: Any, type_: str) -> dict[str, Any] | None:
    """The alternative of ``schema`` of JSON type ``type_``, if any."""
    for alt in _alternatives(schema):
        if isinstance(alt, dict) and alt.get("type") == type_:
            return alt
    return None


# ------------------------------------------------------------------ reading


def _closes(text: str, pos: int, close: str) -> bool:
    """Whether ``close`` comes at ``pos`` ("": the end of ``text``)."""
    return text.startswith(close, pos) if close else pos == len(text)


def _members(text: str, pos: int, schema: Any, close: str) -> tuple[dict[str, Any], int]:
    """The elements from ``pos`` up to ``close`` as an object's members; the position after ``close``."""
    properties = schema.get("properties", {}) if isinstance(schema, dict) else {}
    out: dict[str, Any] = {}
    while True:
        pos = _SPACE.match(text, pos).end()
        if _closes(text, pos, close):
            return out, pos + len(close)
        tag = _OPEN.match(text, pos)
        if tag is None:
            raise ValueError(f"no element at {pos} of a MiniMax M3 call")
        out[tag[1]], pos = _value(text, tag.end(), properties.get(tag[1], {}), f"{NS}</{tag[1]}>")


def _items(text: str, pos: int, schema: Any, close: str) -> tuple[list[Any], int]:
    items = schema.get("items", {}) if isinstance(schema, dict) else {}
    out: list[Any] = []
    while True:
        pos = _SPACE.match(text, pos).end()
        if _closes(text, pos, close):
            return out, pos + len(close)
        tag = _OPEN.match(text, pos)
        if tag is None or tag[1] != ITEM:
            raise ValueError(f"no item at {pos} of a MiniMax M3 call")
        value, pos = _value(text, tag.end(), items, f"{NS}</{ITEM}>")
        out.append(value)


def _value(text: str, pos: int, schema: Any, close: str) -> tuple[Any, int]:
    """The value from ``pos`` up to its closing tag ``close`` ("": the end of ``text``); the position after it."""
    string = _may_be_string(schema)
    array, obj = _of_type(schema, "array"), _of_type(schema, "object")
    tag = None if string else _OPEN.match(text, pos)
    if tag is not None:
        if tag[1] == ITEM and (array is not None or obj is None):
            return _items(text, pos, array, close)
        return _members(text, pos, obj, close)
    end = text.find(close, pos) if close else len(text)
    if end < 0:
        raise ValueError("an unclosed element in a MiniMax M3 call")
    raw = text[pos:end]
    if string:
        value: Any = raw
    elif not raw.strip() and (obj is not None or array is not None):  # an empty object or array writes nothing
        value = {} if obj is not None else []
    else:
        value = typed_value(raw, schema)
    return value, end + len(close)


# ------------------------------------------------------------------ the grammar


def _members_rule(rules: gbnf.Rules, root: dict[str, Any], schema: dict[str, Any], text: str, hint: str) -> str:
    required = set(schema.get("required", ()))
    items = []
    for key, sub in schema["properties"].items():
        value = _value_rule(rules, root, sub, text, f"{hint}-{key}")
        element = f"{gbnf.literal(f'{NS}<{key}>')} ({value}) {gbnf.literal(f'{NS}</{key}>')}"
        items.append((rules.add(f"{hint}-{key}-kv", element), key in required))
    return members_rule(rules, items, "", hint)


def _value_rule(rules: gbnf.Rules, root: dict[str, Any], schema: Any, text: str, hint: str) -> str:
    if _may_be_string(schema):  # any text is a string, so a union with a string alternative is one
        if isinstance(schema, dict) and isinstance(schema.get("enum"), list):
            return " | ".join(gbnf.literal(str(v)) for v in schema["enum"])
        if isinstance(schema, dict) and isinstance(schema.get("const"), str):
            return gbnf.literal(schema["const"])
        return text
    alts = _alternatives(schema)
    if len(alts) > 1:
        return rules.add(hint, " | ".join(f"({_value_rule(rules, root, alt, text, f'{hint}-{i}')})"
                                          for i, alt in enumerate(alts)))
    obj, array = _of_type(schema, "object"), _of_type(schema, "array")
    if obj is not None and obj.get("properties"):
        return _members_rule(rules, root, obj, text, hint) or '""'
    if array is not None:
        item = _value_rule(rules, root, array.get("items", {}), text, f"{hint}-item")
        element = rules.add(f"{hint}-item", f"{gbnf.literal(f'{NS}<{ITEM}>')} ({item}) "
                                            f"{gbnf.literal(f'{NS}</{ITEM}>')}")
        return gbnf.repeat(element, array.get("minItems", 0), array.get("maxItems"))
    return subschema_rule(rules, root, schema, f"{hint}-value")
