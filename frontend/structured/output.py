"""Reading a chat reply as it streams: reasoning text, answer text and tool calls.

The parser scans the text for the markers of the reasoning format (``<think>``...``</think>``)
and of the tool-call format (``<tool_call>``...); text that might be the start of a marker is
held back until the next text decides. A call section is buffered until it closes, then read
with the format's parser: a malformed call comes back as plain content, never as an error
(llama-server answers 500 there). A closer after which the section does not read as calls was
inside a value (a string argument holding the tag, as a coding agent's file may): the section
goes on; where no later closer makes it read, the first one ended it. A section the output
ended inside (cut by max_tokens or a stop string before its closer) is a call, never content:
its name and the arguments written so far when the name is complete (as a stream sends them),
nothing otherwise. The blank lines after a call are the format's separator, not content. Each
call gets an id (``call_`` + 24 hex digits). A call opener inside unclosed thinking ends the
thinking: the tool grammar allows only calls after an opener, so the thinking could not close
later.

In a stream, where a format can tell a call's name before its arguments, the calls go out as
the model writes them (``call_stream``), as OpenAI streams them. The tool grammar makes such a
call valid; only an output cut by max_tokens leaves its arguments unfinished, as with OpenAI.
"""

from __future__ import annotations

import logging

from frontend.structured.call_stream import CallStream, call_stream
from frontend.structured.deltas import OutputDelta, first_marker, partial_suffix, whole_call
from frontend.structured.reasoning import Reasoning
from frontend.structured.tool_formats import ParsedCall, ToolFormat

log = logging.getLogger(__name__)


class StreamParser:
    """What the reply parsers share: text is buffered and scanned into deltas as it comes."""

    _buf: str
    _n_calls: int

    @property
    def n_calls(self) -> int:
        return self._n_calls

    def push(self, text: str) -> OutputDelta:
        self._buf += text
        out = OutputDelta()
        self._scan(out, final=False)
        return out

    def _scan(self, out: OutputDelta, final: bool) -> None:
        raise NotImplementedError


