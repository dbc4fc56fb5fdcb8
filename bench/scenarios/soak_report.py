"""Findings of a soak run: requests by outcome, what each executor kill cost, memory drift per
process, and the verdict; as JSON-ready data and as Markdown.

The verdict passes when no request hung; every failure is explained by a kill (in flight at it,
or ending after it but before the server served again), so without kills no request failed; the
server served again after every kill and did not exit; and no process's RSS moved beyond the
tolerance after its warm-up.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from bench import report
from bench.host import proctree
from bench.scenarios.soak_client import KINDS, Outcome, SoakRecord
from bench.stats import latency_stats


@dataclass(frozen=True)
class Kill:
    at: float  # seconds since the start of the run
    role: str
    pid: int


@dataclass(frozen=True)
class KillImpact:
    kill: Kill
    in_flight: int  # requests sent before the kill that had not ended yet
    failed: list[SoakRecord]  # the failures it explains
    recovered_after: float | None  # seconds to the first success of a request sent after it
    restarted_after: float | None  # seconds to a sample showing the role with a new pid

    def as_dict(self) -> dict[str, Any]:
        return asdict(self.kill) | {
            "in_flight": self.in_flight,
            "failed": len(self.failed),
            "failed_by_outcome": dict(Counter(str(r.outcome) for r in self.failed)),
            "recovered_after_s": self.recovered_after,
            "restarted_after_s": self.restarted_after,
        }


def kill_impacts(kills: Sequence[Kill], records: Sequence[SoakRecord],
                 samples: Sequence[proctree.Sample]) -> list[KillImpact]:
    """Per kill: the failed requests it explains (in flight at the kill, or ending after it but
    before the server served again), when a request sent after it first succeeded, and when the
    killed role first showed a new pid (to within a sample interval)."""
    impacts = []
    for kill in kills:
        recovered = min((r.end for r in records if r.ok and r.start >= kill.at), default=None)
        window_end = recovered if recovered is not None else float("inf")
        in_flight = [r for r in records if r.start <= kill.at < r.end]
        failed = [r for r in records if not r.ok and (
            r.start <= kill.at < r.end or kill.at <= r.end <= window_end)]
        restarted = next((s.at for s in samples if s.at >= kill.at and any(
            p.role == kill.role and p.pid != kill.pid for p in s.procs)), None)
        impacts.append(KillImpact(kill, len(in_flight), failed,
                                  None if recovered is None else recovered - kill.at,
                                  None if restarted is None else restarted - kill.at))
    return impacts


def summarize(records: Sequence[SoakRecord], samples: Sequence[proctree.Sample],
              kills: Sequence[Kill], duration: float, server_exit_at: float | None,
              warmup_fraction: float, rss_tolerance_pct: float) -> dict[str, Any]:
    """The run's findings, with a verdict ("passed") and the reasons it failed."""
    ok = [r for r in records if r.ok]
    failed = [r for r in records if not r.ok]
    hung = [r for r in records if r.hung]
    impacts = kill_impacts(kills, records, samples)
    explained = {id(r) for impact in impacts for r in impact.failed}  # records by identity
    unexplained = [r for r in failed if id(r) not in explained]
    drifts = proctree.drift(samples, warmup_fraction, rss_tolerance_pct)

    reasons = []
    if server_exit_at is not None:
        last_kill = max((k.at for k in kills if k.at <= server_exit_at), default=None)
        reasons.append(f"the server exited at {server_exit_at:.1f} s" + (
            "" if last_kill is None else
            f", {server_exit_at - last_kill:.1f} s after the executor kill at {last_kill:.1f} s"))
    if hung:
        reasons.append(f"{len(hung)} requests hung (truncated or timed out)")
    if unexplained:
        where = " away from any kill" if kills else ""
        reasons.append(f"{len(unexplained)} requests failed{where}")
    reasons += [f"no request succeeded after the kill at {i.kill.at:.1f} s" for i in impacts
                if i.recovered_after is None]
    reasons += [f"RSS of {d.role} (pid {d.pid}) changed by {d.change_pct:+.1f}% after warm-up"
                for d in drifts if d.flagged]
    if not ok:
        reasons.append("no request succeeded")
    return {
        "duration_s": duration,
        "requests": len(records),
        "outcomes": {str(o): sum(r.outcome is o for r in records) for o in Outcome},
        "outcomes_by_kind": {kind.label: dict(Counter(str(r.outcome) for r in records
                                                      if r.kind == kind.label))
                             for kind in KINDS},
        "failed": len(failed),
        "hung": len(hung),
        "failed_away_from_kills": len(unexplained),
        "request_throughput": len(ok) / duration if duration else 0.0,
        **latency_stats("e2e", [r.end - r.start for r in ok]),
        **latency_stats("ttft", [r.ttft for r in ok if r.ttft is not None]),
        "server_exit_at_s": server_exit_at,
        "memory": [d.as_dict() for d in drifts],
        "rss_samples": [{"at_s": s.at, "kib": {f"{p.role} ({p.pid})": p.rss_kib
                                               for p in s.procs}} for s in samples],
        "kills": [impact.as_dict() for impact in impacts],
        "failures": [asdict(r) for r in failed[:100]],  # the first ones, for their errors
        "passed": not reasons,
        "reasons": reasons,
    }


