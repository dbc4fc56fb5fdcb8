"""Scheduling policy, apart from the loop that runs it: where a request goes, what runs each step.

- Placement: a waiting request goes to the executor holding the longest reusable prefix of its
  prompt (prefix affinity), otherwise to the least loaded one; inside the executor it takes the
  free slot that already holds its prefix, or a free slot into which a busy slot's prefix is
  copied, or the empty / least recently used free slot (evicting that slot's cached prefix).
  A request that names its slot (``id_slot``) waits for that one.
- Batching: every decoding request gets its one token first (with its speculative draft, whose
  length scheduler.speculative decided within the budget); the rest of the step's token
  budget goes to prompt chunks in admission order, so the oldest prefill always advances and no
  request starves. On a CPU no new prompt starts past half the batch (cpu_prompt_split), and
  decodes and prompt chunks take turns (step_requests).
- KV cells: the executor's cache is one pool. A request is admitted when the cells it needs
  (its prompt past the reused prefix, plus a small reserve for its first output tokens) are
  free, after evicting idle cached prefixes least recently used first; a step never plans more
  tokens than there are free cells, and when decoding needs cells that idle prefixes cannot
  give, the newest request is preempted (its cells freed, itself requeued first, recomputed
  later).
- Forking: a request whose prompt another request is still prefilling waits for it and then
  copies its cells, so ``n`` choices of one prompt (or a burst of identical prompts) evaluate it
  once.
- LoRA: a step runs the requests of one adapter set (the adapters apply to the whole decode):
  the set of the request that has waited longest for a step, so sets take turns and none
  starves. A cached prefix is reused only by a request of the set that computed it, and of the
  same cache salt (vLLM's ``cache_salt``): the request's CacheKey.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ggserve.tokens import common_prefix_len
from scheduler.cache import kv
from scheduler.cache.host_cache import HostCacheIndex, HostEntry
from scheduler.cache.reuse import chunk_cuts
from scheduler.media import fit_chunk, snap_reuse
from scheduler.request import CacheKey, Request, Status
from scheduler.slots import Slot

# Prompt chunk per step of a request that wants prompt log-probabilities: each of its tokens
# then has a logits row (1 MiB with Gemma 3's 262k vocabulary).
PROMPT_LOGPROBS_CHUNK = 64

# Prefixes shorter than this do not pull a request to an executor (every prompt shares BOS and
# the chat template's first tokens), nor make it wait for another request's prefill.
AFFINITY_MIN_TOKENS = 16

# Cells kept free at admission for a request's first output tokens (beyond them it competes for
# cells, and preemption settles who waits).
OUTPUT_RESERVE_TOKENS = 16


@dataclass
class Placement:
    slot: Slot  # the free slot the request runs on
    reuse: int  # prompt tokens whose KV is reused
    source: Slot | None  # slot to copy the prefix from; None: the slot's own cache
    host: HostEntry | None = None  # a prefix to restore from host memory instead (--cache-ram)
    # n_cache_reuse: cuts (pos, n) of the slot's own cache lining chunks of it up with the prompt
    # (scheduler.cache.reuse); ``reuse`` counts the chunks
    cuts: list[tuple[int, int]] = field(default_factory=list)


def reusable_prefix(slot: Slot, prompt: list[int], n_swa: int, key: CacheKey) -> int:
    """How many leading prompt tokens of ``slot``'s cache can be reused by a new request of cache
    key ``key`` (none if the slot's cache was computed with another adapter set, or another salt).

    At least one prompt token is always evaluated (its logits give the first sampled token). With
    sliding-window attention, continuing at position q needs the window cells before q, which
    llama.cpp may already have overwritten: only reuse if they are all still there. After a
    context shift only the kept tokens hold what a prefill of them would.
    """
    if not slot.tokens or slot.cache_key != key:
        return 0
    m = snap_reuse(prompt, min(common_prefix_len(slot.tokens, prompt), len(prompt) - 1))
    if slot.shift_keep >= 0:
        m = min(m, slot.shift_keep)
    if m <= 0:
        return 0
    if n_swa > 0 and slot.pos_min > max(0, m - n_swa):
        return 0
    return m


def place(slots: list[Slot], prompt: list[int], n_swa: int, reuse_allowed: bool, key: CacheKey) -> Placement | None:
    free = [s for s in slots if not s.busy]
    if not free:
        return None
    if not reuse_allowed:
        return Placement(victim(free), 0, None)
    own = max(free, key=lambda s: reusable_prefix(s, prompt, n_swa, key))
    own_reuse = reusable_prefix(own, prompt, n_swa, key)
    busy = [s for s in slots if s.busy]
    donor = max(busy, key=lambda s: reusable_prefix(s, prompt, n_swa, key), default=None)
    donor_reuse = reusable_prefix(donor, prompt, n_swa, key) if donor is not None else 0
    if donor is not None and donor_reuse > own_reuse:
        return Placement(victim(free), donor_reuse, donor)
    if own_reuse > 0:
        return Placement(own, own_reuse, None)
    return Placement(victim(free), 0, None)


def place_pinned(slots: list[Slot], executor_id: int, id_slot: int, prompt: list[int], n_swa: int,
                 reuse_allowed: bool, key: CacheKey) -> Placement | None:
    """A request that asked for slot ``id_slot`` (numbered across executors): on it, reusing its
    own cached prefix, if it is one of ``slots`` (executor ``executor_id``'s) and free."""
    owner, index = divmod(id_slot, len(slots))
    if owner != executor_id or slots[index].busy:
        return None
    slot = slots[index]
    return Placement(slot, reusable_prefix(slot, prompt, n_swa, key) if reuse_allowed else 0, None)


def from_host_cache(placement: Placement, host_cache: HostCacheIndex, slots: list[Slot], prompt: list[int],
                    n_swa: int, key: CacheKey) -> Placement:
    """The placement restoring a prefix from host memory (--cache-ram) instead, when that reuses
    clearly more: into the placement's own slot, or the free slot it would have evicted."""
    entry, reuse = host_cache.best(prompt, n_swa, key)
    if entry is None or reuse < placement.reuse + AFFINITY_MIN_TOKENS:
        return placement
    slot = placement.slot if placement.source is None else victim([s for s in slots if not s.busy])
    return Placement(slot, reuse, None, entry)


def with_chunks(placement: Placement, slots: list[Slot], prompt: list[int], min_chunk: int,
                key: CacheKey) -> Placement:
    """The placement reusing chunks of its slot's own cache past the shared prefix
    (n_cache_reuse), when there are some. Cells other sequences share never move; a cache
    computed with another adapter set is no use."""
    slot = placement.slot
    if placement.source is not None or placement.host is not None or not slot.tokens or slot.cache_key != key:
        return placement
    first = max((kv.shared_end(slot, other) for other in slots if other is not slot and other.tokens), default=0)
    cuts, reuse = chunk_cuts(slot.tokens, prompt, placement.reuse, first, min_chunk)
    if reuse == placement.reuse:
        return placement
    return Placement(slot, min(reuse, len(prompt) - 1), None, cuts=cuts)


def victim(free: list[Slot]) -> Slot:
    """Empty slots first, then the least recently used cached prefix is evicted."""
    return min(free, key=lambda s: (len(s.tokens) > 0, s.last_used))


def best_prefix(slots: list[Slot], prompt: list[int], n_swa: int, key: CacheKey) -> int:
    return max((reusable_prefix(s, prompt, n_swa, key) for s in slots), default=0)


def choose_executor(
    candidates: dict[int, list[Slot]], prompt: list[int], n_swa: int, reuse_allowed: bool, key: CacheKey
) -> int | None:
    """Executor for a request among those with a free slot: prefix affinity, then least load."""
    open_ = {e: slots for e, slots in candidates.items() if any(not s.busy for s in slots)}
    if not open_:
        return None
    if reuse_allowed:
        affinity = {e: best_prefix(slots, prompt, n_swa, key) for e, slots in open_.items()}
        best = max(affinity, key=lambda e: affinity[e])
        if affinity[best] >= AFFINITY_MIN_TOKENS:
            return best
    return min(open_, key=lambda e: (sum(s.busy for s in open_[e]), e))


def cells_needed(req: Request, reuse: int, n_ctx_request: int) -> int:
    """Free cells a request needs to be admitted with ``reuse`` tokens of its sequence cached."""
    n = len(req.seq_tokens)
    return n - reuse + min(OUTPUT_RESERVE_TOKENS, max(0, n_ctx_request - n))


def awaits_donor(running: list[Request], tokens: list[int], reusable_now: int, key: CacheKey) -> bool:
    """Whether a running request of cache key ``key`` is still prefilling a longer shared
    prefix of ``tokens`` than can be reused now: then it is cheaper to wait one step and copy
    its cells."""
    useful = len(tokens) - 1  # the last token is always evaluated
    for other in running:
        if other.status != Status.PREFILL or other.cache_key != key:
            continue
        shared = min(common_prefix_len(other.seq_tokens, tokens), useful)
        if other.n_computed < shared and shared >= reusable_now + AFFINITY_MIN_TOKENS:
            return True
    return False


def n_decoding(running: list[Request]) -> int:
    """Cells the decoding requests need this step: one each."""
    return sum(r.status == Status.DECODE for r in running)


def preemption_victim(running: list[Request]) -> Request | None:
    """The newest running request that can be recomputed later: not one still reporting its
    prompt's log-probabilities (they would be reported twice); once it decodes it has reported
    them all, and it resumes without them."""
    return next((r for r in reversed(running) if r.prompt_logprobs < 0 or r.status == Status.DECODE), None)


def lora_turn(running: list[Request]) -> list[Request]:
    """The running requests of the adapter set whose turn it is: the set of the request that has
    waited longest for a step (its slot's ``last_used``; admission order breaks ties)."""
    if not running:
        return running
    turn = min(running, key=lambda r: r.slot.last_used).lora
    return [r for r in running if r.lora == turn]


# llama.cpp's CPU flash attention takes query rows 64 at a time (GGML_FA_TILE_Q) once a batch
# has that many, and skips a tile of cached cells only if every row of the query tile masks all
# of them. Decode rows of several sequences in one query tile mask almost nothing, so that tile
# runs against the whole cache: beside 8 cached 600-token sequences (2 cores), a 512-token prompt
# step took 1,005 ms alone, 68 ms for the 8 decodes alone, and 1,285 ms with both in it.
CPU_QUERY_TILE = 64


def step_requests(running: list[Request], budget: int, on_cpu: bool, prompt_turn: bool) -> tuple[list[Request], bool]:
    """The running requests this step may serve, and whether it was a turn of one kind.

    On a CPU a step that would hold decodes and at least CPU_QUERY_TILE rows in all serves one
    kind only, decodes and prompt chunks taking turns (``prompt_turn``: the prompts' turn): two
    steps cost less than the mixed one, and the decodes' tokens come no later. A GPU runs the
    mixed step at no extra cost, so there every step takes both. (A prompts' turn whose picture
    finds no room plans nothing: the scheduler's next tick gives the decodes their turn.)"""
    decoding = [r for r in running if r.status == Status.DECODE]
    prefill = sum(r.prompt_remaining for r in running if r.status == Status.PREFILL)
    if not on_cpu or not decoding or not prefill or len(decoding) + min(prefill, budget) < CPU_QUERY_TILE:
        return running, False
    if prompt_turn:
        return [r for r in running if r.status != Status.DECODE], True
    return decoding, True


def plan_batch(running: list[Request], budget: int, prompt_split: int = 0) -> list[tuple[Request, int]]:
    """(request, number of tokens) for this step: decodes first (the pending token and the
    request's draft, cut to the budget), then prompt chunks, in order; with ``prompt_split``,
    no further request's prompt starts once the step holds that many prompt tokens (see
    cpu_prompt_split).

    ``running`` is in admission order. A prompt chunk that completes the prompt is sampled.
    """
    chosen: list[tuple[Request, int]] = []
    for req in running:
        if req.status == Status.DECODE and budget > 0:
            n = min(1 + len(req.draft), budget)
            del req.draft[n - 1 :]
            chosen.append((req, n))
            budget -= n
    n_prompt = 0
    for req in running:
        if budget <= 0 or prompt_split and n_prompt >= prompt_split:
            break
        if req.status == Status.PREFILL and req.prompt_remaining > 0:
            n = min(req.prompt_remaining, budget)
            if req.prompt_logprobs >= 0:
                n = min(n, PROMPT_LOGPROBS_CHUNK)
            if req.media_chunks:  # text or one whole image / clip (scheduler.media)
                n = fit_chunk(req.media_chunks, req.seq_tokens, req.n_computed, n)
                if n == 0:
                    continue
            chosen.append((req, n))
            budget -= n
            n_prompt += n
    return chosen


def cpu_prompt_split(n_batch: int) -> int:
    """On a CPU a step costs its tokens: a burst of prompts prefilled in one step gets all its
    first tokens after the whole step; in two steps half of them come a step sooner. So a step
    stops taking new prompts at half the batch; the oldest prompt's chunk still gets the whole
    budget, which keeps a long prompt's chunks (and its time) as they were. Measured on the
    embedded model (2 cores, waves of 16 x 32-token prompts): mean TTFT -18%, the last one's +5%,
    throughput within the noise (docs/benchmarks.md, session 12)."""
    return n_batch // 2
