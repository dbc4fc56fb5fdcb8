"""Drive a server with sessions at fixed concurrency (closed loop) or Poisson arrivals (open loop).

A run is bounded both in count (the sessions given) and in time (no session starts after
max_duration; those in flight finish). Each load level gets its own fresh sessions, so a prefix
cached during one level cannot flatter the next. The closed loop can also go round robin, turn by
turn across all sessions (idle conversations), rather than session by session.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Literal

import httpx

from bench.client import (
    Conversation,
    ExactOutput,
    RequestRecord,
    StreamingClient,
    api_root,
    discover_model,
)
from bench.host.machine import CpuMeter
from bench.progress import ProgressBar
from bench.sampling import Sampling
from bench.workloads import Session


@dataclass(frozen=True)
class Load:
    mode: Literal["concurrency", "rate"]
    value: float  # sessions in flight, or session arrivals per second (inf: all at once)

    @property
    def label(self) -> str:
        if self.mode == "concurrency":
            return f"concurrency {int(self.value)}"
        return f"rate {self.value:g}/s"


@dataclass
class RunResult:
    load: Load
    records: list[RequestRecord]
    duration: float  # seconds from the first request sent to the last one finished
    sessions_planned: int
    sessions_started: int
    cpu: dict[str, float | None] = field(default_factory=dict)  # bench.host.machine.CpuMeter.stop


async def _worker_pool(jobs: Iterator[Callable[[], Awaitable[None]]], concurrency: int,
                       max_duration: float, origin: float) -> None:
    """`concurrency` workers, each starting the next job as soon as its last one ended, until no
    job is left or max_duration has passed since origin."""

    async def worker() -> None:
        for job in jobs:  # shared by the workers: each takes the next job
            if time.perf_counter() - origin >= max_duration:
                return
            await job()

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def run_closed_loop(client: StreamingClient, sessions: Sequence[Session], concurrency: int,
                          max_duration: float) -> RunResult:
    """`concurrency` workers, each sending its next session as soon as the previous one ends."""
    load = Load("concurrency", concurrency)
    bar = ProgressBar(load.label, len(sessions))
    records: list[RequestRecord] = []
    started = 0
    origin = time.perf_counter()

    async def session_job(index: int, session: Session) -> None:
        nonlocal started
        started += 1
        done = await client.run_session(index, session, origin)
        records.extend(done)
        bar.advance(errors=sum(not r.ok for r in done))

    jobs = (partial(session_job, index, session) for index, session in enumerate(sessions))
    await _worker_pool(jobs, concurrency, max_duration, origin)
    duration = time.perf_counter() - origin
    bar.close()
    return RunResult(load, records, duration, len(sessions), started)


async def run_round_robin(client: StreamingClient, sessions: Sequence[Session], concurrency: int,
                          max_duration: float) -> RunResult:
    """A closed loop over turns rather than sessions: turn 1 of every session, then turn 2 of
    every session, and so on, `concurrency` requests at a time. A conversation comes back only
    after all the others have had their turn, by when its history may have left the server's KV
    cache: what a server with many idle conversations sees."""
    load = Load("concurrency", concurrency)
    conversations = [Conversation.start(index, session) for index, session in enumerate(sessions)]
    turn_done = [[asyncio.Event() for _ in session.turns] for session in sessions]
    rounds = max((len(session.turns) for session in sessions), default=0)
    order = [(conversation, turn) for turn in range(rounds) for conversation in conversations
             if turn < len(conversation.session.turns)]
    bar = ProgressBar(load.label, len(order))
    records: list[RequestRecord] = []
    origin = time.perf_counter()

    async def turn_job(conversation: Conversation, turn: int) -> None:
        # Rarely waits: the previous turn went out a whole round earlier (unless there are
        # fewer sessions than workers).
        if turn:
            await turn_done[conversation.index][turn - 1].wait()
        errors = 0
        if not conversation.failed:  # a failed turn ends its conversation
            record = await client.run_turn(conversation, turn, origin)
            records.append(record)
            errors = int(not record.ok)
        turn_done[conversation.index][turn].set()
        bar.advance(errors=errors)

    jobs = (partial(turn_job, conversation, turn) for conversation, turn in order)
    await _worker_pool(jobs, concurrency, max_duration, origin)
    duration = time.perf_counter() - origin
    bar.close()
    started = len({record.session for record in records if record.turn == 0})
    return RunResult(load, records, duration, len(sessions), started)


async def run_open_loop(client: StreamingClient, sessions: Sequence[Session], rate: float,
                        max_duration: float, rng: random.Random) -> RunResult:
    """Sessions arrive as a Poisson process of `rate` per second, whatever the server's state."""
    load = Load("rate", rate)
    bar = ProgressBar(load.label, len(sessions))
    records: list[RequestRecord] = []
    origin = time.perf_counter()

    async def one(index: int, session: Session) -> None:
        done = await client.run_session(index, session, origin)
        records.extend(done)
        bar.advance(errors=sum(not r.ok for r in done))

    tasks = []
    arrival = 0.0
    for index, session in enumerate(sessions):
        if index and not math.isinf(rate):
            arrival += rng.expovariate(rate)
            await asyncio.sleep(max(0.0, arrival - (time.perf_counter() - origin)))
        if time.perf_counter() - origin >= max_duration:
            break
        tasks.append(asyncio.create_task(one(index, session)))
    await asyncio.gather(*tasks)
    duration = time.perf_counter() - origin
    bar.close()
    return RunResult(load, records, duration, len(sessions), len(tasks))


@dataclass(frozen=True)
class Plan:
    """What to send: the load levels, fresh sessions per level, and the bounds of each run."""

    loads: Sequence[Load]
    sessions_for: Callable[[Load], list[Session]]
    warmup: Sequence[Session]  # sent one by one before measuring; not measured
    max_duration: float  # seconds; no session starts later in a level
    request_timeout: float  # seconds; the longest wait for any chunk
    seed: int  # of the Poisson arrival times
    sampling: Sampling = Sampling()
    round_robin: bool = False  # closed loop turn by turn across sessions (run_round_robin)


async def benchmark(base_url: str, model: str | None, plan: Plan,
                    exact_output: ExactOutput = "ignore_eos",
                    meter: CpuMeter | None = None) -> list[RunResult]:
    """Warm the server up, then run every load level of the plan in turn, metering CPU use."""
    meter = meter or CpuMeter()
    timeout = httpx.Timeout(plan.request_timeout, connect=10.0)
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with httpx.AsyncClient(base_url=api_root(base_url), timeout=timeout,
                                 limits=limits) as http:
        client = StreamingClient(http, model or await discover_model(http), exact_output,
                                 plan.sampling)
        for index, session in enumerate(plan.warmup):
            for record in await client.run_session(index, session, time.perf_counter()):
                if not record.ok:
                    raise RuntimeError(f"warm-up request failed: {record.error}")
        results = []
        arrivals = random.Random(plan.seed)
        for load in plan.loads:
            sessions = plan.sessions_for(load)
            meter.start()
            if load.mode == "concurrency":
                closed_loop = run_round_robin if plan.round_robin else run_closed_loop
                result = await closed_loop(client, sessions, int(load.value), plan.max_duration)
            else:
                result = await run_open_loop(client, sessions, load.value, plan.max_duration,
                                             arrivals)
            result.cpu = meter.stop()
            results.append(result)
        return results
