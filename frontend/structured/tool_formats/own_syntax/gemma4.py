"""Gemma 4: each call is a section of its own, the function's name, then its arguments in Gemma's
value syntax; several sections may follow each other::

    <|tool_call>call:get_weather{city:<|"|>Paris<|"|>,days:3}<tool_call|>

A string is its text between two ``<|"|>`` (no escapes: it cannot hold ``<|"|>``); numbers,
``true``, ``false`` and ``null`` are written as in JSON; an object is ``{key:value,...}``, an array
``[value,...]``. The template writes keys bare (nested ones too) and sorted (``dictsort``). Reading
a call takes keys bare or quoted in ``<|"|>``, in any order, and white space between the parts,
as llama.cpp's parser does; the values carry their types, so reading needs no schema (anything
malformed is a ValueError: the section comes back as content).

The grammar (the only use of the functions' schemas, ``bind``) follows each function's schema at
its top level: the properties as bare keys in the template's order (sorted, case ignored), the
required ones present, the optional ones skippable, no others; a string property is a quoted
text (an ``enum`` of strings, its quoted alternatives); an integer, number, boolean or null
property is its JSON grammar (bounds and enums included), the two syntaxes coinciding there. Any
other property (an object, an array, a union, no type) takes any Gemma value, and so do the
arguments of a function whose schema lists no properties (unless ``additionalProperties`` is
false: then none). Not enforced: the schemas inside those values, a string's length, pattern or
format; a nullable string cannot be null. The grammar writes no white space, as the template.
"""

from __future__ import annotations

import json
import re
from typing import Any

from frontend.structured import gbnf
from frontend.structured.args_stream import ArgsStream, number_text, string_text
from frontend.structured.deltas import OutputDelta, partial_suffix
from frontend.structured.json_schema import subschema_rule
from frontend.structured.tool_formats.base import ParsedCall, json_value
from frontend.structured.tool_formats.typed_args import SchemaBound, is_string

QUOTE = '<|"|>'
START = "<|tool_call>"
END = "<tool_call|>"
COMMA = gbnf.literal(",")
_HEAD = re.compile(r"\s*call:(?P<name>[^\s{<]+)(?=\{)")
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_BARE_KEY = re.compile(r"[^:{}\[\],]+")
_SPACE = re.compile(r"\s*")
_WORDS = {"true": True, "false": False, "null": None}
_JSON_SCALARS = {"integer", "number", "boolean", "null"}  # where Gemma's syntax is JSON's


class Gemma4Args(ArgsStream):
    """A call's arguments streamed as JSON as the model writes them in Gemma's syntax: a string
    goes out as it comes (but for what may be the start of its closing quote), a bare key, number
    or word when it ends; keys and values read as ``parse`` reads them (keys bare or quoted, white
    space between the parts skipped). Malformed text is sent as it comes (the call read whole then
    fails: the grammar makes none)."""

    def __init__(self, index: int, name: str, out: OutputDelta, call_id: str = "") -> None:
        super().__init__(index, name, out, call_id)
        self._open: list[str] = []  # the containers open: "{" or "["
        self._key_next = False  # what comes next in the open object is a key
        self._in_string = False
        self._bare = ""  # a bare key, number or word, as far as it has come

    def feed(self, text: str, out: OutputDelta) -> int:
        kept: list[str] = []
        pos = 0
        while pos < len(text) and not self.done:
            if self._in_string:
                end = text.find(QUOTE, pos)
                if end < 0:
                    stop = len(text) - partial_suffix(text[pos:], [QUOTE])
                    kept.append(string_text(text[pos:stop]))
                    pos = stop
                    break
                kept.append(string_text(text[pos:end]) + '"')
                self._in_string, pos = False, end + len(QUOTE)
                continue
            ch = text[pos]
            if ch in _STRUCTURE:
                kept.append(self._end_bare() + self._structure(ch))
            elif not self._bare and text.startswith(QUOTE, pos):
                kept.append('"')
                self._in_string, pos = True, pos + len(QUOTE)
                continue
            elif not self._bare and QUOTE.startswith(text[pos:]):
                break  # a quote may be arriving
            elif self._bare or not ch.isspace():
                self._bare += ch
            pos += 1
        self._send("".join(kept), out)
        return pos

    def _end_bare(self) -> str:
        bare, self._bare = self._bare.strip(), ""
        if not bare:
            return ""
        if self._key_next:
            return json.dumps(bare, ensure_ascii=False)
        return bare if bare in _WORDS else number_text(bare)

    def _structure(self, ch: str) -> str:
        if ch in "{[":
            self._open.append(ch)
        elif ch in "}]":
            if self._open:
                self._open.pop()
            self.done = not self._open
        self._key_next = ch == "{" or ch == "," and self._open[-1:] == ["{"]
        return ch + " " if ch in ":," else ch


_STRUCTURE = frozenset(":,{}[]")


