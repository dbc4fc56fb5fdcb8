"""Resumable streams across the HTTP workers: this worker's sessions, and its peers'.

granian's workers share the listening socket, so a client's GET or DELETE may reach a worker
other than the one whose POST records the stream. No state is shared: each worker answers for
its own sessions on a unix socket in the run directory (``streams/<pid>.sock``) and, for a
conversation it does not hold, asks the other sockets there (one connection per question, a
length-prefixed ``ipc.protocol`` message each way). A worker granian replaced left a socket
nobody listens on: a refused connection removes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import struct
from collections.abc import AsyncIterator, Awaitable, Callable

import msgspec

from frontend.streams.sessions import StreamSession, StreamSessions
from ipc.protocol import (
    Message,
    StreamBytes,
    StreamCancel,
    StreamCancelled,
    StreamInfo,
    StreamLookup,
    StreamOpened,
    StreamRead,
    StreamReadStatus,
    StreamSessions as SessionsReply,
    decode,
    encode,
)

log = logging.getLogger(__name__)

SOCKET_DIR = "streams"
_LENGTH = struct.Struct("!I")
_MAX_FRAME = 64 * 1024 * 1024  # a session keeps 4 MiB; anything larger is not a peer speaking
PEER_TIMEOUT_S = 5.0  # to connect and get an answer (a read then waits as long as its stream runs)


class StreamUnavailable(Exception):
    """No worker has the stream (``status`` NOT_FOUND) or its offset is lost (OFFSET_LOST)."""

    def __init__(self, status: StreamReadStatus) -> None:
        super().__init__(status.name)
        self.status = status


class WorkerStreams:
    """What one HTTP worker knows of the resumable streams: its own, and how to reach the rest."""

    def __init__(self, run_dir: str, worker: str = "") -> None:
        """``worker`` names this worker's socket; by default its process id (at start: granian
        may build the app before it forks the worker)."""
        self.sessions = StreamSessions()
        self._dir = os.path.join(run_dir, SOCKET_DIR)
        self._worker = worker
        self._path = ""
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._path = os.path.join(self._dir, f"{self._worker or os.getpid()}.sock")
        os.makedirs(self._dir, mode=0o700, exist_ok=True)
        try:
            self._server = await asyncio.start_unix_server(self._serve, path=self._path)
        except OSError as exc:  # e.g. a run directory too long for a socket path
            log.warning("resumable streams stay in this worker: cannot listen on %s: %s", self._path, exc)

    async def close(self) -> None:
        self.sessions.cancel_all()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(FileNotFoundError):
                os.remove(self._path)

    async def create(self, conversation_id: str) -> StreamSession:
        """A new session here; the conversation's session in any worker is cancelled first."""
        await self._ask_all(StreamCancel(conversation_id))
        return self.sessions.create(conversation_id)

    async def read(self, conversation_id: str, offset: int) -> AsyncIterator[bytes]:
        """The stream's bytes from ``offset``, wherever it is recorded; raises StreamUnavailable
        before the first byte when no worker has it or the offset is lost."""
        session = self.sessions.get(conversation_id)
        if session is not None:
            if not session.keeps(offset):
                raise StreamUnavailable(StreamReadStatus.OFFSET_LOST)
            return session.read(offset)
        status = StreamReadStatus.NOT_FOUND
        for path in self._peer_paths():
            exchange = await self._exchange(path, StreamRead(conversation_id, offset))
            if exchange is None:
                continue
            opened, reader, writer = exchange
            if isinstance(opened, StreamOpened) and opened.status == StreamReadStatus.OK:
                return _relay(reader, writer)
            writer.close()
            if isinstance(opened, StreamOpened) and opened.status == StreamReadStatus.OFFSET_LOST:
                status = StreamReadStatus.OFFSET_LOST
        raise StreamUnavailable(status)

    async def lookup(self, conversation_ids: list[str]) -> list[StreamInfo]:
        replies = await self._ask_all(StreamLookup(conversation_ids))
        found = [info for reply in replies if isinstance(reply, SessionsReply) for info in reply.sessions]
        return self.sessions.lookup(conversation_ids) + found

    async def cancel(self, conversation_id: str) -> bool:
        """Stop the conversation's stream wherever it runs; False when no worker had it."""
        replies = await self._ask_all(StreamCancel(conversation_id))
        here = self.sessions.cancel(conversation_id)
        return here or any(isinstance(r, StreamCancelled) and r.found for r in replies)

    # ------------------------------------------------------------------ asking the peers

    def _peer_paths(self) -> list[str]:
        try:
            names = os.listdir(self._dir)
        except FileNotFoundError:
            return []
        return [os.path.join(self._dir, n) for n in names if n.endswith(".sock") and n != os.path.basename(self._path)]

    async def _exchange(self, path: str, question: Message
                        ) -> tuple[Message | None, asyncio.StreamReader, asyncio.StreamWriter] | None:
        """Ask the peer at ``path``: its first answer (None: it closed without one) and the open
        connection, which the caller closes; None when the peer cannot be reached."""
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(path), PEER_TIMEOUT_S)
        except ConnectionRefusedError:  # its worker is gone
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
            return None
        except (OSError, TimeoutError) as exc:
            log.warning("stream peer %s unreachable: %s", path, exc)
            return None
        try:
            await _write(writer, question)
            return await asyncio.wait_for(_read(reader), PEER_TIMEOUT_S), reader, writer
        except (OSError, TimeoutError, msgspec.DecodeError) as exc:
            log.warning("stream peer %s failed: %s", path, exc)
            writer.close()
            return None

    async def _ask_all(self, question: Message) -> list[Message]:
        """Every peer's answer to ``question`` (the peers that fail to answer are left out)."""
        answers = await asyncio.gather(*(self._ask(path, question) for path in self._peer_paths()))
        return [a for a in answers if a is not None]

    async def _ask(self, path: str, question: Message) -> Message | None:
        exchange = await self._exchange(path, question)
        if exchange is None:
            return None
        answer, _, writer = exchange
        writer.close()
        return answer

    # ------------------------------------------------------------------ answering them

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            question = await asyncio.wait_for(_read(reader), PEER_TIMEOUT_S)
            handler = self._handlers().get(type(question))
            if handler is None:
                log.warning("stream peer sent %s; dropped", type(question).__name__)
                return
            await handler(question, writer)
        except (OSError, TimeoutError, msgspec.DecodeError) as exc:  # the peer left or spoke nonsense
            log.debug("stream peer connection ended: %s", exc)
        finally:
            writer.close()

    def _handlers(self) -> dict[type, Callable[[Message, asyncio.StreamWriter], Awaitable[None]]]:
        return {StreamRead: self._answer_read, StreamLookup: self._answer_lookup, StreamCancel: self._answer_cancel}

    async def _answer_read(self, question: Message, writer: asyncio.StreamWriter) -> None:
        assert isinstance(question, StreamRead)
        session = self.sessions.get(question.conversation_id)
        if session is None:
            await _write(writer, StreamOpened(StreamReadStatus.NOT_FOUND))
            return
        if not session.keeps(question.offset):
            await _write(writer, StreamOpened(StreamReadStatus.OFFSET_LOST))
            return
        await _write(writer, StreamOpened(StreamReadStatus.OK))
        async with contextlib.aclosing(session.read(question.offset)) as chunks:
            async for chunk in chunks:
                await _write(writer, StreamBytes(chunk))

    async def _answer_lookup(self, question: Message, writer: asyncio.StreamWriter) -> None:
        assert isinstance(question, StreamLookup)
        await _write(writer, SessionsReply(self.sessions.lookup(question.conversation_ids)))

    async def _answer_cancel(self, question: Message, writer: asyncio.StreamWriter) -> None:
        assert isinstance(question, StreamCancel)
        await _write(writer, StreamCancelled(self.sessions.cancel(question.conversation_id)))


async def _relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> AsyncIterator[bytes]:
    """The bytes a peer sends for a read, until it closes the connection (the stream ended)."""
    try:
        while (message := await _read(reader)) is not None:
            if isinstance(message, StreamBytes):
                yield message.data
    except (OSError, msgspec.DecodeError) as exc:
        log.warning("stream peer failed mid-stream: %s", exc)
    finally:
        writer.close()


async def _write(writer: asyncio.StreamWriter, message: Message) -> None:
    payload = encode(message)
    writer.write(_LENGTH.pack(len(payload)) + payload)
    await writer.drain()


async def _read(reader: asyncio.StreamReader) -> Message | None:
    """The next message; None when the peer closed the connection between messages."""
    try:
        (length,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise msgspec.DecodeError("connection closed inside a length prefix") from None
        return None
    if length > _MAX_FRAME:
        raise msgspec.DecodeError(f"a frame of {length} bytes")
    try:
        return decode(await reader.readexactly(length))
    except asyncio.IncompleteReadError:
        raise msgspec.DecodeError("connection closed inside a frame") from None
