"""Resumable streams without a model: a session's bounded record and its readers, and two HTTP
workers' ``WorkerStreams`` in one event loop (each on its own socket in a shared run directory),
so that a read, lookup or stop reaching the worker that does not hold the stream is exercised
deterministically; and how a POST's stream is recorded apart from its client. The same through
real servers: tests/api/test_api_streams.py."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from frontend.http.asgi import Request, StreamResponse
from frontend.http.errors import ApiError
from frontend.observe.trace import RequestTrace
from frontend.routes.generation.streams import HEADER, record
from frontend.streams.sessions import StreamSession, StreamSessions
from frontend.streams.workers import StreamUnavailable, WorkerStreams
from ipc.protocol import StreamReadStatus


def run(coro_fn: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(coro_fn(), 10))


async def collect(chunks: AsyncIterator[bytes]) -> bytes:
    return b"".join([c async for c in chunks])


def test_a_session_keeps_its_last_bytes_and_readers_follow_it():
    async def scenario() -> None:
        session = StreamSession("c", max_bytes=10)
        reader = asyncio.create_task(collect(session.read(0)))
        for part in (b"0123", b"4567"):
            session.append(part)
            await asyncio.sleep(0)  # the reader takes each part as it comes
        session.finish()
        assert await reader == b"01234567"
        late = StreamSession("c", max_bytes=10)
        for i in range(30):
            late.append(b"%d" % (i % 10))
        late.finish()
        assert late.total_bytes == 30 and late.dropped == 20  # exactly the last max_bytes count
        assert not late.keeps(19) and late.keeps(20)
        assert await collect(late.read(25)) == b"56789"
        assert await collect(late.read(30)) == b""  # at the end of a finished stream: nothing more
        late.append(b"x")  # a finished session takes nothing more
        assert late.total_bytes == 30
    run(scenario)


def test_a_reader_that_falls_behind_the_kept_bytes_stops():
    async def scenario() -> None:
        session = StreamSession("c", max_bytes=4)
        session.append(b"ab")
        chunks = session.read(0)
        assert await anext(chunks) == b"ab"
        session.append(b"cdefghijk")  # its next byte (offset 2) is no longer kept
        assert await collect(chunks) == b""
    run(scenario)


def test_a_new_stream_of_a_conversation_cancels_the_old_one_and_a_finished_one_expires():
    async def scenario() -> None:
        sessions = StreamSessions(ttl_s=0.05)
        first = sessions.create("c")
        sessions.produce(first, asyncio.sleep(60))
        second = sessions.create("c")
        await asyncio.sleep(0)
        assert first.done and first.producer is not None and first.producer.cancelled()
        assert sessions.get("c") is second and not second.done
        sessions.finished(second)
        assert sessions.get("c") is second  # kept for its time to live
        await asyncio.sleep(0.1)
        assert sessions.get("c") is None
    run(scenario)


def test_lookup_answers_only_for_the_ids_named_and_their_model_variants():
    async def scenario() -> None:
        sessions = StreamSessions()
        for key in ("conv", "conv::org/model:Q8_0", "convx", "other"):
            sessions.create(key)
        assert sorted(i.conversation_id for i in sessions.lookup(["conv"])) == ["conv", "conv::org/model:Q8_0"]
        assert sessions.lookup([]) == [] and sessions.lookup([""]) == [] and sessions.lookup(["nope"]) == []
    run(scenario)


@pytest.fixture
def two_workers(tmp_path) -> Callable[[Callable[[WorkerStreams, WorkerStreams], Awaitable[None]]], None]:
    def with_workers(body: Callable[[WorkerStreams, WorkerStreams], Awaitable[None]]) -> None:
        async def scenario() -> None:
            owner, other = WorkerStreams(str(tmp_path), "owner"), WorkerStreams(str(tmp_path), "other")
            await owner.start()
            await other.start()
            try:
                await body(owner, other)
            finally:
                await owner.close()
                await other.close()
        run(scenario)
    return with_workers


def test_another_worker_replays_and_follows_a_stream(two_workers):
    async def body(owner: WorkerStreams, other: WorkerStreams) -> None:
        session = await owner.create("c")
        session.append(b"data: 1\n\n")
        remote = await other.read("c", 0)
        assert await anext(remote) == b"data: 1\n\n"
        session.append(b"data: 2\n\n")
        assert await anext(remote) == b"data: 2\n\n"  # followed live
        owner.sessions.finished(session)
        assert await collect(remote) == b""  # and ends with the stream
        assert await collect(await other.read("c", 9)) == b"data: 2\n\n"
        with pytest.raises(StreamUnavailable) as missing:
            await other.read("unknown", 0)
        assert missing.value.status == StreamReadStatus.NOT_FOUND
        [info] = await other.lookup(["c"])
        assert (info.conversation_id, info.is_done, info.total_bytes) == ("c", True, 18)
    two_workers(body)


def test_another_worker_stops_a_stream_and_a_new_one_replaces_it_everywhere(two_workers):
    async def body(owner: WorkerStreams, other: WorkerStreams) -> None:
        session = await owner.create("c")
        owner.sessions.produce(session, asyncio.sleep(60))  # a generation that would run on
        assert await other.cancel("c") is True
        await asyncio.sleep(0)
        assert session.done and session.producer is not None and session.producer.cancelled()
        assert owner.sessions.get("c") is None
        assert await other.cancel("c") is False  # idempotent
        again = await owner.create("c")
        replacement = await other.create("c")  # the same conversation streams again, elsewhere
        assert again.done and owner.sessions.get("c") is None and other.sessions.get("c") is replacement
    two_workers(body)


def test_a_socket_left_by_a_dead_worker_is_skipped_and_removed(tmp_path, two_workers):
    stale = tmp_path / "streams" / "12345.sock"

    async def body(owner: WorkerStreams, other: WorkerStreams) -> None:
        with socket.socket(socket.AF_UNIX) as s:  # bound, never listening: as a killed worker leaves it
            s.bind(str(stale))
        assert await other.lookup(["c"]) == []
        assert not stale.exists()
    two_workers(body)


def _request(conversation_id: str) -> Request:
    return Request("POST", "/v1/chat/completions", {HEADER: conversation_id}, b"{}", "req-1",
                   RequestTrace("req-1", "POST", "/v1/chat/completions"))


def test_record_runs_the_stream_apart_from_its_client(tmp_path):
    async def scenario() -> None:
        streams = WorkerStreams(str(tmp_path))
        release = asyncio.Event()

        async def chunks() -> AsyncIterator[bytes]:
            yield b"data: 1\n\n"
            await release.wait()
            yield b"data: [DONE]\n\n"

        req = _request("c")
        followed = await record(streams, req, StreamResponse(chunks()))
        assert await anext(followed.chunks) == b""  # the status goes out at once
        assert await anext(followed.chunks) == b"data: 1\n\n"
        await followed.chunks.aclose()  # the client leaves
        release.set()
        session = streams.sessions.get("c")
        assert session is not None and session.producer is not None
        await session.producer
        assert session.done and session.total_bytes == len(b"data: 1\n\ndata: [DONE]\n\n")
        assert req.trace is not None and req.trace.resumable  # closed by the generation's end
    run(scenario)


def test_record_keeps_an_error_before_the_first_chunk_and_no_session(tmp_path):
    async def scenario() -> None:
        streams = WorkerStreams(str(tmp_path))

        async def refused() -> AsyncIterator[bytes]:
            raise ApiError(503, "queue full")
            yield b""  # an async generator

        req = _request("c")
        with pytest.raises(ApiError) as refusal:
            await record(streams, req, StreamResponse(refused()))
        assert refusal.value.status == 503 and streams.sessions.get("c") is None
        assert req.trace is not None and not req.trace.resumable  # the app closes it with the error
    run(scenario)


def test_a_stream_stopped_before_its_first_chunk_answers_its_post_with_a_400(tmp_path):
    async def scenario() -> None:
        streams = WorkerStreams(str(tmp_path))
        closed = asyncio.Event()

        async def queued() -> AsyncIterator[bytes]:
            try:
                await asyncio.sleep(60)  # waiting for a slot
                yield b""
            finally:
                closed.set()  # (Generation aborts its engine requests here)

        post = asyncio.create_task(record(streams, _request("c"), StreamResponse(queued())))
        await asyncio.sleep(0.01)
        assert streams.sessions.get("c") is not None  # resumable while still queued
        assert await streams.cancel("c")
        with pytest.raises(ApiError) as stopped:
            await post
        assert stopped.value.status == 400 and closed.is_set()
    run(scenario)
