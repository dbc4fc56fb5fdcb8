"""Tool calls sent as the model writes them, as OpenAI streams them: a call's first piece carries
its id and name, later pieces more of its arguments' JSON text.

A call section is read as it grows, by how its format writes arguments:
- ``JsonCalls``: each call's arguments are one JSON object after a head naming the function (the
  format's ``call_head``); the object goes out as it comes, spaced as json.dumps spaces it.
- ``XmlCalls``: each argument is an element of its own (the format's ``XmlSyntax``); the JSON
  object is written as the elements come: a string value streams as a JSON string, any other
  value goes out whole when its element closes (typed by the function's schema, as reading the
  whole call types it), so the text streamed is the text of the same call read whole.
A section may hold several calls; one the stream cannot read (written arguments first) comes
whole when its section closes.
"""

from __future__ import annotations

import json

from frontend.structured.deltas import CallOut, OutputDelta, call_head, partial_suffix
from frontend.structured.tool_formats import ToolFormat
from frontend.structured.tool_formats.typed_args import SchemaBound, is_string, typed_value


class ArgsStream:
    """The arguments of one call, sent as they arrive: the text of one JSON object, which ends
    where its braces balance (whatever follows, such as the format's closing marker, is not
    part of it). Outside strings the spacing is json.dumps' (``", "``, ``": "``, no other
    whitespace), so a stream's arguments read as those of the same call not streamed."""

    def __init__(self, index: int, name: str, out: OutputDelta, call_id: str = "") -> None:
        self.index = index
        self.done = False
        self._depth = 0
        self._in_string = False
        self._escape = False
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
                if self._escape:
                    self._escape = False
                elif ch == "\\":
                    self._escape = True
                elif ch == '"':
                    self._in_string = False
            elif ch.isspace():
                continue
            elif ch == '"':
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
        if kept:
            out.calls.append(CallOut(self.index, None, None, "".join(kept)))
        return used


class CallStream:
    """The calls of one section, read as its text grows: ``feed`` takes the whole section so far."""

    def __init__(self, first_index: int) -> None:
        self.started = 0  # calls announced
        self._first = first_index
        self._pos = 0  # the section's text up to here is read

    def feed(self, section: str, out: OutputDelta) -> int:
        """Sends what is new; returns how many calls it began."""
        raise NotImplementedError

    def finish(self, out: OutputDelta) -> None:
        """The section closed (not cut short)."""


class JsonCalls(CallStream):
    def __init__(self, fmt: ToolFormat, first_index: int) -> None:
        super().__init__(first_index)
        self._fmt = fmt
        self._args: ArgsStream | None = None

    def feed(self, section: str, out: OutputDelta) -> int:
        begun = 0
        while True:
            if self._args is None:
                assert self._fmt.call_head is not None
                head = self._fmt.call_head.search(section, self._pos)
                name = _name(head["name"]) if head else ""
                if head is None or not name:
                    return begun
                call_id = head.groupdict().get("id") or self._fmt.new_call_id()
                self._args = ArgsStream(self._first + self.started, name, out, call_id)
                self.started += 1
                begun += 1
                self._pos = head.end()
            self._pos += self._args.feed(section[self._pos :], out)
            if not self._args.done:
                return begun
            self._args = None


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
        self._ends = [self._xml.value_end] + (["\n" + self._xml.value_end] if self._xml.strip_nl else [])

    def feed(self, section: str, out: OutputDelta) -> int:
        begun = 0
        while True:
            if not self._call:
                head = self._xml.call_head.match(section, self._pos)
                if head is None or not head["name"].strip():
                    return begun
                self._call, self._n_args, self._index = head["name"].strip(), 0, self._first + self.started
                call_head(self._index, self._call, out, self._fmt.new_call_id())
                self._send("{", out)
                self.started += 1
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
        self._pos = head.end()
        return True

    def _close_value(self, section: str, out: OutputDelta) -> bool:
        end = section.find(self._xml.value_end, self._pos)
        if end < 0:
            if self._value:  # a string: send what cannot be the start of its end
                keep = partial_suffix(section[self._pos :], self._ends)
                self._send(_string_text(section[self._pos : len(section) - keep]), out)
                self._pos = len(section) - keep
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
