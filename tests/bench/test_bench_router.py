"""`ggserve bench router`: a real run at a small size (the router, two names for the embedded
model, every phase), and its table's medians and ratios."""

from __future__ import annotations

import json

from bench.scenarios import router


def test_a_small_run_measures_every_phase(tmp_path, capsys) -> None:
    argv = ["--repeats", "2", "--requests", "4", "--output-len", "3", "--input-len", "8", "--concurrency", "2",
            "--quiet-cores", "64", "--server-args", "-c 512 -np 2 -t 1", "--output-dir", str(tmp_path)]
    assert router.main(argv) == 0
    rows = [json.loads(line) for line in (tmp_path / "router.jsonl").read_text().splitlines()]
    assert [r["phase"] for r in rows] == ["cold", "warm", "cold", "warm", "one model", "two models"]
    assert all(r["command"].startswith("ggserve bench router") for r in rows)
    cold = [r["ttft_s"] for r in rows if r["phase"] == "cold"]
    warm = [r["ttft_s"] for r in rows if r["phase"] == "warm"]
    assert min(cold) > max(warm) > 0  # a load takes longer than a prompt of 8 tokens
    for row in rows[4:]:
        assert row["requests"] == 4 and row["tokens"] == 4 * 3 and row["tokens_per_s"] > 0
    assert rows[5]["models"] == ["alpha", "beta"]
    assert "| two models / one |" in capsys.readouterr().out


def test_the_table_gives_medians_and_ratios() -> None:
    rows = [{"phase": "cold", "ttft_s": t} for t in (2.0, 1.0, 3.0)] + [
        {"phase": "warm", "ttft_s": t} for t in (0.2, 0.1, 0.3)] + [
        {"phase": "one model", "tokens_per_s": 40.0}, {"phase": "two models", "tokens_per_s": 30.0}]
    table = router.table(rows)
    assert "| TTFT, model not loaded (cold), median | 2000 ms |" in table
    assert "| cold / warm | 10.0x |" in table and "| two models / one | 0.75x |" in table
