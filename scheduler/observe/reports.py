"""What the scheduler reports about requests and slots: a prefill's progress while it runs, a
finished request's stats, and a slot's state for /slots (built from the scheduler's records,
never changing them)."""

from __future__ import annotations

from ipc.protocol import PromptProgress, RequestStats, SlotState
from scheduler.request import Request
from scheduler.slots import Slot


def prompt_progress(req: Request, now: float) -> PromptProgress:
    """How far the request's prefill is (llama-server's ``prompt_progress``)."""
    return PromptProgress(len(req.prompt), req.n_cached, min(req.n_computed, len(req.prompt)),
                          int((now - req.t_admitted) * 1e3))


def request_stats(req: Request) -> RequestStats:
    """What a finished request reports (its output's ``stats``: timings, counts, where it ran)."""
    slot = req.slot
    admitted = req.t_admitted or req.t_arrival
    first = req.t_first_token or admitted
    return RequestStats(
        n_prompt_tokens=len(req.prompt),
        n_cached_tokens=req.n_cached,
        n_evaluated_prompt_tokens=req.n_evaluated_prompt,
        n_generated_tokens=len(req.output_ids),
        queue_ms=(admitted - req.t_arrival) * 1000,
        prefill_ms=(first - admitted) * 1000,
        decode_ms=((req.t_last_token or first) - first) * 1000,
        executor_id=slot.executor_id if slot else -1,
        slot_id=slot.seq_id if slot else -1,
        truncated=req.truncated,
        n_draft_tokens=req.n_draft_tokens,
        n_draft_accepted=req.n_draft_accepted,
    )


def slot_state(slot: Slot) -> SlotState:
    """A slot as /slots shows it: its cache, and the last request it ran."""
    state = SlotState(slot.seq_id, slot.executor_id, slot.busy, n_cached_tokens=len(slot.tokens))
    req = slot.last_request
    if req is not None:
        state.request_id = req.id
        state.n_prompt_tokens = len(req.prompt)
        state.n_generated_tokens = len(req.output_ids)
        state.n_prompt_tokens_cached = req.n_cached
        state.n_prompt_tokens_processed = req.n_evaluated_prompt
        state.max_tokens = req.max_tokens
        state.sampling = req.sampling
        state.ignore_eos = req.ignore_eos
        state.logprobs = req.logprobs
    return state
