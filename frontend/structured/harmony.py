"""Reading a gpt-oss (OpenAI Harmony) reply as it streams: analysis, answer and tool calls.

The reply is a run of messages, each a header and a body:
``<|channel|>analysis<|message|>thinking<|end|><|start|>assistant<|channel|>final<|message|>answer``.
The analysis channel is the reasoning; the final channel, and commentary without a recipient
(a preamble before calls), the answer; a message addressed ``to=functions.NAME`` is a call whose
body is the JSON arguments, ended by ``<|call|>`` (an end-of-generation token, so usually the end
of the text). Bodies stream as they come; in a stream a call's arguments too once they open with
``{`` (the name is in the header), else the call is read when it ends and malformed arguments
come back as content. A call the output ended inside (max_tokens) is a call, its arguments as
far as they came, streamed or not, as with the other formats. Text that is not in this format
at all (a grammar forced plain JSON, or a model ignored its template) is content as it is. The
same interface as frontend.structured.output.OutputParser.
"""

from __future__ import annotations

import re

from frontend.structured.args_stream import JsonArgs
from frontend.structured.deltas import OutputDelta, first_marker, partial_suffix, whole_call
from frontend.structured.output import StreamParser
from frontend.structured.tool_formats.json_args.harmony import CALL, CHANNEL, END, FUNCTIONS, MESSAGE, RETURN, START, \
    call, recipient

_BODY_ENDS = [END, CALL, RETURN]
# A header opens with one of these (the first one right after the prompt's <|start|>assistant).
_HEADER_OPENERS = (CHANNEL, "to=", START)
_MAX_HEADER = 256  # characters without <|message|>: not a header after all
_CHANNEL_NAME = re.compile(re.escape(CHANNEL) + r"\s*(\w+)")


class HarmonyParser(StreamParser):
    _HEADER, _REASONING, _CONTENT, _CALL, _RAW = range(5)

    def __init__(self, extract_reasoning: bool, parse_calls: bool, starts_open: bool = False,
                 stream_args: bool = False) -> None:
        """``starts_open``: the prompt ended inside an analysis message (its header written);
        ``stream_args``: as for OutputParser."""
        self._extract = extract_reasoning
        self._parse_calls = parse_calls
        self._stream = stream_args
        self._state = self._REASONING if starts_open else self._HEADER
        self._buf = ""
        self._header = ""  # the open message's header (kept to give a failed call back as text)
        self._call_name = ""
        self._args: JsonArgs | None = None  # the open call, when its arguments stream
        self._n_calls = 0

    def finish(self) -> OutputDelta:
        out = OutputDelta()
        self._scan(out, final=True)
        if self._state == self._CALL:
            self._close_call(self._buf, out, cut=True)
        elif self._state == self._HEADER:
            out.content += self._buf  # never became a message: give it back as it is
        else:
            self._emit_body(self._buf, out)
        self._buf = ""
        return out

    def _scan(self, out: OutputDelta, final: bool) -> None:
        while self._buf:
            if self._state == self._RAW:
                out.content += self._buf
                self._buf = ""
            elif self._state == self._HEADER:
                if not self._read_header(out):
                    return
            else:
                pos, end = first_marker(self._buf, _BODY_ENDS)
                if end is None:
                    if self._state == self._CALL:
                        self._stream_args(out)
                        return
                    keep = 0 if final else partial_suffix(self._buf, _BODY_ENDS)
                    self._emit_body(self._buf[: len(self._buf) - keep], out)
                    self._buf = self._buf[len(self._buf) - keep :]
                    return
                body, self._buf = self._buf[:pos], self._buf[pos + len(end) :]
                if self._state == self._CALL:
                    self._close_call(body, out)
                else:
                    self._emit_body(body, out)
                    if self._state == self._REASONING and not self._extract:
                        out.content += end
                self._state = self._HEADER

    def _read_header(self, out: OutputDelta) -> bool:
        """Take the header in front of the buffer; False when more text must come first."""
        pos = self._buf.find(MESSAGE)
        head = self._buf.lstrip()
        if not any(o.startswith(head[: len(o)]) for o in _HEADER_OPENERS) or \
                (pos if pos >= 0 else len(self._buf)) > _MAX_HEADER:
            self._state = self._RAW  # not a message header: plain text
            return True
        if pos < 0:
            return False
        header, self._buf = self._buf[:pos], self._buf[pos + len(MESSAGE) :]
        self._header = header + MESSAGE
        to = recipient(header)
        channel = _CHANNEL_NAME.search(header)
        if to is not None and to.startswith(FUNCTIONS) and self._parse_calls:
            self._state, self._call_name = self._CALL, to
        elif to is not None:  # a built-in tool (browser, python) the client never declared: show it
            self._state = self._CONTENT
            out.content += self._header
        elif channel is not None and channel[1] == "analysis":
            self._state = self._REASONING
            if not self._extract:
                out.content += self._header
        else:  # final, or a commentary preamble
            self._state = self._CONTENT
        return True

    def _emit_body(self, text: str, out: OutputDelta) -> None:
        if self._state == self._REASONING and self._extract:
            out.reasoning += text
        else:
            out.content += text

    def _stream_args(self, out: OutputDelta) -> None:
        """Send the arguments that arrived (the buffer holds the body so far)."""
        if self._args is None:
            body = self._buf.lstrip()
            if not self._stream or not body.startswith("{"):
                return
            self._args = JsonArgs(self._n_calls, self._call_name.removeprefix(FUNCTIONS), out)
            self._n_calls += 1
            self._buf = body
        keep = partial_suffix(self._buf, _BODY_ENDS)  # the call's end marker may be arriving
        self._args.feed(self._buf[: len(self._buf) - keep], out)
        self._buf = self._buf[len(self._buf) - keep :]

    def _close_call(self, body: str, out: OutputDelta, cut: bool = False) -> None:
        """``cut``: the output ended inside the call: it is a call, its arguments as far as they came
        (as a stream sends them), never text."""
        if self._args is None and cut:
            self._args = JsonArgs(self._n_calls, self._call_name.removeprefix(FUNCTIONS), out)
            self._n_calls += 1
            body = body.lstrip()
        if self._args is not None:  # already announced: send the rest of its arguments
            self._args.feed(body, out)
            self._args = None
            return
        try:
            parsed = call(self._call_name, body.strip())
        except (ValueError, TypeError):
            out.content += self._header + body
            return
        whole_call(self._n_calls, parsed.name, parsed.arguments, out)
        self._n_calls += 1

