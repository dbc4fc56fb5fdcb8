"""Side-by-side comparison: ggserve, llama-server and llama-cpp-python's server on one machine.

Each server is started in turn on the same model, slots, context and threads, warmed up, driven
with the same sessions at the same load levels, and stopped before the next starts. With a random
workload, llama-batched-bench (same llama.cpp tree as llama-server) measures the kernel ceiling at
batch sizes equal to the concurrency levels: S_TG, decode-only tokens/s, with a KV buffer per
sequence and with one unified buffer (ggserve's layout), and the output tokens/s of the whole batch
including its prefill. Engine efficiency = a server's output tokens/s / S_TG. Every measurement
waits for a quiet machine and is taken again when other processes disturbed it (bench.host.machine).

Every request sets ignore_eos. llama-cpp-python's server ignores it (its min_tokens would pin the
length, but through a Python logits processor that slows it by ~10%), so it is left as it is: the
"short" column counts the requests that stopped early, if any.

KV cells: ggserve lets one request fill all of -c; llama-server gives each slot -c / -np unless it
runs with -kvu (one unified pool, ggserve's layout: ServerSetup.unified_kv). A workload whose
longest request does not fit a server is refused before anything runs (context_problems).
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol, TypeVar

import httpx

from bench import report
from bench.baselines.llama_cpp_build import ensure_built
from bench.host.machine import CpuMeter, wait_until_quiet
from bench.runner import Plan, RunResult, benchmark
from bench.stats import Slo, summarize
from bench.workloads import LengthDist

SERVERS = ("ggserve", "llama-server", "llama-cpp-python")
REPO_ROOT = Path(__file__).resolve().parent.parent
# ggserve's console script may not be installed; its entry point is ggserve.cli:main.
GGSERVE_LAUNCHER = "import sys; from ggserve.cli import main; sys.exit(main())"
STOP_GRACE_S = 15.0


@dataclass(frozen=True)
class ServerSetup:
    model_path: str
    parallel: int  # slots (llama-cpp-python's server has one, whatever this says)
    ctx_size: int  # KV cells in all
    threads: int
    repack: bool  # llama.cpp weight repacking (use_extra_bufts), the same in every server
    port: int  # 0: pick a free one per server
    startup_timeout: float
    extra_args: Mapping[str, list[str]]  # server name -> more arguments
    unified_kv: bool = False  # llama-server with -kvu: any one request may fill all of -c
    quiet_cores: float = 0.1  # run only when other processes use at most this many cores
    quiet_timeout: float = 600.0  # seconds to wait for that before going ahead anyway
    retries: int = 2  # runs of a load level again when other processes disturbed it


class ServerFailed(RuntimeError):
    pass


def parse_extra_args(items: Sequence[str]) -> dict[str, list[str]]:
    """["llama-server=-kvu --foo 1", ...] -> {"llama-server": ["-kvu", "--foo", "1"]}."""
    extra: dict[str, list[str]] = {}
    for item in items:
        name, sep, args = item.partition("=")
        if not sep:
            raise ValueError(f"--extra-args wants SERVER=ARGS, got {item!r}")
        extra.setdefault(name, []).extend(shlex.split(args))
    return extra


def server_command(name: str, setup: ServerSetup, port: int) -> list[str]:
    model, slots, ctx, threads = setup.model_path, setup.parallel, setup.ctx_size, setup.threads
    if name == "ggserve":
        command = [sys.executable, "-c", GGSERVE_LAUNCHER, "serve", "-m", model,
                   "--port", str(port), "-np", str(slots), "-c", str(ctx), "-t", str(threads),
                   _repack_flag(setup)]
    elif name == "llama-server":
        command = [str(ensure_built()["llama-server"]), "-m", model, "--host", "127.0.0.1",
                   "--port", str(port), "-np", str(slots), "-c", str(ctx), "-t", str(threads),
                   "--no-webui", _repack_flag(setup)]
        command += ["-kvu"] if setup.unified_kv else []
    else:
        # interrupt_requests=False: by default a waiting request cuts the streaming one short.
        command = [sys.executable, "-m", "bench.baselines.llama_cpp_server", "--model", model,
                   "--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(ctx),
                   "--n_threads", str(threads), "--n_threads_batch", str(threads),
                   "--interrupt_requests", "False"]
        command += [] if setup.repack else ["--no-repack"]  # repacking is its default
    return command + setup.extra_args.get(name, [])


def _repack_flag(setup: ServerSetup) -> str:
    """Explicit either way: ggserve's default depends on the CPU, llama.cpp's does not."""
    return "--repack" if setup.repack else "--no-repack"


def llama_server_unified_kv(setup: ServerSetup) -> bool:
    """Whether llama-server runs with one KV pool (--kvu here, or -kvu among its extra args)."""
    args = setup.extra_args.get("llama-server", [])
    return setup.unified_kv or "-kvu" in args or "--kv-unified" in args


def request_capacity(name: str, setup: ServerSetup) -> int:
    """KV cells one request may fill: -c / -np for llama-server without a unified KV pool, all
    of -c otherwise (ggserve; llama-cpp-python's server has one sequence)."""
    if name == "llama-server" and not llama_server_unified_kv(setup):
        return setup.ctx_size // setup.parallel
    return setup.ctx_size


def context_problems(servers: Sequence[str], setup: ServerSetup, plan: Plan) -> list[str]:
    """One line per server that cannot hold the plan's longest request (estimated with
    Session.context_tokens), saying what would make it fit."""
    longest = max(session.context_tokens for load in plan.loads
                  for session in plan.sessions_for(load))
    problems = []
    for name in servers:
        capacity = request_capacity(name, setup)
        if capacity >= longest:
            continue
        fix = "a larger -c"
        if capacity < setup.ctx_size:
            fix = (f"--kvu (llama-server -kvu: one pool of {setup.ctx_size} cells that any "
                   f"request may fill, as ggserve's) or {fix}")
        problems.append(f"{name}: a request may hold {capacity} KV cells, the longest of this "
                        f"workload needs about {longest}; use {fix}")
    return problems


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _log(message: str) -> None:
    print(f"[bench.compare] {message}", file=sys.stderr, flush=True)


def _tail(path: Path, lines: int = 15) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _wait_ready(process: subprocess.Popen[bytes], base_url: str, timeout: float,
                log_path: Path) -> None:
    """Poll /health until it answers 200 (ggserve and llama-server answer 503 while loading; a
    server without /health is ready when /v1/models answers); fail early if the process dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerFailed(f"exited with status {process.returncode} before it was ready; "
                               f"{log_path}:\n{_tail(log_path)}")
        try:
            health = httpx.get(f"{base_url}/health", timeout=2.0).status_code
            if health == 200 or (health == 404
                                 and httpx.get(f"{base_url}/v1/models", timeout=2.0).status_code == 200):
                return
        except httpx.HTTPError:
            pass  # not listening yet
        time.sleep(0.2)
    raise ServerFailed(f"not ready after {timeout:.0f} s; {log_path}:\n{_tail(log_path)}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's process group (it may have children), SIGKILL if it lingers."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(STOP_GRACE_S)
            return
        except subprocess.TimeoutExpired:
            _log(f"pid {process.pid} ignored {sig.name}")


@contextmanager
def running_server(name: str, command: list[str], port: int, log_path: Path,
                   startup_timeout: float) -> Iterator[tuple[str, int]]:
    """Start a server in a session of its own, yield its base URL and session id (its pid)
    once it answers, stop it and its children afterwards."""
    _log(f"starting {name}: {shlex.join(command)}")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        env = os.environ | {"PYTHONPATH": os.pathsep.join(
            p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)}
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                   start_new_session=True)
        try:
            base_url = f"http://127.0.0.1:{port}"
            started = time.monotonic()
            _wait_ready(process, base_url, startup_timeout, log_path)
            _log(f"{name} ready in {time.monotonic() - started:.1f} s")
            yield base_url, process.pid
        finally:
            _stop(process)


class _Load(Protocol):
    name: str


L = TypeVar("L", bound=_Load)


def measure_loads(name: str, command: list[str], port: int, log_path: Path, args: Any, warmup: L, loads: list[L],
                  run: Callable[[str, L], Awaitable[dict[str, Any]]], figure: str, unit: str) -> list[dict[str, Any]]:
    """One server's rows of a side-by-side scenario (embeddings, multimodal): start it, run
    ``warmup``, then each load once the machine is quiet (``args.quiet_cores``); each row is the
    server's name, what ``run(base_url, load)`` measured and the cores other processes used."""
    rows = []
    with running_server(name, command, port, log_path, args.startup_timeout) as (base_url, pid):
        asyncio.run(run(base_url, warmup))
        for load in loads:
            other = wait_until_quiet(args.quiet_cores, args.quiet_timeout, server_session=pid)
            row = {"server": name} | asyncio.run(run(base_url, load))
            rows.append(row | {"other_cores": round(other, 2)})
            _log(f"{name} {load.name}: {row[figure]} {unit}")
    return rows


def kernel_ceiling(setup: ServerSetup, batch_sizes: Sequence[int], input_len: int,
                   output_len: int, unified_kv: bool, log_path: Path) -> dict[int, dict[str, Any]]:
    """llama-batched-bench rows by batch size: speed_tg (S_TG), speed_pp, t (s), ..., and the
    CPU cores other processes used meanwhile (cpu_other_cores)."""
    # Enough cells for the largest batch, at least as many as the servers get.
    ctx = max(setup.ctx_size, max(batch_sizes) * (input_len + output_len))
    command = [str(ensure_built()["llama-batched-bench"]), "-m", setup.model_path,
               "-c", str(ctx), "-t", str(setup.threads), "-npp", str(input_len),
               "-ntg", str(output_len), "-npl", ",".join(map(str, batch_sizes)),
               "--output-format", "jsonl", _repack_flag(setup)]
    command += ["-kvu"] if unified_kv else []
    command += setup.extra_args.get("llama-batched-bench", [])
    _log(f"kernel ceiling: {shlex.join(command)}")
    with log_path.open("ab") as log:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log,
                                   start_new_session=True)
        meter = CpuMeter(process.pid)
        meter.start()
        try:
            stdout, _ = process.communicate()
        finally:
            _stop(process)
        cpu = meter.stop()
    if process.returncode:
        raise ServerFailed(f"llama-batched-bench exited with {process.returncode}; {log_path}")
    rows = [json.loads(line) | cpu for line in stdout.decode().splitlines()
            if line.startswith("{")]
    return {row["pl"]: row for row in rows}


