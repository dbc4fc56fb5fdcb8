"""The frontend's link to a scheduler that goes away, is replaced, drains or has no executor.

Against the scripted scheduler (tests/frontend_support.py): it can fall silent (a dead or hung
scheduler), come back as a new process (another epoch), report draining or no ready executor.
No client may wait more than ~2 s for a scheduler that is gone.
"""

from __future__ import annotations

import time

import httpx
import pytest
from frontend_support import FakeScheduler, frontend_config, run_frontend

from ipc.protocol import Heartbeat

REPLY = list(range(1000, 1400))  # long enough to still be streaming when the fault strikes


@pytest.fixture
def served(tmp_path):
    cfg = frontend_config(str(tmp_path))
    with FakeScheduler(cfg.scheduler_endpoint, REPLY, step_s=0.02, n_ctx_slot=1024) as fake, run_frontend(cfg) as url:
        yield fake, url


def _stream_until_fault(url: str, fault) -> tuple[list[str], float]:
    """Stream a completion, cause ``fault`` after a few events; (lines, seconds from the fault
    to the end of the stream)."""
    lines: list[str] = []
    t_fault = 0.0
    with httpx.stream("POST", f"{url}/v1/completions", json={"prompt": "x", "stream": True, "max_tokens": 400},
                      timeout=30) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line:
                lines.append(line)
            if len(lines) == 5:
                fault()
                t_fault = time.monotonic()
    return lines, time.monotonic() - t_fault


def _wait_health(url: str, status: int, timeout_s: float = 10.0) -> httpx.Response:
    deadline = time.monotonic() + timeout_s
    while True:
        r = httpx.get(f"{url}/health")
        if r.status_code == status or time.monotonic() > deadline:
            return r
        time.sleep(0.05)


def test_a_silent_scheduler_ends_every_stream_with_an_error_within_two_seconds(served):
    fake, url = served
    lines, waited = _stream_until_fault(url, lambda: fake.set(silent=True))
    assert waited < 2.0
    assert lines[-1].startswith('data: {"error":') and '"code":503' in lines[-1]
    assert "data: [DONE]" not in lines
    r = _wait_health(url, 503)
    assert r.json() == {"status": "restarting"} and r.headers["retry-after"] == "1"
    r = httpx.post(f"{url}/v1/completions", json={"prompt": "x", "max_tokens": 2})
    assert r.status_code == 503 and "retry-after" in r.headers
    fake.set(silent=False, epoch=2)  # a new scheduler: the worker reconnects and serves again
    assert _wait_health(url, 200).status_code == 200
    r = httpx.post(f"{url}/v1/completions", json={"prompt": "x", "max_tokens": 2})
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 2


def test_a_replaced_scheduler_is_noticed_by_its_epoch_at_once(served):
    fake, url = served
    lines, waited = _stream_until_fault(url, lambda: fake.set(epoch=7))
    assert waited < 1.0  # the next pulse tells, no need to wait for silence
    assert lines[-1].startswith('data: {"error":')
    assert _wait_health(url, 200).status_code == 200


def test_health_says_restarting_while_no_executor_is_ready_and_requests_still_queue(served):
    fake, url = served
    fake.set(n_executors_ready=0, hold=True)
    r = _wait_health(url, 503)
    assert r.json() == {"status": "restarting"}
    with httpx.stream("POST", f"{url}/v1/completions", json={"prompt": "x", "stream": True, "max_tokens": 3},
                      timeout=30) as stream:
        assert stream.status_code == 200  # accepted: it waits in the engine's queue
        fake.set(n_executors_ready=1, hold=False)
        assert [line for line in stream.iter_lines() if line][-1] == "data: [DONE]"
    assert _wait_health(url, 200).status_code == 200


def test_draining_refuses_new_requests_with_503_and_retry_after(served):
    fake, url = served
    fake.set(draining=True)
    r = _wait_health(url, 503)
    assert r.json() == {"status": "draining"}
    r = httpx.post(f"{url}/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert r.json()["error"]["type"] == "unavailable_error"


def test_the_worker_sends_heartbeats(served):
    fake, url = served
    n = len(fake.messages(Heartbeat))
    time.sleep(1.0)
    assert len(fake.messages(Heartbeat)) >= n + 2
