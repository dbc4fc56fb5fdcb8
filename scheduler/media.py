"""Media chunks (images, audio) in a prompt, as the scheduler sees them.

A media chunk occupies ``n_tokens`` prompt positions (KV cells), each holding the same negative id
derived from the file's hash (``ipc.protocol.media_token_id``). The scheduler counts in these;
where the model's positions differ (an M-RoPE image advances llama.cpp's position by fewer), the
executor maps them (``executor.media.positions``). That makes the prefix cache key media by
content for free: a second request with the same picture matches the first one's tokens through
the picture and reuses its KV. Two rules keep a chunk whole:

- a prefill item is either text or exactly one whole chunk (the executor decodes a chunk's
  embeddings in a decode of its own, all in one micro-batch: Gemma 3 attends bidirectionally
  within an image);
- a reused prefix never ends inside a chunk (it is cut back to the chunk's start).

A chunk also takes its KV cells all at once: the oldest prefill waiting at one gets them from
idle prefixes and newer requests (scheduler.core), where text would take what is free.
"""

from __future__ import annotations

from ipc.protocol import AddRequest, media_token_id


def snap_reuse(tokens: list[int], n: int) -> int:
    """``n`` cut back to the start of the media chunk it would end inside (its id repeats across
    the cut); two identical pictures in a row count as one run: cut to the first (safe)."""
    while 0 < n < len(tokens) and tokens[n] < 0 and tokens[n - 1] == tokens[n]:
        n -= 1
    return n


def fit_chunk(chunks: dict[int, int], tokens: list[int], start: int, n: int) -> int:
    """How many of the ``n`` tokens from ``start`` a prefill item takes so that it is text only
    or one whole media chunk (``chunks``: start -> n_tokens of the request's media): text stops
    before the next chunk; a chunk goes whole or not at all (0: the budget is too small now)."""
    size = chunks.get(start)
    if size is not None:
        return size if size <= n else 0
    end, limit = start, min(start + n, len(tokens))
    while end < limit and tokens[end] >= 0:
        end += 1
    return end - start


def problem(msg: AddRequest, n_vocab: int, chunk_limit: int, n_ctx_slot: int, vision: bool,
            audio: bool) -> str | None:
    """Why the prompt's tokens and media chunks do not fit together or this engine, or None
    (``chunk_limit``: embeddings one decode takes; ``n_ctx_slot``: tokens one request holds)."""
    prompt = msg.prompt_token_ids
    if not msg.media:
        if min(prompt) < 0 or max(prompt) >= n_vocab:
            return f"prompt token out of range [0, {n_vocab})"
        return None
    if not (vision or audio):
        return "this server has no multimodal projector (--mmproj)"
    if msg.prompt_logprobs >= 0:
        return "prompt log-probabilities are not available for prompts with media"
    covered = 0
    for chunk in msg.media:
        if chunk.start < covered or chunk.n_tokens <= 0 or chunk.start + chunk.n_tokens > len(prompt):
            return "media chunks overlap or leave the prompt"
        if chunk.n_tokens >= n_ctx_slot:  # it never fits, whatever waits or is preempted
            return (f"a media chunk has {chunk.n_tokens} embeddings; a request holds at most {n_ctx_slot} tokens "
                    "with its reply (raise --ctx-size or --ctx-per-request)")
        if chunk.n_tokens > chunk_limit:
            return (f"a media chunk has {chunk.n_tokens} embeddings; the engine decodes at most {chunk_limit} "
                    "at once (raise --ubatch-size and --batch-size)")
        mid = media_token_id(chunk.sha256)
        if any(t != mid for t in prompt[chunk.start : chunk.start + chunk.n_tokens]):
            return "a media chunk's prompt positions do not hold its id"
        if any(not 0 <= t < n_vocab for t in prompt[covered : chunk.start]):
            return f"prompt token out of range [0, {n_vocab})"
        covered = chunk.start + chunk.n_tokens
    if covered == len(prompt):
        return "the prompt must not end with a media chunk (its last position's logits start the reply)"
    if any(not 0 <= t < n_vocab for t in prompt[covered:]):
        return f"prompt token out of range [0, {n_vocab})"
    return None


def text_only(tokens: list[int]) -> list[int]:
    """The vocabulary tokens of ``tokens`` (what repetition penalties may look at)."""
    return [t for t in tokens if t >= 0]

