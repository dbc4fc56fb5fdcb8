"""Token counting and prompt text of an exact token length, from a GGUF's vocabulary.

Prompts are built from a pool of words that are each exactly one token with a leading space
(" word"), so that n words make n tokens; every text is checked against the real tokenizer.
"""

from __future__ import annotations

import random

import llama_cpp

MIN_WORD_CHARS = 2
MAX_WORD_CHARS = 10


class Tokenizer:
    """A vocab-only llama.cpp model: tokenizes like the server does, loads in under a second."""

    def __init__(self, model_path: str) -> None:
        self._llama = llama_cpp.Llama(model_path, vocab_only=True, verbose=False)

    def ids(self, text: str) -> list[int]:
        """Token ids of text, without BOS or other special tokens."""
        return self._llama.tokenize(text.encode(), add_bos=False, special=False)

    def count(self, text: str) -> int:
        return len(self.ids(text))

    def word_pool(self, size: int, rng: random.Random) -> list[str]:
        """Distinct words " xyz" that are each exactly one token, drawn from the vocabulary."""
        n_vocab = self._llama.n_vocab()
        pool: set[str] = set()
        for _ in range(size * 50):
            token = rng.randrange(n_vocab)
            piece = self._llama.detokenize([token]).decode("utf-8", errors="replace")
            word = piece[1:]
            if (piece.startswith(" ") and word.isascii() and word.isalpha() and word.islower()
                    and MIN_WORD_CHARS <= len(word) <= MAX_WORD_CHARS
                    and self._llama.tokenize(piece.encode(), add_bos=False) == [token]):
                pool.add(piece)
                if len(pool) == size:
                    return sorted(pool)
        raise RuntimeError(f"found only {len(pool)} single-token words in the vocabulary")


class TextMaker:
    """Random texts of an exact token count, from a fixed pool of single-token words."""

    def __init__(self, tokenizer: Tokenizer, pool_size: int = 2000, seed: int = 0) -> None:
        self._tokenizer = tokenizer
        self._words = tokenizer.word_pool(pool_size, random.Random(seed))

    def text(self, n_tokens: int, rng: random.Random, copies: int = 1, lead: int = 0) -> str:
        """n_tokens random words; with ``copies`` > 1 the same words that many times, then the
        first ``lead`` of them again (a text that invites copying), exactly
        copies * n_tokens + lead tokens."""
        # Adjacent pool words could in principle merge into one token; redraw until exact.
        for _ in range(20):
            words = rng.choices(self._words, k=n_tokens)
            text = "".join(words * copies + words[:lead])
            if self._tokenizer.count(text) == copies * n_tokens + lead:
                return text
        raise RuntimeError(f"could not make a text of exactly {n_tokens} tokens")
