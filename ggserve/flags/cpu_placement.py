"""llama-server's CPU placement flags: -C / -Cr (affinity), --cpu-strict, --prio, --poll, their
-batch variants and the draft model's (-Cd, -Crd, --prio-draft, ...), parsed into the
CpuPlacement of each of an executor's thread pools (two per model).

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


# (setting, the target's names, the draft model's names); the -batch forms follow
_FLAGS = (
    ("cpu_mask", ("-C", "--cpu-mask"), ("--spec-draft-cpu-mask", "-Cd", "--cpu-mask-draft")),
    ("cpu_range", ("-Cr", "--cpu-range"), ("--spec-draft-cpu-range", "-Crd", "--cpu-range-draft")),
    ("cpu_strict", ("--cpu-strict",), ("--spec-draft-cpu-strict", "--cpu-strict-draft")),
    ("prio", ("--prio",), ("--spec-draft-prio", "--prio-draft")),
    ("poll", ("--poll",), ("--spec-draft-poll", "--poll-draft")),
)
_BATCH_FLAGS = {
    "cpu_mask": (("-Cb", "--cpu-mask-batch"), ("--spec-draft-cpu-mask-batch", "-Cbd", "--cpu-mask-batch-draft")),
    "cpu_range": (("-Crb", "--cpu-range-batch"),
                  ("--spec-draft-cpu-range-batch", "-Crbd", "--cpu-range-batch-draft")),
    "cpu_strict": (("--cpu-strict-batch",), ("--spec-draft-cpu-strict-batch", "--cpu-strict-batch-draft")),
    "prio": (("--prio-batch",), ("--spec-draft-prio-batch", "--prio-batch-draft")),
    "poll": (("--poll-batch",), ("--spec-draft-poll-batch", "--poll-batch-draft")),
}
_KINDS = {"cpu_mask": ("M", str), "cpu_range": ("LO-HI", str), "cpu_strict": ("{0,1}", int), "prio": ("N", int),
          "poll": ("0...100", int)}
DRAFT = "spec_draft_"  # the prefix of the draft model's settings


def add_flags(group: argparse._ArgumentGroup, draft: bool = False) -> None:
    """The flags of the target model's threads, or with ``draft`` of the draft model's. A flag
    left out (None) takes its counterpart's value: a -batch one its one-token flag's, a draft's
    one-token flag the target's."""
    levels = ", ".join(f"{n} {name}" for n, name in PRIORITIES.items())
    helps = {
        "cpu_mask": "CPUs llama.cpp's threads run on, a hex mask (adds to the range)",
        "cpu_range": "CPUs llama.cpp's threads run on, a range (adds to the mask)",
        "cpu_strict": "1: each thread on its own CPU of the mask",
        "prio": f"priority of the threads: {levels} (from medium on they are real-time; the target's also sets "
                "the executor process's)",
        "poll": "how long idle llama.cpp threads poll for work (50; only builds without OpenMP: the default "
                "build's threads are OpenMP's)",
    }
    whose = "the draft model's " if draft else ""
    for setting, target_names, draft_names in _FLAGS:
        metavar, kind = _KINDS[setting]
        names, batch_names = (draft_names, _BATCH_FLAGS[setting][1]) if draft else (target_names,
                                                                                      _BATCH_FLAGS[setting][0])
        dest = (DRAFT if draft else "") + setting
        default = f"{target_names[0]}'s" if draft else "the built-in"
        group.add_argument(*names, dest=dest, type=kind, metavar=metavar,
                           help=f"{whose}{helps[setting]}" + (f" (default: {default})" if draft else ""))
        group.add_argument(*batch_names, dest=f"{dest}_batch", type=kind, metavar=metavar,
                           help=f"{names[0]} of steps of several tokens: prompts, decodes of several sequences "
                           f"(default: {names[0]}'s)")


def placements(args: argparse.Namespace, draft: bool = False,
               n_cpus: int | None = None) -> tuple[CpuPlacement, CpuPlacement]:
    """The CpuPlacement of one-token steps and of steps of several tokens, of the target model or
    with ``draft`` of the draft model (whose one-token settings default to the target's)."""
    n_cpus = n_cpus or os.cpu_count() or 1
    base = _placement(args, "", "", CpuPlacement(), n_cpus) if draft else CpuPlacement()
    prefix = DRAFT if draft else ""
    single = _placement(args, prefix, "", base, n_cpus)
    return single, _placement(args, prefix, "_batch", single, n_cpus)


def _placement(args: argparse.Namespace, prefix: str, suffix: str, base: CpuPlacement, n_cpus: int) -> CpuPlacement:
    mask, cpu_range = getattr(args, f"{prefix}cpu_mask{suffix}"), getattr(args, f"{prefix}cpu_range{suffix}")
    cpus = set(base.cpus) if mask is None and cpu_range is None else set()
    if mask is not None:
        cpus |= parse_cpu_mask(mask, n_cpus)
    if cpu_range is not None:
        cpus |= parse_cpu_range(cpu_range, n_cpus)
    strict, prio, poll = (getattr(args, f"{prefix}{name}{suffix}") for name in ("cpu_strict", "prio", "poll"))
    flag = "--" + f"{prefix}{{}}{suffix}".replace("_", "-")
    if strict not in (None, 0, 1):
        raise ValueError(f"{flag.format('cpu-strict')} is 0 or 1")
    if prio is not None and prio not in PRIORITIES:
        raise ValueError(f"{flag.format('prio')} is one of " + ", ".join(map(str, PRIORITIES)))
    if poll is not None and not 0 <= poll <= 100:
        raise ValueError(f"{flag.format('poll')} is in [0, 100]")
    return CpuPlacement(cpus=sorted(cpus), strict=base.strict if strict is None else bool(strict),
                        prio=base.prio if prio is None else prio, poll=base.poll if poll is None else poll)
