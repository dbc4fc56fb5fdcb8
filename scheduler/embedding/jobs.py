"""Embedding requests: a kind of request of their own, with no sampling and no output tokens.

An EmbedRequest has inputs; each runs whole on its own sequence in one decode, and its sequence
is free again as soon as that step's vectors are back (the executor clears every sequence after
an embedding step). Packing is first come, first served over inputs, not requests: a step takes
the waiting inputs in order (one request's in its order, then the next request's) while they fit
the step's token budget and sequence limit, so the inputs of one request and of concurrent
requests share decodes. A request ends with one output carrying every input's vectors: refs to
the arena regions its rows are in (held for it in ``regions``, see scheduler.embedding.vector_regions), and
the bytes of the rows that came inside the messages.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass, field

from ipc.protocol import (
    ArrayRef,
    EmbedItem,
    EmbedRequest,
    EmbedResult,
    EngineError,
    ErrorCode,
    FinishReason,
    RequestOutput,
    RequestStats,
    Vectors,
)
from scheduler.embedding.vector_regions import RegionKey, VectorRegions, key_of

# Where an input's rows are: their bytes (they came inside the message), or (region, first row).
Rows = bytes | tuple[ArrayRef, int]


@dataclass(eq=False)
class EmbedJob:
    id: str
    peer: bytes  # frontend worker that owns the request
    inputs: list[list[int]]
    t_arrival: float
    next_input: int = 0  # inputs before it are planned
    n_done: int = 0  # inputs whose vectors are back
    dim: int = 0
    rows: list[Rows] = field(default_factory=list)  # per input, once back
    counts: list[int] = field(default_factory=list)
    regions: dict[RegionKey, ArrayRef] = field(default_factory=dict)  # held for this request
    t_started: float = 0.0  # its first input was planned
    finished: bool = False

    def __post_init__(self) -> None:
        self.rows = [b""] * len(self.inputs)
        self.counts = [0] * len(self.inputs)

    def vectors(self) -> Vectors:
        """Every input's rows: refs to its regions, and the bytes of the rest."""
        index = {key: i for i, key in enumerate(self.regions)}
        where = [(index[key_of(rows[0])], rows[1]) if isinstance(rows, tuple) else (-1, 0) for rows in self.rows]
        data = b"".join(rows for rows in self.rows if isinstance(rows, bytes))
        if not self.regions:
            return Vectors(self.dim, self.counts, data)
        return Vectors(self.dim, self.counts, data, list(self.regions.values()), where)

    def stats(self, now: float, executor_id: int) -> RequestStats:
        n_tokens = sum(len(tokens) for tokens in self.inputs)
        started = self.t_started or now
        return RequestStats(
            n_prompt_tokens=n_tokens,
            n_cached_tokens=0,
            n_evaluated_prompt_tokens=n_tokens if self.n_done == len(self.inputs) else 0,
            n_generated_tokens=0,
            queue_ms=(started - self.t_arrival) * 1000,
            prefill_ms=(now - started) * 1000,
            decode_ms=0.0,
            executor_id=executor_id,
        )


# A request's end: the job and its terminal output (the scheduler sends and counts it).
EndCallback = Callable[[EmbedJob, RequestOutput], None]


