"""llama-server's ``timings`` object: prompt and generation speed of one API call.

Final timings come from the engine's per-request stats (prefill: slot assigned -> first token;
generation: first token -> last token). Live timings (``timings_per_token`` stream chunks) are
measured here from the arrival of outputs, since the engine sends its stats only at the end.
As llama-server counts them, ``prompt_n`` are the prompt tokens evaluated (``cache_n`` more
came from the prefix cache: together they are usage's prompt_tokens), ``predicted_n`` the
generated tokens (usage's completion_tokens), and the speeds count the first generated token,
which comes out of the prefill, as free. ``prompt_progress`` (with ``return_progress``) says how
far a long prefill is before the first token.
"""

from __future__ import annotations

import msgspec

from ipc.protocol import PromptProgress


class Timings(msgspec.Struct, omit_defaults=True):
    cache_n: int
    prompt_n: int
    prompt_ms: float
    prompt_per_token_ms: float
    prompt_per_second: float
    predicted_n: int
    predicted_ms: float
    predicted_per_token_ms: float
    predicted_per_second: float
    # speculative decoding: draft tokens verified and accepted, both present once any were
    # drafted (the accepted count too when it is 0), as llama-server writes them
    draft_n: int | msgspec.UnsetType = msgspec.UNSET
    draft_n_accepted: int | msgspec.UnsetType = msgspec.UNSET


def make_timings(cache_n: int, prompt_n: int, prompt_ms: float, predicted_n: int, predicted_ms: float,
                 draft_n: int = 0, draft_n_accepted: int = 0) -> Timings:
    steps = max(predicted_n - 1, 0)  # decode steps: the first token came with the prefill
    return Timings(
        cache_n=cache_n,
        prompt_n=prompt_n,
        prompt_ms=prompt_ms,
        prompt_per_token_ms=prompt_ms / prompt_n if prompt_n else 0.0,
        prompt_per_second=1e3 * prompt_n / prompt_ms if prompt_ms > 0 else 0.0,
        predicted_n=predicted_n,
        predicted_ms=predicted_ms,
        predicted_per_token_ms=predicted_ms / steps if steps else 0.0,
        predicted_per_second=1e3 * steps / predicted_ms if predicted_ms > 0 else 0.0,
        draft_n=draft_n if draft_n else msgspec.UNSET,
        draft_n_accepted=draft_n_accepted if draft_n else msgspec.UNSET,
    )


def progress_timings(progress: PromptProgress) -> Timings:
    """The timings of a prefill under way (a ``prompt_progress`` chunk's, as llama-server's slot
    stats then): the prompt tokens evaluated so far and their time, nothing generated yet."""
    return make_timings(progress.cache, progress.processed - progress.cache, float(progress.time_ms), 0, 0.0)


class PromptProgressJson(msgspec.Struct):
    """llama-server's ``prompt_progress``: prompt tokens in all, from the cache, in the KV cache now."""

    total: int
    cache: int
    processed: int
    time_ms: int


def progress_json(progress: PromptProgress) -> PromptProgressJson:
    return PromptProgressJson(progress.total, progress.cache, progress.processed, progress.time_ms)
