"""How benchmark requests sample: greedy, or llama-server's default chain with a seed per request.

`default` sends llama-server's defaults explicitly (temperature 0.8, top_k 40, top_p 0.95, min_p
0.05), so every server samples the same way whatever its own defaults are. Each request's seed is
derived from the run's --seed, the session and the turn: every server gets the same seeds, and a
rerun the same again.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Literal

SamplingMode = Literal["greedy", "default"]
SAMPLING_MODES: tuple[SamplingMode, ...] = ("greedy", "default")
LLAMA_SERVER_DEFAULTS = {"temperature": 0.8, "top_k": 40, "top_p": 0.95, "min_p": 0.05}
SEED_LIMIT = 2**31  # below llama.cpp's uint32 "random seed" marker and any int32 parser


@dataclass(frozen=True)
class Sampling:
    mode: SamplingMode = "greedy"
    seed: int = 0  # the run's --seed, from which every request's seed derives

    def params(self, session: int, turn: int) -> dict[str, Any]:
        """The sampling fields of one request's body."""
        if self.mode == "greedy":
            return {"temperature": 0.0}
        seed = random.Random(f"{self.seed}:{session}:{turn}").randrange(SEED_LIMIT)
        return LLAMA_SERVER_DEFAULTS | {"seed": seed}

    @property
    def description(self) -> str:
        if self.mode == "greedy":
            return "greedy (temperature 0)"
        chain = ", ".join(f"{name} {value:g}" for name, value in LLAMA_SERVER_DEFAULTS.items())
        return f"default ({chain}; a seed per request)"
