"""One executor process (real model) driven by the test as its scheduler: what it must survive.

A plan item that llama.cpp could not decode, a sampler that cannot be built, a frame that is not
a message: each fails at most its own sequence, and the process answers the next plan.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
import zmq
from frontend_support import gemma_path

from ggserve.config import ServeConfig, cpu_has_amx, save_config
from ipc.protocol import (
    BatchItem,
    ErrorCode,
    ExecutorReady,
    KvOp,
    KvOpKind,
    SamplingParams,
    SeqStart,
    Shutdown,
    StepPlan,
    StepResult,
)
from ipc.transport import bind_router, executor_identity, ipc_endpoint, recv_routed, send

GREEDY = SamplingParams(temperature=0)
PROMPT = [2, 818, 5279, 529, 7001, 563]  # "<bos>The capital of France is"


class Executor:
    def __init__(self, sock: zmq.Socket, n_vocab: int) -> None:
        self.sock = sock
        self.n_vocab = n_vocab
        self.step_id = 0

    def run(self, **plan: object) -> StepResult:
        self.step_id += 1
        send(self.sock, StepPlan(self.step_id, **plan), executor_identity(0))
        assert self.sock.poll(60_000), "the executor did not answer"
        _, msg = recv_routed(self.sock)
        assert isinstance(msg, StepResult) and msg.step_id == self.step_id
        return msg


@pytest.fixture(scope="module")
def executor(tmp_path_factory) -> Iterator[Executor]:
    run_dir = str(tmp_path_factory.mktemp("run"))
    cfg = ServeConfig(model=gemma_path(), n_parallel=4, ctx_size=1024, threads=2, repack=not cpu_has_amx(),
                      run_dir=run_dir, executor_endpoint=ipc_endpoint(run_dir, "executors"))
    ctx = zmq.Context()
    sock = bind_router(ctx, cfg.executor_endpoint)
    proc = subprocess.Popen([sys.executable, "-m", "executor", "--config", save_config(cfg), "--id", "0"],
                            env=os.environ)
    try:
        assert sock.poll(120_000), "the executor did not start"
        _, ready = recv_routed(sock)
        assert isinstance(ready, ExecutorReady)
        yield Executor(sock, ready.info.n_vocab)
        send(sock, Shutdown("test over"), executor_identity(0))
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        sock.close(linger=0)
        ctx.term()


def test_an_item_llama_cpp_could_not_decode_fails_its_sequence_alone(executor: Executor) -> None:
    starts = [SeqStart(seq, GREEDY) for seq in range(3)]
    result = executor.run(starts=starts, items=[
        BatchItem(0, PROMPT, 0, True),
        BatchItem(1, [executor.n_vocab + 5], 0, True),  # not a token: llama.cpp would abort
        BatchItem(2, PROMPT, -4, True),  # a negative position
    ])
    assert result.error is None
    assert [s.seq_id for s in result.samples] == [0]
    assert {f.seq_id: f.error.code for f in result.failures} == {1: ErrorCode.INTERNAL, 2: ErrorCode.INTERNAL}
    assert "vocabulary" in result.failures[0].error.message
    # The healthy sequence goes on.
    following = executor.run(items=[BatchItem(0, [result.samples[0].token_id], len(PROMPT), True)])
    assert [s.seq_id for s in following.samples] == [0] and not following.failures
    executor.run(ends=[0, 1, 2], kv_ops=[KvOp(KvOpKind.CLEAR, seq) for seq in range(3)])


def test_a_sampler_llama_cpp_rejects_fails_only_its_request(executor: Executor) -> None:
    starts = [SeqStart(0, GREEDY), SeqStart(1, SamplingParams(temperature=0.7, grammar="root ::= ["))]
    result = executor.run(starts=starts, items=[BatchItem(0, PROMPT, 0, True), BatchItem(1, PROMPT, 0, True)])
    assert [s.seq_id for s in result.samples] == [0]
    (failure,) = result.failures
    assert (failure.seq_id, failure.error.code) == (1, ErrorCode.INVALID_REQUEST)
    # Its sequence got no sampler, so an item for it fails again rather than crashing.
    again = executor.run(items=[BatchItem(1, PROMPT, 0, True)])
    assert [f.seq_id for f in again.failures] == [1]
    executor.run(ends=[0, 1], kv_ops=[KvOp(KvOpKind.CLEAR, seq) for seq in range(2)])


def test_frames_that_are_not_messages_are_dropped(executor: Executor) -> None:
    for frames in ([b"\x00not msgpack"], [b"two", b"parts"], [b""]):
        executor.sock.send_multipart([executor_identity(0), *frames])
    result = executor.run(starts=[SeqStart(3, GREEDY)], items=[BatchItem(3, PROMPT, 0, True)])
    assert [s.seq_id for s in result.samples] == [3]
    executor.run(ends=[3], kv_ops=[KvOp(KvOpKind.CLEAR, 3)])
