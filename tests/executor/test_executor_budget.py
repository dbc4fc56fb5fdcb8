"""The executor's reasoning budget on the real Gemma 3 vocabulary: counting starts at the opening
tag however it is tokenized, the closing tag is forced after the budget (never inside a UTF-8
character), a natural close ends it; in the sampler, forced tokens advance the grammar and the
penalties, and a grammar that forbids the closing tag wins."""

from __future__ import annotations

import llama_cpp
import numpy as np
import pytest

from executor.sampling.reasoning_budget import BudgetTracker, State
from executor.sampling.sequence import SeqSampler, sample_rows
from frontend.text.tokenizer import Tokenizer
from ipc.protocol import ReasoningBudget, SamplingParams


def tokens(tokenizer: Tokenizer, text: str) -> list[int]:
    return tokenizer.tokenize(text, add_special=False, parse_special=True)


def spelled_out(tokenizer: Tokenizer, text: str) -> list[int]:
    """``text`` one character per token (as a grammar may make a model write it)."""
    return [t for ch in text for t in tokens(tokenizer, ch)]


def tracker(tokenizer: Tokenizer, budget: int, message: str = "", open: bool = False) -> BudgetTracker:
    spec = ReasoningBudget(budget, "<think>", ["</think>"], tokens(tokenizer, message + "</think>"), open=open)
    return BudgetTracker(spec, tokenizer.vocab)


def generate(t: BudgetTracker, sampled: list[int]) -> list[int]:
    """Run the tracker as sample_rows does: a forced token replaces the sampled one."""
    out = []
    for token in sampled:
        forced = t.forced_token()
        out.append(token if forced is None else forced)
        t.accept(out[-1])
    while (forced := t.forced_token()) is not None:
        out.append(forced)
        t.accept(forced)
    return out


@pytest.mark.parametrize("spell", [tokens, spelled_out])
def test_forces_the_closing_tag_after_the_budget(tokenizer, spell):
    t = tracker(tokenizer, 5)
    thinking = tokens(tokenizer, " one two three four five six seven eight nine ten")
    assert len(thinking) >= 8
    out = generate(t, spell(tokenizer, "Hi <think>") + thinking)
    text = tokenizer.detokenize(out)
    assert t.state is State.DONE and text.count("</think>") == 1  # then the sampled tokens go on
    inside = text.split("<think>")[1].split("</think>")[0]
    assert tokens(tokenizer, inside) == thinking[:5]


def test_a_token_running_past_the_opening_tag_counts(tokenizer):
    # A grammar or a model may write the tag's last ">" together with what follows it.
    past = next(t for c in (">\n", ">\n\n", "> ", ">>", ">.") if len(t := tokens(tokenizer, c)) == 1)
    head, thinking = tokens(tokenizer, "<think") + past, tokens(tokenizer, " a b c d")
    out = generate(tracker(tokenizer, 2), head + thinking)
    assert out == head + thinking[:1] + tokens(tokenizer, "</think>")  # the budget: past, then one more


def test_natural_close_within_the_budget_forces_nothing(tokenizer):
    t = tracker(tokenizer, 50)
    sampled = tokens(tokenizer, "<think> short</think> answer and more")
    assert generate(t, sampled) == sampled and t.state is State.DONE


def test_no_opening_tag_no_budget(tokenizer):
    t = tracker(tokenizer, 0)
    sampled = tokens(tokenizer, "plain text, no thinking at all")
    assert generate(t, sampled) == sampled and t.state is State.WAITING_START


def test_prompt_opened_the_thinking_and_budget_zero(tokenizer):
    t = tracker(tokenizer, 0, open=True)
    assert tokenizer.detokenize(generate(t, [])) == "</think>"
    t = tracker(tokenizer, 2, message=" (out of time)", open=True)
    out = tokenizer.detokenize(generate(t, tokens(tokenizer, " a b c d e f")))
    assert out.endswith(" (out of time)</think>") and out.count("</think>") == 1


def test_never_forced_inside_a_utf8_character(tokenizer):
    # A character the vocabulary spells in byte tokens: forcing after its first byte would
    # leave broken text, so the tracker waits for the character to end.
    pieces = next(p for c in ("\U0010FFFD", "\U000E0100", "\U0001D56C", "\U00010348")
                  if len(p := tokens(tokenizer, c)) > 1 and all(len(tokenizer.piece(t)) == 1 for t in p))
    t = tracker(tokenizer, 1, open=True)
    out = generate(t, pieces + tokens(tokenizer, " more text"))
    assert out[: len(pieces)] == pieces
    text = tokenizer.detokenize(out)
    assert "\ufffd" not in text and text.endswith("</think>")


def run_sampler(tokenizer: Tokenizer, params: SamplingParams, favourite: str, steps: int) -> str:
    """Up to ``steps`` tokens (until the end of generation) from logits that always prefer
    ``favourite`` (one token)."""
    (token,) = tokens(tokenizer, favourite)
    row = np.zeros((1, tokenizer.n_vocab), dtype=np.float32)
    row[0, token] = 10.0
    sampler = SeqSampler(params, tokenizer.vocab, tokenizer.n_vocab, -1, [])
    out: list[int] = []
    try:
        for _ in range(steps):
            (picked,), _ = sample_rows(None, row, [0], [sampler])
            if llama_cpp.llama_vocab_is_eog(tokenizer.vocab, picked):
                break
            out.append(picked)
    finally:
        sampler.free()
    return tokenizer.detokenize(out)


def test_forced_tokens_advance_the_grammar_and_the_penalties(tokenizer):
    spec = ReasoningBudget(3, "<think>", ["</think>"], tokens(tokenizer, "</think>"))
    params = SamplingParams(temperature=0, repeat_penalty=1.1, grammar='root ::= "<think>" [a-z ]+ "</think>" "ok"',
                            reasoning_budget=spec)
    assert run_sampler(tokenizer, params, " a", 30) == "<think> a a a</think>ok"


def test_a_grammar_that_forbids_the_closing_tag_wins(tokenizer):
    spec = ReasoningBudget(2, "<think>", ["</think>"], tokens(tokenizer, "</think>"))
    params = SamplingParams(temperature=0, grammar='root ::= "<think>" [a-z ]+', reasoning_budget=spec)
    assert run_sampler(tokenizer, params, " a", 12).startswith("<think> a a a a")


def test_an_unlimited_budget_under_control_ends_only_when_told(tokenizer):
    """reasoning_control without a budget: the thinking goes on until end_now, which forces the
    closing tag at once (and does nothing before the thinking opens, or after it closed)."""
    spec = ReasoningBudget(-1, "<think>", ["</think>"], tokens(tokenizer, "</think>"), control=True)
    t = BudgetTracker(spec, tokenizer.vocab)
    t.end_now()
    assert t.state is State.WAITING_START
    generate(t, tokens(tokenizer, "<think>") + tokens(tokenizer, " one two three") * 20)
    assert t.state is State.COUNTING
    t.end_now()
    assert tokenizer.detokenize(generate(t, [])) == "</think>" and t.state is State.DONE
    t.end_now()
    assert t.state is State.DONE


def test_any_of_several_closing_tags_ends_the_thinking(tokenizer):
    spec = ReasoningBudget(50, "<think>", ["</think>", "</reasoning>"], tokens(tokenizer, "</think>"))
    t = BudgetTracker(spec, tokenizer.vocab)
    out = generate(t, tokens(tokenizer, "<think> a b</reasoning> c d e"))
    assert t.state is State.DONE and "</think>" not in tokenizer.detokenize(out)