class OutputParser(StreamParser):
    _CONTENT, _REASONING, _CALL = range(3)

    def __init__(self, reasoning: Reasoning | None, tools: ToolFormat | None, stream_args: bool = False,
                 forced: bool = False, content_prefix: str = "") -> None:
        """``stream_args``: send a call's arguments as they arrive (for a stream; a reply read
        whole reads each call whole, so malformed arguments can still come back as content).
        ``forced``: the tool grammar makes the answer calls only (tool_choice ``required`` or a
        named function), so an opener the output ended inside is a call cut short, not text (as it is
        after a first call, whatever the tool choice). ``content_prefix``: the content's first text
        (the thinking tag the prompt opened, for a reply that keeps its thinking in the content)."""
        self._reasoning = reasoning
        self._tools = tools
        self._stream = stream_args
        self._forced = forced
        self._state = self._REASONING if reasoning is not None and reasoning.starts_open else self._CONTENT
        # The end of the prompt that the output continues (Functionary's ">>>"), read as the
        # output's start: the first marker begins with it; text that no marker takes, without it.
        self._lead = tools.lead if tools is not None else ""
        self._buf = self._lead
        self._section = ""  # the open call section (from its marker)
        self._end_from = 0  # where its closer may begin
        self._passed = -1  # the first closer in it that left it unread (-1: none)
        self._seen_content = False  # non-whitespace answer text was emitted
        self._n_calls = 0
        self._after_section = False  # drop the blank lines after the thinking or a call
        self._after_start = False  # drop the white space after a reasoning start tag that skips it
        self._calls: CallStream | None = None  # the open section's calls, when they stream
        self._prefix = content_prefix  # sent with the first delta

    def finish(self) -> OutputDelta:
        out = OutputDelta()
        self._scan(out, final=True)
        while self._state == self._CALL and self._passed >= 0:  # no later closer read: the first one closed it
            self._close_at(self._passed, out)
            self._scan(out, final=True)
        if self._state == self._CALL:  # (a forced reply is calls only: a section it ended in was cut short)
            self._close_section(self._section, out, cut=self._tools is not None and (self._tools.end is not None
                                                                                     or self._forced))
        elif self._state == self._REASONING:
            self._emit_reasoning(self._buf, out)
        else:
            self._emit_content(self._buf, out)
        self._buf = self._section = ""
        return out

    # ------------------------------------------------------------------ scanning

    def _scan(self, out: OutputDelta, final: bool) -> None:
        out.content, self._prefix = self._prefix + out.content, ""
        while self._buf:
            if self._state == self._CONTENT:
                markers = self._content_markers()
                pos, marker = first_marker(self._buf, markers)
                if marker is None:
                    keep = partial_suffix(self._buf, markers)
                    if final and (self._forced or self._n_calls):  # (after a call, the grammar allows only calls)
                        self._buf = self._buf[: len(self._buf) - keep]  # an opener cut short: no text
                    if final:
                        keep = 0
                    elif self._tools is not None and self._tools.at_output_start_only and not self._seen_content \
                            and not self._buf.strip():
                        keep = len(self._buf)  # only whitespace so far: the reply may still open a call
                    self._emit_content(self._buf[: len(self._buf) - keep], out)
                    self._buf = self._buf[len(self._buf) - keep :]
                    return
                before, self._buf = self._buf[:pos], self._buf[pos + len(marker) :]
                if self._reasoning is not None and marker == self._reasoning.end:
                    # A reply that opens with the thinking's end tag thought nothing (MiniMax M3's
                    # without thinking); after text, the tag is text.
                    if before.strip() or self._reasoning.keep_in_content:
                        self._emit_content(before + marker, out)
                    else:
                        self._after_section = True
                    continue
                self._emit_content(before, out)
                self._lead = ""
                if self._tools is not None and marker in self._tools.skipped:
                    continue
                if self._reasoning is not None and marker == self._reasoning.start:
                    self._state = self._REASONING
                    self._after_start = self._reasoning.skip_space
                    if self._reasoning.keep_in_content:
                        out.content += marker
                else:
                    self._open_section(marker)
            elif self._state == self._REASONING:
                assert self._reasoning is not None
                end = self._reasoning.end
                # A call opener ends thinking left unclosed (Qwen3.5 calls without closing it)
                markers = [end, *(self._tools.thinking_enders if self._tools else ())]
                pos, marker = first_marker(self._buf, markers)
                if marker is None:
                    keep = 0 if final else partial_suffix(self._buf, markers)
                    self._emit_reasoning(self._buf[: len(self._buf) - keep], out)
                    self._buf = self._buf[len(self._buf) - keep :]
                    return
                self._emit_reasoning(self._buf[:pos], out)
                if marker != end and self._tools is not None and marker not in self._tools.starts:
                    self._buf, self._state = self._buf[pos:], self._CONTENT  # the answer's opener: framing it drops
                    continue
                self._buf = self._buf[pos + len(marker) :]
                if marker != end:
                    self._open_section(marker)
                    continue
                if self._reasoning.keep_in_content:
                    out.content += end
                self._after_section = not self._reasoning.keep_in_content
                self._state = self._CONTENT
            else:
                assert self._tools is not None
                end = self._tools.end
                self._section += self._buf  # the closer may straddle two pushes
                self._buf = ""
                while (pos := self._section.find(end, self._end_from) if end else -1) >= 0:
                    if (calls := self._read(self._section[:pos])) is not None:
                        break
                    # In a value (a string argument holding the closer), or malformed: read on
                    self._passed = pos if self._passed < 0 else self._passed
                    self._end_from = pos + 1
                if pos < 0:
                    if end:  # (a long section is not searched again from its start at each push)
                        self._end_from = max(self._end_from, len(self._section) - len(end) + 1)
                    self._stream_args(self._section, out)
                    return
                self._close_at(pos, out, calls)

    def _open_section(self, marker: str) -> None:
        self._state = self._CALL
        self._end_from, self._passed = 0, -1
        self._section = marker if self._tools is not None and self._tools.keep_start else ""

    def _close_at(self, pos: int, out: OutputDelta, calls: list[ParsedCall] | None = None) -> None:
        """The open section ends with the closer at ``pos`` (``calls``: what it was read as, if it was)."""
        assert self._tools is not None
        section, self._buf = self._section[:pos], self._section[pos + len(self._tools.end or "") :]
        self._section = ""
        self._close_section(section, out, calls=calls)
        self._after_section = True
        self._state = self._CONTENT

    def _content_markers(self) -> list[str]:
        markers = []
        if self._reasoning is not None and not self._seen_content and self._n_calls == 0:
            markers += [self._reasoning.start, self._reasoning.end]
        if self._tools is not None and (not self._tools.at_output_start_only or not self._seen_content):
            markers.extend(self._tools.skipped)
            markers.extend(self._tools.starts)
        return markers

    def _stream_args(self, section: str, out: OutputDelta, announce: bool = False) -> None:
        """Send what is new of the open section's calls; ``announce``: also when not streaming."""
        assert self._tools is not None
        if self._calls is None:
            if not (self._stream or announce):
                return
            self._calls = call_stream(self._tools, self._n_calls)
            if self._calls is None:
                return
        self._n_calls += self._calls.feed(section, out)

    def _close_section(self, section: str, out: OutputDelta, cut: bool = False,
                       calls: list[ParsedCall] | None = None) -> None:
        """``cut``: the output ended inside the section, before its closer; ``calls``: what it was
        read as already (None: read it here)."""
        assert self._tools is not None
        stream, self._calls = self._calls, None
        streamed = stream.names if stream is not None else []
        if stream is not None and streamed:  # calls already announced: send the rest
            self._n_calls += stream.feed(section, out, ended=True)
        if calls is None:
            calls = self._read(section)
        if calls is None:
            if streamed:  # (only output the grammar did not make: the rest is lost)
                if not cut:
                    log.warning("a tool-call section that streamed as calls %s did not read as calls", streamed)
            elif cut:  # what the tool grammar began is a call, cut short; not text
                self._stream_args(section, out, announce=True)
                self._calls = None
            else:
                opener = "" if self._tools.keep_start else self._tools.starts[0]
                self._emit_content(opener + section + (self._tools.end or ""), out)
            return
        if stream is not None and streamed:  # the stream's calls were the first ones; the rest come whole
            if [call.name for call in calls[: len(streamed)]] != streamed:
                log.warning("tool calls streamed as %s read as %s", streamed, [call.name for call in calls])
                return
            stream.finish(out)
        for call in calls[len(streamed) :]:
            whole_call(self._n_calls, call.name, call.arguments, out, call.id or self._tools.new_call_id())
            self._n_calls += 1

    def _read(self, section: str) -> list[ParsedCall] | None:
        """The calls of a section; None where it does not read as calls."""
        assert self._tools is not None
        try:
            calls = self._tools.parse(section)
            for call in calls:
                call.arguments.encode()  # malformed if it holds a lone surrogate (JSON's "\\ud83d" alone)
        except (ValueError, TypeError, KeyError, RecursionError):  # (UnicodeEncodeError is a ValueError)
            return None
        return calls

    def _emit_content(self, text: str, out: OutputDelta) -> None:
        if self._lead and text:  # a lead no marker took: the prompt's, not the output's
            text = text.removeprefix(self._lead)
            self._lead = ""
        if self._after_section:
            text = text.lstrip()
            self._after_section = not text
        if text.strip():
            self._seen_content = True
        out.content += text

    def _emit_reasoning(self, text: str, out: OutputDelta) -> None:
        if self._reasoning is not None and self._reasoning.keep_in_content:
            out.content += text
        if self._after_start:
            text = text.lstrip()
            self._after_start = not text
        out.reasoning += text
