"""Embedding vectors through shared memory, without processes: a fake executor with a real arena,
the scheduler's bookkeeping of who still reads each region, and the frontend's copy. Nothing leaks
(the arena is whole again) whether the frontend reads, the request is aborted or the frontend
disappears; an executor restart fails what it strands, clearly; a stalled worker never reads."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import numpy as np
import pytest

from frontend.embedding import read_rows, split_rows
from frontend.engine_client import STALL_S, EngineClient
from frontend.http.errors import ApiError
from ipc.protocol import EmbedPlan, EmbedRequest, EmbedResult, ErrorCode, ExecutorInfo, FinishReason, Vectors
from ipc.shm import Arena, ArenaReader
from scheduler.core import Scheduler

DIM = 4
PEER, OTHER = b"frontend-1", b"frontend-2"


class FakeExecutor:
    """Answers plans as executor.embedding.embedder does: frees the plan's releases, puts the step's rows
    (input i: [first token, length, i, 0]) in its arena, or inline when it is full."""

    def __init__(self, executor_id: int, size: int) -> None:
        self.id = executor_id
        self.arena = Arena(f"test{uuid.uuid4().hex[:10]}", f"executor{executor_id}-1", size)

    def info(self) -> ExecutorInfo:
        return ExecutorInfo(
            executor_id=self.id, model_path="fake.gguf", model_desc="fake", n_params=1, model_size_bytes=1,
            n_vocab=100, n_ctx=1024, n_ctx_train=512, n_swa=0, n_slots=2, n_batch=64, kv_bytes=0, pooling=1,
            arena=self.arena.name,
        )  # fmt: skip

    def run(self, plan: EmbedPlan) -> EmbedResult:
        for ref in plan.releases:
            self.arena.release(ref)
        rows = np.array([[item.token_ids[0], len(item.token_ids), i, 0] for i, item in enumerate(plan.items)],
                        dtype="<f4")
        counts = [1] * len(rows)
        if self.arena.free_bytes >= 64 * -(-rows.nbytes // 64):
            vectors = Vectors(DIM, counts, regions=[self.arena.put(rows)], where=[(0, i) for i in range(len(rows))])
        else:
            vectors = Vectors(DIM, counts, rows.tobytes())
        return EmbedResult(plan.step_id, self.id, vectors)

    def close(self) -> None:
        self.arena.close()
        self.arena.unlink()


@pytest.fixture
def executor() -> Iterator[FakeExecutor]:
    ex = FakeExecutor(0, 4096)
    yield ex
    ex.close()


@pytest.fixture
def client() -> Iterator[EngineClient]:
    client = EngineClient("ipc://unused")  # never started: its reader and send clock only
    yield client
    client.arena.close()


def scheduler(*executors: FakeExecutor) -> Scheduler:
    core = Scheduler(n_executors=len(executors), max_queue=16, n_batch=64)
    for ex in executors:
        core.executor_ready(ex.info())
    return core


def step(core: Scheduler, ex: FakeExecutor) -> EmbedPlan | None:
    plan = core.next_plan(ex.id)
    if plan is not None:
        core.embed_result(ex.run(plan))
    return plan


def outputs(core: Scheduler, peer: bytes = PEER) -> dict:
    return {o.request_id: o for o in core.take_outputs().get(peer, [])}


def test_two_requests_share_a_region_until_both_are_read(executor: FakeExecutor, client: EngineClient):
    core = scheduler(executor)
    core.add_embedding(EmbedRequest("a", [[5]]), PEER)
    core.add_embedding(EmbedRequest("b", [[7, 7]]), OTHER)
    step(core, executor)
    by_peer = core.take_outputs()
    (a,), (b,) = by_peer[PEER], by_peer[OTHER]
    assert a.vectors.regions == b.vectors.regions and len(a.vectors.regions) == 1 and not a.vectors.data
    mark = client.send_mark
    assert read_rows(client, a.vectors, mark)[0].tolist() == [[5, 1, 0, 0]]
    assert read_rows(client, b.vectors, mark)[0].tolist() == [[7, 2, 1, 0]]
    core.vectors_read(PEER, ["a"])
    assert len(core.embed.regions) == 1  # b's reader still holds it
    core.vectors_read(OTHER, ["b", "unknown"])
    assert len(core.embed.regions) == 0
    core.add_embedding(EmbedRequest("c", [[9]]), PEER)
    plan = core.next_plan(0)
    assert plan.releases == a.vectors.regions
    executor.run(plan)
    assert executor.arena.free_bytes == executor.arena.capacity - 64  # c's row alone


def test_rows_from_the_arena_and_inline_are_bitwise_the_same(client: EngineClient):
    rng = np.random.default_rng(0)
    rows = rng.standard_normal((5, 640)).astype("<f4")
    arena = Arena(f"test{uuid.uuid4().hex[:10]}", "executor0-1", 1 << 16)
    try:
        ref = arena.put(rows[1:])  # inputs 1 and 3 in one region, input 0 inline
        mixed = Vectors(640, [1, 2, 0, 2], rows[:1].tobytes(), [ref], [(-1, 0), (0, 0), (0, 2), (0, 2)])
        inline = Vectors(640, [1, 2, 0, 2], rows.tobytes())
        got, want = split_rows(mixed, client.arena), split_rows(inline, ArenaReader())
        assert [g.tobytes() for g in got] == [w.tobytes() for w in want]
        assert [g.shape for g in got] == [(1, 640), (2, 640), (0, 640), (2, 640)]
    finally:
        arena.close()
        arena.unlink()


def test_an_aborted_request_frees_its_regions(executor: FakeExecutor):
    core = scheduler(executor)
    core.add_embedding(EmbedRequest("a", [[1], [2], [3]]), PEER)  # two steps of two sequences
    step(core, executor)
    assert executor.arena.free_bytes < executor.arena.capacity
    core.abort(["a"])
    assert outputs(core)["a"].finish_reason == FinishReason.ABORT
    core.add_embedding(EmbedRequest("b", [[4]]), PEER)
    plan = core.next_plan(0)
    assert len(plan.releases) == 1
    executor.run(plan)
    assert executor.arena.free_bytes == executor.arena.capacity - 64  # b's region alone


def test_a_request_aborted_while_its_step_runs_holds_nothing(executor: FakeExecutor):
    core = scheduler(executor)
    core.add_embedding(EmbedRequest("a", [[1]]), PEER)
    plan = core.next_plan(0)
    core.abort(["a"])
    result = executor.run(plan)
    core.embed_result(result)  # nobody wants the region: released at once
    assert len(core.embed.regions) == 0
    core.add_embedding(EmbedRequest("b", [[4]]), PEER)
    plan = core.next_plan(0)
    assert plan.releases == result.vectors.regions
    executor.run(plan)
    assert executor.arena.free_bytes == executor.arena.capacity - 64


def test_a_frontend_that_disappears_leaks_nothing(executor: FakeExecutor):
    core = scheduler(executor)
    core.add_embedding(EmbedRequest("done", [[1]]), PEER)  # finished, never read
    step(core, executor)
    core.add_embedding(EmbedRequest("half", [[2], [3], [4]]), PEER)  # one step of two back, one waiting
    step(core, executor)
    assert outputs(core)["done"].vectors.regions
    assert core.abort_peer(PEER) == {"half"}  # the one it was not told the end of (for when it comes back)
    assert "half" not in outputs(core)  # nothing more is sent to a peer that is gone
    assert len(core.embed.regions) == 0 and not core.embed.jobs
    core.add_embedding(EmbedRequest("next", [[5]]), OTHER)
    plan = core.next_plan(0)
    assert len(plan.releases) == 2
    executor.run(plan)
    assert executor.arena.free_bytes == executor.arena.capacity - 64


def test_a_full_arena_sends_rows_inline_and_is_counted(client: EngineClient):
    small = FakeExecutor(0, 128)  # two steps' rows (two 16-byte rows: one 64-byte line each)
    try:
        core = scheduler(small)
        core.add_embedding(EmbedRequest("a", [[1], [2], [3], [4], [5], [6]]), PEER)
        for _ in range(3):
            step(core, small)
        out = outputs(core)["a"]
        assert len(out.vectors.regions) == 2 and out.vectors.data  # the third step found no room
        assert [tuple(w) for w in out.vectors.where] == [(0, 0), (0, 1), (1, 0), (1, 1), (-1, 0), (-1, 0)]
        rows = read_rows(client, out.vectors, client.send_mark)
        assert [r[0, 0] for r in rows] == [1, 2, 3, 4, 5, 6]
        assert core.stats().vectors_inline_total == 1
    finally:
        small.close()


def test_an_executor_restart_fails_stranded_requests_and_stale_refs_fail_clearly(client: EngineClient):
    old = FakeExecutor(0, 4096)
    core = scheduler(old)
    core.add_embedding(EmbedRequest("read-later", [[1]]), PEER)
    step(core, old)
    lent = outputs(core)["read-later"].vectors
    core.add_embedding(EmbedRequest("stranded", [[2], [3], [4]]), PEER)
    step(core, old)  # two of its inputs are in the old arena, one waits
    core.executor_failed(0, "killed")
    old.close()  # the launcher unlinks the dead one's segment
    new = FakeExecutor(0, 4096)
    try:
        core.executor_ready(new.info())
        out = outputs(core)["stranded"]
        assert out.finish_reason == FinishReason.ERROR and out.error.code == ErrorCode.EXECUTOR_FAILED
        with pytest.raises(ApiError) as err:  # the frontend reads a ref of the dead process
            read_rows(client, lent, client.send_mark)
        assert err.value.status == 503 and "restarted" in err.value.message
        core.vectors_read(PEER, ["read-later"])  # of a dead arena: ignored
        core.add_embedding(EmbedRequest("after", [[5]]), PEER)
        plan = step(core, new)
        assert plan.releases == []  # nothing of the old arena is sent to the new one
        assert outputs(core)["after"].vectors.regions[0].segment == new.arena.name
    finally:
        new.close()


def test_a_stalled_worker_does_not_read(executor: FakeExecutor, client: EngineClient):
    core = scheduler(executor)
    core.add_embedding(EmbedRequest("a", [[1]]), PEER)
    mark = client.send_mark
    step(core, executor)
    client._last_sent -= STALL_S  # nothing sent for STALL_S: the scheduler may forget us meanwhile
    with pytest.raises(ApiError) as err:
        read_rows(client, outputs(core)["a"].vectors, mark)
    assert err.value.status == 503 and "stalled" in err.value.message


def test_a_restart_seen_only_as_a_new_ready_sends_no_old_region_to_the_new_arena():
    old, new = FakeExecutor(0, 4096), FakeExecutor(0, 4096)
    try:
        core = scheduler(old)
        core.add_embedding(EmbedRequest("a", [[1], [2], [3]]), PEER)
        step(core, old)
        core.executor_ready(new.info())  # no ExecutorDied first
        assert outputs(core)["a"].error.code == ErrorCode.EXECUTOR_FAILED
        core.add_embedding(EmbedRequest("b", [[4]]), PEER)
        assert step(core, new).releases == []  # new.run would raise on a region of the old arena
    finally:
        old.close()
        new.close()
