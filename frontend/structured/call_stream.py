"""Tool calls sent as the model writes them, as OpenAI streams them: a call's first piece carries
its id and name, later pieces more of its arguments' JSON text.

A call section is read as it grows, by how its format writes arguments:
- ``JsonCalls``: each call's arguments are one JSON object after a head naming the function (the
  format's ``call_head``); the object goes out as it comes, written as json.dumps writes it.
- ``XmlCalls``: each argument is an element of its own (the format's ``XmlSyntax``); the JSON
  object is written as the elements come: a string value streams as a JSON string, any other
  value goes out whole when its element closes (typed by the function's schema, as reading the
  whole call types it), so the text streamed is the text of the same call read whole.
A section may hold several calls; from one the stream cannot read (written arguments first),
the section's calls come whole when it closes.
"""

from __future__ import annotations

import json
import math
import string

from frontend.structured.deltas import CallOut, OutputDelta, call_head, partial_suffix
from frontend.structured.tool_formats import ToolFormat
from frontend.structured.tool_formats.typed_args import SchemaBound, is_string, typed_value


class ArgsStream:
    """The arguments of one call, sent as they arrive: the text of one JSON object, which ends
    where its braces balance (whatever follows, such as the format's closing marker, is not
    part of it). It goes out as json.dumps writes the same object (as a call read whole is
    written): ``", "`` and ``": "`` and no other white space outside strings, each number as
    Python writes it (sent when it ends), each escape in a string decoded and written again
    (``\\u00e9`` as ``é``, ``\\/`` as ``/``). Only a key written twice reads differently: whole,
    the last one stands."""

    def __init__(self, index: int, name: str, out: OutputDelta, call_id: str = "") -> None:
        self.index = index
        self.done = False
        self._depth = 0
        self._in_string = False
        self._escape = ""  # an escape in a string, as far as it has come
        self._high = ""  # an escape of a surrogate pair's first half, waiting for the second
        self._number = ""  # a number, as far as it has come
        call_head(index, name, out, call_id)

    def feed(self, text: str, out: OutputDelta) -> int:
        """Sends the object's part of ``text``; returns how much of ``text`` that was."""
        if self.done:
            return 0
        kept: list[str] = []
        used = 0
        for ch in text:
            used += 1
            if self._in_string:
                if self._escape or ch == "\\":
                    self._escape += ch
                    if len(self._escape) >= 2 and (self._escape[1] != "u" or len(self._escape) == 6):
                        kept.append(self._unescaped(self._escape))
                        self._escape = ""
                    continue
                kept.append(self._high)  # a first half no second half followed: as it was written
                self._high = ""
                self._in_string = ch != '"'
            elif ch in _NUMBER and (self._number or ch in _NUMBER_START):
                self._number += ch
                continue
            else:
                if self._number:
                    kept.append(_number_text(self._number))
                    self._number = ""
                if ch.isspace():
                    continue
                if ch == '"':
                    self._in_string = True
                elif ch in ",:":
                    ch += " "
                elif ch in "{[":
                    self._depth += 1
                elif ch in "}]":
                    self._depth -= 1
                    if self._depth == 0:
                        self.done = True
                        kept.append(ch)
                        break
            kept.append(ch)
        piece = "".join(kept)
        if piece:
            out.calls.append(CallOut(self.index, None, None, piece))
        return used

    def _unescaped(self, escape: str) -> str:
        """A complete escape as json.dumps writes the character it stands for."""
        if escape[1] == "u" and _is_high_surrogate(escape[2:]) and not self._high:
            self._high = escape
            return ""
        escape, self._high = self._high + escape, ""
        try:
            value = json.loads(f'"{escape}"')
            value.encode()  # (a lone surrogate cannot go out)
        except ValueError:  # a bad escape, a lone surrogate: as it was written
            return escape
        return json.dumps(value, ensure_ascii=False)[1:-1]


class CallStream:
    """The calls of one section, read as its text grows: ``feed`` takes the whole section so far."""

    def __init__(self, first_index: int) -> None:
        self.names: list[str] = []  # of the calls announced
        self._first = first_index
        self._pos = 0  # the section's text up to here is read

    def feed(self, section: str, out: OutputDelta) -> int:
        """Sends what is new; returns how many calls it began."""
        raise NotImplementedError

    def finish(self, out: OutputDelta) -> None:
        """The section ended and reads as calls."""


class JsonCalls(CallStream):
    def __init__(self, fmt: ToolFormat, first_index: int) -> None:
        super().__init__(first_index)
        self._fmt = fmt
        self._args: ArgsStream | None = None
        self._stuck = False  # a call it cannot read came first: the rest come whole

    def feed(self, section: str, out: OutputDelta) -> int:
        begun = 0
        while not self._stuck:
            if self._args is None:
                assert self._fmt.call_head is not None
                head = self._fmt.call_head.search(section, self._pos)
                name = _name(head["name"]) if head else ""
                if head is None or not name:
                    return begun
                if "{" in section[self._pos : head.start()]:  # an object skipped: a call not written name first
                    self._stuck = True
                    return begun
                call_id = head.groupdict().get("id") or self._fmt.new_call_id()
                self._args = ArgsStream(self._first + len(self.names), name, out, call_id)
                self.names.append(name)
                begun += 1
                self._pos = head.end()
            self._pos += self._args.feed(section[self._pos :], out)
            if not self._args.done:
                return begun
            self._args = None
        return begun