def _fmt(value: float | None, digits: int = 1, suffix: str = "") -> str:
    return "-" if value is None else f"{value:,.{digits}f}{suffix}"


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    return numerator / denominator if numerator and denominator else None


def comparison_tables(summaries: Sequence[Mapping[str, Any]], servers: Sequence[str],
                      ceiling: Mapping[int, Mapping[str, Any]]) -> str:
    """Throughput (with ceiling and efficiency) and p50 latencies per load level, one column per
    server, with the first server's ratios to each other one."""
    by_key = {(s["server"], s["load"]): s for s in summaries}
    loads = sorted({s["load"] for s in summaries})
    mode = summaries[0]["mode"]
    first, others = servers[0], servers[1:]
    load_name = "concurrency" if mode == "concurrency" else "rate /s"

    def value(server: str, load: float, key: str) -> float | None:
        summary = by_key.get((server, load))
        return None if summary is None else summary[key]

    headers = [load_name]
    if ceiling:
        headers += ["ceiling S_TG", "S_TG unified KV", "ceiling incl. prefill"]
    headers += [f"{s} tok/s" for s in servers]
    headers += [f"{first} ÷ {o}" for o in others]
    if ceiling:
        headers += [f"{s} % of S_TG" for s in servers]
    rows = []
    for load in loads:
        row = [f"{load:g}"]
        tg_ceiling = None
        if ceiling:
            bench_row = ceiling.get(int(load), {})
            tg_ceiling = bench_row.get("speed_tg")
            whole = _ratio(bench_row.get("pl", 0) * bench_row.get("tg", 0), bench_row.get("t"))
            row += [_fmt(tg_ceiling), _fmt(bench_row.get("speed_tg_unified_kv")), _fmt(whole)]
        row += [_fmt(value(s, load, "output_throughput")) for s in servers]
        row += [_fmt(_ratio(value(first, load, "output_throughput"),
                            value(o, load, "output_throughput")), 2, "x") for o in others]
        if ceiling:
            shares = [_ratio(value(s, load, "output_throughput"), tg_ceiling) for s in servers]
            row += [_fmt(None if share is None else 100 * share, 0, "%") for share in shares]
        rows.append(row)
    throughput = report.markdown_table(headers, rows)

    headers = [load_name]
    for metric in ("TTFT", "TPOT"):
        headers += [f"{s} {metric} p50 ms" for s in servers]
        headers += [f"{o} ÷ {first} {metric}" for o in others]
    rows = []
    for load in loads:
        row = [f"{load:g}"]
        for key in ("ttft_p50_ms", "tpot_p50_ms"):
            row += [_fmt(value(s, load, key), 0 if key == "ttft_p50_ms" else 1) for s in servers]
            row += [_fmt(_ratio(value(o, load, key), value(first, load, key)), 2, "x")
                    for o in others]
        rows.append(row)
    latency = report.markdown_table(headers, rows)
    return (f"### Output throughput (tokens/s)\n\n{throughput}\n"
            f"### Median latencies (ratio > 1: {first} is faster)\n\n{latency}")


