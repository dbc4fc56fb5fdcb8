"""bench.client and bench.runner against an in-process fake server (httpx.MockTransport)."""

import asyncio
import json
import random

import httpx
import pytest

from bench.client import StreamingClient, api_root, cached_tokens
from bench.runner import Load, Plan, benchmark, run_closed_loop, run_open_loop, run_round_robin
from bench.sampling import Sampling
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


def test_sampling_params_greedy_or_seeded_defaults():
    assert Sampling().params(0, 0) == {"temperature": 0.0}
    sampled = Sampling("default", seed=7)
    params = sampled.params(3, 1)
    assert params == {"temperature": 0.8, "top_k": 40, "top_p": 0.95, "min_p": 0.05,
                      "seed": params["seed"]}
    assert params == Sampling("default", seed=7).params(3, 1)  # every server, every rerun
    seeds = {sampled.params(session, turn)["seed"] for session in range(20) for turn in range(3)}
    assert len(seeds) == 60 and all(0 <= seed < 2**31 for seed in seeds)
    assert Sampling("default", seed=8).params(3, 1) != params  # --seed changes them
    assert "top_k 40" in sampled.description and "greedy" in Sampling().description


def test_cached_tokens_from_usage_else_llama_server_fields():
    usage = {"usage": {"prompt_tokens_details": {"cached_tokens": 5}}, "timings": {"cache_n": 9}}
    assert cached_tokens(usage) == 5
    assert cached_tokens({"usage": {"prompt_tokens": 3}, "timings": {"cache_n": 9}}) == 9
    assert cached_tokens({"tokens_cached": 4}) == 4
    assert cached_tokens({"choices": []}) is None


class ChatServer:
    """Answers every chat turn with "r<n>" (n: requests so far), remembering each request's
    system message and number of user turns; fails every request of the system "bad"."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, int]] = []
        self.bodies: list[dict] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.bodies.append(body)
        system = body["messages"][0]["content"]
        self.seen.append((system, sum(m["role"] == "user" for m in body["messages"])))
        if system == "bad":
            return httpx.Response(500, json={"error": {"message": "no"}})
        chunk = {"choices": [{"delta": {"content": f"r{len(self.seen)}"}, "index": 0}]}
        usage = {"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 1},
                 "timings": {"cache_n": 6}}
        return httpx.Response(200, content=sse(chunk, usage, "[DONE]"))


def chats(*systems: str, turns: int = 2) -> list[Session]:
    return [Session("chat", tuple(Turn(f"q{t}", 1, 1, "returning" if t else "first")
                                  for t in range(turns)), system) for system in systems]


@pytest.mark.parametrize("concurrency", [1, 2, 4])
def test_round_robin_sends_turn_by_turn_across_conversations(concurrency):
    server = ChatServer()

    async def go():
        client, http = client_for(server)
        async with http:
            return await run_round_robin(client, chats("a", "bad", "c"), concurrency, 60)

    result = asyncio.run(go())
    assert server.seen[:3] == [("a", 1), ("bad", 1), ("c", 1)]  # every first turn first
    assert sorted(server.seen[3:]) == [("a", 2), ("c", 2)]  # "bad" ended at its failure
    second = next(b for b in server.bodies if b["messages"][0]["content"] == "a"
                  and len(b["messages"]) == 4)
    assert second["messages"][2]["role"] == "assistant"  # the first reply came back
    assert result.sessions_planned == 3 and result.sessions_started == 3
    assert [(r.session, r.turn, r.ok) for r in result.records if r.turn == 1] in (
        [(0, 1, True), (2, 1, True)], [(2, 1, True), (0, 1, True)])
    assert {r.group for r in result.records} == {"first", "returning"}
    assert [r.cached_tokens for r in result.records if r.ok] == [6] * 4  # timings.cache_n


def test_one_conversation_round_robin_waits_for_its_own_turns():
    server = ChatServer()

    async def go():
        client, http = client_for(server)
        async with http:
            return await run_round_robin(client, chats("a", turns=3), 3, 60)

    result = asyncio.run(go())
    assert server.seen == [("a", 1), ("a", 2), ("a", 3)]
    assert [r.turn for r in result.records] == [0, 1, 2]


def test_benchmark_sends_the_plans_sampling_and_order(monkeypatch):
    server = ChatServer()
    real_client = httpx.AsyncClient
    monkeypatch.setattr(httpx, "AsyncClient", lambda **kw: real_client(
        transport=httpx.MockTransport(server), **kw))
    plan = Plan([Load("concurrency", 1)], lambda load: chats("a", "b"), [], max_duration=60,
                request_timeout=10, seed=0, sampling=Sampling("default", 5), round_robin=True)
    (result,) = asyncio.run(benchmark("http://fake", "m", plan))
    assert server.seen == [("a", 1), ("b", 1), ("a", 2), ("b", 2)]
    assert [b["seed"] for b in server.bodies] == [
        Sampling("default", 5).params(session, turn)["seed"] for turn in (0, 1)
        for session in (0, 1)]
    assert all(b["temperature"] == 0.8 and b["ignore_eos"] for b in server.bodies)
