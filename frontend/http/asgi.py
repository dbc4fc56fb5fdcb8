"""Raw ASGI plumbing: the request as handlers see it, responses, and reading a bounded body.

No web framework: the app (``frontend.app``) routes, and handlers take a ``Request`` and return a
``Response`` or a ``StreamResponse``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgspec

from frontend.http.errors import UNREADABLE_JSON, ApiError, from_validation, invalid, unavailable
from frontend.observe.trace import RequestTrace

T = TypeVar("T")

Headers = list[tuple[bytes, bytes]]


@dataclass(slots=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    id: str  # unique; names the completion and the engine requests
    trace: RequestTrace | None = None  # what it did, for its log line and the metrics
    query: dict[str, str] = field(default_factory=dict)  # the query string's parameters (the last of a repeated one)

    def decode(self, type_: type[T]) -> T:
        """The JSON body as ``type_``; a 400 naming the bad field otherwise. A top-level field
        sent as ``null`` means its default (as llama-server and OpenAI read it), also where the
        field itself takes no null."""
        try:
            return msgspec.json.decode(self.body, type=type_)
        except msgspec.ValidationError as exc:
            return _without_nulls(self.body, type_, exc)
        except msgspec.DecodeError as exc:
            raise from_validation(exc) from None
        except UNREADABLE_JSON as exc:  # text that is not UTF-8, or nested deeper than the decoder goes
            raise invalid(f"request body is not valid JSON: {exc}") from None


def _without_nulls(body: bytes, type_: type[T], exc: msgspec.ValidationError) -> T:
    """``type_`` from the body less the top-level fields that are null where null is not taken,
    one at a time as the errors name them; a 400 for any other error."""
    fields: Any = None
    while True:
        field_name = str(exc).rpartition(" - at `$.")[2].rstrip("`")
        if "got `null`" not in str(exc) or not field_name.isidentifier():
            raise from_validation(exc) from None
        if fields is None:
            fields = msgspec.json.decode(body)
        if not isinstance(fields, dict) or field_name not in fields:
            raise from_validation(exc) from None
        del fields[field_name]
        try:
            return msgspec.convert(fields, type_)
        except msgspec.ValidationError as again:
            exc = again


@dataclass(slots=True)
class Response:
    body: bytes
    status: int = 200
    content_type: bytes = b"application/json"
    headers: Headers = field(default_factory=list)


@dataclass(slots=True)
class StreamResponse:
    """A streamed body. Its first chunk is produced before the status is sent, so an ApiError
    raised before it becomes an ordinary HTTP error."""

    chunks: AsyncGenerator[bytes, None]
    content_type: bytes = b"text/event-stream"
    headers: Headers = field(default_factory=list)
    error_event: Callable[[ApiError], bytes] | None = None  # a failure's last event; None: OpenAI's


def json_response(obj: Any, status: int = 200, headers: Headers | None = None) -> Response:
    return Response(msgspec.json.encode(obj), status, headers=headers or [])


ErrorBody = Callable[[ApiError], bytes]  # an API's error JSON


def error_response(exc: ApiError, body: ErrorBody = ApiError.body) -> Response:
    return Response(body(exc), exc.status, headers=list(exc.headers))


class BodyBudget:
    """The bytes of request bodies one worker is receiving at once, bounded: clients opening many
    uploads they never finish would otherwise hold memory without limit (each up to
    --max-body-size)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0


async def read_body(receive: Any, headers: dict[str, str], max_size: int, timeout_s: float,
                    budget: BodyBudget) -> bytes:
    """The whole request body; 413 once it is known to exceed ``max_size`` bytes, 408 when it has
    not all arrived within ``timeout_s`` seconds (--timeout), 503 while the bodies being received
    would pass the worker's ``budget``."""
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_size:
        raise _too_large(int(declared), max_size)
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise ConnectionResetError("client went away while sending the body")
                chunk = message.get("body", b"")
                size += len(chunk)
                budget.held += len(chunk)
                if size > max_size:
                    raise _too_large(size, max_size)
                if budget.held > budget.limit:
                    raise unavailable(f"this worker is receiving {budget.held} bytes of request bodies at once, "
                                      f"over its limit of {budget.limit}; retry")
                chunks.append(chunk)
                if not message.get("more_body", False):
                    return b"".join(chunks)
    except TimeoutError:
        raise ApiError(408, f"the request body did not arrive within {timeout_s:g} s (--timeout)") from None
    finally:
        budget.held -= size


class ClientStalled(Exception):
    """The client read nothing of its response for ``--timeout`` seconds."""


Send = Callable[[dict[str, Any]], Awaitable[None]]


def write_bounded(send: Send, timeout_s: float) -> Send:
    """``send`` whose every write gives up (ClientStalled) after waiting ``timeout_s`` seconds for
    the client to read, as llama-server's write timeout does. granian buffers a few MB of a
    response, then a write waits; without a bound, a stream whose client stopped reading would hold
    its generation, and what it produced, until the connection closed."""
    async def bounded(message: dict[str, Any]) -> None:
        try:
            async with asyncio.timeout(timeout_s):
                await send(message)
        except TimeoutError:
            raise ClientStalled(f"the client read nothing for {timeout_s:g} s (--timeout)") from None
    return bounded


def _too_large(size: int, max_size: int) -> ApiError:
    return ApiError(413, f"request body of {size} bytes exceeds the limit of {max_size} bytes (--max-body-size)")
