"""Server-sent events as OpenAI streams them: ``data: <json>\\n\\n`` per event, ``data: [DONE]`` at
the end, ``: ping`` comments to keep an idle connection alive; and the driver that turns a
generation into such a stream."""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Callable
from typing import Any

import msgspec

from frontend.http.errors import ApiError
from frontend.generation import ChoiceDelta, Generation

log = logging.getLogger(__name__)

PING = b": ping\n\n"
DONE = b"data: [DONE]\n\n"

_encode = msgspec.json.encode


def event(obj: Any) -> bytes:
    # JSON escapes newlines inside strings, so one data line always holds the whole object.
    return b"data: " + _encode(obj) + b"\n\n"


def named_event(name: str, obj: Any) -> bytes:
    """An event with a name (``event: <name>``), as Anthropic's and OpenAI's Responses streams send them."""
    return b"event: " + name.encode() + b"\ndata: " + _encode(obj) + b"\n\n"


def error_event(exc: ApiError) -> bytes:
    """An error after the stream started: the status is already 200, so the error is an event."""
    return b"data: " + exc.body() + b"\n\n"


def internal_error_event(on_error: Callable[[ApiError], bytes] | None) -> bytes:
    """The last event of a stream that failed on our side: ``on_error``'s (its API's), or OpenAI's."""
    return (on_error or error_event)(ApiError(500, "internal error"))


def ping_interval(requested: float | None, default: float) -> float | None:
    """A request's ``sse_ping_interval`` (llama-server's field; -1: never) or the server's."""
    if requested is None:
        return default
    return None if requested < 0 else max(requested, 0.05)


async def generation_events(gen: Generation, head: Callable[[], list[bytes]],
                            render: Callable[[ChoiceDelta], list[bytes]], tail: Callable[[], list[bytes]],
                            done: bool = True, ping: bytes = PING,
                            on_error: Callable[[ApiError], bytes] = error_event) -> AsyncGenerator[bytes, None]:
    """The SSE body of a generation: ``head`` events, rendered deltas (``ping`` while the engine is
    quiet), ``tail`` events, ``[DONE]`` (OpenAI's end marker; llama-server's native stream and the
    streams with named events have none: ``done=False``); ``on_error`` writes a late error's event.
    ``head`` is called when the first chunk is due, so it knows what the first output said (the
    prompt's cache hit), unless a ping came first.

    The first chunk waits for the engine's first output or a ping interval, whichever comes
    first: an error before it (queue full, bad request) propagates and gets its HTTP status; an
    error after it is sent as an error event that ends the stream.
    """
    async with gen:
        first = await gen.next_deltas()
        yield b"".join([*head(), *(_render_all(first, render) if first is not None else [ping])])
        try:
            while not gen.done:
                deltas = await gen.next_deltas()
                if deltas is None:
                    yield ping
                elif deltas:
                    yield b"".join(_render_all(deltas, render))
        except ApiError as exc:
            log.warning("stream ended by an error: %s", exc.message)
            yield on_error(exc)
            return
        yield b"".join([*tail(), *([DONE] if done else [])])


def _render_all(deltas: list[ChoiceDelta], render: Callable[[ChoiceDelta], list[bytes]]) -> list[bytes]:
    return [e for delta in deltas for e in render(delta)]
