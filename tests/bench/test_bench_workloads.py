"""bench.workloads, bench.tokenizer and the bench CLI's plans: exact prompt lengths, a really
shared prefix, chats, long prompts among short ones, idle conversations."""

import random

import pytest

from bench.cli import compare_parser, default_model_path, make_plan, run_main
from bench.runner import Load
from bench.tokenizer import TextMaker, Tokenizer
from bench.workloads import (
    TEMPLATE_TOKENS_PER_MESSAGE,
    LengthDist,
    copy_sessions,
    long_mix_sessions,
    multi_turn_sessions,
    random_sessions,
    shared_prefix_sessions,
)


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    """The benchmark's own tokenizer (bench.tokenizer), in place of conftest's frontend one."""
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
        assert session.context_tokens == 1 + turn.input_len + turn.output_len  # with BOS


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


def test_copy_prompts_hold_a_passage_three_times_and_start_a_fourth(tokenizer, texts):
    sessions = copy_sessions(texts, random.Random(0), 4, passage_len=50, output_len=LengthDist(20, 20))
    for session in sessions:
        (turn,) = session.turns
        ids = tokenizer.ids(turn.text)
        assert len(ids) == turn.input_len == 3 * 50 + 8 and turn.output_len == 20
        assert ids[:50] == ids[50:100] == ids[100:150] and ids[150:] == ids[:8]
    assert len({s.turns[0].text for s in sessions}) == 4


def test_multi_turn_conversations(tokenizer, texts):
    sessions = multi_turn_sessions(texts, random.Random(0), 3, turns=4, system_len=40,
                                   user_len=LengthDist(12, 12), output_len=LengthDist(6, 6))
    assert len(sessions) == 3
    for session in sessions:
        assert session.api == "chat"
        assert tokenizer.count(session.system) == 40
        assert len(session.turns) == 4
        assert all(tokenizer.count(t.text) == t.input_len == 12 for t in session.turns)
        assert [t.group for t in session.turns] == ["first"] + ["returning"] * 3
        # BOS, system, 4 x (user + reply), 9 messages' template allowance
        assert session.context_tokens == 1 + 40 + 4 * 18 + 9 * TEMPLATE_TOKENS_PER_MESSAGE
    assert len({s.system for s in sessions}) == 3


def test_long_mix_spreads_exact_long_prompts_among_short_ones(tokenizer, texts):
    def make(seed: int, count: int):
        return long_mix_sessions(texts, random.Random(seed), count, LengthDist(8, 12),
                                 LengthDist(4, 4), long_len=300, long_fraction=0.125)

    sessions = make(0, 16)
    turns = [s.turns[0] for s in sessions]
    assert [i for i, t in enumerate(turns) if t.group == "long"] == [4, 12]  # 1 in 8, spread
    for turn in turns:
        assert tokenizer.count(turn.text) == turn.input_len
        assert turn.input_len == 300 if turn.group == "long" else 8 <= turn.input_len <= 12
        assert turn.group in ("long", "short") and turn.output_len == 4
    assert make(0, 16) == sessions and make(1, 16) != sessions  # from the seed
    assert [s.turns[0].group for s in make(0, 3)] == ["short", "long", "short"]  # at least one


def test_plans_of_the_new_workloads():
    def plan(*argv: str):
        args = compare_parser().parse_args(["--concurrency", "2", *argv])
        return make_plan(args, default_model_path(), [1])

    idle = plan("--workload", "idle-conversations", "--turns", "2", "--input-len", "4",
                "--output-len", "2", "--system-len", "8", "--sampling", "default")
    assert idle.round_robin and idle.sampling.mode == "default"
    sessions = idle.sessions_for(Load("concurrency", 2))
    assert len(sessions) == 64 and {len(s.turns) for s in sessions} == {2}  # 64 by default
    assert idle.sessions_for(Load("concurrency", 2)) == sessions  # the same for every server
    mix = plan("--workload", "long-mix", "--long-len", "50", "--long-fraction", "0.25",
               "--input-len", "5", "--num-prompts", "8")
    assert not mix.round_robin and mix.sampling.mode == "greedy"
    lengths = [s.turns[0].input_len for s in mix.sessions_for(Load("concurrency", 2))]
    assert lengths == [5, 5, 50, 5, 5, 5, 50, 5]


def test_idle_conversations_want_a_closed_loop(capsys):
    with pytest.raises(SystemExit):
        run_main(["--workload", "idle-conversations", "--request-rate", "1"])
    assert "--concurrency" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        compare_parser().parse_args(["--long-fraction", "1.5"])
