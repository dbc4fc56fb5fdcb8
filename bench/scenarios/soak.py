"""Soak run: many closed-loop clients for a long time, watching that every request ends and that
no process of the server grows; optionally killing an executor every so often.

Clients send a mix of streaming and non-streaming chat and completions requests with short
prompts and few output tokens, each under a deadline (bench.scenarios.soak_client). When the server's
launcher pid is known (always when it is started here), the RSS of every process in its tree is
sampled by role (bench.host.proctree), an executor can be SIGKILLed periodically, and the run stops
early if the launcher exits. bench.scenarios.soak_report turns what was seen into findings and a verdict.
"""

from __future__ import annotations

import asyncio
import os
import random
import shlex
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench import compare
from bench.host import proctree
from bench.client import api_root, discover_model
from bench.scenarios.soak_client import KINDS, PromptMaker, SoakRecord, send
from bench.scenarios.soak_report import Kill, summarize
from bench.tokenizer import TextMaker
from bench.workloads import LengthDist

WATCH_INTERVAL_S = 0.5  # how often the launcher's pid is checked
SERVER_LOG_LINES = 20  # of a server started here that exited, in the summary


@dataclass(frozen=True)
class SoakOptions:
    concurrency: int  # closed-loop clients
    duration: float  # seconds after which no request starts
    request_timeout: float  # seconds a request may take, end to end, before it counts as hung
    input_len: LengthDist  # prompt tokens (chat: the user message; a system prompt comes first)
    output_len: LengthDist  # max_tokens (exact: ignore_eos)
    sample_interval: float = 5.0  # seconds between RSS samples
    warmup_fraction: float = 0.2  # RSS is compared from this share of a process's life on
    rss_tolerance_pct: float = 10.0
    kill_executor_every: float | None = None  # seconds
    failure_pause: float = 1.0  # a client waits this long after a failure (no error storm)
    progress_interval: float = 10.0
    seed: int = 0


