"""LFM2 and LFM2.5 (Liquid): one section of Python-style calls, keyword arguments only::

    <|tool_call_start|>[get_weather(city='Paris', days=3, metric=True), ping()]<|tool_call_end|>

A value is a Python literal (the template writes strings in single quotes, objects as JSON, other
values as Python writes them: ``True``, ``None``, ``['a', 1]``) or JSON (``"Paris"``, ``true``,
``null``), as llama.cpp reads them (``literals``: a value that is JSON is read by JSON's rules; any
other with ``ast``, parsed, never evaluated: strings, numbers, booleans, None, lists, tuples and
dicts with string keys, nothing else). Names and keys are read as written (a name may hold ``-``
or ``.``, which Python's syntax would not take).

The grammar (the only use of the functions' schemas, ``bind``) writes each function's top-level
properties as the template does, in the schema's order (the required ones present, the optional
ones skippable, no others): a string in single or double quotes (an ``enum``, its quoted alternatives), a
boolean ``True``/``False``, null ``None``, a number as in JSON, anything else (objects, arrays,
unions) in JSON, which the reader takes too (so arrays are not written as Python writes them). A
function whose schema lists no properties takes any keyword arguments with JSON values (none if
``additionalProperties`` is false). Not enforced: a string's length, pattern or format.

LFM2-8B-A1B's and LFM2.5-Instruct's templates show no past calls: they are written into the
turn's text in this syntax (``write_calls``; strings double-quoted, objects and lists as JSON).
"""

from __future__ import annotations

import json
import re
from typing import Any

from frontend.structured import gbnf
from frontend.structured.json_schema import subschema_rule
from frontend.structured.tool_formats.base import ParsedCall, skip_space
from frontend.structured.tool_formats.literals import literal_value
from frontend.structured.tool_formats.typed_args import SchemaBound, is_string

START = "<|tool_call_start|>"
END = "<|tool_call_end|>"
_NAME = re.compile(r"\s*([^\s()\[\],=]+)\s*\(")
_KEY = re.compile(r"\s*([^\s()\[\],=]+)\s*=")
_OPENERS, _CLOSERS = "([{", ")]}"


class Lfm2Format(SchemaBound):
    name = "lfm2"
    starts = (START,)
    end = END
    reasoning_key = "thinking"  # LFM2.5's template

    def parse(self, section: str) -> list[ParsedCall]:
        text = section.strip()
        if not (text.startswith("[") and text.endswith("]")):
            raise ValueError("LFM2 calls are a list: [name(key=value, ...), ...]")
        calls, pos, inner = [], 1, len(text) - 1
        while True:
            head = _NAME.match(text, pos)
            if head is None:
                if calls or text[pos:inner].strip():
                    raise ValueError(f"no call at {pos} in LFM2 calls")
                raise ValueError("no call")
            args, pos = _arguments(text, head.end())
            calls.append(ParsedCall(head[1], json.dumps(args, ensure_ascii=False)))
            rest = text[pos:inner].lstrip()
            if not rest:
                return calls
            if not rest.startswith(","):
                raise ValueError(f"text after a call at {pos} in LFM2 calls")
            pos = inner - len(rest) + 1

    def write_calls(self, calls: list[tuple[str, dict[str, Any]]]) -> str:
        """As LFM2.5-8B-A1B's template writes them (LFM2-8B-A1B's and LFM2.5-Instruct's show none)."""
        written = [f"{name}({', '.join(f'{k}={_python(v)}' for k, v in args.items())})" for name, args in calls]
        return f"{START}[{', '.join(written)}]{END}"

    def section_grammar(self, rules: gbnf.Rules, calls: dict[str, str], parallel: bool) -> str:
        # ``calls`` holds JSON-object rules; this format writes keyword arguments instead.
        alts = []
        def item(key: str, sub: Any, schema: dict[str, Any], hint: str) -> str:
            return f"{gbnf.literal(key + '=')} ({_value(rules, schema, sub, hint)})"

        for name in calls:
            members = self.members(rules, name, item, gbnf.literal(", "))
            if members is not None:
                args = members
            elif self.schema(name).get("additionalProperties") is False:
                args = ""
            else:
                value = subschema_rule(rules, {}, {}, "json-value")
                kv = f'[a-zA-Z_] [a-zA-Z0-9_]{{0,63}} "=" {value}'
                args = f'({kv} (", " {kv})*)?'
            alts.append(f'{gbnf.literal(name + "(")} {args} ")"')
        one = rules.add("tool-call-lfm2", " | ".join(alts))
        body = f'{one} (", " {one})*' if parallel else one
        return f'{gbnf.literal(START + "[")} {body} {gbnf.literal("]" + END)}'


def _value(rules: gbnf.Rules, schema: dict[str, Any], sub: Any, hint: str) -> str:
    """The expression of a top-level property's values, as Python literals."""
    if is_string(sub):  # in single quotes, as the template writes them, or double, as llama.cpp's tests do
        if "enum" in sub:
            return " | ".join(gbnf.literal(q) for v in sub["enum"] for q in (repr(str(v)), json.dumps(str(v))))
        char = rules.fixed("py-char", "[^'\\\\\\n] | \"\\\\\" [\\\\'\"nrt]")
        py_string = rules.fixed("py-string", f'"\'" ({char})* "\'"')
        return f"{py_string} | {subschema_rule(rules, schema, sub, f'{hint}-value')}"
    kind = sub.get("type") if isinstance(sub, dict) else None
    if kind == "boolean":
        return '"True" | "False"'
    if kind == "null":
        return '"None"'
    return subschema_rule(rules, schema, sub, f"{hint}-value")


def _python(value: Any) -> str:
    """A value as a Python literal: strings quoted as JSON quotes them, objects as JSON (as the
    template writes them), True/False/None."""
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, list):
        return f"[{', '.join(_python(v) for v in value)}]"
    return json.dumps(value, ensure_ascii=False)


def _arguments(text: str, pos: int) -> tuple[dict[str, Any], int]:
    """The keyword arguments of a call from after its ``(``; the position after its ``)``."""
    args: dict[str, Any] = {}
    while True:
        pos = skip_space(text, pos)
        if text.startswith(")", pos):
            return args, pos + 1
        if args:
            if not text.startswith(",", pos):
                raise ValueError(f"no comma at {pos} in an LFM2 call")
            pos = skip_space(text, pos + 1)
            if text.startswith(")", pos):  # a trailing comma, as Python allows
                return args, pos + 1
        key = _KEY.match(text, pos)
        if key is None:
            raise ValueError(f"no key=value at {pos} in an LFM2 call")
        end = _value_end(text, key.end())
        args[key[1]] = literal_value(text[key.end() : end])
        pos = end



def _value_end(text: str, pos: int) -> int:
    """Where the value from ``pos`` ends: the ``,`` or ``)`` after it, outside strings and brackets."""
    depth, quote = 0, ""
    while pos < len(text):
        ch = text[pos]
        if quote:
            if ch == "\\":
                pos += 1
            elif ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch in _OPENERS:
            depth += 1
        elif ch in _CLOSERS:
            if depth == 0:
                return pos
            depth -= 1
        elif ch == "," and depth == 0:
            return pos
        pos += 1
    raise ValueError("an unclosed LFM2 call")
