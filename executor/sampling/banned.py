"""Banned token sequences (vLLM's ``bad_words``): the output never contains one of them.

A sequence's last token is banned wherever the tokens generated just before it are the rest of
the sequence (a one-token sequence: everywhere). The check has the grammar's interface
(``allows``, ``filter``, ``accept``), so a sequence with bans samples as a grammar-constrained
one does: the token is sampled as without bans, and only a banned pick is sampled again among
the allowed candidates (executor.sampling.sequence). A request's own grammar, if any, is checked
inside: a token must pass both.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from executor.sampling.lazy_grammar import LazyGrammar
    from executor.sampling.sequence import Grammar


class BannedSequences:
    """One sequence's bans, over the tokens it has generated (and its grammar, if any)."""

    def __init__(self, sequences: list[list[int]], inner: Grammar | LazyGrammar | None = None) -> None:
        self._inner = inner
        self._always = frozenset(s[0] for s in sequences if len(s) == 1)
        # the tokens banned after each prefix, and the prefix lengths to look back over
        self._after: dict[tuple[int, ...], set[int]] = {}
        for s in sequences:
            if len(s) > 1:
                self._after.setdefault(tuple(s[:-1]), set()).add(s[-1])
        self._lengths = sorted({len(prefix) for prefix in self._after})
        self._tail: list[int] = []  # the last generated tokens, as many as the longest prefix
        self._now: frozenset[int] = frozenset()  # the tokens banned at this point
        self._now_ids = np.zeros(0, dtype=np.int32)
        self._update()
        self.n_tokens = self.n_top = self.n_full = 0

    def _update(self) -> None:
        now = set(self._always)
        for n in self._lengths:
            if n <= len(self._tail):
                now |= self._after.get(tuple(self._tail[-n:]), set())
        self._now = frozenset(now)
        self._now_ids = np.fromiter(now, dtype=np.int32, count=len(now))

    def allows(self, token: int) -> bool:
        if token in self._now:
            return False
        return self._inner is None or self._inner.allows(token)

    def filter(self, cand: np.ndarray) -> np.ndarray:
        """The candidates allowed (a new array)."""
        kept = cand[~np.isin(cand["id"], self._now_ids)]
        return kept if self._inner is None else self._inner.filter(kept)

    def accept(self, token: int) -> None:
        """Only for a token ``allows`` accepted (an inner grammar throws otherwise)."""
        self.n_tokens += 1
        if self._inner is not None:
            self._inner.accept(token)
        if self._lengths:
            self._tail = (self._tail + [token])[-self._lengths[-1]:]
            self._update()

    def free(self) -> None:
        if self._inner is not None:
            self._inner.free()
