"""Resumable streams (llama-server's ``X-Conversation-Id``, ``GET``/``DELETE /v1/stream``,
``POST /v1/streams/lookup``) through a real server with two HTTP workers: each GET, DELETE and
lookup opens its own connection, so it reaches either worker, the one recording the stream or
the other. The model's words are never asserted; the bytes of the streams are compared.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time

import httpx
import pytest

from tests.conftest import start_server

TIMEOUT_S = 60  # generation shares two cores with everything else
CHAT = {"messages": [{"role": "user", "content": "hello"}], "temperature": 0, "stream": True}
LONG = {"prompt": "Once upon a time", "ignore_eos": True, "temperature": 0, "stream": True,
        "stream_options": {"include_usage": True}}


@pytest.fixture(scope="module")
def server():
    with start_server("-np", "2", "-c", "2048", "--http-workers", "2") as handle:
        yield handle


def stream(server, conversation_id: str, offset: int | None = None) -> httpx.Response:
    params = {"conv_id": conversation_id} | ({} if offset is None else {"from": str(offset)})
    return httpx.get(f"{server.base_url}/v1/stream", params=params, timeout=TIMEOUT_S)


def events(raw: bytes) -> list[str]:
    return [e for e in raw.decode().split("\n\n") if e]


def lookup(server, conversation_id: str) -> list[dict]:
    return httpx.post(f"{server.base_url}/v1/streams/lookup", json={"conversation_ids": [conversation_id]},
                      timeout=TIMEOUT_S).json()


def busy_slots(server) -> int:
    return sum(s["is_processing"] for s in httpx.get(f"{server.base_url}/slots", timeout=TIMEOUT_S).json())


def test_replay_from_an_offset_equals_the_original_stream(server):
    conversation = "conv-replay::org/model:Q8_0"  # the slash travels in the query string
    r = httpx.post(f"{server.base_url}/v1/chat/completions", json={**CHAT, "max_tokens": 8},
                   headers={"X-Conversation-Id": conversation}, timeout=TIMEOUT_S)
    original = r.content
    assert r.status_code == 200 and original.endswith(b"data: [DONE]\n\n")
    first_event = original.index(b"\n\n") + 2
    for _ in range(4):  # fresh connections: either worker
        assert stream(server, conversation, 0).content == original
        assert stream(server, conversation).content == original  # from defaults to 0
        skipped = stream(server, conversation, first_event)
        assert skipped.status_code == 200 and skipped.headers["content-type"] == "text/event-stream"
        assert skipped.content == original[first_event:]
        assert events(skipped.content) == events(original)[1:]
        assert stream(server, conversation, len(original)).content == b""
    [entry] = lookup(server, "conv-replay") + lookup(server, "never-streamed")  # the id matches its ::model variant
    assert entry["conversation_id"] == conversation and entry["is_done"] is True
    assert entry["total_bytes"] == len(original) and 0 < entry["started_at"] <= entry["completed_at"]


def test_a_stream_resumes_after_its_client_left(server):
    conversation = "conv-resume"
    received = b""
    with httpx.stream("POST", f"{server.base_url}/v1/completions", json={**LONG, "max_tokens": 40},
                      headers={"X-Conversation-Id": conversation}, timeout=TIMEOUT_S) as r:
        for part in r.iter_raw():
            received += part
            if received.count(b"\n\n") >= 2:
                break  # the client goes away (a page reload) mid-stream
    rest = stream(server, conversation, len(received))
    assert rest.status_code == 200 and rest.content.endswith(b"data: [DONE]\n\n")
    whole = received + rest.content
    assert stream(server, conversation, 0).content == whole
    chunks = [json.loads(e.removeprefix("data: ")) for e in events(whole)[:-1]]
    # the generation ran to its end although nobody was reading: all its tokens, cut by length
    assert chunks[-1]["usage"]["completion_tokens"] == 40
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "length"


def test_a_client_that_leaves_while_queued_leaves_its_request_queued(server):
    """Both slots busy: the resumable request waits for one; its client goes away meanwhile (a raw
    socket closed before any answer, as a page reload); it runs once a slot is free."""
    conversation = "conv-queued"
    with contextlib.ExitStack() as busy:
        readers = []  # kept: a reader dropped closes its connection
        for _ in range(2):
            r = busy.enter_context(httpx.stream("POST", f"{server.base_url}/v1/completions", timeout=TIMEOUT_S,
                                                json={**LONG, "max_tokens": 1500}))
            readers.append(r.iter_raw())
            next(readers[-1])
        assert busy_slots(server) == 2
        body = json.dumps({**LONG, "max_tokens": 12}).encode()
        with socket.create_connection(("127.0.0.1", server.port)) as raw:
            raw.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                        b"X-Conversation-Id: " + conversation.encode() + b"\r\n"
                        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
            deadline = time.monotonic() + 10
            while not lookup(server, conversation):
                assert time.monotonic() < deadline, "the queued stream was never recorded"
                time.sleep(0.05)
        [entry] = lookup(server, conversation)
        assert entry["is_done"] is False
    # the two long streams' clients left: their slots free up, the queued request runs
    whole = stream(server, conversation, 0).content
    assert whole.endswith(b"data: [DONE]\n\n")
    usage = json.loads(events(whole)[-2].removeprefix("data: "))["usage"]
    assert usage["completion_tokens"] == 12


def test_delete_aborts_the_generation_and_frees_its_slot(server):
    conversation = "conv-stop"
    with httpx.stream("POST", f"{server.base_url}/v1/completions", json={**LONG, "max_tokens": 1500},
                      headers={"X-Conversation-Id": conversation}, timeout=TIMEOUT_S) as r:
        parts = r.iter_raw()
        next(parts)
        assert busy_slots(server) == 1
        deleted = httpx.delete(f"{server.base_url}/v1/stream", params={"conv_id": conversation}, timeout=TIMEOUT_S)
        assert deleted.status_code == 204 and deleted.content == b""
        rest = b"".join(parts)  # the original stream ends too, without its [DONE]
    assert b"[DONE]" not in rest and rest.count(b"\n\n") < 1500
    deadline = time.monotonic() + 5
    while busy_slots(server):
        assert time.monotonic() < deadline, "the slot stayed busy after the stop"
        time.sleep(0.05)
    for _ in range(3):
        gone = stream(server, conversation, 0)
        assert gone.status_code == 404 and gone.json()["error"]["type"] == "not_found_error"
    assert lookup(server, conversation) == []
    # idempotent, as in llama-server
    assert httpx.delete(f"{server.base_url}/v1/stream", params={"conv_id": conversation}).status_code == 204


def test_a_refused_request_records_nothing(server):
    r = httpx.post(f"{server.base_url}/v1/chat/completions", json={**CHAT, "max_tokens": -5},
                   headers={"X-Conversation-Id": "conv-refused"}, timeout=TIMEOUT_S)
    assert r.status_code == 400
    assert stream(server, "conv-refused").status_code == 404


@pytest.mark.parametrize(("method", "path", "kwargs", "param"), [
    ("GET", "/v1/stream", {}, "conv_id"),
    ("GET", "/v1/stream", {"params": {"conv_id": ""}}, "conv_id"),
    ("DELETE", "/v1/stream", {}, "conv_id"),
    ("GET", "/v1/stream", {"params": {"conv_id": "c", "from": "abc"}}, "from"),
    ("GET", "/v1/stream", {"params": {"conv_id": "c", "from": "-1"}}, "from"),
    ("GET", "/v1/stream", {"params": {"conv_id": "c", "from": "1.5"}}, "from"),
    ("POST", "/v1/streams/lookup", {"content": b"{"}, None),
    ("POST", "/v1/streams/lookup", {"json": {"conversation_ids": "c"}}, "conversation_ids"),
    ("POST", "/v1/streams/lookup", {"json": {"conversation_ids": [1]}}, "conversation_ids[0]"),
    ("POST", "/v1/streams/lookup", {"json": {}}, "conversation_ids"),  # the missing field
])
def test_bad_stream_requests_are_400(server, method: str, path: str, kwargs: dict, param: str | None):
    r = httpx.request(method, f"{server.base_url}{path}", timeout=TIMEOUT_S, **kwargs)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param


def test_unknown_conversation(server):
    r = stream(server, "never-streamed", 0)
    assert r.status_code == 404 and r.json()["error"]["message"] == "Stream not found or expired"
    assert httpx.post(f"{server.base_url}/v1/streams/lookup", json={"conversation_ids": []}).json() == []
