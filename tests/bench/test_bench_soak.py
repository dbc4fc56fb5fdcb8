"""The soak benchmark: outcome classification, the process tree and its roles, memory drift, what
a kill explains; and one short soak against a real server."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from bench.host import proctree
from bench.cli import default_model_path
from bench.host.proctree import Proc, Sample
from bench.scenarios.soak import SoakOptions, run_soak_with_server
from bench.scenarios.soak_client import KINDS, Outcome, SoakRecord, StreamReader, classify_reply, send
from bench.scenarios.soak_report import Kill, kill_impacts, summarize, summary_text
from bench.tokenizer import TextMaker, Tokenizer
from bench.workloads import LengthDist
from conftest import DEFAULT_ARGS

CHUNK = 'data: {"choices":[{"index":0,"delta":{"content":" hi"}}]}'
ERROR = 'data: {"error":{"message":"executor 0 failed","type":"server_error","code":500}}'


def read(lines: list[str]) -> tuple[Outcome, str, bool]:
    reader = StreamReader()
    for line in lines:
        if reader.feed(line):
            break
    outcome, detail = reader.close()
    return outcome, detail, reader.has_text


def test_stream_outcomes():
    assert read([CHUNK, "", ": ping", "", CHUNK, 'data: {"choices":[],"usage":{}}',
                 "data: [DONE]"]) == (Outcome.OK, "", True)
    outcome, detail, has_text = read([CHUNK, "", ERROR, "", "data: [DONE]"])
    assert outcome is Outcome.STREAM_ERROR and "executor 0 failed" in detail and has_text
    # closed with neither [DONE] nor an error event: the client cannot tell it ended
    assert read([CHUNK, "", CHUNK])[0] is Outcome.TRUNCATED
    assert read([": ping", ""])[:2] == (Outcome.TRUNCATED, "closed without [DONE] or an error")
    assert read(["data: {not json"])[0] is Outcome.BAD_RESPONSE


def test_reply_outcomes():
    assert classify_reply(200, b'{"choices":[{"text":"x"}]}') == (Outcome.OK, "")
    outcome, detail = classify_reply(503, b'{"error":{"message":"queue full"}}')
    assert outcome is Outcome.HTTP_ERROR and detail.startswith("HTTP 503")
    assert "queue full" in detail
    assert classify_reply(200, b"<html>")[0] is Outcome.BAD_RESPONSE
    assert classify_reply(200, b'{"choices":[]}')[0] is Outcome.BAD_RESPONSE


def send_to(handler, kind_label: str, timeout: float = 5.0) -> SoakRecord:
    """send() one request to an in-process fake server."""
    kind = next(k for k in KINDS if k.label == kind_label)

    async def go() -> SoakRecord:
        record = SoakRecord(0, kind.label, 0.0)
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler),
                                     base_url="http://soak.test") as http:
            await send(http, kind, {"stream": kind.stream}, record, timeout, time.monotonic())
        return record

    return asyncio.run(go())


def test_send_never_waits_past_its_deadline():
    async def pings() -> AsyncIterator[bytes]:  # a stream that is alive but never ends
        yield CHUNK.encode() + b"\n\n"
        while True:
            await asyncio.sleep(0.05)
            yield b": ping\n\n"

    record = send_to(lambda request: httpx.Response(200, content=pings()), "chat stream",
                     timeout=0.5)
    assert record.outcome is Outcome.TIMEOUT and record.hung
    assert 0.5 <= record.end < 2.0 and record.ttft is not None


def test_send_outcomes_of_transport_failures():
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    assert send_to(refuse, "completions").outcome is Outcome.CONNECT_ERROR

    def cut(request: httpx.Request) -> httpx.Response:
        raise httpx.RemoteProtocolError("peer closed connection", request=request)

    record = send_to(cut, "chat")
    assert record.outcome is Outcome.TRUNCATED and record.hung
    error = send_to(lambda request: httpx.Response(200, content=(ERROR + "\n\n").encode()),
                    "completions stream")
    assert error.outcome is Outcome.STREAM_ERROR and not error.hung


def test_roles_from_command_lines():
    python = "/venv/bin/python"
    assert proctree.role_of([python, "-m", "scheduler", "--config", "c.json"],
                            "launcher") == "scheduler"
    assert proctree.role_of([python, "-m", "executor", "--config", "c.json", "--id", "2"],
                            "launcher") == "executor 2"
    assert proctree.role_of([python, "-m", "frontend", "--config", "c.json"],
                            "launcher") == "frontend"
    # granian's workers are forks of the frontend, with its command line
    assert proctree.role_of([python, "-m", "frontend", "--config", "c.json"],
                            "frontend") == "http worker"
    assert proctree.role_of(["/bin/sh", "-c", "x"], "launcher") == "other: sh"
    assert proctree.descendants(1, {2: 1, 3: 1, 4: 2, 5: 4, 6: 9}) == [2, 3, 4, 5]


FAKE_MODULES = {
    "scheduler": "import time; time.sleep(60)",
    "executor": "import time; time.sleep(60)",
    # forks one worker, as granian does
    "frontend": "import os, time; os.fork(); time.sleep(60)",
}


def test_process_tree_of_own_children(tmp_path):
    for name, code in FAKE_MODULES.items():
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(code))
    commands = [["-m", "scheduler", "--config", "x"], ["-m", "executor", "--id", "3"],
                ["-m", "frontend", "--config", "x"]]
    # own sessions, so that killing a group takes the forked worker too
    children = [subprocess.Popen([sys.executable, *args], cwd=tmp_path, start_new_session=True)
                for args in commands]
    try:
        expected = {"launcher", "scheduler", "executor 3", "frontend", "http worker 0"}
        deadline = time.monotonic() + 10
        while not expected <= {p.role for p in proctree.process_tree(os.getpid())}:
            assert time.monotonic() < deadline, proctree.process_tree(os.getpid())
            time.sleep(0.1)
        procs = {p.role: p for p in proctree.process_tree(os.getpid())}
        assert procs["launcher"].pid == os.getpid()
        assert [procs[r].pid for r in ("scheduler", "executor 3", "frontend")] == \
            [c.pid for c in children]
        assert all(p.rss_kib > 1000 for p in procs.values())  # a Python process: MiBs
        assert all(proctree.alive(c.pid) for c in children)
    finally:
        for child in children:
            os.killpg(child.pid, signal.SIGKILL)
    time.sleep(0.2)
    assert not proctree.alive(children[0].pid)  # a zombie until waited for: not alive
    for child in children:
        child.wait()
    assert not proctree.alive(children[0].pid)


def sample(at: float, *procs: tuple[str, int, int]) -> Sample:
    return Sample(at, tuple(Proc(pid, role, kib) for role, pid, kib in procs))


def test_rss_drift():
    samples = [sample(t, ("launcher", 1, 30_000), ("executor 0", 2, 400_000 + 1000 * t))
               for t in range(0, 60, 5)]
    # the executor is killed at 60 s and restarted; its new pid jumps at the end
    samples += [sample(t, ("launcher", 1, 30_000), ("executor 0", 3, 300_000 + 1000 * (t - 60)))
                for t in range(60, 120, 5)]
    samples.append(sample(120, ("launcher", 1, 30_000), ("executor 0", 3, 360_000),
                          ("http worker 0", 9, 90_000)))  # seen once: cannot be judged
    rows = {(d.role, d.pid): d for d in proctree.drift(samples, 0.2, 10.0)}
    assert [(d.role, d.pid) for d in proctree.drift(samples, 0.2, 10.0)] == \
        [("launcher", 1), ("executor 0", 2), ("executor 0", 3), ("http worker 0", 9)]
    launcher = rows[("launcher", 1)]
    assert launcher.baseline_at == 25 and launcher.change_pct == 0 and not launcher.flagged
    first = rows[("executor 0", 2)]  # 0-55 s: warm from 11 s, i.e. the 15 s sample
    assert first.baseline_at == 15 and first.end_kib == 455_000
    assert first.change_pct == pytest.approx(100 * 40 / 415) and not first.flagged
    second = rows[("executor 0", 3)]  # 60-120 s: warm from 72 s, the 75 s sample
    assert second.baseline_at == 75 and second.baseline_kib == 315_000
    assert second.end_kib == 360_000 and second.flagged  # +14%
    worker = rows[("http worker 0", 9)]
    assert worker.change_pct is None and not worker.flagged
    grown = proctree.drift([sample(t, ("scheduler", 5, 100 + 10 * t)) for t in range(10)],
                           0.2, 10.0)[0]
    assert grown.change_pct == pytest.approx(100 * 70 / 120) and grown.flagged


def record(start: float, end: float, outcome: Outcome = Outcome.OK) -> SoakRecord:
    return SoakRecord(0, "chat", start, end, outcome)


def test_what_a_kill_explains():
    records = [
        record(0, 5),
        record(8, 10.2, Outcome.STREAM_ERROR),  # in flight at the kill
        record(10.1, 10.3, Outcome.HTTP_ERROR),  # sent before the server served again
        record(9, 12),  # another executor served it meanwhile: in flight, not failed
        record(10.5, 13),  # the first success of a request sent after the kill
        record(30, 31, Outcome.HTTP_ERROR),  # nothing to do with the kill
        record(40, 160, Outcome.TIMEOUT),
    ]
    samples = [sample(9, ("executor 0", 2, 1)), sample(14, ("executor 0", 3, 1))]
    (impact,) = kill_impacts([Kill(10.0, "executor 0", 2)], records, samples)
    assert impact.in_flight == 2 and impact.failed == records[1:3]
    assert impact.recovered_after == pytest.approx(3.0) and impact.restarted_after == 4.0

    summary = summarize(records, samples, [Kill(10.0, "executor 0", 2)], 160.0, None, 0.2, 10.0)
    assert summary["failed"] == 4 and summary["hung"] == 1
    assert summary["failed_away_from_kills"] == 2 and not summary["passed"]
    assert summary["reasons"] == ["1 requests hung (truncated or timed out)",
                                  "2 requests failed away from any kill"]
    assert summary["kills"][0]["failed_by_outcome"] == {"stream error": 1, "http error": 1}

    # the server died with the executor: nothing succeeded afterwards
    died = summarize(records[:3], [], [Kill(10.0, "executor 0", 2)], 11.0, 10.5, 0.2, 10.0)
    assert died["reasons"] == ["the server exited at 10.5 s, 0.5 s after the executor kill "
                               "at 10.0 s", "no request succeeded after the kill at 10.0 s"]


@pytest.mark.timeout(120)
def test_short_soak_against_ggserve(tmp_path):
    """15 s, 4 clients: every request succeeds and every process of the server is sampled."""
    options = SoakOptions(concurrency=4, duration=15.0, request_timeout=60.0,
                          input_len=LengthDist(8, 24), output_len=LengthDist(4, 12),
                          sample_interval=2.0, progress_interval=5.0)
    texts = TextMaker(Tokenizer(default_model_path()), pool_size=300)
    summary = run_soak_with_server(DEFAULT_ARGS, options, texts, tmp_path / "server.log", 120)
    # on a busy 2-core machine a client may finish only one request in 15 s
    assert summary["requests"] >= options.concurrency
    assert summary["failed"] == 0 and summary["hung"] == 0, summary["failures"]
    assert summary["outcomes"]["ok"] == summary["requests"]
    roles = {row["role"] for row in summary["memory"]}
    assert roles == {"launcher", "scheduler", "executor 0", "frontend", "http worker 0"}
    assert all(row["baseline_kib"] and row["end_kib"] > 10_000 for row in summary["memory"])
    assert summary["server_exit_at_s"] is None and summary["kills"] == []
    assert summary["e2e_p50_ms"] > 0
    assert "| executor 0 |" in summary_text(summary)
