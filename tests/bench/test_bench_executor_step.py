"""bench.micro.executor_step: one row per chain and batch size with its parts, the bare loop's
row, and llama.cpp's and the executor's functions as they were once it is done."""

from __future__ import annotations

import llama_cpp
from tiny_models import tiny_llama

import executor.engine as engine_module
from bench.micro import executor_step


def test_the_report_splits_each_chains_steps_and_restores_what_it_timed(capsys) -> None:
    before = (llama_cpp.llama_decode, engine_module.logits_view, engine_module.sample_rows)
    assert executor_step.main(["--batch", "3,1", "--steps", "4", "--threads", "2", "--model", tiny_llama()]) == 0
    assert (llama_cpp.llama_decode, engine_module.logits_view, engine_module.sample_rows) == before
    rows = [line.split("|")[1:-1] for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert [(r[0].strip(), r[1].strip()) for r in rows[1:]] == [
        (batch, name) for batch in ("3", "1") for name in [*executor_step.CHAINS, "bare loop (llama_decode, wait)"]]
    for row in rows[1:]:
        step, parts = float(row[2]), [float(v) for v in row[3:] if v.strip()]
        assert step > 0 and all(v >= 0 for v in parts[:3]) and (not parts or sum(parts[:3]) <= step)