class Gemma4Format(SchemaBound):
    name = "gemma4"
    starts = (START,)
    end = END
    call_head = _HEAD
    args_stream = Gemma4Args

    def parse(self, section: str) -> list[ParsedCall]:
        head = _HEAD.match(section)
        if head is None:
            raise ValueError("a Gemma 4 call is call:NAME{...}")
        reader = _Reader(section, head.end())
        args = reader.value()
        if reader.skip() != len(section):
            raise ValueError("text after the arguments of a Gemma 4 call")
        return [ParsedCall(head["name"], json.dumps(args, ensure_ascii=False))]

    def section_grammar(self, rules: gbnf.Rules, calls: dict[str, str], parallel: bool) -> str:
        # ``calls`` holds JSON-object rules; this format writes the arguments in its own syntax.
        text = gbnf.text_without(rules, QUOTE, "gemma4-text")
        string = rules.fixed("gemma4-string", f"{gbnf.literal(QUOTE)} {text} {gbnf.literal(QUOTE)}")
        value, obj = _value_rules(rules, string)
        alts = []
        def item(key: str, sub: Any, schema: dict[str, Any], hint: str) -> str:
            return f"{gbnf.literal(key + ':')} ({_property_value(rules, schema, sub, hint, string, value)})"

        for name in calls:
            members = self.members(rules, name, item, COMMA, lambda p: sorted(p, key=str.lower))  # Jinja's dictsort
            if members is not None:
                args = f'"{{" {members} "}}"'
            else:
                args = '"{}"' if self.schema(name).get("additionalProperties") is False else obj
            alts.append(f"{gbnf.literal(name)} {args}")
        one = rules.add("tool-call-gemma4", " | ".join(alts))
        return f"{gbnf.literal(START + 'call:')} ({one}) {gbnf.literal(END)}"


def _property_value(rules: gbnf.Rules, schema: dict[str, Any], sub: Any, hint: str, string: str, value: str) -> str:
    """The expression of a top-level property's values."""
    if is_string(sub):
        return " | ".join(gbnf.literal(QUOTE + str(e) + QUOTE) for e in sub["enum"]) if "enum" in sub else string
    if isinstance(sub, dict) and isinstance(sub.get("type"), str) and sub["type"] in _JSON_SCALARS:
        return subschema_rule(rules, schema, sub, f"{hint}-value")
    return value


def _value_rules(rules: gbnf.Rules, string: str) -> tuple[str, str]:
    """Any Gemma value (recursive), and any object (its keys bare or quoted)."""
    number = subschema_rule(rules, {}, {"type": "number"}, "number")
    stops = [(0, 0x20), *((ord(c), ord(c)) for c in ":{}[],")]
    bare = f"{gbnf.char_set([*stops, (ord('<'), ord('<'))], negated=True)} {gbnf.char_set(stops, negated=True)}*"
    member = f'({string} | {bare}) ":" gemma4-value'
    obj = rules.fixed("gemma4-object", f'"{{" ({member} ("," {member})*)? "}}"')
    arr = rules.fixed("gemma4-array", '"[" (gemma4-value ("," gemma4-value)*)? "]"')
    return rules.fixed("gemma4-value", f'{string} | {number} | "true" | "false" | "null" | {obj} | {arr}'), obj


class _Reader:
    """A recursive-descent reader of Gemma values, from ``pos`` in ``text``; ValueError on
    anything malformed."""

    def __init__(self, text: str, pos: int) -> None:
        self.text = text
        self.pos = pos

    def skip(self) -> int:
        """Past white space; the position then."""
        self.pos = _SPACE.match(self.text, self.pos).end()
        return self.pos

    def take(self, token: str) -> bool:
        if self.text.startswith(token, self.skip()):
            self.pos += len(token)
            return True
        return False

    def expect(self, token: str) -> None:
        if not self.take(token):
            raise ValueError(f"a Gemma 4 call lacks {token!r} at {self.pos}")

    def value(self) -> Any:
        if self.take(QUOTE):
            return self.string_rest()
        if self.take("{"):
            return self.object_rest()
        if self.take("["):
            return self.array_rest()
        for word, value in _WORDS.items():
            if self.take(word):
                return value
        number = _NUMBER.match(self.text, self.pos)
        if number is None:
            raise ValueError(f"no Gemma 4 value at {self.pos}")
        self.pos = number.end()
        return json_value(number[0])  # (finite: 1e999 is no JSON number)

    def string_rest(self) -> str:
        end = self.text.find(QUOTE, self.pos)
        if end < 0:
            raise ValueError("an unclosed string in a Gemma 4 call")
        text, self.pos = self.text[self.pos : end], end + len(QUOTE)
        return text

    def object_rest(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.take("}"):
            return out
        while True:
            key = self.string_rest() if self.take(QUOTE) else self.bare_key()
            self.expect(":")
            out[key] = self.value()
            if self.take("}"):
                return out
            self.expect(",")

    def bare_key(self) -> str:
        key = _BARE_KEY.match(self.text, self.skip())
        if key is None or not key[0].strip():
            raise ValueError(f"no key at {self.pos} in a Gemma 4 call")
        self.pos = key.end()
        return key[0].strip()

    def array_rest(self) -> list[Any]:
        out: list[Any] = []
        if self.take("]"):
            return out
        while True:
            out.append(self.value())
            if self.take("]"):
                return out
            self.expect(",")
