"""llama.cpp settings reach a real executor: llama-server's CPU placement flags (-C, -Cr,
--cpu-strict, --prio) place its llama.cpp threads (their affinity and scheduling, read from /proc
after a request); RoPE, offload and warm-up flags, tensor and metadata overrides and control
vectors reach its model and context."""

from __future__ import annotations

import logging
import os

import gguf
import httpx
import numpy as np
import pytest

from conftest import ServerHandle, start_server
from executor.model import threadpool
from ggserve.config import CpuPlacement, ServeConfig
from ggserve.models.resolve import resolve_model
from test_faults import role_pids


def threads(pid: int) -> dict[int, tuple[set[int], int]]:
    """Each thread of ``pid``: the CPUs it may run on and its scheduling policy."""
    found = {}
    for tid in map(int, os.listdir(f"/proc/{pid}/task")):
        try:
            found[tid] = (os.sched_getaffinity(tid), os.sched_getscheduler(tid))
        except OSError:  # a thread that ended meanwhile
            continue
    return found


def complete(server: ServerHandle) -> None:
    reply = httpx.post(f"{server.base_url}/v1/completions", timeout=60,
                       json={"prompt": "The capital of France", "max_tokens": 8, "temperature": 0})
    assert reply.status_code == 200
    assert reply.json()["usage"]["completion_tokens"] == 8


def test_low_priority_and_a_mask_place_every_llama_cpp_thread() -> None:
    with start_server("-t", "2", "-C", "0x1", "--prio", "-1") as server:
        complete(server)  # llama.cpp places its pool's threads at each step
        (executor,) = role_pids(server, "-m executor")
        placed = threads(executor)
        assert placed[executor] == ({0}, os.SCHED_BATCH)  # the main thread is the pool's thread 0
        # the main thread and the OpenMP worker that computes beside it
        assert sum(1 for cpus, policy in placed.values() if (cpus, policy) == ({0}, os.SCHED_BATCH)) >= 2
        assert os.getpriority(os.PRIO_PROCESS, executor) == threadpool.NICE[-1]
        assert "llama.cpp threads: 2 on 0, prio -1" in server.log()
        complete(server)


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="strict placement of 2 threads needs 2 CPUs")
def test_strict_placement_puts_each_thread_on_its_own_cpu() -> None:
    with start_server("-t", "2", "-C", "0x3", "--cpu-strict", "1") as server:
        complete(server)
        (executor,) = role_pids(server, "-m executor")
        placed = threads(executor)
        assert placed[executor][0] == {0}
        assert any(cpus == {1} for tid, (cpus, _) in placed.items() if tid != executor)
        assert "2 on 0,1 (strict)" in server.log()


def test_without_placement_flags_llama_cpp_keeps_its_own_pools() -> None:
    with start_server("-np", "1", "-c", "512") as server:
        complete(server)
        (executor,) = role_pids(server, "-m executor")
        assert threads(executor)[executor][0] == os.sched_getaffinity(0)  # inherited, untouched
        assert "llama.cpp threads:" not in server.log()


def test_several_strict_executors_take_their_own_runs_of_the_mask() -> None:
    placement = CpuPlacement(cpus=[2, 3, 4, 5, 6], strict=True)
    assert threadpool.executor_cpus(placement, 2, 0, 2) == [2, 3]
    assert threadpool.executor_cpus(placement, 2, 1, 2) == [4, 5]
    assert threadpool.executor_cpus(placement, 3, 1, 2) == [5, 6, 2]  # wraps when the mask is short
    loose = CpuPlacement(cpus=[2, 3], strict=False)
    assert threadpool.executor_cpus(loose, 2, 1, 2) == [2, 3]  # not strict: the whole mask each


