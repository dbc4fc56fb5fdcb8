"""Benchmark workloads: the sessions a run sends, with exact token lengths.

A session is a list of requests sent one after another by one simulated user. Random and
shared-prefix workloads are one raw-prompt `/v1/completions` request per session; a multi-turn
session is a `/v1/chat/completions` conversation that resends the whole history every turn.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from bench.tokenizer import TextMaker

Api = Literal["completions", "chat"]


@dataclass(frozen=True)
class LengthDist:
    """Token lengths drawn uniformly from [low, high]; low == high is a fixed length."""

    low: int
    high: int

    @classmethod
    def parse(cls, spec: str) -> LengthDist:
        """"128" (fixed) or "64:256" (uniform, inclusive)."""
        low, _, high = spec.partition(":")
        dist = cls(int(low), int(high or low))
        if not 1 <= dist.low <= dist.high:
            raise ValueError(f"bad length {spec!r}: want N or LOW:HIGH with 1 <= LOW <= HIGH")
        return dist

    def sample(self, rng: random.Random) -> int:
        return rng.randint(self.low, self.high)


@dataclass(frozen=True)
class Turn:
    text: str  # the raw prompt (completions) or this turn's user message (chat)
    input_len: int  # tokens of text alone, without special tokens or chat template
    output_len: int  # tokens to generate; exact, because requests set ignore_eos


@dataclass(frozen=True)
class Session:
    api: Api
    turns: tuple[Turn, ...]
    system: str = ""  # chat only: the system message opening the conversation


def random_sessions(texts: TextMaker, rng: random.Random, count: int,
                    input_len: LengthDist, output_len: LengthDist) -> list[Session]:
    """Independent random prompts."""
    sessions = []
    for _ in range(count):
        n_in = input_len.sample(rng)
        turn = Turn(texts.text(n_in, rng), n_in, output_len.sample(rng))
        sessions.append(Session("completions", (turn,)))
    return sessions


def shared_prefix_sessions(texts: TextMaker, rng: random.Random, count: int, prefix_len: int,
                           suffix_len: LengthDist, output_len: LengthDist) -> list[Session]:
    """Prompts that all start with the same prefix_len tokens (a long system prompt), then
    differ."""
    prefix = texts.text(prefix_len, rng)
    sessions = []
    for _ in range(count):
        n_suffix = suffix_len.sample(rng)
        turn = Turn(prefix + texts.text(n_suffix, rng), prefix_len + n_suffix,
                    output_len.sample(rng))
        sessions.append(Session("completions", (turn,)))
    return sessions


def multi_turn_sessions(texts: TextMaker, rng: random.Random, count: int, turns: int,
                        system_len: int, user_len: LengthDist,
                        output_len: LengthDist) -> list[Session]:
    """Chat conversations of `turns` user messages each; every conversation has its own system
    prompt, and the history grows by the user message and the model's reply each turn."""
    sessions = []
    for _ in range(count):
        conversation = []
        for _ in range(turns):
            n_user = user_len.sample(rng)
            conversation.append(Turn(texts.text(n_user, rng), n_user, output_len.sample(rng)))
        system = texts.text(system_len, rng) if system_len else ""
        sessions.append(Session("chat", tuple(conversation), system))
    return sessions
