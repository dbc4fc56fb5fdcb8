"""The resumable streams this HTTP worker records (llama-server's ``X-Conversation-Id`` sessions).

A streamed generation whose request carries ``X-Conversation-Id`` runs detached from its HTTP
connection: its SSE bytes go into a ``StreamSession`` that any number of readers follow from any
byte offset, the original POST included, so a client that lost its connection (a page reload)
resumes with ``GET /v1/stream`` and gets the rest. One conversation has at most one session: a
new stream with the same id cancels the old one.

Bounds, llama-server's (tools/server/server-stream.cpp): a session keeps the last
``MAX_BYTES`` (4 MiB) of its stream, an offset before them is lost (in memory it holds up to
twice that, so that the front is dropped once per 4 MiB, not at every event); a finished session is
forgotten ``TTL_S`` (300 s) after its end; a running one lives as long as its generation, which
ends by itself (``max_tokens``, end of generation, the context) or by ``DELETE /v1/stream``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Coroutine
from typing import Any

from ipc.protocol import StreamInfo

log = logging.getLogger(__name__)

MAX_BYTES = 4 * 1024 * 1024
TTL_S = 300.0


class StreamSession:
    """One conversation's stream: the bytes kept so far and the readers waiting for more."""

    def __init__(self, conversation_id: str, max_bytes: int = MAX_BYTES) -> None:
        self.conversation_id = conversation_id
        self.started_at = int(time.time())
        self.completed_at = 0  # unix seconds once done
        self.producer: asyncio.Task[None] | None = None  # the generation that writes it
        self._max_bytes = max_bytes
        # Bytes from stream offset ``_base`` on. Up to twice the limit is kept so that dropping
        # the front (a copy) happens once per ``max_bytes`` appended, not at every append; what
        # counts as kept is the last ``max_bytes`` all the same (``dropped``).
        self._buffer = bytearray()
        self._base = 0
        self._changed = asyncio.Event()  # set (and replaced) at every append and at the end

    @property
    def total_bytes(self) -> int:
        """Bytes that ever entered the session."""
        return self._base + len(self._buffer)

    @property
    def dropped(self) -> int:
        """Stream offset of the oldest byte a reader may still ask for."""
        return max(self._base, self.total_bytes - self._max_bytes)

    @property
    def done(self) -> bool:
        return self.completed_at != 0

    def append(self, data: bytes) -> None:
        if self.done or not data:
            return
        self._buffer += data
        if len(self._buffer) > 2 * self._max_bytes:
            cut = len(self._buffer) - self._max_bytes
            del self._buffer[:cut]
            self._base += cut
        self._wake()

    def finish(self) -> None:
        if not self.done:
            self.completed_at = int(time.time())
            self._wake()

    def cancel(self) -> None:
        """Stop the generation (its engine requests are aborted) and wake the readers."""
        if self.producer is not None:
            self.producer.cancel()
        self.finish()

    def keeps(self, offset: int) -> bool:
        """Whether a reader may start at ``offset`` (the bytes before it may be gone, not it)."""
        return offset >= self.dropped

    async def read(self, offset: int) -> AsyncIterator[bytes]:
        """The stream from byte ``offset`` on: what is kept, then new bytes as they come, until the
        stream ends, or until the reader falls so far behind that its next byte is no longer
        kept (it stops there, as in llama-server)."""
        while True:
            changed = self._changed
            if not self.keeps(offset):
                log.warning("a reader of stream %r fell behind the kept bytes", self.conversation_id)
                return
            if offset < self.total_bytes:
                chunk = bytes(self._buffer[offset - self._base:])
                offset += len(chunk)
                yield chunk
                continue
            if self.done:
                return
            await changed.wait()

    def info(self) -> StreamInfo:
        return StreamInfo(self.conversation_id, self.done, self.total_bytes, self.started_at, self.completed_at)

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()


class StreamSessions:
    """This worker's sessions by conversation id."""

    def __init__(self, ttl_s: float = TTL_S) -> None:
        self._sessions: dict[str, StreamSession] = {}
        self._ttl_s = ttl_s
        self._producers: set[asyncio.Task[None]] = set()  # asyncio keeps only weak references to tasks

    def create(self, conversation_id: str) -> StreamSession:
        """A new session for the conversation; its previous one (if any) is cancelled."""
        self.cancel(conversation_id)
        session = StreamSession(conversation_id)
        self._sessions[conversation_id] = session
        return session

    def produce(self, session: StreamSession, producer: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run the coroutine that writes the session, as a task of its own (not its client's)."""
        task = asyncio.create_task(producer)
        self._producers.add(task)
        task.add_done_callback(self._producers.discard)
        session.producer = task
        return task

    def get(self, conversation_id: str) -> StreamSession | None:
        return self._sessions.get(conversation_id)

    def finished(self, session: StreamSession) -> None:
        """The session's stream ended: forget it once its time to live is over."""
        session.finish()
        asyncio.get_running_loop().call_later(self._ttl_s, functools.partial(self.forget, session))

    def cancel(self, conversation_id: str) -> bool:
        """Stop and forget the conversation's session; False when there is none."""
        session = self._sessions.pop(conversation_id, None)
        if session is None:
            return False
        session.cancel()
        return True

    def lookup(self, conversation_ids: list[str]) -> list[StreamInfo]:
        """The sessions of these ids, each matching itself and its ``<id>::<model>`` variants (as
        llama-server's router names them); never a session the caller did not name."""
        return [s.info() for key, s in self._sessions.items() if _named(key, conversation_ids)]

    def cancel_all(self) -> None:
        for conversation_id in list(self._sessions):
            self.cancel(conversation_id)

    def forget(self, session: StreamSession) -> None:
        """Drop the session from the conversation's record (unless a newer one replaced it)."""
        if self._sessions.get(session.conversation_id) is session:
            del self._sessions[session.conversation_id]


def _named(key: str, conversation_ids: list[str]) -> bool:
    return any(key == cid or key.startswith(cid + "::") for cid in conversation_ids if cid)
