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

import ast
import json
import re
from typing import Any

from frontend.structured import gbnf
from frontend.structured.args_stream import ArgsStream, string_text, value_text
from frontend.structured.deltas import OutputDelta
from frontend.structured.json_schema import subschema_rule
from frontend.structured.tool_formats.base import ParsedCall, skip_space
from frontend.structured.tool_formats.literals import literal_value
from frontend.structured.tool_formats.typed_args import SchemaBound, is_string

START = "<|tool_call_start|>"
END = "<|tool_call_end|>"
_NAME = re.compile(r"\s*([^\s()\[\],=]+)\s*\(")
_KEY = re.compile(r"\s*([^\s()\[\],=]+)\s*=")
_OPENERS, _CLOSERS = "([{", ")]}"


class Lfm2Args(ArgsStream):
    """A call's keyword arguments streamed as a JSON object as the model writes them: each key
    when its ``=`` comes, a string value as it comes (decoded as the whole call decodes it: a
    single-quoted one by Python's rules, a double-quoted one by JSON's until an escape JSON does
    not have switches it to Python's), any other value whole when it ends (read as ``parse`` reads
    it). A triple-quoted string is sent whole. Only output no grammar made can read differently
    (a ``\\/`` before a Python-only escape in one double-quoted string, strings written side by
    side); the call read whole is the one that stands."""

    _AT_KEY, _AT_VALUE, _IN_STRING, _IN_VALUE, _AFTER_VALUE = range(5)

    def __init__(self, index: int, name: str, out: OutputDelta, call_id: str = "") -> None:
        super().__init__(index, name, out, call_id)
        self._send("{", out)
        self._state = self._AT_KEY
        self._key = ""  # the key, as far as it has come
        self._n_args = 0
        self._quote = ""  # the open string's quote
        self._json = True  # the open string reads by JSON's rules
        self._high: tuple[str, str] | None = None  # a surrogate pair's first half (decoded, written)
        self._raw = ""  # a value that is not a string, as far as it has come
        self._raw_end = _ValueEnd()  # where it ends

    def feed(self, text: str, out: OutputDelta) -> int:
        kept: list[str] = []
        pos = 0
        while pos < len(text) and not self.done:
            ch = text[pos]
            if self._state == self._IN_STRING:
                stop = _STRING_STOPS[self._quote].search(text, pos)
                run_end = stop.start() if stop else len(text)
                if run_end > pos:  # plain text up to the next escape or quote
                    kept.append(self._flush_high() + string_text(text[pos:run_end]))
                    pos = run_end
                    continue
                if ch == "\\":
                    length = _escape_length(text, pos)
                    if length is None:
                        break  # the escape may be longer
                    kept.append(self._unescaped(text[pos : pos + length]))
                    pos += length
                    continue
                kept.append(self._flush_high() + '"')  # (the quote)
                self._state = self._AFTER_VALUE
            elif self._state == self._IN_VALUE:
                start = pos
                while pos < len(text) and not self._raw_end.at(text[pos]):
                    pos += 1
                self._raw += text[start:pos]
                if pos < len(text):  # the "," or ")" that ends it, read after it
                    kept.append(_json_text(self._raw))
                    self._raw, self._raw_end, self._state = "", _ValueEnd(), self._AFTER_VALUE
                continue
            elif ch.isspace() and not self._key:
                pass
            elif self._state == self._AT_KEY:
                if ch == ")" and not self._key:
                    kept.append("}")
                    self.done = True
                elif ch == "=":
                    key = json.dumps(self._key.strip(), ensure_ascii=False)
                    kept.append((", " if self._n_args else "") + key + ": ")
                    self._key, self._n_args, self._state = "", self._n_args + 1, self._AT_VALUE
                else:
                    self._key += ch
            elif self._state == self._AT_VALUE:
                if ch in "'\"":
                    ahead = text[pos : pos + 3]
                    if len(ahead) < 3 and ahead == ch * len(ahead):
                        break  # a triple quote may be arriving
                    if ahead != ch * 3:
                        self._quote, self._json, self._state = ch, ch == '"', self._IN_STRING
                        kept.append('"')
                        pos += 1
                        continue
                self._state = self._IN_VALUE
                continue
            elif ch == ",":  # (_AFTER_VALUE)
                self._state = self._AT_KEY
            elif ch == ")":
                kept.append("}")
                self.done = True
            pos += 1
        self._send("".join(kept), out)
        return pos

    def _unescaped(self, escape: str) -> str:
        """An escape in the open string as JSON writes the character it stands for."""
        try:
            if self._json and _JSON_ESCAPE.fullmatch(escape):
                value = json.loads(f'"{escape}"')
            else:
                self._json = False
                value = ast.literal_eval(self._quote + escape + self._quote)
        except (SyntaxError, ValueError):  # a malformed escape: as it was written (the call will not read)
            return self._flush_high() + string_text(escape)
        if len(value) == 1 and 0xD800 <= ord(value) < 0xDC00 and self._high is None:
            self._high = (value, escape)
            return ""
        if len(value) == 1 and 0xDC00 <= ord(value) < 0xE000 and self._high is not None:
            value, self._high = (self._high[0] + value).encode("utf-16", "surrogatepass").decode("utf-16"), None
        text = self._flush_high()
        try:
            value.encode()
        except UnicodeEncodeError:  # a lone surrogate cannot go out (the call will not read)
            return text + string_text(escape)
        return text + string_text(value)

    def _flush_high(self) -> str:
        """A first half no second half followed, as it was written (the call will not read)."""
        high, self._high = self._high, None
        return string_text(high[1]) if high else ""


