"""What the scheduler refuses when a request arrives: the checks that end a bad or untimely
request with its error at once (it never waits in the queue), for generation and embeddings.

The frontend checks what it can see (the request's JSON, the model's vocabulary); these are the
facts only the engine knows: its executors' context and batch sizes, slots, media support,
LoRA adapters, the queue's length, whether it is loading or draining.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ipc.protocol import AddRequest, EmbedRequest, EngineError, ErrorCode
from scheduler import lora, media

if TYPE_CHECKING:
    from scheduler.core import Scheduler


def call_problem(sched: Scheduler, msgs: list[AddRequest]) -> EngineError | None:
    """Why the engine requests of one API call are refused (together), or None. A full queue
    refuses the call whole: its own choices do not count against it, nor do requests an idle
    slot is about to take (--max-queue 0: a call runs only when a slot is free for it)."""
    for msg in msgs:
        problem = _request_problem(sched, msg)
        if problem is not None:
            return problem
    # what waits for a slot: the queue less the idle slots its head is about to take
    free = sum(not slot.busy for ex in sched.executors.values() if ex.alive for slot in ex.slots)
    backlog = len(sched.waiting) - free
    if backlog >= sched.max_queue:
        return EngineError(ErrorCode.OVERLOADED, f"{max(backlog, 0)} requests are waiting for a slot "
                           f"(--max-queue {sched.max_queue})")
    return None


def _request_problem(sched: Scheduler, msg: AddRequest) -> EngineError | None:
    """Why a generation request is refused, or None (the queue's length aside: see call_problem)."""
    problem = _not_now(sched, msg.request_id)
    if problem is not None:
        return problem
    if sched.embedding:
        return EngineError(ErrorCode.INVALID_REQUEST, "this server computes embeddings only (--embeddings)")
    prompt = msg.prompt_token_ids
    if not prompt:
        return EngineError(ErrorCode.INVALID_REQUEST, "the prompt is empty")
    infos = [e.info for e in sched.executors.values()]
    # a chunk is decoded in one micro-batch, and must fit a step beside every slot's decode
    chunk_limit = min(min(i.n_ubatch, i.n_batch - i.n_slots) for i in infos)
    media_problem = media.problem(msg, min(i.n_vocab for i in infos), chunk_limit, sched.n_ctx_slot,
                                  all(i.vision for i in infos), all(i.audio for i in infos))
    if media_problem is not None:
        return EngineError(ErrorCode.INVALID_REQUEST, media_problem)
    if len(prompt) >= sched.n_ctx_slot:
        return EngineError(
            ErrorCode.INVALID_REQUEST,
            f"the prompt has {len(prompt)} tokens; a request holds at most {sched.n_ctx_slot}",
        )
    n_slots = sum(len(e.slots) for e in sched.executors.values())
    if msg.id_slot >= n_slots:
        return EngineError(ErrorCode.INVALID_REQUEST, f"id_slot {msg.id_slot} does not exist ({n_slots} slots)")
    lora_problem = lora.problem(msg.lora, len(sched.lora_scales)) if msg.lora else None
    if lora_problem is not None:
        return EngineError(ErrorCode.INVALID_REQUEST, lora_problem)
    return None


def embedding_problem(sched: Scheduler, msg: EmbedRequest) -> EngineError | None:
    """Why an embedding request is refused, or None."""
    problem = _not_now(sched, msg.request_id)
    if problem is not None:
        return problem
    if not sched.embedding:
        return EngineError(ErrorCode.INVALID_REQUEST, "this server does not compute embeddings (--embeddings)")
    if not msg.inputs:
        return EngineError(ErrorCode.INVALID_REQUEST, "no inputs")
    n_vocab = min(e.info.n_vocab for e in sched.executors.values())
    limit = sched.embed_input_limit
    for i, tokens in enumerate(msg.inputs):
        if not tokens:
            return EngineError(ErrorCode.INVALID_REQUEST, f"input {i} is empty")
        if min(tokens) < 0 or max(tokens) >= n_vocab:
            return EngineError(ErrorCode.INVALID_REQUEST, f"input {i} has a token out of range [0, {n_vocab})")
        if len(tokens) > limit:
            return EngineError(ErrorCode.INVALID_REQUEST,
                               f"input {i} has {len(tokens)} tokens; an input may have at most {limit}")
    if len(sched.embed.waiting) >= sched.max_queue:
        return EngineError(ErrorCode.OVERLOADED, f"{len(sched.embed.waiting)} requests are waiting")
    return None


def _not_now(sched: Scheduler, request_id: str) -> EngineError | None:
    """Why no request can be taken now (draining, loading) or this id is taken, or None."""
    if sched.draining:
        return EngineError(ErrorCode.SHUTTING_DOWN, "the server is shutting down")
    if not sched.ready:
        return EngineError(ErrorCode.SHUTTING_DOWN, "the engine is still loading")
    if request_id in sched.requests or request_id in sched.embed.jobs:
        return EngineError(ErrorCode.INVALID_REQUEST, f"duplicate request id {request_id}")
    return None
