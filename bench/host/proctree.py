"""A server's process tree from /proc (Linux), each process named by its role, with its resident
memory; and how that memory drifted over a run.

ggserve's launcher starts `python -m scheduler`, `python -m executor --id N` and
`python -m frontend`, whose granian server forks its HTTP workers (same command line as their
parent). A process restarted during a run gets a new pid but keeps its role, so memory is tracked
per (role, pid) and compared by role.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT_ROLE = "launcher"
HTTP_WORKER = "http worker"
ROLE_ORDER = (ROOT_ROLE, "scheduler", "executor", "frontend", HTTP_WORKER)  # for reports


@dataclass(frozen=True)
class Proc:
    pid: int
    role: str
    rss_kib: int


def _stat_fields(pid: int | str) -> list[str] | None:
    """Fields of /proc/PID/stat after "pid (comm)": state, ppid, ...; None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()  # comm may hold spaces and parentheses


def alive(pid: int) -> bool:
    """Running, not exited: an exited child nobody has waited for yet is a zombie ("Z")."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def parents() -> dict[int, int]:
    """pid -> parent pid of every process."""
    result = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (fields := _stat_fields(entry.name)) is not None:
            result[int(entry.name)] = int(fields[1])
    return result


def descendants(root: int, parent_of: Mapping[int, int]) -> list[int]:
    """root's children, grandchildren, ... in breadth-first order (parents before children)."""
    children: dict[int, list[int]] = {}
    for pid, ppid in parent_of.items():
        children.setdefault(ppid, []).append(pid)
    found, frontier = [], [root]
    while frontier:
        level = sorted(pid for parent in frontier for pid in children.get(parent, ()))
        found += level
        frontier = level
    return found


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return raw.decode(errors="replace").split("\0")[:-1]


def rss_kib(pid: int) -> int | None:
    """Resident memory (VmRSS) in KiB; None once the process is gone (zombies have none)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _option(command: Sequence[str], name: str) -> str:
    """The value after `name` in a command line, or ""."""
    args = list(command)
    return args[args.index(name) + 1] if name in args[:-1] else ""


def role_of(command: Sequence[str], parent_role: str) -> str:
    """The role of a process below the launcher, from its command line and its parent's role."""
    if parent_role == "frontend":
        return HTTP_WORKER  # granian forks (or spawns) its workers
    module = _option(command, "-m")
    if module == "executor":
        return f"executor {_option(command, '--id')}".rstrip()
    if module in ("scheduler", "frontend"):
        return module
    return f"other: {Path(command[0]).name if command else '?'}"


def role_key(role: str) -> tuple[int, int, str]:
    """Sorts roles as the processes are started, executors and workers by number."""
    name, _, number = role.rpartition(" ")
    if not number.isdigit():
        name, number = role, ""
    rank = ROLE_ORDER.index(name) if name in ROLE_ORDER else len(ROLE_ORDER)
    return rank, int(number or 0), role


def process_tree(root: int) -> list[Proc]:
    """root and its live descendants with their roles and RSS, by role. HTTP workers, which
    share a command line, are numbered in pid order."""
    parent_of = parents()
    pids = [root, *descendants(root, parent_of)]
    roles = {root: ROOT_ROLE}
    for pid in pids[1:]:  # parents come first, so a parent's role is known
        roles[pid] = role_of(cmdline(pid), roles[parent_of[pid]])
    procs = []
    workers = 0
    for pid in sorted(pids):
        if (rss := rss_kib(pid)) is None:
            continue  # exited meanwhile, or a zombie
        role = roles[pid]
        if role == HTTP_WORKER:
            role, workers = f"{HTTP_WORKER} {workers}", workers + 1
        procs.append(Proc(pid, role, rss))
    return sorted(procs, key=lambda p: (role_key(p.role), p.pid))


@dataclass(frozen=True)
class Sample:
    at: float  # seconds since the start of the run
    procs: tuple[Proc, ...]

    @property
    def total_kib(self) -> int:
        return sum(p.rss_kib for p in self.procs)


@dataclass(frozen=True)
class Drift:
    """RSS of one process (one pid of a role) after its warm-up and at its last sample."""

    role: str
    pid: int
    first_seen: float
    last_seen: float
    baseline_at: float | None  # None: seen too briefly to judge
    baseline_kib: int | None
    end_kib: int
    tolerance_pct: float

    @property
    def change_pct(self) -> float | None:
        if not self.baseline_kib:
            return None
        return 100.0 * (self.end_kib - self.baseline_kib) / self.baseline_kib

    @property
    def flagged(self) -> bool:
        change = self.change_pct
        return change is not None and abs(change) > self.tolerance_pct

    def as_dict(self) -> dict[str, Any]:
        return {"role": self.role, "pid": self.pid, "first_seen_s": self.first_seen,
                "last_seen_s": self.last_seen, "baseline_at_s": self.baseline_at,
                "baseline_kib": self.baseline_kib, "end_kib": self.end_kib,
                "change_pct": self.change_pct, "flagged": self.flagged}


def drift(samples: Sequence[Sample], warmup_fraction: float,
          tolerance_pct: float) -> list[Drift]:
    """Per (role, pid): RSS at the first sample past the first warmup_fraction of the time the
    process was seen (the run, for one that lived through it; a restarted executor loads its
    model first) against its last sample. Rows by role, then by when the process appeared."""
    history: dict[tuple[str, int], list[tuple[float, int]]] = {}
    for sample in samples:
        for proc in sample.procs:
            history.setdefault((proc.role, proc.pid), []).append((sample.at, proc.rss_kib))
    rows = []
    for (role, pid), points in history.items():
        (first_seen, _), (last_seen, end_kib) = points[0], points[-1]
        warm_from = first_seen + warmup_fraction * (last_seen - first_seen)
        # the last sample cannot be its own baseline: such a process is too short-lived to judge
        baseline = next(((at, kib) for at, kib in points[:-1] if at >= warm_from), (None, None))
        rows.append(Drift(role, pid, first_seen, last_seen, *baseline, end_kib, tolerance_pct))
    return sorted(rows, key=lambda d: (role_key(d.role), d.first_seen))
