"""Results out: JSON lines, Markdown tables and PNG plots of run summaries.

A summary is the dict of `bench.stats.summarize`, labelled by the caller with "server",
"workload" and "sampling"; plots draw one series per server. Runs whose requests carry groups get
a second table, per group and server side by side.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display on a server
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import ticker  # noqa: E402

from bench.client import RequestRecord  # noqa: E402
from bench.stats import PERCENTILES  # noqa: E402

Summary = Mapping[str, Any]
LOG_SCALE_SPAN = 20  # max / min of a latency plot beyond which its axis is logarithmic


def write_jsonl(path: Path, rows: Iterable[Mapping[str, Any]]) -> None:
    """Append rows to path as JSON lines."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def request_rows(records: Iterable[RequestRecord],
                 labels: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per-request JSON rows: the record's fields, its TPOT, and the run's labels."""
    return [dict(labels) | asdict(r) | {"tpot": r.tpot} for r in records]


def _metric(key: str, digits: int) -> Callable[[Summary], str]:
    return lambda s: "-" if s[key] is None else f"{s[key]:,.{digits}f}"


def _load(summary: Summary) -> str:
    value = summary["load"]
    return f"c={int(value)}" if summary["mode"] == "concurrency" else f"{value:g}/s"


# (header, how to render it from a summary)
SUMMARY_COLUMNS: list[tuple[str, Callable[[Summary], str]]] = [
    ("load", _load),
    ("req", _metric("requests", 0)),
    ("err", _metric("errors", 0)),
    ("short", _metric("short_outputs", 0)),
    ("req/s", _metric("request_throughput", 2)),
    ("out tok/s", _metric("output_throughput", 1)),
    ("total tok/s", _metric("total_throughput", 1)),
    ("goodput req/s", _metric("goodput", 2)),
    ("cached prompt", lambda s: "-" if s.get("cached_prompt_fraction") is None
     else f"{100 * s['cached_prompt_fraction']:.0f}%"),
    *[(f"TTFT p{q} ms", _metric(f"ttft_p{q}_ms", 0)) for q in PERCENTILES],
    *[(f"TPOT p{q} ms", _metric(f"tpot_p{q}_ms", 1)) for q in PERCENTILES],
    ("ITL p99 ms", _metric("itl_p99_ms", 1)),
    ("E2E p50 ms", _metric("e2e_p50_ms", 0)),
    ("E2E p99 ms", _metric("e2e_p99_ms", 0)),
    # CPU cores busy with anything but the benchmark and the server: should be ~0
    ("other CPU", lambda s: _metric("cpu_other_cores", 2)(s) if "cpu_other_cores" in s else "-"),
]


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def ratio_table(rows: Iterable[Mapping[str, Any]], servers: Sequence[str], loads: Sequence[str], metric: str,
                unit: str, digits: int) -> str:
    """One ``metric`` per load and server (rows keyed by "server" and "load"), with ggserve's ratio
    to llama-server when both ran: the side-by-side benchmarks' table."""
    by = {(r["server"], r["load"]): r[metric] for r in rows}
    both = "ggserve" in servers and "llama-server" in servers
    headers = ["load", *(f"{s} {unit}" for s in servers), *(["ggserve / llama-server"] if both else [])]
    lines = []
    for load in loads:
        cells = [load, *(f"{by[(s, load)]:.{digits}f}" for s in servers)]
        if both:
            cells.append(f"{by[('ggserve', load)] / by[('llama-server', load)]:.2f}x")
        lines.append(cells)
    return markdown_table(headers, lines)


def summary_table(summaries: Iterable[Summary]) -> str:
    """One row per run; server, workload and sampling columns when the summaries carry them."""
    summaries = list(summaries)
    labels = [key for key in ("server", "workload", "sampling") if any(key in s for s in summaries)]
    headers = labels + [header for header, _ in SUMMARY_COLUMNS]
    rows = [[str(s.get(key, "")) for key in labels] + [render(s) for _, render in SUMMARY_COLUMNS]
            for s in summaries]
    return markdown_table(headers, rows)


# (header, key, digits) of group_table's metrics, each with a column per server
GROUP_METRICS = [
    ("req", "requests", 0),
    ("TTFT p50 ms", "ttft_p50_ms", 0),
    ("TTFT p90 ms", "ttft_p90_ms", 0),
    ("out tok/s", "output_throughput", 1),
    ("total tok/s", "total_throughput", 1),
    ("cached tok/req", "cached_tokens_mean", 0),
]


