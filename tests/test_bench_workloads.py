"""bench.workloads and bench.tokenizer: exact prompt lengths, a really shared prefix, chats."""

import random

import pytest

from bench.cli import default_model_path
from bench.tokenizer import TextMaker, Tokenizer
from bench.workloads import LengthDist, multi_turn_sessions, random_sessions, shared_prefix_sessions


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer(default_model_path())


@pytest.fixture(scope="module")
def texts(tokenizer: Tokenizer) -> TextMaker:
    return TextMaker(tokenizer, pool_size=500, seed=1)


def test_length_dist_parse_and_sample():
    assert LengthDist.parse("128") == LengthDist(128, 128)
    dist = LengthDist.parse("4:9")
    rng = random.Random(0)
    samples = {dist.sample(rng) for _ in range(500)}
    assert samples == set(range(4, 10))
    for bad in ("0", "9:4", "x"):
        with pytest.raises(ValueError):
            LengthDist.parse(bad)


def test_random_prompts_have_exact_lengths(tokenizer, texts):
    sessions = random_sessions(texts, random.Random(0), 20, LengthDist(1, 300), LengthDist(5, 7))
    assert len(sessions) == 20
    for session in sessions:
        (turn,) = session.turns
        assert session.api == "completions"
        assert tokenizer.count(turn.text) == turn.input_len
        assert 5 <= turn.output_len <= 7


def test_same_seed_same_sessions(texts):
    def make(seed):
        return random_sessions(texts, random.Random(seed), 3, LengthDist(50, 50), LengthDist(8, 8))
    assert make(7) == make(7)
    assert make(7) != make(8)


def test_shared_prefix_is_shared_token_for_token(tokenizer, texts):
    sessions = shared_prefix_sessions(texts, random.Random(0), 8, prefix_len=200,
                                      suffix_len=LengthDist(10, 30), output_len=LengthDist(4, 4))
    prompts = [s.turns[0] for s in sessions]
    prefix_ids = tokenizer.ids(prompts[0].text)[:200]
    for turn in prompts:
        ids = tokenizer.ids(turn.text)
        assert len(ids) == turn.input_len
        assert 210 <= turn.input_len <= 230
        assert ids[:200] == prefix_ids
    assert len({tuple(tokenizer.ids(t.text)[200:]) for t in prompts}) == 8  # distinct suffixes


def test_multi_turn_conversations(tokenizer, texts):
    sessions = multi_turn_sessions(texts, random.Random(0), 3, turns=4, system_len=40,
                                   user_len=LengthDist(12, 12), output_len=LengthDist(6, 6))
    assert len(sessions) == 3
    for session in sessions:
        assert session.api == "chat"
        assert tokenizer.count(session.system) == 40
        assert len(session.turns) == 4
        assert all(tokenizer.count(t.text) == t.input_len == 12 for t in session.turns)
    assert len({s.system for s in sessions}) == 3
