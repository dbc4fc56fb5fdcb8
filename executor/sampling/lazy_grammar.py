"""Lazy grammars (llama-server's ``grammar_lazy``): free text until a trigger, then the grammar.

The trigger rules are llama.cpp's (llama_grammar_accept_impl): a trigger token starts the
grammar with itself; otherwise the generated text (token pieces with special tokens written out)
is searched with every trigger regex after each token, and on a match the grammar takes the text
from the regex's first non-empty group (else from the match) to the end: the tokens overlapping
it, the first one cut to its part. Patterns come from clients, and a backtracking engine can take
forever on some ((a|aa)+b): they run on the ``regex`` module, whose searches stop after
TRIGGER_SEARCH_S, failing the request alone instead of stalling its executor's every step.

llama.cpp has a lazy grammar sampler, but when the text from a trigger does not parse it throws a
C++ exception, which kills the executor. So the laziness lives here, over the request's ordinary
compiled grammar: a token whose trigger would hand the grammar text it rejects is itself not
allowed (tried on a copy of the grammar first), sampling picks another one, and no accept fails.
"""

from __future__ import annotations

import ctypes
from typing import TYPE_CHECKING

import llama_cpp
import numpy as np
import regex

from executor.sampling.errors import SequenceFailed
from ipc.protocol import GrammarTriggers

if TYPE_CHECKING:
    from executor.sampling.sequence import Grammar

_Replay = list[int] | None  # the tokens a trigger hands the grammar; None: no trigger; [] cannot
# Before its trigger, each candidate costs a search of the text with every pattern (and maybe a
# trial of the grammar): a filter over more candidates than this (the whole vocabulary, when none
# of the top ones is allowed) looks at the likeliest only, so that one sequence cannot stall every
# step for seconds; none allowed among them ends the sequence as a grammar dead end does.
MAX_AWAITING_CANDIDATES = 4096
TRIGGER_SEARCH_S = 0.05  # one search of the output by one trigger pattern (microseconds for sane ones)
_pieces: dict[tuple[int, int], bytes] = {}  # (vocab address, token) -> piece, special tokens written out


class LazyGrammar:
    """One sequence's lazy grammar: the ``Grammar`` interface, unconstrained until triggered."""

    def __init__(self, grammar: Grammar, triggers: GrammarTriggers, vocab: llama_cpp.llama_vocab_p) -> None:
        self._grammar = grammar
        self._vocab = vocab
        self._tokens = frozenset(triggers.tokens)
        self._patterns = [regex.compile(p.encode()) for p in triggers.patterns]  # regex.error: SeqSampler's
        self._full = [p.startswith("^") and p.endswith("$") for p in triggers.patterns]
        self.awaiting = True
        self._text = b""  # generated so far (while awaiting)
        self._spans: list[tuple[int, int, int]] = []  # (token, start, end) of each piece in _text
        self._last: tuple[int, _Replay] = (-1, None)  # the last token checked and its replay
        self.n_tokens = self.n_top = self.n_full = 0

    def allows(self, token: int) -> bool:
        if not self.awaiting:
            return self._grammar.allows(token)
        replay = self._replay(token)
        return replay is None or bool(replay)

    def filter(self, cand: np.ndarray) -> np.ndarray:
        """The candidates the grammar allows (a new array)."""
        if not self.awaiting:
            return self._grammar.filter(cand)
        if len(cand) > MAX_AWAITING_CANDIDATES:
            cand = cand[np.argpartition(cand["logit"], -MAX_AWAITING_CANDIDATES)[-MAX_AWAITING_CANDIDATES:]]
        return cand[np.fromiter((self.allows(int(t)) for t in cand["id"]), dtype=bool, count=len(cand))]

    def accept(self, token: int) -> None:
        """Only for a token ``allows`` accepted."""
        self.n_tokens += 1
        if not self.awaiting:
            self._grammar.accept(token)
            return
        replay = self._replay(token)
        self._last = (-1, None)  # the text changes: no replay computed before holds
        if replay is None:
            piece = _piece(self._vocab, token)
            self._spans.append((token, len(self._text), len(self._text) + len(piece)))
            self._text += piece
            return
        self.awaiting = False
        self._text, self._spans = b"", []
        for t in replay:
            self._grammar.accept(t)

    def free(self) -> None:
        self._grammar.free()

    def _replay(self, token: int) -> _Replay:
        """What generating ``token`` now hands the grammar: None (no trigger), the tokens (they
        parse), or [] (they do not: the token is not allowed)."""
        if self._last[0] == token:
            return self._last[1]
        replay = self._trigger(token)
        if replay and not self._parses(replay):
            replay = []
        self._last = (token, replay)
        return replay

    def _trigger(self, token: int) -> _Replay:
        if token in self._tokens:
            return [token]
        piece = _piece(self._vocab, token)
        text = self._text + piece
        for pattern, full in zip(self._patterns, self._full):
            try:
                match = (pattern.fullmatch if full else pattern.search)(text, timeout=TRIGGER_SEARCH_S)
            except TimeoutError:
                shown = pattern.pattern.decode(errors="replace")
                raise SequenceFailed(f"the grammar trigger pattern {shown!r} took over {TRIGGER_SEARCH_S * 1000:.0f} "
                                     "ms to search the output: simplify it") from None
            if match is None:
                continue
            start = next((match.start(g) for g in range(1, (match.lastindex or 0) + 1)
                          if match.end(g) > match.start(g)), match.start())
            replay: list[int] = []
            for tok, first, end in [*self._spans, (token, len(self._text), len(text))]:
                if end <= start:
                    continue
                if first >= start:
                    replay.append(tok)
                    continue
                cut = _tokens_of(self._vocab, text[start:end])
                if cut is None:
                    return []
                replay += cut
            return replay
        return None

    def _parses(self, replay: list[int]) -> bool:
        """Whether the grammar (as it is now, before the trigger) accepts ``replay``; tried on a copy."""
        trial = self._grammar.clone()
        try:
            for t in replay:
                if not trial.allows(t):
                    return False
                trial.accept(t)
            return True
        finally:
            trial.free()


def _piece(vocab: llama_cpp.llama_vocab_p, token: int) -> bytes:
    key = (ctypes.cast(vocab, ctypes.c_void_p).value or 0, token)
    piece = _pieces.get(key)
    if piece is None:
        buf = ctypes.create_string_buffer(256)
        n = llama_cpp.llama_token_to_piece(vocab, token, buf, len(buf), 0, True)
        if n < 0:  # a longer piece: -n bytes
            buf = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(vocab, token, buf, len(buf), 0, True)
        piece = _pieces[key] = buf.raw[: max(0, n)]
    return piece


def _tokens_of(vocab: llama_cpp.llama_vocab_p, text: bytes) -> list[int] | None:
    """Tokens whose pieces spell exactly ``text`` (the grammar reads characters, not token
    boundaries), or None when the tokenizer cannot give them."""
    capacity = len(text) + 8
    ids = (llama_cpp.llama_token * capacity)()
    n = llama_cpp.llama_tokenize(vocab, text, len(text), ids, capacity, False, False)
    tokens = ids[: max(0, n)]
    if n <= 0 or b"".join(_piece(vocab, t) for t in tokens) != text:
        return None
    return tokens