def test_a_priority_the_process_may_not_take_is_warned_about_once(monkeypatch, caplog) -> None:
    def refuse(*_args: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(threadpool.os, "setpriority", refuse)
    monkeypatch.setattr(threadpool, "_may_run_realtime", lambda: False)
    cfg = ServeConfig(model="m.gguf", cpu=CpuPlacement(prio=2), cpu_batch=CpuPlacement(prio=2))
    with caplog.at_level(logging.WARNING, logger="executor"):
        assert threadpool.apply_priority(cfg, 0) is False  # llama.cpp's threads keep normal scheduling
    assert "cannot set the process's nice value to -10" in caplog.text
    assert "may not use real-time scheduling" in caplog.text


def first_logprobs(server) -> list[float]:
    body = {"prompt": "The capital of France is", "max_tokens": 2, "logprobs": 2, "temperature": 0}
    reply = httpx.post(f"{server.base_url}/v1/completions", json=body, timeout=60)
    assert reply.status_code == 200
    return reply.json()["choices"][0]["logprobs"]["token_logprobs"]


def test_rope_flags_reach_llama_cpp_and_a_server_without_warm_up_serves():
    """--rope-scale 4 compresses positions (the same prompt's logits change); the server also
    starts without its warm-up decode and with llama.cpp's offload switches set."""
    with start_server("-np", "1", "-c", "512") as plain:
        before = first_logprobs(plain)
    with start_server("-np", "1", "-c", "512", "--rope-scale", "4", "--no-warmup", "-nkvo", "--no-op-offload",
                      "--check-tensors") as scaled:
        after = first_logprobs(scaled)
        assert first_logprobs(scaled) == after  # deterministic, warm or not
    assert max(abs(a - b) for a, b in zip(before, after)) > 1e-3


def test_tensor_overrides_place_weights_and_an_unknown_buffer_type_stops_the_start():
    # -dev none, --no-host, a row split (no GPU here to see them move anything) and a load without
    # mmap load beside them
    with start_server("-np", "1", "-c", "512", "-v", "-ot", r"token_embd\.weight=CPU", "--cpu-moe",
                      "-dev", "none", "--no-host", "-sm", "row", "-ts", "1", "-lm", "none", "-lzm", "off") as server:
        complete(server)
        assert "tensor token_embd.weight" in server.log() and "buffer type overridden to CPU" in server.log()
    with start_server("-np", "1", "-c", "512", "-ot", "x=NOPE", ready=False) as server:
        assert server.proc.wait(120) == 1
        assert "unknown buffer type NOPE in --override-tensor; this build has CPU" in server.log()


def test_a_draft_models_placement_and_tensor_overrides_are_its_own():
    """-td / -Cd / --prio-draft place the draft model's pools (the target keeps llama.cpp's);
    -otd places the draft's weights (only the draft's load, the second, logs overrides)."""
    draft = ("-np", "1", "-c", "512", "-v", "-md", resolve_model(None), "-td", "1")
    with start_server(*draft, "-Cd", "0x1", "--prio-draft", "-1", "-otd", r"token_embd\.weight=CPU") as server:
        complete(server)
        log = server.log()
        assert "executor 0: the draft model's llama.cpp threads: 1 on 0, prio -1" in log
        assert "executor 0: llama.cpp threads:" not in log  # the target: no placement flags
        assert log.find("loading the draft model") < log.find("buffer type overridden to CPU")  # none before
    with start_server(*draft, "-otd", "x=NOPE", ready=False) as server:
        assert server.proc.wait(120) == 1
        assert "unknown buffer type NOPE in --override-tensor-draft" in server.log()


def test_metadata_overrides_reach_the_vocabulary_of_frontend_and_executor():
    """tokenizer.ggml.add_bos_token=false: prompts start without BOS in /tokenize and in what the
    executor evaluates (the usage counts one token less than the default server's)."""
    body = {"prompt": "Hello", "max_tokens": 2, "temperature": 0}
    with start_server("-np", "1", "-c", "512") as plain:
        with_bos = httpx.post(f"{plain.base_url}/tokenize", json={"content": "Hello", "add_special": True}).json()
        n_plain = httpx.post(f"{plain.base_url}/v1/completions", json=body, timeout=60).json()["usage"]["prompt_tokens"]
    with start_server("-np", "1", "-c", "512", "--override-kv", "tokenizer.ggml.add_bos_token=bool:false") as server:
        without = httpx.post(f"{server.base_url}/tokenize", json={"content": "Hello", "add_special": True}).json()
        reply = httpx.post(f"{server.base_url}/v1/completions", json=body, timeout=60).json()
    assert with_bos["tokens"][1:] == without["tokens"] and len(with_bos["tokens"]) == 2
    assert reply["usage"]["prompt_tokens"] == n_plain - 1 and reply["usage"]["completion_tokens"] == 2


def write_control_vector(path, n_embd: int, layers: range, seed: int) -> str:
    writer = gguf.GGUFWriter(str(path), "controlvector")
    rng = np.random.default_rng(seed)
    for layer in layers:
        writer.add_tensor(f"direction.{layer}", rng.standard_normal(n_embd).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return str(path)


def test_control_vectors_change_the_logits_scale_zero_does_not_and_a_wrong_width_stops_the_start(tmp_path):
    vector = write_control_vector(tmp_path / "cv.gguf", 640, range(1, 19), seed=1)  # Gemma 3 270M: 640 x 18
    with start_server("-np", "1", "-c", "512") as plain:
        before = first_logprobs(plain)
    with start_server("-np", "1", "-c", "512", "--control-vector", vector) as steered:
        steered_logprobs = first_logprobs(steered)
    assert max(abs(a - b) for a, b in zip(before, steered_logprobs)) > 1e-3
    with start_server("-np", "1", "-c", "512", "--control-vector-scaled", f"{vector}:0",
                      "--control-vector-layer-range", "2", "10") as zero:
        assert first_logprobs(zero) == before
    wrong = write_control_vector(tmp_path / "wide.gguf", 1024, range(1, 3), seed=2)
    with start_server("-np", "1", "-c", "512", "--control-vector", wrong, ready=False) as server:
        assert server.proc.wait(120) == 1
        assert f"control vector {wrong}: direction.1 has 1024 values; the model's hidden state has 640" in server.log()
