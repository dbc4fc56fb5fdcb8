"""Benchmark workloads: the sessions a run sends, with exact token lengths.

A session is a list of requests sent one after another by one simulated user. Random,
shared-prefix, long-mix and copy workloads are one raw-prompt `/v1/completions` request per session; a
multi-turn session (also the idle-conversations workload's, which only sends the turns in another
order) is a `/v1/chat/completions` conversation that resends the whole history every turn.
Requests may carry a group ("long"/"short", "first"/"returning") that the report summarizes
apart.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from bench.tokenizer import TextMaker

Api = Literal["completions", "chat"]
# Chat template tokens around one message, as an upper bound (Gemma 3 uses 5): an allowance for
# sizing contexts, not a count.
TEMPLATE_TOKENS_PER_MESSAGE = 8


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
    group: str = ""  # the requests the report summarizes together, if any


@dataclass(frozen=True)
class Session:
    api: Api
    turns: tuple[Turn, ...]
    system: str = ""  # chat only: the system message opening the conversation
    system_len: int = 0  # tokens of system

    @property
    def context_tokens(self) -> int:
        """KV cells its longest request needs, about: BOS, the prompt (for chat the whole
        history, with an allowance for the template) and the output."""
        if self.api == "completions":
            return 1 + max(turn.input_len + turn.output_len for turn in self.turns)
        messages = len(self.turns) * 2 + bool(self.system)
        return (1 + self.system_len + sum(t.input_len + t.output_len for t in self.turns)
                + messages * TEMPLATE_TOKENS_PER_MESSAGE)


def _prompt(texts: TextMaker, rng: random.Random, input_len: int, output_len: LengthDist,
            group: str = "") -> Session:
    """One raw prompt of exactly input_len tokens."""
    turn = Turn(texts.text(input_len, rng), input_len, output_len.sample(rng), group)
    return Session("completions", (turn,))


def random_sessions(texts: TextMaker, rng: random.Random, count: int,
                    input_len: LengthDist, output_len: LengthDist) -> list[Session]:
    """Independent random prompts."""
    return [_prompt(texts, rng, input_len.sample(rng), output_len) for _ in range(count)]


def long_mix_sessions(texts: TextMaker, rng: random.Random, count: int, input_len: LengthDist,
                      output_len: LengthDist, long_len: int,
                      long_fraction: float) -> list[Session]:
    """Random prompts of which about long_fraction (at least one) are long_len tokens long
    (group "long"), spread evenly so that each arrives among short ones (group "short")."""
    n_long = max(1, round(count * long_fraction))
    long_at = {int((k + 0.5) * count / n_long) for k in range(n_long)}
    return [_prompt(texts, rng, long_len, output_len, "long") if index in long_at
            else _prompt(texts, rng, input_len.sample(rng), output_len, "short")
            for index in range(count)]


COPIES = 3  # the copy workload: the passage this many times in the prompt
COPY_LEAD = 8  # then this many of its first words, starting another copy


def copy_sessions(texts: TextMaker, rng: random.Random, count: int, passage_len: int,
                  output_len: LengthDist) -> list[Session]:
    """Prompts holding a passage of passage_len tokens three times, then the start of a fourth
    copy: the model goes on copying, as it does when it edits code, extracts, quotes its sources
    or rewrites JSON. Speculative decoding's case (llama-server's ngram drafts find it)."""
    sessions = []
    for _ in range(count):
        text = texts.text(passage_len, rng, COPIES, COPY_LEAD)
        turn = Turn(text, COPIES * passage_len + COPY_LEAD, output_len.sample(rng))
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
    prompt, and the history grows by the user message and the model's reply each turn. The
    first turn is in group "first", the later ones, which resend a history, in "returning"."""
    sessions = []
    for _ in range(count):
        conversation = []
        for index in range(turns):
            n_user = user_len.sample(rng)
            conversation.append(Turn(texts.text(n_user, rng), n_user, output_len.sample(rng),
                                     "returning" if index else "first"))
        system = texts.text(system_len, rng) if system_len else ""
        sessions.append(Session("chat", tuple(conversation), system, system_len))
    return sessions
