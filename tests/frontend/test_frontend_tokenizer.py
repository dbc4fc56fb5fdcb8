"""Tokenizer and incremental detokenizer on the real Gemma 3 vocabulary."""

from __future__ import annotations

import sys

import pytest
from frontend_support import gemma_path

from frontend.text.tokenizer import IncrementalDetokenizer, Tokenizer

TEXTS = [
    "Hello, world!",
    "Grüße aus Köln — naïve café",
    "emoji 🙂🚀 and CJK 漢字かな, math 𝔘 ∑",
    "rare: 𐍈 ꙮ 㐀 \u0301 combining",
]


def test_vocabulary_facts(tokenizer: Tokenizer):
    assert tokenizer.n_vocab == 262144
    assert tokenizer.add_bos and tokenizer.bos_id == 2
    assert tokenizer.special_text(tokenizer.bos_id) == "<bos>"
    assert tokenizer.special_text(-1) == ""
    assert not tokenizer.supports_infill  # Gemma 3 has no FIM tokens


def test_tokenize_adds_bos_and_parses_special_tokens(tokenizer: Tokenizer):
    assert tokenizer.tokenize("Hi", add_special=True, parse_special=False)[0] == tokenizer.bos_id
    assert tokenizer.bos_id not in tokenizer.tokenize("Hi", add_special=False, parse_special=False)
    turn = tokenizer.tokenize("<start_of_turn>", add_special=False, parse_special=True)
    assert len(turn) == 1
    assert len(tokenizer.tokenize("<start_of_turn>", add_special=False, parse_special=False)) > 1


def test_long_text_round_trips(tokenizer: Tokenizer):
    text = "lorem ipsum dolor " * 5000
    ids = tokenizer.tokenize(text, add_special=False, parse_special=False)
    assert tokenizer.detokenize(ids) == text


@pytest.mark.parametrize("text", TEXTS)
def test_detokenize_round_trips(tokenizer: Tokenizer, text: str):
    ids = tokenizer.tokenize(text, add_special=True, parse_special=False)
    assert tokenizer.detokenize(ids) == "<bos>" + text
    assert tokenizer.detokenize(ids, special=False) == text


@pytest.mark.parametrize("text", TEXTS)
def test_incremental_detokenizer_never_emits_broken_utf8(tokenizer: Tokenizer, text: str):
    ids = tokenizer.tokenize(text, add_special=False, parse_special=False)
    detok = IncrementalDetokenizer(tokenizer)
    pieces = [detok.push(t) for t in ids] + [detok.flush()]
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)


def test_byte_fallback_tokens_are_held_until_the_character_completes(tokenizer: Tokenizer):
    ids = tokenizer.tokenize("𝔘", add_special=False, parse_special=False)
    assert [len(tokenizer.piece(t)) for t in ids] == [1, 1, 1, 1]  # one byte per token
    detok = IncrementalDetokenizer(tokenizer)
    assert [detok.push(t) for t in ids] == ["", "", "", "𝔘"]


def test_an_unfinished_character_becomes_a_replacement_at_the_end(tokenizer: Tokenizer):
    ids = tokenizer.tokenize("𝔘", add_special=False, parse_special=False)
    detok = IncrementalDetokenizer(tokenizer)
    assert [detok.push(t) for t in ids[:2]] == ["", ""]
    assert detok.flush() == "\ufffd"


def test_control_tokens_render_empty_in_generated_text(tokenizer: Tokenizer):
    assert tokenizer.piece(tokenizer.eos_id) == b""
    assert tokenizer.piece(tokenizer.eos_id, special=True) == b"<eos>"


def test_invalid_token(tokenizer: Tokenizer):
    assert tokenizer.invalid_token([1, 2, 3]) is None
    assert tokenizer.invalid_token([1, tokenizer.n_vocab, -1]) == tokenizer.n_vocab


def test_pieces_rendered_from_many_threads_at_once_are_each_right():
    # The event loop and the prompt-preparation threads render pieces concurrently.
    import concurrent.futures

    reference = Tokenizer(gemma_path())
    ids = list(range(1000, 9000))
    expected = [reference.piece(t) for t in ids]
    reference.close()
    fresh = Tokenizer(gemma_path())  # nothing cached yet: every call renders
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: races show
    try:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            chunks = [ids[i::8] for i in range(8)]
            got = dict(zip(range(8), pool.map(lambda chunk: [fresh.piece(t) for t in chunk], chunks)))
        for i in range(8):
            assert got[i] == expected[i::8]
    finally:
        sys.setswitchinterval(interval)
        fresh.close()
