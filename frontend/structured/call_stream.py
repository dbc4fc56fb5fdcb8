"""Tool calls sent as the model writes them, as OpenAI streams them: a call's first piece carries
its id and name, later pieces more of its arguments' JSON text.

A call section is read as it grows, by how its format writes arguments:
- ``NameFirstCalls``: each call's arguments follow a head naming the function (the format's
  ``call_head``) and go out as they come, written as json.dumps writes them: one JSON object, or
  the format's own syntax read by its ``args_stream`` (Gemma 4's, LFM2's).
- ``XmlCalls``: each argument is an element of its own (the format's ``XmlSyntax``: Qwen's, GLM's,
  MiniMax M2's and M3's, DeepSeek's DSML, Kimi K3's, MiniCPM5's); the JSON object is written as the
  elements come: a string value streams as a JSON string, any other value goes out whole when its
  element closes (typed as reading the whole call types it: by the type the element says, else by
  the function's schema; MiniMax M3's objects and arrays are elements nested in it), as does a
  value written in a block (MiniCPM5's CDATA, whose end decides what its text is), so the text
  streamed is the text of the same call read whole.
A section may hold several calls; from one the stream cannot read (written arguments first),
the section's calls come whole when it closes.
"""

from __future__ import annotations

import json

from frontend.structured.args_stream import ArgsStream, JsonArgs, string_text, value_text
from frontend.structured.deltas import CallOut, OutputDelta, call_head, partial_suffix
from frontend.structured.tool_formats import ToolFormat
from frontend.structured.tool_formats.typed_args import SchemaBound


class CallStream:
    """The calls of one section, read as its text grows: ``feed`` takes the whole section so far."""

    def __init__(self, first_index: int) -> None:
        self.names: list[str] = []  # of the calls announced
        self._first = first_index
        self._pos = 0  # the section's text up to here is read

    def feed(self, section: str, out: OutputDelta, ended: bool = False) -> int:
        """Sends what is new; returns how many calls it began. ``ended``: no more text comes."""
        raise NotImplementedError

    def finish(self, out: OutputDelta) -> None:
        """The section ended and reads as calls."""


class NameFirstCalls(CallStream):
    def __init__(self, fmt: ToolFormat, first_index: int) -> None:
        super().__init__(first_index)
        self._fmt = fmt
        self._args: ArgsStream | None = None
        self._stuck = False  # a call it cannot read came first: the rest come whole

    def feed(self, section: str, out: OutputDelta, ended: bool = False) -> int:
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
                self._args = (self._fmt.args_stream or JsonArgs)(self._first + len(self.names), name, out, call_id)
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
        self._end = ""  # what ends the open value
        self._block = ""  # the closer of the block the open value is written in (MiniCPM5's CDATA; sent whole)
        self._open = ""  # what opens an element of the open value's name in it (MiniMax M3's)
        self._depth = 0  # such elements open at ``_scan``
        self._scan = 0  # where to look for the open value's end (the text before it holds none)

    def feed(self, section: str, out: OutputDelta, ended: bool = False) -> int:
        begun = 0
        while True:
            if not self._call:
                head = self._xml.call_head.match(section, self._pos)
                name = self._xml.key_text(head["name"]).strip() if head else ""
                if not name:
                    return begun
                self._call, self._n_args, self._index = name, 0, self._first + len(self.names)
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
            elif not self._close_value(section, out, ended):
                return begun

    def finish(self, out: OutputDelta) -> None:
        if self._call and self._value is None and self._xml.call_end is None:  # the call ends with its section
            self._send("}", out)
            self._call = ""

    def _open_value(self, section: str, out: OutputDelta) -> bool:
        head = self._xml.argument_head.match(section, self._pos)
        if head is None:
            return False
        start, block = head.end(), self._xml.cdata
        if block and len(section) - start < len(block[0]) and block[0].startswith(section[start:]):
            return False  # a block's opener or the value's first text: the next text tells
        key, groups = self._xml.key_text(head["key"]), head.groupdict()
        if groups.get("type") is not None:
            self._schema = {"type": groups["type"]}
        elif groups.get("string") is not None:
            self._schema = {"type": "string"} if groups["string"] == "true" else {}
        else:
            self._schema = self._fmt.schema(self._call).get("properties", {}).get(key, {})
        self._end = self._xml.value_end.replace("{key}", head["key"])
        self._block = block[1] if block and section.startswith(block[0], start) else ""
        self._value = self._xml.string(self._schema) and not self._block
        self._open = self._xml.value_open.replace("{key}", head["key"]) if not self._value else ""
        self._depth = 0
        self._send((", " if self._n_args else "") + json.dumps(key, ensure_ascii=False) + ": "
                   + ('"' if self._value else ""), out)
        self._n_args += 1
        self._pos = self._scan = start
        return True

    def _close_value(self, section: str, out: OutputDelta, ended: bool) -> bool:
        end_tag = self._block + self._end
        while (end := self._balanced_end(section, end_tag)) >= 0:
            text = section[self._pos : end + len(self._block)]  # (a block's markers and all)
            if self._xml.strip_nl:
                text = text.removesuffix("\n")
            if self._value:
                self._send(string_text(text) + '"', out)
            else:
                try:
                    value = self._xml.typed(text, self._schema)
                except (ValueError, RecursionError):  # the end of an element in the value (MiniMax M3's), not its own
                    continue
                self._send(value_text(value), out)
            self._value, self._pos = None, end + len(end_tag)
            return True
        if ended and self._block:  # a block never closed: read as a value that is not in one
            self._block, self._scan = "", self._pos
            return self._close_value(section, out, ended)
        if self._value:  # a string: send what cannot be the start of its end
            ends = [self._end, "\n" + self._end] if self._xml.strip_nl else [self._end]
            keep = partial_suffix(section[self._pos :], ends)
            self._send(string_text(section[self._pos : len(section) - keep]), out)
            self._pos = len(section) - keep
        # (a value sent whole is not read again from its start at each push)
        self._scan = max(self._pos, self._scan, len(section) - max(len(end_tag), len(self._open)) + 1)
        return False

    def _balanced_end(self, section: str, end_tag: str) -> int:
        """Where the next ``end_tag`` from ``_scan`` that closes no element opened in the value is
        (-1: none yet); each part of the text is counted once."""
        while (end := section.find(end_tag, self._scan)) >= 0:
            if self._open:
                self._depth += section.count(self._open, self._scan, end)
            self._scan = end + 1
            if not self._depth:
                return end
            self._depth -= 1
        if self._open and (last := section.rfind(self._open, self._scan)) >= 0:  # (one still arriving: later)
            self._depth += section.count(self._open, self._scan, last + len(self._open))
            self._scan = last + len(self._open)
        return -1

    def _send(self, text: str, out: OutputDelta) -> None:
        if text:
            out.calls.append(CallOut(self._index, None, None, text))


def call_stream(fmt: ToolFormat, first_index: int) -> CallStream | None:
    """The stream of a section's calls in ``fmt`` (numbered from ``first_index``); None where the
    format's calls come whole."""
    if isinstance(fmt, SchemaBound) and fmt.xml is not None:
        return XmlCalls(fmt, first_index)
    if fmt.call_head is not None:
        return NameFirstCalls(fmt, first_index)
    return None


def _name(text: str) -> str:
    """A name as a head writes it: a JSON string, or the name itself."""
    if not text.startswith('"'):
        return text.strip()
    try:
        return json.loads(text)
    except ValueError:
        return ""
