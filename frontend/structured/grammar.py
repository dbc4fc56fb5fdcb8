"""Checking a GBNF grammar in the frontend, before a request reaches the engine.

llama.cpp parses a grammar with only the vocabulary (the frontend's vocab-only model), so a
grammar that does not parse, lacks a ``root`` rule or is left-recursive is a 400 naming
llama.cpp's reason, and the executor only ever sees grammars that compile; one that compiles but
would stall the engine (frontend.structured.grammar_cost) is a 400 too. Checked texts are
remembered, so a client sending the same schema again pays nothing.
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
from collections import OrderedDict

import llama_cpp

from frontend.structured.grammar_cost import empty_repeat_problem, slow_check_problem
from frontend.text.tokenizer import Tokenizer

MAX_GRAMMAR_BYTES = 512 * 1024
_CACHE_SIZE = 256


class GrammarError(ValueError):
    pass


class GrammarChecker:
    def __init__(self, tokenizer: Tokenizer) -> None:
        self._tokenizer = tokenizer
        self._lock = threading.Lock()  # the cache of checked grammars, and the compile that fills it
        self._known: OrderedDict[str, str | None] = OrderedDict()  # text -> error (None: fine)

    def check(self, text: str) -> None:
        """Raise GrammarError when llama.cpp cannot compile ``text`` (root rule ``root``)."""
        with self._lock:
            error = self._known.get(text, "")
            if error == "":
                error = self._compile(text)
                self._known[text] = error
                while len(self._known) > _CACHE_SIZE:
                    self._known.popitem(last=False)
            else:
                self._known.move_to_end(text)
        if error is not None:
            raise GrammarError(error)

    def _compile(self, text: str) -> str | None:
        data = text.encode("utf-8")
        if not text.strip():
            return "the grammar is empty"
        if len(data) > MAX_GRAMMAR_BYTES:
            return f"the grammar has {len(data)} bytes, over the limit of {MAX_GRAMMAR_BYTES}"
        if b"\0" in data:
            return "the grammar contains a NUL character"
        with self._tokenizer.log_capture.collect_problems() as problems, _stderr_captured(text) as printed:
            sampler = llama_cpp.llama_sampler_init_grammar(self._tokenizer.vocab, data, b"root")
        if sampler:
            try:
                return empty_repeat_problem(text) or slow_check_problem(sampler, self._tokenizer.n_vocab)
            finally:
                llama_cpp.llama_sampler_free(sampler)
        # llama.cpp prints parse errors ("parse: error parsing grammar: <why>") on stderr.
        reasons = [line.split("error parsing grammar: ", 1)[1] for line in printed
                   if "error parsing grammar: " in line]
        reasons += [p for p in problems if "failed to parse grammar" not in p]
        return "invalid grammar: " + ("; ".join(reasons) or "llama.cpp cannot parse it")


class _stderr_captured:
    """Lines written to file descriptor 2 inside the block (llama.cpp's fprintf), kept from the
    process's stderr; other lines written meanwhile are passed on after the block."""

    def __init__(self, source: str) -> None:
        self._source = source  # llama.cpp echoes the grammar after the error: not passed on

    def __enter__(self) -> list[str]:
        self.lines: list[str] = []
        sys.stderr.flush()
        self._file = tempfile.TemporaryFile()
        self._saved = os.dup(2)
        os.dup2(self._file.fileno(), 2)
        return self.lines

    def __exit__(self, *exc: object) -> None:
        os.dup2(self._saved, 2)
        os.close(self._saved)
        self._file.seek(0)
        text = self._file.read().decode("utf-8", errors="replace")
        self._file.close()
        for line in text.splitlines():
            if "grammar" in line:
                self.lines.append(line)
            elif line.strip() and line not in self._source:
                print(line, file=sys.stderr)
