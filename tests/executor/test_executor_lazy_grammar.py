"""Lazy grammars in the executor on the real Gemma 3 vocabulary: nothing is constrained before a
trigger, the grammar holds from it on (starting at the trigger text, a token cut at the match's
start included), a token whose trigger the grammar would reject is not allowed (where llama.cpp's
own lazy sampler would throw and kill the process), and token triggers."""

from __future__ import annotations

import numpy as np
import pytest

from executor.sampling.lazy_grammar import MAX_AWAITING_CANDIDATES, LazyGrammar
from executor.sampling.sequence import Grammar, GrammarCache, SeqSampler, SequenceFailed, sample_rows
from frontend.text.tokenizer import Tokenizer
from ipc.protocol import GrammarTriggers, SamplingParams


def tokens(tokenizer: Tokenizer, text: str) -> list[int]:
    return tokenizer.tokenize(text, add_special=False, parse_special=True)


def lazy(tokenizer: Tokenizer, grammar: str, patterns: tuple[str, ...] = (), trigger_tokens: tuple[int, ...] = ()
         ) -> LazyGrammar:
    compiled = Grammar(GrammarCache(tokenizer.vocab).new(grammar))
    return LazyGrammar(compiled, GrammarTriggers(list(patterns), list(trigger_tokens)), tokenizer.vocab)


def feed(g: LazyGrammar, ids: list[int]) -> None:
    for t in ids:
        assert g.allows(t), t
        g.accept(t)


def test_free_before_the_trigger_constrained_after(tokenizer):
    g = lazy(tokenizer, 'root ::= "ANSWER:" " " ("yes" | "no")', ("ANSWER:",))
    feed(g, tokens(tokenizer, "Some free text, 123!\nANSWER:"))
    assert not g.awaiting
    assert g.allows(tokens(tokenizer, " yes")[0]) and not g.allows(tokens(tokenizer, " maybe")[0])
    feed(g, tokens(tokenizer, " no"))
    g.free()


def test_the_grammar_starts_inside_a_token(tokenizer):
    """" answer" is one token; the pattern matches from its second character."""
    piece = tokens(tokenizer, " answer")
    assert len(piece) == 1
    g = lazy(tokenizer, 'root ::= "answer=" [0-9]+', ("answer",))
    feed(g, tokens(tokenizer, "The") + piece)
    assert not g.awaiting
    assert not g.allows(tokens(tokenizer, " is")[0]) and g.allows(tokens(tokenizer, "=")[0])
    g.free()


def test_a_group_marks_where_the_grammar_starts(tokenizer):
    g = lazy(tokenizer, 'root ::= "{" [a-z]* "}"', (r"<call>(\{)",))
    feed(g, tokens(tokenizer, "x <call>{"))
    assert not g.awaiting and g.allows(tokens(tokenizer, "}")[0]) and not g.allows(tokens(tokenizer, "<")[0])
    g.free()


def test_a_trigger_the_grammar_rejects_is_not_allowed(tokenizer):
    g = lazy(tokenizer, 'root ::= "yes"', ("no",))
    no = tokens(tokenizer, "no")
    assert len(no) == 1 and not g.allows(no[0])  # triggering would hand the grammar "no"
    assert g.allows(tokens(tokenizer, "maybe")[0]) and g.awaiting
    cand = np.zeros(2, dtype=[("id", np.int32), ("logit", np.float32), ("p", np.float32)])
    cand["id"] = [no[0], tokens(tokenizer, "maybe")[0]]
    assert g.filter(cand)["id"].tolist() == [cand["id"][1]]
    g.free()


def test_pattern_full_needs_the_whole_output(tokenizer):
    g = lazy(tokenizer, 'root ::= "go" [a-z ]*', ("^go$",))
    feed(g, tokens(tokenizer, "let us go"))
    assert g.awaiting  # "go" is in the text but the text is not "go"
    g.free()


def test_a_trigger_token(tokenizer):
    (start,) = tokens(tokenizer, "<start_of_turn>")
    g = lazy(tokenizer, 'root ::= "<start_of_turn>" "user"', trigger_tokens=(start,))
    feed(g, tokens(tokenizer, "anything") + [start])
    assert not g.awaiting and g.allows(tokens(tokenizer, "user")[0]) and not g.allows(tokens(tokenizer, "model")[0])
    g.free()


def test_the_sampler_picks_an_allowed_token_once_triggered(tokenizer):
    triggers = GrammarTriggers(["=>"])
    params = SamplingParams(temperature=0, grammar='root ::= "=>" [0-9]', grammar_triggers=triggers)
    sampler = SeqSampler(params, tokenizer.vocab, tokenizer.n_vocab, -1, tokens(tokenizer, "a =>"))
    row = np.zeros(tokenizer.n_vocab, dtype=np.float32)
    row[tokens(tokenizer, "x")[0]] = 10.0  # the model wants a letter; the grammar a digit
    row[tokens(tokenizer, "7")[0]] = 5.0
    token_ids, _ = sample_rows(None, row[None, :], [0], [sampler])
    assert token_ids == tokens(tokenizer, "7")
    free = SeqSampler(params, tokenizer.vocab, tokenizer.n_vocab, -1, tokens(tokenizer, "a"))
    assert sample_rows(None, row[None, :], [0], [free])[0] == tokens(tokenizer, "x")
    sampler.free()
    free.free()


def test_a_trigger_that_no_likely_token_survives_ends_the_sequence_without_trying_every_token(tokenizer, monkeypatch):
    # "." fires on any text and the grammar takes only "x": almost every token is refused, each
    # after a search and a trial of the grammar. Trying the whole vocabulary (262k) stalled the
    # executor's step ~9 s on 2 cores, for every token of such a request.
    params = SamplingParams(temperature=0, grammar='root ::= "x"', grammar_triggers=GrammarTriggers(["."]))
    sampler = SeqSampler(params, tokenizer.vocab, tokenizer.n_vocab, -1, [])
    checked = []
    real = LazyGrammar._trigger
    monkeypatch.setattr(LazyGrammar, "_trigger", lambda self, token: checked.append(token) or real(self, token))
    row = np.zeros(tokenizer.n_vocab, dtype=np.float32)
    row[tokens(tokenizer, "x")[0]] = -1.0  # the one allowed token, far down the distribution
    with pytest.raises(SequenceFailed):
        sample_rows(None, row[None, :], [0], [sampler])
    assert len(checked) <= MAX_AWAITING_CANDIDATES + 256
    sampler.free()


def test_a_trigger_pattern_that_backtracks_for_ever_fails_its_sequence_at_once(tokenizer):
    """(a|aa)+b against a run of a's takes exponential time in a backtracking engine (Python's re:
    hours at 60 characters, the executor's every step waiting); the search stops after
    TRIGGER_SEARCH_S and the request fails alone."""
    g = lazy(tokenizer, 'root ::= "b"', (r"(a|aa)+b",))
    run = tokens(tokenizer, "a" * 60)
    with pytest.raises(SequenceFailed, match="took over 50 ms"):
        feed(g, run)
    g.free()