class XmlCalls(CallStream):
    def __init__(self, fmt: SchemaBound, first_index: int) -> None:
        super().__init__(first_index)
        assert fmt.xml is not None
        self._fmt, self._xml = fmt, fmt.xml
        self._call = ""  # the open call's function
        self._index = 0  # and its index
        self._n_args = 0  # arguments sent of the open call
        self._value: bool | None = None  # the open value: a string (streams) or not (sent whole)
        self._schema: object = None  # the open value's schema
        self._scan = 0  # where to look for the open value's end (the text before it holds none)
        self._ends = [self._xml.value_end] + (["\n" + self._xml.value_end] if self._xml.strip_nl else [])

    def feed(self, section: str, out: OutputDelta) -> int:
        begun = 0
        while True:
            if not self._call:
                head = self._xml.call_head.match(section, self._pos)
                if head is None or not head["name"].strip():
                    return begun
                self._call, self._n_args, self._index = head["name"].strip(), 0, self._first + len(self.names)
                call_head(self._index, self._call, out, self._fmt.new_call_id())
                self._send("{", out)
                self.names.append(self._call)
                begun += 1
                self._pos = head.end()
            elif self._value is None:
                if not self._open_value(section, out):
                    end = self._xml.call_end.match(section, self._pos) if self._xml.call_end else None
                    if end is None:
                        return begun
                    self._send("}", out)
                    self._call, self._pos = "", end.end()
            elif not self._close_value(section, out):
                return begun

    def finish(self, out: OutputDelta) -> None:
        if self._call and self._value is None and self._xml.call_end is None:  # the call ends with its section
            self._send("}", out)
            self._call = ""

    def _open_value(self, section: str, out: OutputDelta) -> bool:
        head = self._xml.argument_head.match(section, self._pos)
        if head is None:
            return False
        key, string = head["key"].strip(), head.groupdict().get("string")
        self._schema = {} if string else self._fmt.schema(self._call).get("properties", {}).get(key, {})
        self._value = string == "true" or (string is None and is_string(self._schema))
        self._send((", " if self._n_args else "") + json.dumps(key, ensure_ascii=False) + ": "
                   + ('"' if self._value else ""), out)
        self._n_args += 1
        self._pos = self._scan = head.end()
        return True

    def _close_value(self, section: str, out: OutputDelta) -> bool:
        end = section.find(self._xml.value_end, self._scan)
        if end < 0:
            if self._value:  # a string: send what cannot be the start of its end
                keep = partial_suffix(section[self._pos :], self._ends)
                self._send(_string_text(section[self._pos : len(section) - keep]), out)
                self._pos = len(section) - keep
            # (a value sent whole is not read again from its start at each push)
            self._scan = max(self._pos, len(section) - len(self._xml.value_end) + 1)
            return False
        text = section[self._pos : end]
        if self._xml.strip_nl:
            text = text.removesuffix("\n")
        if self._value:
            self._send(_string_text(text) + '"', out)
        else:
            self._send(json.dumps(typed_value(text, self._schema), ensure_ascii=False), out)
        self._value, self._pos = None, end + len(self._xml.value_end)
        return True

    def _send(self, text: str, out: OutputDelta) -> None:
        if text:
            out.calls.append(CallOut(self._index, None, None, text))


def call_stream(fmt: ToolFormat, first_index: int) -> CallStream | None:
    """The stream of a section's calls in ``fmt`` (numbered from ``first_index``); None where the
    format's calls come whole."""
    if isinstance(fmt, SchemaBound) and fmt.xml is not None:
        return XmlCalls(fmt, first_index)
    if fmt.call_head is not None:
        return JsonCalls(fmt, first_index)
    return None


_NUMBER = frozenset("-+0123456789.eE")
_NUMBER_START = frozenset("-0123456789")


def _number_text(text: str) -> str:
    """A number as json.dumps writes it (as the model wrote it where Python cannot hold it)."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return json.dumps(value) if isinstance(value, int) or math.isfinite(value) else text


def _is_high_surrogate(digits: str) -> bool:
    return all(c in string.hexdigits for c in digits) and 0xD800 <= int(digits, 16) < 0xDC00


def _name(text: str) -> str:
    """A name as a head writes it: a JSON string, or the name itself."""
    if not text.startswith('"'):
        return text.strip()
    try:
        return json.loads(text)
    except ValueError:
        return ""


def _string_text(text: str) -> str:
    """``text`` as it is written inside a JSON string."""
    return json.dumps(text, ensure_ascii=False)[1:-1]
