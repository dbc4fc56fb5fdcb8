"""bench.host.machine: CPU accounting of a server's session, of this process and of the rest."""

import subprocess
import sys
import time

from bench.host.machine import CpuMeter, session_cpu_seconds, wait_until_quiet

BURN = "import time\nend = time.monotonic() + {s}\nwhile time.monotonic() < end: pass"


def test_meter_tells_server_from_benchmark():
    server = subprocess.Popen([sys.executable, "-c", BURN.format(s=1.5)], start_new_session=True)
    try:
        meter = CpuMeter(server.pid)
        meter.start()
        end = time.monotonic() + 0.5
        while time.monotonic() < end:  # this process burns too, a third of the time
            pass
        time.sleep(0.5)
        cpu = meter.stop()
    finally:
        server.wait()
    assert 0.3 < cpu["cpu_server_cores"] <= 1.2  # ~1 core unless the machine is crowded
    assert 0.1 < cpu["cpu_bench_cores"] < 0.8
    assert cpu["cpu_other_cores"] >= 0.0


def test_meter_counts_a_server_that_exits_before_stop():
    server = subprocess.Popen([sys.executable, "-c", BURN.format(s=0.6)], start_new_session=True)
    meter = CpuMeter(server.pid)
    meter.start()
    server.wait()  # reaped: only the children's rusage still knows its CPU time
    cpu = meter.stop()
    assert 0.3 < cpu["cpu_server_cores"] <= 1.2


def test_session_of_nothing_uses_nothing():
    assert session_cpu_seconds(2**22 + 12345) == 0.0


def test_wait_until_quiet_returns_the_measured_load():
    assert wait_until_quiet(max_other_cores=64.0, timeout=0.0, window=0.2) >= 0.0
