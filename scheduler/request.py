"""A request's life inside the scheduler: an explicit state machine plus its token bookkeeping."""

from __future__ import annotations

import enum

from ipc.protocol import AddRequest, SamplingParams
from scheduler.lora import NO_LORA, LoraKey
from scheduler.media import text_only


# Who may reuse the cells a request computes: requests of the same LoRA adapter set (the cells
# are what that set computed) and of the same cache salt (vLLM's cache_salt: clients that must
# not learn of each other's prompts from a faster answer share no cached prefix).
CacheKey = tuple[LoraKey, str]
NO_KEY: CacheKey = (NO_LORA, "")


class Status(enum.IntEnum):
    WAITING = 0  # in the queue, no slot
    PREFILL = 1  # has a slot; prompt not yet fully in the KV cache
    DECODE = 2  # generating; ``pending_token`` is the next token to feed
    FINISHED = 3


class Request:
    __slots__ = (
        "id", "peer", "prompt", "max_tokens", "sampling", "stop_token_ids", "ignore_eos",
        "logprobs", "prompt_logprobs", "return_progress", "id_slot", "cache_prompt", "status", "output_ids", "slot",
        "n_computed", "n_cached", "pending_token", "t_arrival", "t_admitted", "t_first_token", "t_last_token",
        "seq_tokens", "n_preempted", "n_keep", "n_discard", "context_limited", "truncated", "n_cache_reuse", "lora",
        "spec_n_max", "spec_n_min", "spec_p_min", "drafter", "draft", "n_draft_tokens", "n_draft_accepted",
        "media", "media_chunks", "min_tokens", "ending_banned", "cache_salt", "n_shifted",
    )  # fmt: skip

    def __init__(self, msg: AddRequest, peer: bytes, max_tokens: int, now: float, context_limited: bool) -> None:
        self.id: str = msg.request_id
        self.peer = peer  # frontend worker that owns the request
        self.prompt: list[int] = msg.prompt_token_ids
        self.max_tokens = max_tokens  # -1: no limit (a context that shifts)
        self.context_limited = context_limited  # max_tokens is the room the context leaves
        self.truncated = False  # its context was shifted, or it stopped for want of context
        self.n_keep = msg.n_keep  # context shift: tokens kept at the start, and how many are dropped
        self.n_discard = msg.n_discard
        self.n_shifted = 0  # tokens its context shifts dropped (gone from its sequence)
        # Images and audio of the prompt (scheduler.media), and start -> n_tokens of each.
        self.media = msg.media
        self.media_chunks = {chunk.start: chunk.n_tokens for chunk in msg.media}
        # reuse cached chunks of at least this many tokens (0: off; shifting would cut media)
        self.n_cache_reuse = 0 if msg.media else msg.n_cache_reuse
        self.sampling: SamplingParams = msg.sampling
        self.stop_token_ids = frozenset(msg.stop_token_ids)
        self.min_tokens = msg.min_tokens
        self.ending_banned = False  # its sequence's sampler bans the ending tokens (min_tokens)
        self.ignore_eos = msg.ignore_eos
        self.logprobs = msg.logprobs
        self.prompt_logprobs = msg.prompt_logprobs
        self.return_progress = msg.return_progress
        self.id_slot = msg.id_slot
        # Prompt log-probabilities need the logits of every prompt position: nothing is reused.
        self.cache_prompt = msg.cache_prompt and msg.prompt_logprobs < 0
        self.status = Status.WAITING
        self.output_ids: list[int] = []
        self.slot = None  # scheduler.slots.Slot while running
        self.n_computed = 0  # tokens of this request (prompt, then output) in the KV cache
        # What its sequence must hold before it samples again: the prompt, and after a
        # preemption what the sequence held and the token to feed (recomputed on resumption):
        # the prompt and every token generated so far, less what context shifts dropped.
        self.seq_tokens: list[int] = self.prompt
        self.n_preempted = 0
        self.lora: LoraKey = NO_LORA  # the adapter set it runs with (set by the scheduler)
        self.cache_salt = msg.cache_salt
        self.n_cached = 0  # prompt tokens reused from the prefix cache
        self.pending_token = -1
        self.t_arrival = now
        self.t_admitted = 0.0
        self.t_first_token = 0.0
        self.t_last_token = 0.0
        # Speculative decoding: draft tokens per step at most (0: none) and at least, the
        # request's drafter (made at its first decode), the draft of the step in flight, counts.
        self.spec_n_max = 0
        self.spec_n_min = 0
        self.spec_p_min = 0.0  # a draft model stops drafting below this probability
        self.drafter = None  # scheduler.speculative.drafter.Drafter
        self.draft: list[int] = []
        self.n_draft_tokens = 0
        self.n_draft_accepted = 0

    @property
    def cache_key(self) -> CacheKey:
        return self.lora, self.cache_salt

    @property
    def penalty_context(self) -> list[int]:
        """The prompt tokens the sampler chain's repetition samplers look back over (llama-server
        feeds them the whole prompt; only the last ``repeat_last_n`` / ``dry_penalty_last_n`` count)."""
        p = self.sampling
        lookback = 0
        if p.repeat_penalty != 1.0 or p.presence_penalty != 0.0 or p.frequency_penalty != 0.0:
            lookback = p.repeat_last_n
        if p.dry_multiplier != 0.0:
            lookback = max(lookback, p.dry_penalty_last_n)
        if lookback <= 0:
            return []
        return (text_only(self.prompt) if self.media else self.prompt)[-lookback:]

    @property
    def n_evaluated_prompt(self) -> int:
        """Prompt tokens run through the model (not taken from the prefix cache)."""
        return max(0, min(self.n_computed + self.n_shifted, len(self.prompt)) - self.n_cached)

    @property
    def prompt_remaining(self) -> int:
        """Tokens of ``seq_tokens`` still to prefill."""
        return len(self.seq_tokens) - self.n_computed
