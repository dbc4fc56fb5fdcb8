"""A chat reply as consecutive blocks: thinking, text, and one block per tool call.

That is the shape of both Anthropic's Messages (content blocks) and OpenAI's Responses (output
items): each opens, grows by deltas and closes before the next one opens. ``ReplyBlocks`` builds
it from the reply parser's deltas as they stream, so a stream and a whole reply (fed at once)
give the same blocks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from frontend.conversation import Reply
from frontend.structured.deltas import OutputDelta

BlockKind = Literal["thinking", "text", "tool_call"]


@dataclass(slots=True)
class Block:
    index: int
    kind: BlockKind
    text: str = ""  # the thinking, the text, or the call's arguments (JSON text)
    call_id: str = ""
    name: str = ""


@dataclass(slots=True)
class BlockEvent:
    kind: Literal["start", "delta", "stop"]
    block: Block
    text: str = ""  # a delta's new text


class ReplyBlocks:
    def __init__(self) -> None:
        self.blocks: list[Block] = []
        self._open: Block | None = None
        self._space = ""  # whitespace that opens no text block unless more text follows

    def feed(self, out: OutputDelta) -> list[BlockEvent]:
        events: list[BlockEvent] = []
        if out.reasoning:
            self._write("thinking", out.reasoning, events)
        if out.content:
            text, self._space = self._space + out.content, ""
            if text.strip() or (self._open is not None and self._open.kind == "text"):
                self._write("text", text, events)
            else:  # blank text between blocks (around a call, after the thinking) is no block of its own
                self._space = text
        for piece in out.calls:
            if piece.id is not None:  # a call's first piece names it
                self._close(events)
                self._open = Block(len(self.blocks), "tool_call", call_id=piece.id, name=piece.name or "")
                self.blocks.append(self._open)
                events.append(BlockEvent("start", self._open))
            if piece.arguments and self._open is not None:
                self._open.text += piece.arguments
                events.append(BlockEvent("delta", self._open, piece.arguments))
        return events

    def close(self) -> list[BlockEvent]:
        """The end of the reply: the open block closes."""
        events: list[BlockEvent] = []
        self._close(events)
        return events

    def _write(self, kind: BlockKind, text: str, events: list[BlockEvent]) -> None:
        if self._open is None or self._open.kind != kind:
            self._close(events)
            self._open = Block(len(self.blocks), kind)
            self.blocks.append(self._open)
            events.append(BlockEvent("start", self._open))
        self._open.text += text
        events.append(BlockEvent("delta", self._open, text))

    def _close(self, events: list[BlockEvent]) -> None:
        if self._open is not None:
            events.append(BlockEvent("stop", self._open))
            self._open = None


def reply_blocks(reply: Reply) -> list[Block]:
    """The blocks of a reply read whole."""
    blocks = ReplyBlocks()
    blocks.feed(OutputDelta(reply.content, reply.reasoning, reply.calls))
    blocks.close()
    return blocks.blocks