def measure_server(name: str, setup: ServerSetup, plan: Plan, log_path: Path,
                   conditions: list[str]) -> list[RunResult]:
    """Start the server, run each load level when the machine is quiet (again, up to
    setup.retries times, if other processes disturbed it), stop the server."""
    port = setup.port or free_port()
    results = []
    with running_server(name, server_command(name, setup, port), port, log_path,
                        setup.startup_timeout) as (base_url, session):
        for load in plan.loads:
            for attempt in range(setup.retries + 1):
                wait_until_quiet(setup.quiet_cores, setup.quiet_timeout, server_session=session)
                (result,) = asyncio.run(benchmark(base_url, None, replace(plan, loads=[load]),
                                                  meter=CpuMeter(session)))
                other = result.cpu["cpu_other_cores"] or 0.0
                if other <= setup.quiet_cores or attempt == setup.retries:
                    break
                _log(f"{name}, {load.label}: other processes used {other:.2f} cores; again")
            if other > setup.quiet_cores:
                conditions.append(f"{name}, {load.label}: other processes used {other:.2f} "
                                  f"cores (after {setup.retries} retries)")
            results.append(result)
    return results


def measure_ceiling(setup: ServerSetup, plan: Plan, input_len: int, output_len: int,
                    log_path: Path, conditions: list[str]) -> dict[int, dict[str, Any]]:
    """kernel_ceiling at the plan's concurrency levels, each on a quiet machine if it can be
    had: with a KV buffer per sequence (llama-batched-bench's and llama-server's default), whose
    rows are returned, and with one unified KV buffer (ggserve's layout, where attention spans
    every sequence's cells), whose S_TG they carry as speed_tg_unified_kv."""
    batch_sizes = [int(load.value) for load in plan.loads]
    rows: dict[int, dict[str, Any]] = {}
    for unified_kv in (False, True):
        layout = "unified KV" if unified_kv else "KV per sequence"
        for attempt in range(setup.retries + 1):
            wait_until_quiet(setup.quiet_cores, setup.quiet_timeout)
            ceiling = kernel_ceiling(setup, batch_sizes, input_len, output_len, unified_kv,
                                     log_path)
            other = next(iter(ceiling.values()))["cpu_other_cores"]
            if other <= setup.quiet_cores or attempt == setup.retries:
                break
            _log(f"llama-batched-bench ({layout}): other processes used {other:.2f} cores; again")
        conditions.append(f"llama-batched-bench ({layout}): other processes used {other:.2f} "
                          "cores")
        if unified_kv:
            for batch, row in ceiling.items():
                rows[batch]["speed_tg_unified_kv"] = row["speed_tg"]
        else:
            rows = ceiling
    return rows


