"""Tokenization in the frontend: a vocab-only llama model (no weights) and an incremental detokenizer.

The vocab-only model loads in well under a second and holds only the tokenizer, so every HTTP
worker can turn text into tokens and back without asking the engine.
"""

from __future__ import annotations

import codecs
import ctypes
import functools

import llama_cpp

from ggserve.config import KvOverride
from ggserve.llama import kv_overrides
from ggserve.llama.log import LlamaLogCapture

_META_BUF_SIZE = 1 << 20  # chat templates can be tens of KB; metadata strings beyond 1 MiB are cut


class Tokenizer:
    """Tokenize and detokenize with the vocabulary of a GGUF file."""

    def __init__(self, model_path: str, overrides: list[KvOverride] | None = None) -> None:
        """``overrides``: GGUF metadata replaced at load (--override-kv), as the executors load it."""
        # llama.cpp's log lines go to Python logging (loading chatter at DEBUG).
        self.log_capture = LlamaLogCapture()
        llama_cpp.llama_backend_init()
        params = llama_cpp.llama_model_default_params()
        params.vocab_only = True
        kv = kv_overrides.apply(overrides or [], params)  # referenced until the load returns
        self._model = llama_cpp.llama_model_load_from_file(model_path.encode(), params)
        del kv
        if not self._model:
            raise RuntimeError(f"cannot load the vocabulary of {model_path}")
        self.model = self._model  # the vocab-only model (frontend.text.multimodal builds on it)
        self._vocab = llama_cpp.llama_model_get_vocab(self._model)
        self.vocab = self._vocab  # for grammar checks (frontend.structured.grammar)
        self.n_vocab: int = llama_cpp.llama_vocab_n_tokens(self._vocab)
        self.bos_id: int = llama_cpp.llama_vocab_bos(self._vocab)
        self.eos_id: int = llama_cpp.llama_vocab_eos(self._vocab)
        self.add_bos: bool = bool(llama_cpp.llama_vocab_get_add_bos(self._vocab))
        self.add_eos: bool = bool(llama_cpp.llama_vocab_get_add_eos(self._vocab))
        self.sep_id: int = llama_cpp.llama_vocab_sep(self._vocab)  # BERT's [SEP]; rerank pairs
        self.add_sep: bool = bool(llama_cpp.llama_vocab_get_add_sep(self._vocab))
        self.fim_prefix_id: int = llama_cpp.llama_vocab_fim_pre(self._vocab)
        self.fim_suffix_id: int = llama_cpp.llama_vocab_fim_suf(self._vocab)
        self.fim_middle_id: int = llama_cpp.llama_vocab_fim_mid(self._vocab)
        self.fim_repo_id: int = llama_cpp.llama_vocab_fim_rep(self._vocab)  # repo-level FIM (may be -1)
        self.fim_sep_id: int = llama_cpp.llama_vocab_fim_sep(self._vocab)
        # token id -> bytes, filled on first use (a full vocabulary is 100k-260k entries).
        self._pieces: dict[int, bytes] = {}
        self._special_pieces: dict[int, bytes] = {}

    def close(self) -> None:
        if self._model:
            llama_cpp.llama_model_free(self._model)
            self._model = None

    @property
    def supports_infill(self) -> bool:
        return min(self.fim_prefix_id, self.fim_suffix_id, self.fim_middle_id) >= 0

    def metadata(self, key: str) -> str | None:
        """A GGUF metadata value as a string, or None when the key is absent."""
        buf = ctypes.create_string_buffer(_META_BUF_SIZE)
        n = llama_cpp.llama_model_meta_val_str(self._model, key.encode(), buf, len(buf))
        if n < 0:
            return None
        return buf.value.decode("utf-8", errors="replace")

    def tokenize(self, text: str, add_special: bool, parse_special: bool) -> list[int]:
        """Text -> token ids. ``add_special`` adds BOS/EOS as the model wants; ``parse_special``
        turns special-token text such as ``<start_of_turn>`` into the special token."""
        data = text.encode("utf-8")
        # About one token per byte plus BOS/EOS; llama_tokenize says how many it needs if not.
        capacity = len(data) + 4
        while True:
            tokens = (llama_cpp.llama_token * capacity)()
            n = llama_cpp.llama_tokenize(self._vocab, data, len(data), tokens, capacity, add_special, parse_special)
            if n >= 0:
                return tokens[:n]
            capacity = -n

    def piece(self, token_id: int, special: bool = False) -> bytes:
        """The bytes of one token; with ``special`` False control tokens (BOS, EOS) are empty.

        A piece may be part of a UTF-8 character: byte-fallback tokens hold a single byte.
        """
        cache = self._special_pieces if special else self._pieces
        piece = cache.get(token_id)
        if piece is None:
            piece = self._render_piece(token_id, special)
            cache[token_id] = piece
        return piece

    def _render_piece(self, token_id: int, special: bool) -> bytes:
        # A buffer per call: the event loop and the prompt-preparation threads render pieces
        # at the same time (this runs once per token id; the result is cached).
        buf = ctypes.create_string_buffer(64)
        n = llama_cpp.llama_token_to_piece(self._vocab, token_id, buf, len(buf), 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self._vocab, token_id, buf, len(buf), 0, special)
        return buf.raw[:n]

    def special_text(self, token_id: int) -> str:
        """The text of a special token (``<bos>``), or "" when the model has none (id -1)."""
        if token_id < 0:
            return ""
        return self.piece(token_id, special=True).decode("utf-8", errors="replace")

    def detokenize(self, token_ids: list[int], special: bool = True) -> str:
        """Token ids -> text, as llama-server's /detokenize (special tokens rendered by default)."""
        data = b"".join(self.piece(t, special) for t in token_ids)
        return data.decode("utf-8", errors="replace")

    @functools.cached_property
    def max_piece_bytes(self) -> int:
        """The longest token's bytes (special tokens written out): a text of n bytes is at least
        n / this many tokens. (Rendered once, not cached per token: 262k pieces for Gemma 3.)"""
        return max(1, max(len(self._render_piece(t, True)) for t in range(self.n_vocab)))

    @functools.cached_property
    def hidden_ids(self) -> frozenset[int]:
        """The tokens whose text only ``special`` renders (BOS, EOS, turn markers: llama.cpp's
        control and unknown tokens): what llama-server's ``--special`` writes out."""
        hidden = llama_cpp.LLAMA_TOKEN_ATTR_UNKNOWN | llama_cpp.LLAMA_TOKEN_ATTR_CONTROL
        return frozenset(t for t in range(self.n_vocab) if llama_cpp.llama_vocab_get_attr(self._vocab, t) & hidden)

    def marker_tokens(self, markers: list[str]) -> frozenset[int]:
        """The control tokens among ``markers`` (each a single special token), to be rendered."""
        ids = set()
        for marker in markers:
            tokens = self.tokenize(marker, add_special=False, parse_special=True)
            if len(tokens) == 1 and not self.piece(tokens[0]):
                ids.add(tokens[0])
        return frozenset(ids)

    def invalid_token(self, token_ids: list[int]) -> int | None:
        """The first id outside the vocabulary, or None."""
        n_vocab = self.n_vocab
        for t in token_ids:
            if not 0 <= t < n_vocab:
                return t
        return None


class IncrementalDetokenizer:
    """Turns a stream of token pieces into text that never ends inside a UTF-8 character.

    Bytes of an unfinished character are held back until the piece completing it arrives;
    bytes that can never become valid UTF-8 come out as U+FFFD, as a full decode would give.
    """

    def __init__(self, tokenizer: Tokenizer, special_ids: frozenset[int] = frozenset()) -> None:
        self._tokenizer = tokenizer
        self._special_ids = special_ids  # control tokens rendered as their text (format markers)
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_id: int) -> str:
        """Text completed by this token (may be empty)."""
        return self._decoder.decode(self._tokenizer.piece(token_id, token_id in self._special_ids))

    def flush(self) -> str:
        """At the end of generation: whatever is held back, as U+FFFD."""
        return self._decoder.decode(b"", final=True)