class Lfm2Format(SchemaBound):
    name = "lfm2"
    starts = (START,)
    end = END
    call_head = re.compile(r"\s*[\[,]\s*(?P<name>[^\s()\[\],=]+)\s*\(")
    args_stream = Lfm2Args
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
        # (no raw carriage return or NUL: Python's reader takes neither inside a string)
        char = rules.fixed("py-char", "[^'\\\\\\n\\r\\x00] | \"\\\\\" [\\\\'\"nrt]")
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


class _ValueEnd:
    """Finds where a value ends, a character at a time: at the ``,`` or ``)`` after it, outside
    its strings and brackets."""

    def __init__(self) -> None:
        self._depth = 0
        self._quote = ""  # the open string's quote
        self._escape = False

    def at(self, ch: str) -> bool:
        """Whether ``ch`` (the next character) ends the value."""
        if self._quote:
            if self._escape:
                self._escape = False
            elif ch == "\\":
                self._escape = True
            elif ch == self._quote:
                self._quote = ""
        elif ch in "'\"":
            self._quote = ch
        elif ch in _OPENERS:
            self._depth += 1
        elif ch in _CLOSERS:
            if self._depth == 0:
                return True
            self._depth -= 1
        elif ch == "," and self._depth == 0:
            return True
        return False


def _value_end(text: str, pos: int) -> int:
    """Where the value from ``pos`` ends."""
    end = _ValueEnd()
    for i in range(pos, len(text)):
        if end.at(text[i]):
            return i
    raise ValueError("an unclosed LFM2 call")


_JSON_ESCAPE = re.compile(r'\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4})')
_STRING_STOPS = {q: re.compile(r"[\\" + q + "]") for q in "'\""}  # an escape, or the string's end
_OCTAL = frozenset("01234567")


def _escape_length(text: str, pos: int) -> int | None:
    """The length of the Python escape at ``pos`` (a backslash); None while it may still grow."""
    if pos + 1 >= len(text):
        return None
    kind = text[pos + 1]
    width = {"x": 2, "u": 4, "U": 8}.get(kind)
    if width is not None:
        return 2 + width if len(text) >= pos + 2 + width else None
    if kind == "N":  # \N{NAME}
        end = text.find("}", pos)
        return end + 1 - pos if end >= 0 else None
    if kind in _OCTAL:  # up to three digits
        end = pos + 2
        while end < min(len(text), pos + 4) and text[end] in _OCTAL:
            end += 1
        return end - pos if end == pos + 4 or end < len(text) else None
    return 2


def _json_text(raw: str) -> str:
    """A value that is not a string, as the call read whole writes it (as written if it does not read)."""
    try:
        return value_text(literal_value(raw))
    except (ValueError, RecursionError):
        return raw