def group_table(summaries: Iterable[Summary], servers: Sequence[str]) -> str:
    """Per load level, a row for all requests and one per request group, with each metric of
    GROUP_METRICS for every server side by side; "" when no run has groups. Throughput of a
    group is over the whole run, so the groups' add up to the "all" row."""
    runs = [s for s in summaries if "groups" in s]
    if not runs:
        return ""
    by_key = {(str(s.get("server", "server")), s["load"]): s for s in runs}
    by_load = {s["load"]: s for s in runs}
    groups = sorted({group for s in runs for group in s["groups"]})
    headers = ["load", "group"]
    headers += [f"{header}: {server}" for header, _, _ in GROUP_METRICS for server in servers]
    rows = []
    for load in sorted(by_load):
        for group in ("all", *groups):
            row = [_load(by_load[load]), group]
            for _, key, digits in GROUP_METRICS:
                for server in servers:
                    run = by_key.get((server, load), {})
                    stats = run if group == "all" else run.get("groups", {}).get(group)
                    row.append(_metric(key, digits)(stats) if stats else "-")
            rows.append(row)
    return markdown_table(headers, rows)


def _series(summaries: Iterable[Summary]) -> dict[str, list[Summary]]:
    by_server: dict[str, list[Summary]] = {}
    for s in summaries:
        by_server.setdefault(str(s.get("server", "server")), []).append(s)
    return {name: sorted(runs, key=lambda s: s["load"]) for name, runs in by_server.items()}


def _x_axis(ax: Any, summaries: Sequence[Summary]) -> None:
    modes = {s["mode"] for s in summaries}
    ax.set_xlabel("concurrency" if modes == {"concurrency"} else "request rate (/s)")
    if modes == {"concurrency"}:
        ax.set_xscale("log", base=2)
        loads = sorted({s["load"] for s in summaries})
        ax.set_xticks(loads, [f"{int(v)}" for v in loads])


def _y_axis(ax: Any, values: Sequence[float | None]) -> None:
    """Logarithmic when the values span more than a decade or so (queueing servers next to
    batching ones), else linear from zero."""
    present = [v for v in values if v]
    if present and max(present) > LOG_SCALE_SPAN * min(present):
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    else:
        ax.set_ylim(bottom=0)


def plot_throughput(summaries: Sequence[Summary], path: Path, title: str,
                    ceilings: Mapping[str, Mapping[int, float]] | None = None) -> None:
    """Output tokens/s against load, one line per server; ceilings (name -> batch -> tok/s)
    dashed."""
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    for name, runs in _series(summaries).items():
        ax.plot([s["load"] for s in runs], [s["output_throughput"] for s in runs], marker="o",
                label=name)
    for style, (name, ceiling) in zip(("k--", "k:"), (ceilings or {}).items(), strict=False):
        batches = sorted(ceiling)
        ax.plot(batches, [ceiling[b] for b in batches], style, marker="x", label=name)
    _x_axis(ax, summaries)
    ax.set_ylabel("output tokens/s")
    ax.set_ylim(bottom=0)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def plot_latency(summaries: Sequence[Summary], path: Path, title: str) -> None:
    """TTFT and TPOT percentiles against load: colour per server, line style per percentile."""
    fig, axes = plt.subplots(1, 2, figsize=(9.6, 4.0), dpi=100)
    styles = dict(zip(PERCENTILES, ("-", "--", ":"), strict=True))
    for color, (name, runs) in enumerate(_series(summaries).items()):
        for ax, metric in zip(axes, ("ttft", "tpot"), strict=True):
            for q in PERCENTILES:
                ax.plot([s["load"] for s in runs], [s[f"{metric}_p{q}_ms"] for s in runs],
                        linestyle=styles[q], marker="o", markersize=3, color=f"C{color}",
                        label=f"{name} p{q}")
    for ax, metric in zip(axes, ("ttft", "tpot"), strict=True):
        _x_axis(ax, summaries)
        _y_axis(ax, [s[f"{metric}_p{q}_ms"] for s in summaries for q in PERCENTILES])
        ax.set_ylabel(f"{metric.upper()} (ms)")
        ax.grid(alpha=0.3)
        ax.set_title(f"{title}: {metric.upper()}")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def save_plots(summaries: Sequence[Summary], out_dir: Path, title: str,
               ceilings: Mapping[str, Mapping[int, float]] | None = None) -> None:
    plot_throughput(summaries, out_dir / "throughput.png", title, ceilings)
    plot_latency(summaries, out_dir / "latency.png", title)
