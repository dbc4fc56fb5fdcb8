"""llama-server's native result object of a finished choice: the body of /completion's response,
and the ``__verbose`` field that ``verbose: true`` adds to the OpenAI-shaped responses.

``content``, ``tokens`` (with ``return_tokens``), ``stop``, ``stop_type`` (none/eos/limit/word),
``stopping_word``, ``tokens_predicted``, ``tokens_evaluated``, ``tokens_cached``, ``truncated``,
``generation_settings``, ``id_slot``, ``prompt``, ``timings`` and, with ``n_probs``,
``completion_probabilities``; ``response_fields`` keeps only the fields it lists.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import msgspec

from frontend.api.sampling import CacheDefaults, stop_strings
from frontend.api.schemas import SamplingFields
from frontend.generation import Choice, ChoiceResult, Generation, TokenText
from frontend.http import sse
from frontend.observe.introspection import RANDOM_SEED
from frontend.state import Frontend
from frontend.structured.lazy import triggers_json
from frontend.text.prompts import Prompt
from frontend.timings import Timings, make_timings
from ipc.protocol import SamplingParams


class NativeResults:
    """What the native results of one call share: its prompts (choice ``p * n + i`` is choice i
    of prompt p) and the settings it ran with."""

    def __init__(self, fe: Frontend, body: SamplingFields, prompts: list[Prompt], sampling: SamplingParams,
                 limit: int, logprobs: int, *, return_tokens: bool = False, post_sampling_probs: bool = False,
                 response_fields: list[str] | None = None) -> None:
        self.fe, self.body, self.prompts = fe, body, prompts
        self.logprobs = logprobs
        self.return_tokens, self.post_sampling_probs = return_tokens, post_sampling_probs
        self.response_fields = response_fields
        self.n_slots = fe.engine_info().n_slots
        self.settings = generation_settings(body, sampling, limit, logprobs, fe.cache_defaults)

    def prompt_of(self, choice: Choice) -> Prompt:
        return self.prompts[choice.index // self.body.n]

    def id_slot(self, choice: Choice) -> int:
        """The slot as /slots numbers it (over all executors); -1 before the engine said."""
        stats = choice.stats
        return -1 if stats is None else stats.executor_id * self.n_slots + stats.slot_id

    def result(self, choice: Choice, content: str, tokens: list[TokenText], token_ids: list[int]) -> dict[str, Any]:
        stats = choice.stats
        prompt = self.prompt_of(choice)
        out: dict[str, Any] = {
            "index": choice.index,
            "content": content,
            "tokens": token_ids if self.return_tokens else [],
            "id_slot": self.id_slot(choice),
            "stop": True,
            "model": self.fe.model_id,
            "tokens_predicted": choice.n_tokens,
            "tokens_evaluated": len(prompt.token_ids),
            "generation_settings": self.settings,
            # as llama-server: the prompt's tokens as text, special ones written (a prompt with
            # media: its text, markers in place)
            "prompt": prompt.text if prompt.media else self.fe.tokenizer.detokenize(prompt.token_ids, special=True),
            "has_new_line": "\n" in content,
            # the context filled: shifted (--context-shift) or the output stopped there; a prompt
            # that does not fit is refused, never cut
            "truncated": stats.truncated if stats is not None else False,
            "stop_type": choice.stop_type,
            "stopping_word": choice.stopping_word,
            "tokens_cached": stats.n_cached_tokens if stats is not None else 0,
            "timings": choice_timings(choice),
        }
        if self.logprobs > 0 and not self.body.stream:
            out["completion_probabilities"] = probabilities(tokens, self.post_sampling_probs)
        return pick(out, self.response_fields)

    def first(self, gen: Generation, results: list[ChoiceResult]) -> dict[str, Any]:
        """The first choice's result (``__verbose`` of a non-streamed OpenAI response)."""
        first = results[0]
        return self.result(gen.choices[first.index], first.text, first.tokens, first.token_ids)


def stream_tail(native: NativeResults | None, gen: Generation, include_usage: bool,
                bare_chunk: Callable[..., msgspec.Struct]) -> list[bytes]:
    """The events after an OpenAI stream's text: with ``verbose``, a chunk per choice holding its
    native result (``__verbose``), then the usage chunk if it was asked for. ``bare_chunk(**fields)``
    makes the API's chunk with no choices."""
    events = [sse.event(bare_chunk(verbose=native.result(choice, "", [], []))) for choice in gen.choices
              ] if native is not None else []
    if include_usage:
        events.append(sse.event(bare_chunk(usage=gen.usage(), timings=gen.timings())))
    return events


def choice_timings(choice: Choice) -> Timings:
    stats = choice.stats
    if stats is None:
        return make_timings(0, 0, 0.0, choice.n_tokens, 0.0)
    return make_timings(stats.n_cached_tokens, stats.n_evaluated_prompt_tokens, stats.prefill_ms, choice.n_tokens,
                        stats.decode_ms, stats.n_draft_tokens, stats.n_draft_accepted)


def probabilities(tokens: list[TokenText], post_sampling: bool) -> list[dict[str, Any]]:
    """llama-server's completion_probabilities: each token with its top_logprobs, or with
    ``post_sampling_probs`` its prob and top_probs (probabilities after the sampler chain)."""
    value, top = ("prob", "top_probs") if post_sampling else ("logprob", "top_logprobs")
    return [
        {
            "id": t.token_id,
            "token": t.text,
            "bytes": list(t.piece),
            value: t.logprob,
            top: [
                {"id": token_id, "token": text, "bytes": list(raw), value: lp}
                for token_id, (text, raw, lp) in zip(t.top_ids, t.top)
            ],
        }
        for t in tokens
    ]


def pick(result: dict[str, Any], fields: list[str] | None) -> dict[str, Any]:
    """``response_fields``: the listed paths ("a/b" reaches into a/b), missing ones left out; none
    listed (or an empty list, as llama-server) keeps the whole result."""
    if not fields:
        return result
    picked: dict[str, Any] = {}
    plain = msgspec.to_builtins(result)
    for path in fields:
        value: Any = plain
        for key in path.split("/"):
            if not isinstance(value, dict) or key not in value:
                break
            value = value[key]
        else:
            picked[path] = value
    return picked


def generation_settings(body: SamplingFields, sampling: SamplingParams, limit: int, n_probs: int,
                        cache: CacheDefaults) -> dict[str, Any]:
    """The settings the request ran with, under llama-server's names."""
    settings = msgspec.structs.asdict(sampling)
    settings.update(
        seed=RANDOM_SEED if sampling.seed is None else sampling.seed,  # as /props shows it
        grammar=sampling.grammar or "",
        # llama-server's shape; a ban (-inf, also ignore_eos's) encodes as JSON's null there too
        logit_bias=[{"bias": b if math.isfinite(b) else None, "token": t} for t, b in sampling.logit_bias],
        n_predict=limit,
        max_tokens=limit,
        stop=stop_strings(body.stop),
        stream=body.stream,
        n_probs=max(n_probs, 0),
        ignore_eos=bool(body.ignore_eos),
        timings_per_token=body.timings_per_token,
        backend_sampling=body.backend_sampling,
        cache_prompt=body.cache_prompt,
        n_keep=cache.n_keep if body.n_keep is None else body.n_keep,
        n_discard=body.n_discard,
        n_cache_reuse=cache.n_cache_reuse if body.n_cache_reuse is None else body.n_cache_reuse,
        **triggers_json(sampling.grammar_triggers),
        lora=[{"id": entry.id, "scale": entry.scale} for entry in body.lora or []],  # the request's own
    )
    return settings
