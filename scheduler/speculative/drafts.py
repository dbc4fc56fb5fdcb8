"""Each step's speculative drafts, and what a verified one outputs.

Before a step, every decoding request with speculation on gets its draft for the step (most
get none): proposals from its own tokens, or placeholders for the tokens a draft model will
draft in the executor, with lengths from ``allocate`` within the cells and tokens
the decodes and prompt chunks leave. After it, the executor's sample says how many were
accepted: the rejected tokens leave the cache (a TRUNCATE before the next step), and the
accepted ones and the token sampled after them are the step's output.
"""

from __future__ import annotations

from ipc.protocol import KvOp, KvOpKind, Sample, TokenLogprob
from scheduler.cache import kv
from scheduler.executor_state import ExecutorState
from scheduler.request import Request, Status
from scheduler.speculative.allocation import allocate
from scheduler.speculative.drafter import Acceptance, Drafter, SpecSettings


def plan(spec: SpecSettings, pool: Acceptance, ex: ExecutorState, running: list[Request], budget: int) -> None:
    """Set the draft of every decoding request for this step (drafts never evict, preempt or
    delay a prefill). A request's n_min, when it has one, is a floor as well as a threshold."""
    decoding = [r for r in running if r.status == Status.DECODE]
    # prompts come first: a slot waiting on its prefill produces nothing at all
    prefill = sum(r.prompt_remaining for r in running if r.status == Status.PREFILL)
    proposals: dict[int, list[int]] = {}
    candidates: list[tuple[int, float, int]] = []
    probes: list[int] = []
    for i, req in enumerate(decoding):
        req.draft = []
        # draft tokens that can matter: within the output limit and the slot's context
        limit = min(req.spec_n_max, ex.n_ctx_slot - req.n_computed - 1)
        if req.max_tokens >= 0:
            limit = min(limit, req.max_tokens - len(req.output_ids) - 1)
        if req.ending_banned:  # the ban on ending tokens is lifted between steps
            limit = min(limit, req.min_tokens - len(req.output_ids) - 1)
        if limit < max(1, req.spec_n_min):
            continue
        if req.drafter is None:
            req.drafter = Drafter(req.prompt + req.output_ids, pool.alpha)
        draft = [kv.UNNAMED] * limit if spec.model else req.drafter.propose(spec, limit)
        if len(draft) < max(1, req.spec_n_min):
            continue
        proposals[i] = draft
        candidates.append((i, req.drafter.acceptance.alpha, len(draft)))
        if req.drafter.wants_probe():
            probes.append(i)
    if not candidates:
        return
    spare = max(0, budget - len(decoding) - prefill)
    lengths = allocate(candidates, len(decoding), ex.step_cost, spare, ex.draft_token_seconds)
    spare -= sum(lengths.values())
    for i in proposals:  # floors: n_min, and a probe for a request whose drafts have not paid lately
        floor = decoding[i].spec_n_min or (1 if i in probes else 0)
        if lengths.get(i, 0) < floor <= spare + lengths.get(i, 0):
            spare -= floor - lengths.get(i, 0)
            lengths[i] = floor
    for i, n in lengths.items():
        req = decoding[i]
        if n >= req.spec_n_min:
            req.draft = proposals[i][:n]
            req.drafter.drafted()


def settle(ex: ExecutorState, req: Request, sample: Sample,
           draft_model: bool) -> tuple[list[int], list[TokenLogprob | None], int, int]:
    """A drafting request's step result: its rejected draft tokens leave the books and the
    cache, a draft model's accepted placeholders get their ids. Returns the tokens to output
    (the accepted ones, then the sampled one) with their log-probabilities, and how many tokens
    were drafted and accepted (0, 0: the draft model drafted nothing)."""
    reserved, req.draft = req.draft, []  # the cells the draft was given
    draft = sample.drafted[: len(reserved)] if draft_model else reserved
    n_accepted = max(0, min(sample.n_accepted, len(draft)))
    slot = req.slot
    rejected = len(reserved) - n_accepted
    if rejected:
        keep = len(slot.tokens) - rejected
        kv.truncate(slot, keep)
        ex.kv_ops.append(KvOp(KvOpKind.TRUNCATE, slot.seq_id, keep))
        req.n_computed -= rejected
    if draft_model:  # the placeholders of the accepted tokens get their ids
        kv.name_tokens(slot, len(slot.tokens) - n_accepted, draft[:n_accepted])
    if not draft:
        return [sample.token_id], [sample.logprob], 0, 0
    req.n_draft_tokens += len(draft)
    req.n_draft_accepted += n_accepted
    req.drafter.verified(len(draft), n_accepted)
    logprobs = list(sample.accepted_logprobs) or [None] * n_accepted
    return [*draft[:n_accepted], sample.token_id], [*logprobs[:n_accepted], sample.logprob], len(draft), n_accepted
