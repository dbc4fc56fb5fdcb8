"""How busy the machine is apart from the benchmark: CPU time from /proc (Linux).

On a small shared machine, anything else running skews latency and throughput badly (llama.cpp's
threads spin on barriers and lose their core to others). A run therefore records the CPU used by
the server under test, by this benchmark process and by everything else, in cores (CPU seconds
per second); comparisons can wait until the machine is quiet before starting a server.
"""

from __future__ import annotations

import os
import resource
import sys
import time
from pathlib import Path

TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent not idle since boot."""
    user, nice, system, _idle, _iowait, irq, softirq = (
        int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8])
    return (user + nice + system + irq + softirq) / TICKS_PER_S


def session_cpu_seconds(session: int) -> float:
    """CPU seconds used by the live processes of a session (a server and its children)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # exited meanwhile
        fields = text[text.rindex(")") + 2:].split()  # after "pid (comm) "
        if int(fields[3]) == session:
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICKS_PER_S


def own_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def reaped_children_cpu_seconds() -> float:
    """CPU seconds of this process's children that have exited and been waited for."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class CpuMeter:
    """CPU cores used between start() and stop(): server (if its session is known), this
    benchmark process, and everything else.

    The server's share is the change in CPU time of its session's live processes plus that of
    this process's reaped children: a child that exits and is waited for in between (a kernel
    bench) leaves the first and shows in the second, so its time is counted exactly once."""

    def __init__(self, server_session: int | None = None) -> None:
        self._session = server_session
        self._start = (0.0, 0.0, 0.0, 0.0)

    def _sample(self) -> tuple[float, float, float, float]:
        server = (session_cpu_seconds(self._session) + reaped_children_cpu_seconds()
                  if self._session else 0.0)
        return time.monotonic(), machine_busy_seconds(), own_cpu_seconds(), server

    def start(self) -> None:
        self._start = self._sample()

    def stop(self) -> dict[str, float | None]:
        end = self._sample()
        wall, busy, own, server = (b - a for a, b in zip(self._start, end, strict=True))
        wall = max(wall, 1e-9)
        return {
            "cpu_server_cores": server / wall if self._session else None,
            "cpu_bench_cores": own / wall,
            "cpu_other_cores": max(0.0, busy - own - server) / wall,
        }


def wait_until_quiet(max_other_cores: float, timeout: float, window: float = 3.0,
                     server_session: int | None = None) -> float:
    """Wait until everything but this process (and the server's session, if given) uses at most
    max_other_cores over a window; returns the last measured load (above the limit if the
    timeout ran out)."""
    started = time.monotonic()
    next_notice = started
    meter = CpuMeter(server_session)
    while True:
        meter.start()
        time.sleep(window)
        other = meter.stop()["cpu_other_cores"] or 0.0
        now = time.monotonic()
        if other <= max_other_cores or now - started >= timeout:
            return other
        if now >= next_notice:
            print(f"[bench] waiting for a quiet machine: other processes use {other:.2f} cores "
                  f"(waited {now - started:.0f} of {timeout:.0f} s)", file=sys.stderr, flush=True)
            next_notice = now + 60