def _mib(kib: int | None) -> str:
    return "-" if kib is None else f"{kib / 1024:,.1f}"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def _memory_row(drift: Mapping[str, Any], killed_at: Mapping[int, float]) -> list[str]:
    change = drift["change_pct"]
    notes = ["FLAGGED"] if drift["flagged"] else []
    if drift["pid"] in killed_at:
        notes.append(f"killed at {killed_at[drift['pid']]:.0f} s")
    return [drift["role"], str(drift["pid"]),
            f"{drift['first_seen_s']:.0f}-{drift['last_seen_s']:.0f}",
            _seconds(drift["baseline_at_s"]), _mib(drift["baseline_kib"]),
            _mib(drift["end_kib"]), "too short to judge" if change is None else f"{change:+.1f}%",
            " ".join(notes)]


def _kill_row(kill: Mapping[str, Any]) -> list[str]:
    failed = str(kill["failed"])
    if kill["failed"]:
        failed += f" ({', '.join(f'{o} {n}' for o, n in kill['failed_by_outcome'].items())})"
    return [f"{kill['at']:.1f}", kill["role"], str(kill["pid"]), str(kill["in_flight"]), failed,
            _seconds(kill["recovered_after_s"]), _seconds(kill["restarted_after_s"])]


def summary_text(summary: Mapping[str, Any]) -> str:
    """Markdown: requests by outcome and kind, latencies, memory per process, kills, verdict."""
    opts = summary["options"]
    lines = [f"## Soak: {summary['server']}, {opts['concurrency']} clients, "
             f"{summary['duration_s']:.0f} s\n"]
    if summary.get("command"):
        lines.append(f"`{summary['command']}`\n")
    outcomes = list(summary["outcomes"])
    lines.append(f"{summary['requests']} requests ({summary['request_throughput']:.2f} "
                 "succeeded/s): " + ", ".join(f"{o} {summary['outcomes'][o]}" for o in outcomes)
                 + "\n")
    lines.append(report.markdown_table(["kind", *outcomes], [
        [kind, *(str(counts.get(o, 0)) for o in outcomes)]
        for kind, counts in summary["outcomes_by_kind"].items()]))
    latencies = [f"{name} p{q} {summary[f'{key}_p{q}_ms']:,.0f}"
                 for name, key in (("E2E", "e2e"), ("TTFT (streams)", "ttft")) for q in (50, 99)
                 if summary[f"{key}_p{q}_ms"] is not None]
    lines.append(f"Latency of successful requests (ms): {', '.join(latencies) or '-'}\n")
    if summary["memory"]:
        lines.append(f"Resident memory (RSS, MiB) after the first "
                     f"{100 * opts['warmup_fraction']:.0f}% of each process's life and at its "
                     f"last sample; flagged beyond ±{opts['rss_tolerance_pct']:g}%:\n")
        killed_at = {k["pid"]: k["at"] for k in summary["kills"]}
        lines.append(report.markdown_table(
            ["process", "pid", "seen s", "warm at s", "RSS warm", "RSS end", "change", "note"],
            [_memory_row(d, killed_at) for d in summary["memory"]]))
    else:
        lines.append("Resident memory: not sampled (the server's launcher pid is unknown: "
                     "start the server here, or give --server-pid).\n")
    if summary["kills"]:
        lines.append("Executor kills:\n")
        lines.append(report.markdown_table(
            ["at s", "process", "pid", "in flight", "failed requests", "served again after s",
             "new pid seen after s"], [_kill_row(k) for k in summary["kills"]]))
    if summary["server_exit_at_s"] is not None:
        lines.append(f"The server exited at {summary['server_exit_at_s']:.1f} s.")
        if summary.get("server_log_tail"):
            lines.append(f"Its log ends:\n\n```\n{summary['server_log_tail']}\n```\n")
    verdict = "PASSED" if summary["passed"] else "FAILED: " + "; ".join(summary["reasons"])
    lines.append(f"**{verdict}**\n")
    return "\n".join(lines)
