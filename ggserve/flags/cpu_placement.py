"""llama-server's CPU placement flags: -C / -Cr (affinity), --cpu-strict, --prio, --poll, and
their -batch variants, parsed into the CpuPlacement of each of an executor's two thread pools.

A CPU the machine does not have is a usage error rather than a bit llama.cpp would skip, except
at the open end of a range ("4-": CPU 4 to the last).
"""

from __future__ import annotations

import argparse
import os

from ggserve.config import CpuPlacement

PRIORITIES = {-1: "low", 0: "normal", 1: "medium", 2: "high", 3: "realtime"}


def parse_cpu_mask(text: str, n_cpus: int) -> set[int]:
    """A hex mask, bit i for CPU i ("0x" optional)."""
    digits = text[2:] if text.lower().startswith("0x") else text
    try:
        value = int(digits, 16)
    except ValueError:
        raise ValueError(f"CPU mask {text!r} is not hexadecimal") from None
    cpus = {i for i in range(value.bit_length()) if value >> i & 1}
    _check_exist(cpus, text, n_cpus)
    return cpus


def parse_cpu_range(text: str, n_cpus: int) -> set[int]:
    """``lo-hi``, both ends included; an end left out is the first or the last CPU."""
    lo, dash, hi = text.partition("-")
    try:
        first = int(lo) if lo else 0
        last = int(hi) if hi else n_cpus - 1
    except ValueError:
        first = last = -1
    if not dash or first < 0 or last < first:
        raise ValueError(f"CPU range {text!r} is not [lo]-[hi]")
    cpus = set(range(first, last + 1))
    _check_exist(cpus, text, n_cpus)
    return cpus


def _check_exist(cpus: set[int], text: str, n_cpus: int) -> None:
    if not cpus:
        raise ValueError(f"CPU mask {text!r} names no CPU")
    if max(cpus) >= n_cpus:
        raise ValueError(f"{text!r} names CPU {max(cpus)}; this machine has CPUs 0-{n_cpus - 1}")


def add_flags(group: argparse._ArgumentGroup) -> None:
    """The flags; each -batch one left out (None) takes its one-token counterpart's value."""
    levels = ", ".join(f"{n} {name}" for n, name in PRIORITIES.items())
    helps = {
        "-C": "CPUs llama.cpp's threads run on, a hex mask (adds to -Cr)",
        "-Cr": "CPUs llama.cpp's threads run on, a range (adds to -C)",
        "--cpu-strict": "1: each thread on its own CPU of the mask",
        "--prio": f"priority of the executors: {levels} (from medium on llama.cpp's threads are real-time)",
        "--poll": "how long idle llama.cpp threads poll for work (50; only builds without OpenMP: the default "
                  "build's threads are OpenMP's)",
    }
    for flag, long, metavar, kind in (("-C", "--cpu-mask", "M", str), ("-Cr", "--cpu-range", "LO-HI", str),
                                      ("--cpu-strict", "", "{0,1}", int), ("--prio", "", "N", int),
                                      ("--poll", "", "0...100", int)):
        dest = (long or flag).lstrip("-").replace("-", "_")
        names = [flag, long] if long else [flag]
        group.add_argument(*names, dest=dest, type=kind, metavar=metavar, help=helps[flag])
        batch_names = [flag + "b", long + "-batch"] if long else [flag + "-batch"]
        group.add_argument(*batch_names, dest=f"{dest}_batch", type=kind, metavar=metavar,
                           help=f"{flag} of steps of several tokens: prompts, decodes of several sequences "
                           f"(default: {flag}'s)")


def placements(args: argparse.Namespace, n_cpus: int | None = None) -> tuple[CpuPlacement, CpuPlacement]:
    """The CpuPlacement of one-token steps and of steps of several tokens."""
    n_cpus = n_cpus or os.cpu_count() or 1
    single = _placement(args, "", CpuPlacement(), n_cpus)
    return single, _placement(args, "_batch", single, n_cpus)


def _placement(args: argparse.Namespace, suffix: str, base: CpuPlacement, n_cpus: int) -> CpuPlacement:
    mask, cpu_range = getattr(args, f"cpu_mask{suffix}"), getattr(args, f"cpu_range{suffix}")
    cpus = set(base.cpus) if mask is None and cpu_range is None else set()
    if mask is not None:
        cpus |= parse_cpu_mask(mask, n_cpus)
    if cpu_range is not None:
        cpus |= parse_cpu_range(cpu_range, n_cpus)
    strict, prio, poll = (getattr(args, f"{name}{suffix}") for name in ("cpu_strict", "prio", "poll"))
    flag = suffix.replace("_", "-")
    if strict not in (None, 0, 1):
        raise ValueError(f"--cpu-strict{flag} is 0 or 1")
    if prio is not None and prio not in PRIORITIES:
        raise ValueError(f"--prio{flag} is one of " + ", ".join(map(str, PRIORITIES)))
    if poll is not None and not 0 <= poll <= 100:
        raise ValueError(f"--poll{flag} is in [0, 100]")
    return CpuPlacement(cpus=sorted(cpus), strict=base.strict if strict is None else bool(strict),
                        prio=base.prio if prio is None else prio, poll=base.poll if poll is None else poll)
