"""What the scheduler reports: a prefill's progress while it runs, a finished request's stats,
a slot's state for /slots, and the engine's state and counters for /slots, /metrics and /health
(built from the scheduler's records, never changing them)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ipc.protocol import EngineStats, PromptProgress, RequestStats, SlotState
from scheduler.request import Request
from scheduler.slots import Slot

if TYPE_CHECKING:
    from scheduler.core import Scheduler


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


def engine_stats(sched: Scheduler, token: int = 0) -> EngineStats:
    """The engine as a whole (the answer to a stats request tagged ``token``)."""
    c = sched.counters
    m = sched.metrics
    return EngineStats(
        token=token,
        slots=[slot_state(s) for ex in sched.executors.values() for s in ex.slots],
        n_waiting=len(sched.waiting) + len(sched.embed.waiting),
        n_running=sum(len(ex.running) for ex in sched.executors.values()),
        requests_finished=c["finished"],
        requests_aborted=c["aborted"],
        requests_failed=c["failed"],
        requests_rejected=c["rejected"],
        executors=[m.executor_stats(ex.id, ex.alive, len(ex.slots), sum(s.busy for s in ex.slots), ex.info.n_ctx,
                                    ex.n_ctx - ex.free_cells) for ex in sched.executors.values()],
        tokens_predicted_seconds_total=m.predicted_seconds,
        n_tokens_max=m.n_tokens_max,
        prompt_tokens_per_second=m.window.prompt_rate(),
        predicted_tokens_per_second=m.window.decode_rate(),
        restarts=m.restarts,
        started_at=m.started_at,
        preemptions_total=c["preempted"],
        vectors_inline_total=c["vectors_inline"],
        steps_planned_ahead_total=c["planned_ahead"],
        lora_scales=list(sched.lora_scales),
        spec_draft_tokens_total=c["spec_draft_tokens"],
        spec_accepted_tokens_total=c["spec_accepted_tokens"],
        spec_drafts_total=c["spec_drafts"],
        spec_accepted_per_pos=list(sched.spec_accepted_per_pos),
    )