@dataclass
class SoakRun:
    """One run's clients, samplers and findings; `run` drives it, `summary` reports it."""

    options: SoakOptions
    prompts: PromptMaker
    launcher_pid: int | None  # None: a server whose processes are unknown
    records: list[SoakRecord] = field(default_factory=list)
    samples: list[proctree.Sample] = field(default_factory=list)
    kills: list[Kill] = field(default_factory=list)
    server_exit_at: float | None = None
    in_flight: int = 0
    origin: float = 0.0
    duration: float = 0.0  # seconds from the start to the last request's end

    def elapsed(self) -> float:
        return time.monotonic() - self.origin

    def _stopping(self) -> bool:
        return self.elapsed() >= self.options.duration or self.server_exit_at is not None

    async def run(self, http: httpx.AsyncClient, model: str) -> None:
        self.origin = time.monotonic()
        background = [self._progress()]
        if self.launcher_pid is not None:
            background += [self._sampler(), self._watch_launcher()]
            if self.options.kill_executor_every:
                background.append(self._killer())
        tasks = [asyncio.create_task(c) for c in background]
        try:
            await asyncio.gather(*(self._client(http, model, i)
                                   for i in range(self.options.concurrency)))
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        self.duration = self.elapsed()
        if self.launcher_pid is not None:
            await self._sample()  # the end of the run, whenever the last sample was

    async def _client(self, http: httpx.AsyncClient, model: str, index: int) -> None:
        rng = random.Random(f"{self.options.seed}:client:{index}")
        while not self._stopping():
            kind = rng.choice(KINDS)
            record = SoakRecord(index, kind.label, self.elapsed())
            self.records.append(record)
            self.in_flight += 1
            try:
                await send(http, kind, self.prompts.body(kind, model, rng), record,
                           self.options.request_timeout, self.origin)
            finally:
                self.in_flight -= 1
            if not record.ok:
                await asyncio.sleep(self.options.failure_pause)

    async def _sample(self) -> None:
        assert self.launcher_pid is not None
        procs = await asyncio.to_thread(proctree.process_tree, self.launcher_pid)
        if procs:
            self.samples.append(proctree.Sample(self.elapsed(), tuple(procs)))

    async def _sampler(self) -> None:
        while True:
            await self._sample()
            await asyncio.sleep(self.options.sample_interval)

    async def _watch_launcher(self) -> None:
        assert self.launcher_pid is not None
        while proctree.alive(self.launcher_pid):
            await asyncio.sleep(WATCH_INTERVAL_S)
        self.server_exit_at = self.elapsed()
        _log(f"the server (launcher pid {self.launcher_pid}) exited at "
             f"{self.server_exit_at:.1f} s; stopping the run")

    async def _killer(self) -> None:
        """SIGKILL an executor every kill_executor_every seconds, each executor in turn."""
        assert self.launcher_pid is not None and self.options.kill_executor_every
        every = self.options.kill_executor_every
        for n in range(1, int(self.options.duration // every) + 1):
            if n * every >= self.options.duration:
                return  # a kill at the very end could not show recovery
            await asyncio.sleep(n * every - self.elapsed())
            procs = await asyncio.to_thread(proctree.process_tree, self.launcher_pid)
            executors = [p for p in procs if p.role.startswith("executor")]
            if not executors:
                _log(f"{self.elapsed():.0f} s: no executor to kill")
                continue
            victim = executors[(n - 1) % len(executors)]
            try:
                os.kill(victim.pid, signal.SIGKILL)
            except ProcessLookupError:
                continue  # it died meanwhile: nothing was killed by us
            self.kills.append(Kill(self.elapsed(), victim.role, victim.pid))
            _log(f"{self.kills[-1].at:.1f} s: killed {victim.role} (pid {victim.pid})")

    async def _progress(self) -> None:
        while True:
            await asyncio.sleep(self.options.progress_interval)
            done = [r for r in self.records if r.end]
            failed = sum(not r.ok for r in done)
            hung = sum(r.hung for r in done)
            memory = ""
            if self.samples:
                last = self.samples[-1]
                memory = (f", RSS {last.total_kib / 1024:,.0f} MiB in {len(last.procs)} "
                          "processes")
            # past the duration no request starts: the ones in flight finish
            draining = " (draining)" if self._stopping() else ""
            _log(f"{self.elapsed():5.0f} / {self.options.duration:.0f} s{draining}: {len(done)} "
                 f"requests done, {failed} failed ({hung} hung), {self.in_flight} in flight"
                 f"{memory}")

    def summary(self) -> dict[str, Any]:
        options = {k: str(v) if isinstance(v, LengthDist) else v
                   for k, v in vars(self.options).items()}
        return {"options": options} | summarize(
            self.records, self.samples, self.kills, self.duration, self.server_exit_at,
            self.options.warmup_fraction, self.options.rss_tolerance_pct)


def _log(message: str) -> None:
    print(f"[soak] {message}", file=sys.stderr, flush=True)


async def run_soak(base_url: str, model: str | None, options: SoakOptions, texts: TextMaker,
                   launcher_pid: int | None) -> dict[str, Any]:
    """Run the soak against a server at base_url; launcher_pid enables memory and kills."""
    timeout = httpx.Timeout(options.request_timeout, connect=10.0)
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with httpx.AsyncClient(base_url=api_root(base_url), timeout=timeout,
                                 limits=limits) as http:
        model = model or await discover_model(http)
        run = SoakRun(options, PromptMaker(texts, options.input_len, options.output_len,
                                           options.seed), launcher_pid)
        _log(f"{options.concurrency} clients for {options.duration:.0f} s against {base_url} "
             f"({model})")
        await run.run(http, model)
    return run.summary() | {"server": base_url, "base_url": base_url, "model": model}


def run_soak_with_server(server_args: Sequence[str], options: SoakOptions, texts: TextMaker,
                         log_path: Path, startup_timeout: float) -> dict[str, Any]:
    """Start `ggserve serve` with server_args on a free port, soak it, stop it."""
    port = compare.free_port()
    command = [sys.executable, "-c", compare.GGSERVE_LAUNCHER, "serve", "--port", str(port),
               *server_args]
    with compare.running_server("ggserve", command, port, log_path, startup_timeout) as (
            base_url, pid):
        summary = asyncio.run(run_soak(base_url, None, options, texts, pid))
    summary["server"] = shlex.join(["ggserve", "serve", *server_args])
    summary["server_log"] = str(log_path)
    if summary["server_exit_at_s"] is not None:
        lines = log_path.read_text(errors="replace").splitlines()
        summary["server_log_tail"] = "\n".join(lines[-SERVER_LOG_LINES:])
    return summary
