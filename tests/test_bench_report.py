"""bench.report and bench.compare's tables: JSON lines, Markdown, PNG plots, ratios."""

import json

from bench import compare, report
from bench.client import RequestRecord
from bench.runner import Load, RunResult
from bench.stats import Slo, summarize


def summaries() -> list[dict]:
    rows = []
    for server, speed in (("fast", 2.0), ("slow", 1.0)):
        for concurrency in (1, 4):
            records = [RequestRecord(0, 0, 10, 8, ttft=0.1 / speed, e2e=0.8 / speed,
                                     itl=[0.1 / speed] * 7, output_tokens=8)
                       for _ in range(concurrency)]
            result = RunResult(Load("concurrency", concurrency), records, 1.0 / speed,
                               concurrency, concurrency)
            rows.append({"server": server, "workload": "random"} | summarize(result, Slo()))
    return rows


def test_jsonl_round_trip(tmp_path):
    path = tmp_path / "out" / "results.jsonl"
    report.write_jsonl(path, summaries())
    report.write_jsonl(path, summaries()[:1])  # appends
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == 5 and rows[0]["server"] == "fast" and rows[0]["load"] == 1


def test_request_rows_carry_labels_and_tpot():
    record = RequestRecord(2, 1, 10, 8, ttft=0.1, e2e=0.8, itl=[0.1] * 7, output_tokens=8)
    (row,) = report.request_rows([record], {"server": "x", "load": 4})
    assert row["server"] == "x" and row["session"] == 2 and row["tpot"] == record.tpot


def test_summary_table_is_markdown():
    table = report.summary_table(summaries())
    lines = table.strip().splitlines()
    assert len(lines) == 2 + 4
    assert lines[0].startswith("| server | workload | load | req |")
    assert set(lines[1]) <= set("|-")
    assert all(line.count("|") == lines[0].count("|") for line in lines)
    assert "| fast | random | c=4 | 4 | 0 | 0 | 8.00 | 64.0 |" in table
    assert "| - | - |" in table  # no goodput without SLOs, no cache figures without usage


def test_plots_are_small_pngs(tmp_path):
    report.save_plots(summaries(), tmp_path, "test",
                      {"ceiling": {1: 20.0, 4: 70.0}, "other ceiling": {1: 18.0, 4: 60.0}})
    for name in ("throughput.png", "latency.png"):
        data = (tmp_path / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        assert len(data) < 200_000


def test_comparison_tables_ratios_and_efficiency():
    ceiling = {1: {"pl": 1, "tg": 8, "t": 0.5, "speed_tg": 20.0, "speed_tg_unified_kv": 20.0},
               4: {"pl": 4, "tg": 8, "t": 1.0, "speed_tg": 40.0, "speed_tg_unified_kv": 36.0}}
    text = compare.comparison_tables(summaries(), ["fast", "slow"], ceiling)
    # concurrency 4: fast 64 tok/s, slow 32, ceiling 40 (32 incl. prefill); fast is 2x faster
    assert "| 4 | 40.0 | 36.0 | 32.0 | 64.0 | 32.0 | 2.00x | 160% | 80% |" in text
    assert "| 1 | 50 | 100 | 2.00x | 50.0 | 100.0 | 2.00x |" in text  # TTFT, TPOT p50


def test_parse_extra_args():
    assert compare.parse_extra_args(["llama-server=-kvu --cache-reuse 256", "ggserve=-v"]) == {
        "llama-server": ["-kvu", "--cache-reuse", "256"], "ggserve": ["-v"]}