def compare_servers(servers: Sequence[str], setup: ServerSetup, plan: Plan, workload: str,
                    slo: Slo, out_dir: Path, batched_bench: bool, input_len: LengthDist,
                    output_len: LengthDist) -> int:
    """Run the plan against each server in turn; print the tables; 0 if all went cleanly."""
    out_dir.mkdir(parents=True, exist_ok=True)
    # A SIGTERM (or hang-up) exits through the `finally` that stops what is being measured.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, _: sys.exit(128 + signum))
    kv_layout = "one pool (-kvu)" if llama_server_unified_kv(setup) else "split per slot"
    conditions = [f"{os.cpu_count()} CPUs; {Path(setup.model_path).name}; {setup.parallel} "
                  f"slots, {setup.ctx_size} KV cells, {setup.threads} threads, weight repacking "
                  f"{'on' if setup.repack else 'off'}; llama-server's KV cells {kv_layout}"]
    conditions += [f"{name} arguments added: {shlex.join(args)}"
                   for name, args in setup.extra_args.items() if args]

    ceiling: dict[int, dict[str, Any]] = {}
    fixed_lengths = input_len.low == input_len.high and output_len.low == output_len.high
    if batched_bench and workload == "random" and fixed_lengths and all(
            load.mode == "concurrency" for load in plan.loads):
        ceiling = measure_ceiling(setup, plan, input_len.low, output_len.low,
                                  out_dir / "llama-batched-bench.log", conditions)
        report.write_jsonl(out_dir / "kernel_ceiling.jsonl", ceiling.values())
    elif batched_bench:
        _log("kernel ceiling skipped: it needs the random workload with fixed lengths and "
             "concurrency levels")

    summaries: list[dict[str, Any]] = []
    failures: dict[str, str] = {}
    for name in servers:
        try:
            results = measure_server(name, setup, plan, out_dir / f"{name}.log", conditions)
        except (ServerFailed, RuntimeError, httpx.HTTPError) as exc:
            failures[name] = f"{type(exc).__name__}: {exc}"
            _log(f"{name} failed: {failures[name]}")
            continue
        labels = {"server": name, "workload": workload, "sampling": plan.sampling.mode}
        runs = [labels | summarize(result, slo) for result in results]
        summaries += runs
        report.write_jsonl(out_dir / "results.jsonl", runs)
        for result in results:
            report.write_jsonl(out_dir / "requests.jsonl", report.request_rows(
                result.records, labels | {"mode": result.load.mode, "load": result.load.value}))

    ran = [name for name in servers if name not in failures]
    markdown = f"## {workload}, sampling {plan.sampling.description}\n\n"
    if summaries:
        report.save_plots(summaries, out_dir, f"{workload}, {plan.sampling.mode} sampling, "
                          f"{setup.parallel} slots, {setup.threads} threads",
                          {"kernel ceiling (batched-bench S_TG)":
                           {batch: row["speed_tg"] for batch, row in ceiling.items()},
                           "S_TG with unified KV": {batch: row["speed_tg_unified_kv"]
                                                    for batch, row in ceiling.items()}})
        markdown += comparison_tables(summaries, ran, ceiling) + "\n"
        if groups := report.group_table(summaries, ran):
            markdown += f"### By request group\n\n{groups}\n"
        markdown += "### All runs\n\n" + report.summary_table(summaries)
    markdown += "\n### Conditions\n\n" + "".join(f"- {line}\n" for line in conditions)
    markdown += "".join(f"\n**{name} did not run**: {reason.splitlines()[0]}\n"
                        for name, reason in failures.items())
    (out_dir / "report.md").write_text(markdown)
    sys.stdout.write(markdown)
    return 1 if failures or any(s["errors"] for s in summaries) else 0
