"""Faults on a real server (embedded model): every process can die or hang, and no client waits.

Each test starts its own server, injects one fault while streams run, and checks the promises
of the reliability design: the requests the fault touched end with an error within seconds
(a stream with an error event, then the connection closes), the others finish, the server heals
and serves new requests, and stopping it leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import pytest
from conftest import ServerHandle, start_server

from executor.engine import HANG_FILE_ENV

pytestmark = pytest.mark.faults

LONG = {"prompt": "Once upon a time", "max_tokens": 300, "stream": True, "ignore_eos": True}


# ----------------------------------------------------------------------------- helpers


def children(pid: int) -> list[int]:
    """Every descendant of ``pid`` (from /proc)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parents[int(entry)] = parent(int(entry))
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = [], [pid]
    while frontier:
        kids = [p for p, ppid in parents.items() if ppid in frontier]
        found += kids
        frontier = kids
    return found


def parent(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def role_pids(server: ServerHandle, role: str) -> list[int]:
    """Pids of the server's processes whose command line contains ``role``."""
    return [p for p in children(server.proc.pid) if role in cmdline(p)]


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@dataclass
class Stream:
    """A streamed completion read in a thread; the time of each event."""

    base_url: str
    body: dict = field(default_factory=lambda: dict(LONG))
    events: list[tuple[float, str]] = field(default_factory=list)
    status: int = 0
    error: str = ""

    def start(self) -> Stream:
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def _run(self) -> None:
        try:
            with httpx.stream("POST", f"{self.base_url}/v1/completions", json=self.body, timeout=60) as r:
                self.status = r.status_code
                for line in r.iter_lines():
                    if line:
                        self.events.append((time.monotonic(), line))
        except httpx.HTTPError as exc:
            self.error = repr(exc)

    def wait_events(self, n: int, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.events) < n:
            assert time.monotonic() < deadline, f"only {len(self.events)} events: {self.error}"
            time.sleep(0.02)

    def join(self, timeout_s: float = 60.0) -> None:
        self.thread.join(timeout_s)
        assert not self.thread.is_alive(), "the stream hung"

    @property
    def ended_at(self) -> float:
        return self.events[-1][0]

    @property
    def done(self) -> bool:
        return self.events[-1][1] == "data: [DONE]"

    @property
    def failed(self) -> bool:
        return self.events[-1][1].startswith('data: {"error":')


def wait_healthy(server: ServerHandle, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{server.base_url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"the server did not heal:\n{server.log()[-3000:]}")


def serves(server: ServerHandle) -> None:
    r = httpx.post(f"{server.base_url}/v1/completions", json={"prompt": "Hi", "max_tokens": 4}, timeout=60)
    assert r.status_code == 200, f"{r.text}\n{server.log()[-4000:]}"
    assert r.json()["usage"]["completion_tokens"] == 4


def kill_during_streams(server: ServerHandle, n_streams: int, fault: Callable[[], None]) -> tuple[list[Stream], float]:
    """Run ``n_streams`` streams, call ``fault`` once each has sent some events; the streams and
    the time of the fault once they all ended."""
    streams = [Stream(server.base_url).start() for _ in range(n_streams)]
    for s in streams:
        s.wait_events(3)
    t_fault = time.monotonic()
    fault()
    for s in streams:
        s.join()
    return streams, t_fault


# ----------------------------------------------------------------------------- executors


@pytest.mark.parametrize("n_executors", [1, 2])
def test_killed_executor_fails_its_streams_within_a_second_and_is_restarted(n_executors: int) -> None:
    slots = str(4 // n_executors)  # the 4 streams all run at once
    with start_server("--executors", str(n_executors), "-np", slots, "-t", str(2 // n_executors)) as server:
        victim = role_pids(server, "-m executor")[0]
        streams, t_kill = kill_during_streams(server, 4, lambda: os.kill(victim, signal.SIGKILL))
        failed = [s for s in streams if s.failed]
        assert failed, "no stream ran on the killed executor"
        for s in failed:
            assert s.ended_at - t_kill < 1.0
            assert "executor" in json.loads(s.events[-1][1].removeprefix("data: "))["error"]["message"]
        if n_executors == 2:  # the other executor's streams were not touched
            assert all(s.done for s in streams if not s.failed) and len(failed) < len(streams)
        else:
            assert len(failed) == len(streams)
        wait_healthy(server)
        serves(server)
        assert "restarting it in 1s" in server.log()
        assert victim not in role_pids(server, "-m executor")
        metrics = httpx.get(f"{server.base_url}/metrics", timeout=10).text
        restarts = re.findall(r'^ggserve:restarts_total\{process="executor-\d+"\} (\S+)$', metrics, re.MULTILINE)
        assert len(restarts) == n_executors and sum(map(float, restarts)) == 1


def test_hung_step_is_detected_by_the_step_timeout_and_the_executor_restarted(tmp_path) -> None:
    hang_file = tmp_path / "hang"
    os.environ[HANG_FILE_ENV] = str(hang_file)
    try:
        with start_server("--step-timeout", "4") as server:
            streams, t_hang = kill_during_streams(server, 2, hang_file.touch)
            for s in streams:
                assert s.failed and s.ended_at - t_hang < 4 + 1.5
            assert "ran longer than --step-timeout 4s" in server.log()
            wait_healthy(server)
            serves(server)
    finally:
        del os.environ[HANG_FILE_ENV]


def test_too_many_failures_in_a_row_end_the_server_with_exit_code_1() -> None:
    with start_server("--max-restarts", "1") as server:
        killed: list[int] = []
        for _ in range(2):
            # /health may still say ok for a moment after a kill: wait for the new executor itself
            deadline = time.monotonic() + 30
            while not (fresh := [p for p in role_pids(server, "-m executor") if p not in killed and alive(p)]):
                assert time.monotonic() < deadline, f"the executor was not restarted; the log:\n{server.log()[-4000:]}"
                time.sleep(0.1)
            wait_healthy(server)
            killed.append(fresh[0])
            os.kill(fresh[0], signal.SIGKILL)
            time.sleep(0.3)
        assert server.proc.wait(30) == 1
        assert "executor 0 process" in server.log() and "failed 2 times within 120s; giving up" in server.log()


# ----------------------------------------------------------------------------- scheduler, frontend


def test_killed_scheduler_ends_every_request_within_two_seconds_and_the_server_heals() -> None:
    with start_server() as server:
        (victim,) = role_pids(server, "-m scheduler")
        blocking: list[httpx.Response] = []
        body = {"prompt": "Once upon", "max_tokens": 300, "ignore_eos": True}
        waiter = threading.Thread(target=lambda: blocking.append(
            httpx.post(f"{server.base_url}/v1/completions", json=body, timeout=60)), daemon=True)
        waiter.start()
        streams, t_kill = kill_during_streams(server, 2, lambda: os.kill(victim, signal.SIGKILL))
        waiter.join(10)
        t_end = time.monotonic()
        for s in streams:
            assert s.failed and s.ended_at - t_kill < 2.0
        assert blocking and blocking[0].status_code == 503 and t_end - t_kill < 2.5
        assert blocking[0].headers["retry-after"] == "1"
        wait_healthy(server)
        serves(server)


def test_sigterm_right_after_the_scheduler_died_still_ends_streams_with_an_error() -> None:
    """The dead scheduler drains nothing: the launcher stops at once, but leaves the HTTP workers
    the time they take to notice the loss, so each stream ends with an error event, not cut."""
    with start_server() as server:
        (victim,) = role_pids(server, "-m scheduler")

        def fault() -> None:
            os.kill(victim, signal.SIGKILL)
            time.sleep(0.2)
            server.proc.send_signal(signal.SIGTERM)

        streams, _ = kill_during_streams(server, 2, fault)
        for s in streams:
            assert s.failed, s.events[-2:]
        assert server.proc.wait(timeout=30) == 0


def test_frozen_scheduler_fails_requests_within_two_seconds_and_is_replaced() -> None:
    with start_server() as server:
        (victim,) = role_pids(server, "-m scheduler")
        streams, t_stop = kill_during_streams(server, 2, lambda: os.kill(victim, signal.SIGSTOP))
        for s in streams:  # the frontend hears no pulse: it does not wait for the launcher
            assert s.failed and s.ended_at - t_stop < 2.0
        wait_healthy(server, timeout_s=40)  # the launcher kills the silent scheduler (10 s) and restarts it
        assert "sent nothing for 10s (hung); killed" in server.log()
        assert not alive(victim)
        serves(server)


def test_killed_frontend_worker_is_respawned_and_its_requests_are_aborted() -> None:
    with start_server("--http-workers", "1") as server:
        (granian,) = [p for p in role_pids(server, "-m frontend") if parent(p) == server.proc.pid]
        (worker,) = children(granian)
        stream = Stream(server.base_url).start()
        stream.wait_events(3)
        os.kill(worker, signal.SIGKILL)
        stream.join()
        wait_healthy(server)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # the scheduler notices the silent worker (3 s)
            slots = httpx.get(f"{server.base_url}/slots", timeout=5).json()
            if not any(s["is_processing"] for s in slots):
                break
            time.sleep(0.2)
        assert not any(s["is_processing"] for s in slots)
        assert "aborting its 1 request(s)" in server.log()
        serves(server)


def test_a_stalled_frontend_worker_gets_its_dropped_requests_failed_when_it_wakes() -> None:
    """A worker whose event loop stalls past the scheduler's 3 s is forgotten and its requests
    aborted; once it runs again, each of its clients gets an error at once, none waits forever."""
    with start_server("--http-workers", "1") as server:
        (granian,) = [p for p in role_pids(server, "-m frontend") if parent(p) == server.proc.pid]
        (worker,) = children(granian)
        streams = [Stream(server.base_url).start() for _ in range(2)]
        for s in streams:
            s.wait_events(3)
        os.kill(worker, signal.SIGSTOP)
        time.sleep(4.5)
        t_wake = time.monotonic()
        os.kill(worker, signal.SIGCONT)
        for s in streams:
            s.join(timeout_s=30)
            assert s.failed and s.ended_at - t_wake < 3.0, (s.events[-2:], server.log()[-2000:])
            assert "did not answer the engine" in s.events[-1][1]
        assert "is back; failing the 2 request(s) dropped while it was silent" in server.log()
        serves(server)


# ----------------------------------------------------------------------------- stopping


def _no_leftovers(pids: list[int], shm_before: set[str], run_dir: str) -> None:
    assert not [p for p in pids if alive(p)], "a child outlived the launcher"
    assert set(os.listdir("/dev/shm")) <= shm_before
    assert not os.path.exists(run_dir)


@pytest.mark.parametrize("target", ["launcher", "every process"])
def test_sigterm_drains_running_streams_then_exits_0_leaving_nothing(tmp_path, target: str) -> None:
    run_dir = str(tmp_path / "run")
    shm_before = set(os.listdir("/dev/shm"))
    with start_server("--run-dir", run_dir, "--shutdown-timeout", "120") as server:
        pids = children(server.proc.pid)
        streams = [Stream(server.base_url, {**LONG, "max_tokens": 40}).start() for _ in range(2)]
        for s in streams:
            s.wait_events(3)
        if target == "launcher":
            os.kill(server.proc.pid, signal.SIGTERM)
        else:  # what systemd's control-group stop and `kill -TERM -- -PGID` do
            os.killpg(server.proc.pid, signal.SIGTERM)
            for pid in pids:
                os.kill(pid, signal.SIGTERM)
        time.sleep(0.3)
        health = httpx.get(f"{server.base_url}/health", timeout=5)
        assert (health.status_code, health.json()) == (503, {"status": "draining"})
        late = httpx.post(f"{server.base_url}/v1/completions", json={"prompt": "x", "max_tokens": 2}, timeout=5)
        assert late.status_code == 503 and late.headers["retry-after"] == "1"
        for s in streams:
            s.join()
            assert s.done, s.events[-1]
        assert server.proc.wait(30) == 0
        _no_leftovers(pids, shm_before, run_dir)
        assert "stopping: finishing running requests" in server.log()


def test_requests_still_running_at_the_shutdown_timeout_end_with_an_error() -> None:
    with start_server("--shutdown-timeout", "1") as server:
        stream = Stream(server.base_url, {**LONG, "max_tokens": 500}).start()
        stream.wait_events(3)
        t_term = time.monotonic()
        os.kill(server.proc.pid, signal.SIGTERM)
        stream.join()
        assert stream.failed and "shutting down" in stream.events[-1][1]
        assert stream.ended_at - t_term < 3.0
        assert server.proc.wait(30) == 0


def test_sigint_during_model_loading_stops_at_once() -> None:
    with start_server(ready=False) as server:
        deadline = time.monotonic() + 30
        while not role_pids(server, "-m executor"):  # the model is loading
            assert time.monotonic() < deadline
            time.sleep(0.05)
        pids = children(server.proc.pid)
        os.kill(server.proc.pid, signal.SIGINT)
        assert server.proc.wait(15) == 0
        assert not [p for p in pids if alive(p)]
        assert "stopped during start-up" in server.log()


def test_sigkilled_launcher_takes_every_child_with_it() -> None:
    with start_server() as server:
        pids = children(server.proc.pid)
        assert len(pids) >= 4  # scheduler, executor, granian and its worker
        (scheduler,) = role_pids(server, "-m scheduler")
        run_dir = os.path.dirname(cmdline(scheduler).split("--config ")[1].split()[0])
        os.kill(server.proc.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while [p for p in pids if alive(p)] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [p for p in pids if alive(p)]
    # its run directory (config.json holds the API keys) stays until the next start removes it
    assert os.path.isfile(os.path.join(run_dir, "config.json"))
    with start_server() as later:
        assert not os.path.exists(run_dir) and f"removed {run_dir}" in later.log()
