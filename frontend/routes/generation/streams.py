"""Resumable streams, llama-server's routes: a streamed generation whose request carries
``X-Conversation-Id`` is recorded (``record``) and survives its client; ``GET /v1/stream?conv_id=
ID&from=N`` replays it from byte N and follows it to its end, ``DELETE /v1/stream?conv_id=ID``
stops it (the generation is aborted, its slot freed) and forgets it, ``POST /v1/streams/lookup``
``{"conversation_ids": [...]}`` describes the streams of the ids it is given (and only those: a
caller cannot list other people's streams). The id travels in the query string because it may
hold a model name with slashes. What is kept, and for how long: ``frontend.streams.sessions``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import msgspec

from frontend.http import sse
from frontend.http.asgi import Request, Response, StreamResponse, json_response
from frontend.http.errors import ApiError, invalid
from frontend.observe.trace import RequestTrace
from frontend.streams.sessions import StreamSession
from frontend.streams.workers import StreamUnavailable, WorkerStreams
from ipc.protocol import StreamReadStatus

log = logging.getLogger(__name__)

HEADER = "x-conversation-id"
_STOPPED = "request cancelled before its stream began (DELETE /v1/stream, or a newer stream of the conversation)"
PARAMETERS = (  # /openapi.json
    {"name": "conv_id", "in": "query", "required": True, "schema": {"type": "string"}},
    {"name": "from", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 0}},
)


class StreamLookupRequest(msgspec.Struct, forbid_unknown_fields=True):
    conversation_ids: list[str]


class StreamStatus(msgspec.Struct):
    conversation_id: str
    is_done: bool
    total_bytes: int  # bytes the stream ever sent (``from`` counts in these)
    started_at: int  # unix seconds
    completed_at: int  # unix seconds; 0 while it runs


async def record(streams: WorkerStreams, req: Request, response: StreamResponse) -> StreamResponse:
    """Run a resumable stream apart from its HTTP connection; the response follows its record.

    The session exists from the start, so a client that leaves while its request waits for a
    slot leaves it waiting, as in llama-server. An error before the first chunk (a full queue, a
    prompt over the context) is the POST's HTTP error and leaves no stream behind."""
    session = await streams.create(req.headers[HEADER])
    began: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    began.add_done_callback(_read_error)
    producer = streams.sessions.produce(session, _produce(streams, session, response, began, req.trace))
    # asyncio.wait cancels neither: the client may leave here, the generation goes on
    await asyncio.wait((began, producer), return_when=asyncio.FIRST_COMPLETED)
    if not began.done():  # stopped before it ran at all
        raise invalid(_STOPPED)
    began.result()  # the error before the first chunk, if any
    return StreamResponse(_follow(session.read(0)), response.content_type, response.headers, response.error_event)


async def _produce(streams: WorkerStreams, session: StreamSession, response: StreamResponse,
                   began: asyncio.Future[None], trace: RequestTrace | None) -> None:
    """Write the generation's chunks into its session until it ends or is cancelled (DELETE, or a
    newer stream of the conversation); ``began`` resolves at the first chunk, or with the error
    that came before it."""
    try:
        try:
            session.append(await anext(response.chunks))
        except StopAsyncIteration:
            pass
        except asyncio.CancelledError:
            began.set_exception(invalid(_STOPPED))
            raise
        except Exception as exc:
            began.set_exception(exc)
            streams.sessions.forget(session)
            return
        if trace is not None:
            trace.resumable = True  # its generation, not its response, ends it
        began.set_result(None)
        async for chunk in response.chunks:
            session.append(chunk)
    except Exception:
        log.exception("resumable stream failed")
        session.append(sse.internal_error_event(response.error_event))
    finally:
        await response.chunks.aclose()  # when cancelled: aborts its engine requests
        streams.sessions.finished(session)
        if trace is not None and trace.resumable:
            trace.close()


def _read_error(began: asyncio.Future[None]) -> None:
    """Mark the error as seen: the POST it was for may have left without reading it."""
    if not began.cancelled():
        began.exception()


async def get_stream(streams: WorkerStreams, req: Request) -> StreamResponse:
    conversation_id = _conversation_id(req)
    offset = _offset(req)
    try:
        chunks = await streams.read(conversation_id, offset)
    except StreamUnavailable as exc:
        if exc.status == StreamReadStatus.OFFSET_LOST:
            raise invalid("Stream offset lost, please restart", param="from") from None
        raise ApiError(404, "Stream not found or expired") from None
    return StreamResponse(_follow(chunks))


async def delete_stream(streams: WorkerStreams, req: Request) -> Response:
    """Idempotent, as in llama-server: 204 whether or not the stream still existed."""
    conversation_id = _conversation_id(req)
    if not await streams.cancel(conversation_id):
        log.info("stop for a stream no worker has: conv_id=%s", conversation_id)
    return Response(b"", 204)


async def lookup(streams: WorkerStreams, req: Request) -> Response:
    ids = req.decode(StreamLookupRequest).conversation_ids
    found = await streams.lookup(ids)
    return json_response([StreamStatus(**msgspec.structs.asdict(info)) for info in found])


async def _follow(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The chunks, after an empty one: the status goes out at once, also when nothing is left to
    send (the stream ended at the offset asked for, or was empty)."""
    yield b""
    async with contextlib.aclosing(chunks):  # a reader that leaves ends its peer's read too
        async for chunk in chunks:
            yield chunk


def _conversation_id(req: Request) -> str:
    conversation_id = req.query.get("conv_id", "")
    if not conversation_id:
        raise invalid("Missing conversation id in path", param="conv_id")
    return conversation_id


def _offset(req: Request) -> int:
    text = req.query.get("from", "")
    if not text:
        return 0
    if not text.isdigit() or not text.isascii():
        raise invalid(f"Invalid 'from' offset {text!r}: a byte offset (0 or more) in the stream", param="from")
    return int(text)