class EmbedQueue:
    """Waiting embedding requests, and which of their inputs run on which executor's sequences."""

    def __init__(self, on_end: EndCallback) -> None:
        self.on_end = on_end
        self.regions = VectorRegions()
        self.jobs: dict[str, EmbedJob] = {}  # every unfinished request
        self.waiting: collections.deque[EmbedJob] = collections.deque()  # with inputs not planned yet
        # executor id -> seq id -> (request, input index) of its step in flight
        self.in_flight: dict[int, dict[int, tuple[EmbedJob, int]]] = {}

    def add(self, msg: EmbedRequest, peer: bytes, now: float) -> None:
        job = EmbedJob(msg.request_id, peer, msg.inputs, now)
        self.jobs[job.id] = job
        self.waiting.append(job)

    def plan(self, executor_id: int, n_seqs: int, budget: int, now: float) -> list[EmbedItem]:
        """The inputs of the executor's next step: in arrival order, while they fit ``budget``
        tokens and ``n_seqs`` sequences (every input fits an empty step: checked on arrival)."""
        items: list[EmbedItem] = []
        flight: dict[int, tuple[EmbedJob, int]] = {}
        n_tokens = 0
        while self.waiting and len(items) < n_seqs:
            job = self.waiting[0]
            tokens = job.inputs[job.next_input]
            if n_tokens + len(tokens) > budget:
                break
            seq = len(items)
            items.append(EmbedItem(seq, tokens))
            flight[seq] = (job, job.next_input)
            job.t_started = job.t_started or now
            job.next_input += 1
            n_tokens += len(tokens)
            if job.next_input == len(job.inputs):
                self.waiting.popleft()
        if items:
            self.in_flight[executor_id] = flight
        return items

    def on_result(self, result: EmbedResult, now: float) -> None:
        flight = self.in_flight.pop(result.executor_id, {})
        if result.error is not None or result.vectors is None:
            error = EngineError(ErrorCode.EXECUTOR_FAILED, f"decode failed: {result.error}")
            for job, _ in flight.values():
                self._end(job, now, result.executor_id, error)
            return
        for failure in result.failures:
            job = flight.get(failure.seq_id, (None, 0))[0]
            if job is not None:
                self._end(job, now, result.executor_id, failure.error)
        self._store(flight, result.vectors, now, result.executor_id)

    def _store(self, flight: dict[int, tuple[EmbedJob, int]], vectors: Vectors, now: float, executor_id: int) -> None:
        """Hand each input its rows of the step's vectors (in item order, which is seq order):
        its place in a region (held once per request), or its slice of ``data``."""
        keys = [self.regions.add(executor_id, ref) for ref in vectors.regions]
        width = vectors.dim * 4
        offset = 0
        for seq, count in enumerate(vectors.counts):
            region, first = vectors.where[seq] if vectors.where else (-1, 0)
            start, offset = offset, offset + (count * width if region < 0 else 0)
            job, index = flight.get(seq, (None, 0))
            if job is None or job.finished or not count:
                continue
            if region < 0:
                job.rows[index] = vectors.data[start:offset]
            else:
                job.rows[index] = (vectors.regions[region], first)
                if keys[region] not in job.regions:
                    job.regions[keys[region]] = vectors.regions[region]
                    self.regions.hold(keys[region])
            job.counts[index] = count
            job.dim = vectors.dim
            job.n_done += 1
            if job.n_done == len(job.inputs):
                self._end(job, now, executor_id)
        for key in keys:
            self.regions.settle(key)

    def abort(self, request_id: str, now: float) -> None:
        job = self.jobs.get(request_id)
        if job is not None:
            self._end(job, now, -1, reason=FinishReason.ABORT)

    def fail_executor(self, executor_id: int, error: EngineError, now: float) -> None:
        """The executor is gone: the requests with inputs on it, or rows in its arena, fail
        (their other inputs too)."""
        gone = set(self.regions.forget_executor(executor_id))
        stranded = [job for job in self.jobs.values() if not gone.isdisjoint(job.regions)]
        for job in [job for job, _ in self.in_flight.pop(executor_id, {}).values()] + stranded:
            self._end(job, now, executor_id, error)

    def vectors_read(self, peer: bytes, request_ids: list[str]) -> None:
        self.regions.returned(peer, request_ids)

    def forget_peer(self, peer: bytes, now: float) -> None:
        """A frontend worker is gone: its requests end and its regions are free."""
        for job in [job for job in self.jobs.values() if job.peer == peer]:
            self._end(job, now, -1, reason=FinishReason.ABORT)
        self.regions.forget_peer(peer)

    def fail_all(self, error: EngineError, now: float) -> int:
        """End every unfinished request with ``error``; how many there were."""
        jobs = list(self.jobs.values())
        for job in jobs:
            self._end(job, now, -1, error)
        return len(jobs)

    def _end(self, job: EmbedJob, now: float, executor_id: int, error: EngineError | None = None,
             reason: FinishReason | None = None) -> None:
        if job.finished:
            return
        job.finished = True
        del self.jobs[job.id]
        if job.next_input < len(job.inputs):
            self.waiting.remove(job)
        out = RequestOutput(job.id, stats=job.stats(now, executor_id))
        if error is not None:
            out.finish_reason, out.error = FinishReason.ERROR, error
        elif reason is not None:
            out.finish_reason = reason
        else:
            out.finish_reason = FinishReason.STOP
            out.vectors = job.vectors()
        if out.vectors is not None and job.regions:
            self.regions.lend(job.peer, job.id, list(job.regions))
        else:
            self.regions.drop(job.regions)
        self.on_end(job, out)
