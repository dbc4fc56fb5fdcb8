"""bench.report and bench.compare's tables: JSON lines, Markdown, PNG plots, ratios, groups;
and how bench.compare starts servers and checks that a workload fits them."""

import json

from bench import compare, report
from bench.client import RequestRecord
from bench.runner import Load, Plan, RunResult
from bench.sampling import Sampling
from bench.stats import Slo, summarize
from bench.workloads import LengthDist, Session, Turn


def summaries(groups: tuple[str, ...] = ("",)) -> list[dict]:
    """Two servers at concurrency 1 and 4; each request in one of groups, in turn, with TTFT
    growing by group (x1, x2, ...)."""
    rows = []
    for server, speed in (("fast", 2.0), ("slow", 1.0)):
        for concurrency in (1, 4):
            records = [RequestRecord(0, 0, 10, 8, groups[i % len(groups)],
                                     ttft=0.1 * (1 + i % len(groups)) / speed, e2e=0.8 / speed,
                                     itl=[0.1 / speed] * 7, output_tokens=8)
                       for i in range(concurrency)]
            result = RunResult(Load("concurrency", concurrency), records, 1.0 / speed,
                               concurrency, concurrency)
            rows.append({"server": server, "workload": "random", "sampling": "greedy"}
                        | summarize(result, Slo()))
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
    assert lines[0].startswith("| server | workload | sampling | load | req |")
    assert set(lines[1]) <= set("|-")
    assert all(line.count("|") == lines[0].count("|") for line in lines)
    assert "| fast | random | greedy | c=4 | 4 | 0 | 0 | 8.00 | 64.0 |" in table
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


def test_group_table_puts_servers_side_by_side_per_group():
    assert report.group_table(summaries(), ["fast", "slow"]) == ""  # no groups, no table
    table = report.group_table(summaries(("long", "short")), ["fast", "slow"])
    lines = table.strip().splitlines()
    assert lines[0].startswith("| load | group | req: fast | req: slow | TTFT p50 ms: fast "
                               "| TTFT p50 ms: slow | TTFT p90 ms: fast |")
    assert len(lines) == 2 + 2 * 3  # all, long, short at each of 2 loads
    assert all(line.count("|") == lines[0].count("|") for line in lines)
    # concurrency 4: requests 0, 2 long (TTFT 0.1 / speed), 1, 3 short (0.2 / speed); fast's
    # run took 0.5 s, slow's 1 s; nothing said about the cache
    assert "| c=4 | long | 2 | 2 | 50 | 100 | 50 | 100 | 32.0 | 16.0 |" in table
    assert "| c=4 | short | 2 | 2 | 100 | 200 | 100 | 200 | 32.0 | 16.0 |" in table
    assert "| c=4 | all | 4 | 4 | 75 | 150 |" in table
    assert "| c=1 | short | - | - | - | - |" in table  # one request, in the long group
    one = report.group_table(summaries(("first", "returning"))[:2], ["fast"])
    assert one.splitlines()[0] == ("| load | group | req: fast | TTFT p50 ms: fast | "
                                   "TTFT p90 ms: fast | out tok/s: fast | total tok/s: fast | "
                                   "cached tok/req: fast |")


def setup(**changes) -> compare.ServerSetup:
    base = compare.ServerSetup(model_path="m.gguf", parallel=4, ctx_size=4096, threads=2,
                               repack=False, port=0, startup_timeout=1, extra_args={})
    return compare.ServerSetup(**(vars(base) | changes))


def test_llama_server_gets_kvu_and_its_own_extra_args(monkeypatch):
    monkeypatch.setattr(compare, "ensure_built", lambda: {"llama-server": "llama-server"})
    servers = setup(unified_kv=True, extra_args={"llama-server": ["--cache-ram", "64"],
                                                 "ggserve": ["--cache-ram", "32"]})
    llama = compare.server_command("llama-server", servers, 1)
    assert llama[-3:] == ["-kvu", "--cache-ram", "64"]
    ggserve = compare.server_command("ggserve", servers, 1)
    assert "-kvu" not in ggserve and ggserve[-2:] == ["--cache-ram", "32"]


def test_context_problems_name_the_server_and_the_fix():
    def plan(prompt_len: int) -> Plan:
        session = Session("completions", (Turn("x", prompt_len, 63),))
        return Plan([Load("concurrency", 1)], lambda load: [session], [], 60, 60, 0)

    servers = ["ggserve", "llama-server"]
    assert compare.request_capacity("llama-server", setup()) == 1024  # 4096 / 4 slots
    assert compare.context_problems(servers, setup(), plan(960)) == []  # 1 + 960 + 63 fits
    (problem,) = compare.context_problems(servers, setup(), plan(3000))
    assert problem.startswith("llama-server: a request may hold 1024 KV cells") and "--kvu" in problem
    for fitting in (setup(unified_kv=True), setup(extra_args={"llama-server": ["-kvu"]})):
        assert compare.context_problems(servers, fitting, plan(3000)) == []
    problems = compare.context_problems(servers, setup(unified_kv=True), plan(5000))
    assert [p.split(":")[0] for p in problems] == servers
    assert all(p.endswith("use a larger -c") for p in problems)


def test_compare_report_names_sampling_groups_and_server_arguments(tmp_path, monkeypatch, capsys):
    def measure(name, setup, plan, log_path, conditions):
        records = [RequestRecord(i, 0, 10, 8, "long" if i == 0 else "short", ttft=0.1,
                                 e2e=0.8, itl=[0.1] * 7, output_tokens=8) for i in range(4)]
        return [RunResult(load, records, 1.0, 4, 4) for load in plan.loads]

    monkeypatch.setattr(compare, "measure_server", measure)
    monkeypatch.setattr(compare.signal, "signal", lambda *args: None)
    plan = Plan([Load("concurrency", 4)], lambda load: [], [], 60, 60, 0,
                Sampling("default", 0))
    servers = setup(unified_kv=True, extra_args={"ggserve": ["--cache-ram", "0"]})
    status = compare.compare_servers(["ggserve", "llama-server"], servers, plan, "long-mix",
                                     Slo(), tmp_path, batched_bench=False,
                                     input_len=LengthDist(8, 8), output_len=LengthDist(8, 8))
    text = (tmp_path / "report.md").read_text()
    assert status == 0 and text == capsys.readouterr().out
    assert text.startswith("## long-mix, sampling default (temperature 0.8, top_k 40, ")
    assert "### By request group" in text and "| c=4 | long | 1 | 1 |" in text
    assert "llama-server's KV cells one pool (-kvu)" in text
    assert "- ggserve arguments added: --cache-ram 0" in text
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [(r["server"], r["sampling"], sorted(r["groups"])) for r in rows] == [
        ("ggserve", "default", ["long", "short"]), ("llama-server", "default", ["long", "short"])]
