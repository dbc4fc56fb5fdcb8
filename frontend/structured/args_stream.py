"""One tool call's arguments sent as the model writes them, as the JSON text OpenAI streams: the
call's head (id and name) first, then pieces of one JSON object. The text streamed is the text of
the same call read whole (json.dumps of its arguments: ``", "`` and ``": "``, no other white space
outside strings, numbers and escapes written as Python writes them).

``ArgsStream`` is what every syntax shares; ``JsonArgs`` reads arguments the model writes as JSON.
A format whose arguments have a syntax of their own streams them with a subclass of its own
(``ToolFormat.args_stream``: Gemma 4's, LFM2's)."""

from __future__ import annotations

import json
import math
import string
from typing import Any

from frontend.structured.deltas import CallOut, OutputDelta, call_head


class ArgsStream:
    """The arguments of one call; ``done`` once its object closed."""

    def __init__(self, index: int, name: str, out: OutputDelta, call_id: str = "") -> None:
        self.index = index
        self.done = False
        call_head(index, name, out, call_id)

    def feed(self, text: str, out: OutputDelta) -> int:
        """Sends the arguments' part of ``text`` (the text after what earlier calls used); returns
        how much of ``text`` it used. What it leaves (a marker that may be arriving) comes again
        at the start of the next call's ``text``."""
        raise NotImplementedError

    def _send(self, piece: str, out: OutputDelta) -> None:
        if piece:
            out.calls.append(CallOut(self.index, None, None, piece))


class JsonArgs(ArgsStream):
    """Arguments written as one JSON object, which ends where its braces balance (whatever
    follows, such as the format's closing marker, is not part of it). Each number is sent when it
    ends; each escape in a string is decoded and written again (``\\u00e9`` as ``é``, ``\\/`` as
    ``/``). Only a key written twice reads differently: whole, the last one stands."""

    def __init__(self, index: int, name: str, out: OutputDelta, call_id: str = "") -> None:
        super().__init__(index, name, out, call_id)
        self._depth = 0
        self._in_string = False
        self._escape = ""  # an escape in a string, as far as it has come
        self._high = ""  # an escape of a surrogate pair's first half, waiting for the second
        self._number = ""  # a number, as far as it has come

    def feed(self, text: str, out: OutputDelta) -> int:
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
                    kept.append(number_text(self._number))
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
        self._send("".join(kept), out)
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


_NUMBER = frozenset("-+0123456789.eE")
_NUMBER_START = frozenset("-0123456789")


def number_text(text: str) -> str:
    """A number as json.dumps writes it (as the model wrote it where Python cannot hold it)."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return json.dumps(value) if isinstance(value, int) or math.isfinite(value) else text


def value_text(value: Any) -> str:
    """A value read whole, as json.dumps writes it in a call's arguments; where that text cannot go
    out (a lone surrogate: the call will not read), with every character escaped."""
    text = json.dumps(value, ensure_ascii=False)
    try:
        text.encode()
    except UnicodeEncodeError:
        return json.dumps(value)
    return text


def string_text(text: str) -> str:
    """``text`` as it is written inside a JSON string."""
    return json.dumps(text, ensure_ascii=False)[1:-1]


def _is_high_surrogate(digits: str) -> bool:
    return all(c in string.hexdigits for c in digits) and 0xD800 <= int(digits, 16) < 0xDC00
