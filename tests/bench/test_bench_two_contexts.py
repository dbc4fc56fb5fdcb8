"""bench.micro.two_contexts: each round times the bare loop, one context and two contexts
driven alternately, all greedy decoding that goes on step after step."""

from __future__ import annotations

from tiny_models import tiny_llama

from bench.micro import two_contexts


def test_each_round_reports_the_three_modes_with_their_rates(capsys) -> None:
    assert two_contexts.main(["--rows", "3", "--steps", "4", "--threads", "2", "--rounds", "2",
                              "--model", tiny_llama()]) == 0
    rows = [line.split("|")[1:-1] for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert [(r[0].strip(), r[1].strip()) for r in rows[1:]] == [
        (str(n), mode) for n in (1, 2) for mode in ("bare", "one", "two")]
    for row in rows[1:]:
        ms, rate = float(row[2]), float(row[3].replace(",", ""))
        assert ms > 0 and abs(rate - 3 / (ms / 1e3)) / rate < 0.01


def test_a_lane_feeds_each_sequence_its_own_argmax_at_the_next_position() -> None:
    model = two_contexts.load_model(tiny_llama())
    try:
        lane = two_contexts.Lane(model, 2, 4, 2)
        first = [(item.seq_id, item.pos) for item in lane.items]
        lane.queue()
        lane.pick()
        assert first == [(0, two_contexts.PROMPT_LEN), (1, two_contexts.PROMPT_LEN)]
        assert [(item.seq_id, item.pos) for item in lane.items] == [(0, 33), (1, 33)]
        assert all(len(item.token_ids) == 1 and 0 <= item.token_ids[0] < lane.n_vocab for item in lane.items)
        lane.close()
    finally:
        two_contexts.llama_cpp.llama_model_free(model)
