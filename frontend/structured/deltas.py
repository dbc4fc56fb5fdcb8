"""What the reply parsers produce and share: the pieces of a reply (answer text, reasoning, tool
calls) each pushed text yields, call ids, and finding markers in text that is still arriving."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field


@dataclass(slots=True)
class CallOut:
    """A tool call or a piece of one: the first piece of each call has its id and name, later
    pieces (same index) only more arguments text."""

    index: int
    id: str | None
    name: str | None
    arguments: str


@dataclass(slots=True)
class OutputDelta:
    content: str = ""
    reasoning: str = ""
    calls: list[CallOut] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.content or self.reasoning or self.calls)


def new_call_id() -> str:
    return "call_" + uuid.uuid4().hex[:24]


def merge_calls(pieces: list[CallOut]) -> list[CallOut]:
    """Whole calls from their pieces (for a reply that is not streamed)."""
    calls: dict[int, CallOut] = {}
    for piece in pieces:
        if piece.index in calls:
            calls[piece.index].arguments += piece.arguments
        else:
            assert piece.id is not None and piece.name is not None, "a call's first piece names it"
            calls[piece.index] = CallOut(piece.index, piece.id, piece.name, piece.arguments)
    return list(calls.values())


def call_head(index: int, name: str, out: OutputDelta, call_id: str = "") -> None:
    """A call's first piece: its id (a new one unless the model wrote one) and name."""
    out.calls.append(CallOut(index, call_id or new_call_id(), name, ""))


def whole_call(index: int, name: str, arguments: str, out: OutputDelta, call_id: str = "") -> None:
    """A call read at once: its head, then its arguments (as a stream sends them)."""
    call_head(index, name, out, call_id)
    out.calls.append(CallOut(index, None, None, arguments))


def first_marker(text: str, markers: list[str]) -> tuple[int, str | None]:
    best, found = len(text) + 1, None
    for m in markers:
        pos = text.find(m)
        if 0 <= pos < best:
            best, found = pos, m
    return best, found


def partial_suffix(text: str, markers: list[str]) -> int:
    """Length of the longest end of ``text`` that begins some marker (to hold back)."""
    longest = 0
    for m in markers:
        for n in range(min(len(m) - 1, len(text)), 0, -1):
            if text.endswith(m[:n]):
                longest = max(longest, n)
                break
    return longest
