"""bench.client and bench.runner against an in-process fake server (httpx.MockTransport)."""

import asyncio
import json
import random

import httpx
import pytest

from bench.client import StreamingClient, api_root
from bench.runner import Load, Plan, benchmark, run_closed_loop, run_open_loop
from bench.workloads import Session, Turn


def sse(*events: object) -> bytes:
    lines = [f"data: {json.dumps(e) if not isinstance(e, str) else e}\n\n" for e in events]
    return "".join(lines).encode()


def completion_chunks(n: int, usage_tokens: int | None) -> bytes:
    events: list[object] = [{"choices": [{"text": f" t{i}", "index": 0}]} for i in range(n)]
    events.append({"choices": [{"text": "", "index": 0, "finish_reason": "length"}]})
    if usage_tokens is not None:
        events.append({"choices": [], "usage": {
            "prompt_tokens": 5, "completion_tokens": usage_tokens,
            "prompt_tokens_details": {"cached_tokens": 3}}})
    events.append("[DONE]")
    return sse(*events)


def one_turn(output_len: int = 4) -> Session:
    return Session("completions", (Turn("hello", 1, output_len),))


def client_for(handler) -> tuple[StreamingClient, httpx.AsyncClient]:
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url="http://fake")
    return StreamingClient(http, "m"), http


def test_api_root_accepts_v1_suffix():
    assert api_root("http://h:1/v1/") == "http://h:1"
    assert api_root("http://h:1") == "http://h:1"


@pytest.mark.parametrize("usage", [True, False])
def test_completion_stream_is_timed_and_counted(usage):
    bodies = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        # usage may count more tokens than chunks (a multi-byte character held back)
        return httpx.Response(200, content=completion_chunks(4, 5 if usage else None))

    async def go():
        client, http = client_for(handler)
        async with http:
            return await client.run_session(3, one_turn(), 0.0)

    (record,) = asyncio.run(go())
    body = bodies[0]
    assert body["ignore_eos"] is True and body["max_tokens"] == 4 and body["temperature"] == 0
    assert body["stream"] and body["stream_options"] == {"include_usage": True}
    assert record.ok and record.session == 3
    assert record.output_tokens == (5 if usage else 4)
    assert record.tokens_from_usage is usage
    assert record.prompt_tokens == (5 if usage else None)
    assert record.cached_tokens == (3 if usage else None)
    assert len(record.itl) == 3
    assert 0 < record.ttft <= record.e2e


def test_errors_are_recorded_not_raised():
    def handler(request: httpx.Request) -> httpx.Response:
        if b"bad" in request.content:
            return httpx.Response(503, json={"error": {"message": "overloaded"}})
        return httpx.Response(200, content=sse({"error": {"message": "boom"}}, "[DONE]"))

    async def go():
        client, http = client_for(handler)
        async with http:
            bad = await client.run_session(0, Session("completions", (Turn("bad", 1, 4),)), 0.0)
            mid = await client.run_session(1, one_turn(), 0.0)
            return bad + mid

    bad, mid = asyncio.run(go())
    assert bad.error.startswith("HTTP 503") and "overloaded" in bad.error
    assert mid.error.startswith("stream error") and "boom" in mid.error


def test_chat_resends_history_and_min_tokens_mode():
    requests = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        requests.append(body)
        turn = len(requests)
        events = [{"choices": [{"delta": {"role": "assistant"}, "index": 0}]},
                  {"choices": [{"delta": {"content": f"reply{turn}"}, "index": 0}]},
                  {"choices": [{"delta": {"content": "!"}, "index": 0}]}, "[DONE]"]
        return httpx.Response(200, content=sse(*events))

    session = Session("chat", (Turn("q1", 1, 2), Turn("q2", 1, 2)), system="sys")

    async def go():
        http = httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url="http://fake")
        async with http:
            return await StreamingClient(http, "m", "min_tokens").run_session(0, session, 0.0)

    records = asyncio.run(go())
    assert [r.output_tokens for r in records] == [2, 2]  # counted from chunks: no usage sent
    assert requests[0]["min_tokens"] == 2 and "ignore_eos" not in requests[0]
    assert requests[1]["messages"] == [
        {"role": "system", "content": "sys"}, {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "reply1!"}, {"role": "user", "content": "q2"}]


class SlowServer:
    """Answers after `delay` seconds; remembers how many requests were in flight at most."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.in_flight = 0
        self.max_in_flight = 0

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        await asyncio.sleep(self.delay)
        self.in_flight -= 1
        return httpx.Response(200, content=completion_chunks(4, 4))


def test_closed_loop_holds_concurrency_and_time_bound():
    server = SlowServer(0.05)

    async def go():
        client, http = client_for(server)
        async with http:
            full = await run_closed_loop(client, [one_turn()] * 12, 3, max_duration=60)
            cut = await run_closed_loop(client, [one_turn()] * 100, 2, max_duration=0.12)
            return full, cut

    full, cut = asyncio.run(go())
    assert server.max_in_flight == 3
    assert len(full.records) == 12 and full.sessions_started == 12
    assert 0.2 <= full.duration < 1.0  # 4 waves of 0.05 s
    assert cut.sessions_started < 100 and len(cut.records) == cut.sessions_started


def test_open_loop_does_not_wait_for_the_server():
    server = SlowServer(0.3)

    async def go():
        client, http = client_for(server)
        async with http:
            return await run_open_loop(client, [one_turn()] * 10, float("inf"), 60,
                                       random.Random(0))

    result = asyncio.run(go())
    assert server.max_in_flight == 10
    assert result.duration < 0.6 and len(result.records) == 10


def test_benchmark_warms_up_then_runs_each_level(monkeypatch):
    server = SlowServer(0.0)
    seen_loads = []

    def sessions_for(load: Load) -> list[Session]:
        seen_loads.append(load)
        return [one_turn()] * 2

    real_client = httpx.AsyncClient
    monkeypatch.setattr(httpx, "AsyncClient", lambda **kw: real_client(
        transport=httpx.MockTransport(server), **kw))
    plan = Plan([Load("concurrency", 1), Load("rate", 50.0)], sessions_for, [one_turn()],
                max_duration=60, request_timeout=10, seed=0)
    results = asyncio.run(benchmark("http://fake/v1", "m", plan))
    assert seen_loads == list(plan.loads)
    assert [len(r.records) for r in results] == [2, 2]
