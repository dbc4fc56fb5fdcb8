"""The scheduler's state machine, free of sockets so it can be driven by tests.

The loop (scheduler.loop) feeds it messages and asks it for the next StepPlan of each idle
executor, and, while a decode step runs, for the step behind it (``next_follow_plan``:
asynchronous scheduling); it accumulates the RequestOutputs to send to each frontend peer.
Every request ends in exactly one terminal output (stop, length, abort or error) and frees its
slot.

Here: a request's life (arrival, admission into a slot, steps, tokens, its end) and the
executors'. Its parts, each a module: what is refused at arrival (scheduler.validation),
where a request goes and what a step holds (scheduler.policy), room in the KV pool
(scheduler.cache.room), speculative drafts (scheduler.speculative), slot files
(scheduler.slot_files), embeddings (scheduler.embedding), what is reported
(scheduler.observe).
"""

from __future__ import annotations

import collections
import logging
import math
import time

import msgspec

from ipc.protocol import (
    AddRequest,
    BatchItem,
    EmbedPlan,
    EmbedRequest,
    EmbedResult,
    EndReasoning,
    EndReasoningDone,
    EngineError,
    EngineStats,
    ErrorCode,
    ExecutorInfo,
    FinishReason,
    KvOp,
    KvOpKind,
    LoraScale,
    RequestOutput,
    Sample,
    SeqStart,
    SlotAction,
    SlotActionDone,
    SlotActionKind,
    StepPlan,
    StepResult,
    TokenLogprob,
)
from scheduler import lora, policy, slot_files, validation
from scheduler.cache import kv, room
from scheduler.embedding.jobs import EmbedJob, EmbedQueue
from scheduler.executor_state import ExecutorState, FileAction
from scheduler.observe.metrics import EngineCounters
from scheduler.observe.reports import engine_stats, prompt_progress, request_stats
from scheduler.request import CacheKey, Request, Status
from scheduler.speculative import drafts
from scheduler.speculative.drafter import POOL_DECAY, Acceptance, SpecSettings

log = logging.getLogger("scheduler")

# The counter (EngineStats' requests_*) a request's end adds to; every other end is "finished".
_COUNTER_OF = {FinishReason.ABORT: "aborted", FinishReason.ERROR: "failed"}


class Scheduler:
    """Every request from arrival to its terminal output, across the executors."""

    def __init__(
        self,
        n_executors: int,
        max_queue: int,
        prefix_cache: bool = True,
        n_batch: int = 512,
        ctx_per_request: int = 0,
        cache_ram_bytes: int = 0,
        context_shift: bool = False,
        lora_scales: list[float] | None = None,
        spec: SpecSettings | None = None,
    ) -> None:
        self.n_executors = n_executors
        self.spec = spec or SpecSettings("", 0, 0, 0, 1)  # speculative decoding (--spec-*)
        self.spec_accepted_per_pos: list[int] = []  # accepted draft tokens by draft position
        self.spec_pool = Acceptance(decay=POOL_DECAY)  # every request's: a new one's prior
        self.context_shift_asked = context_shift  # --context-shift
        self.context_shift = False  # asked, and every executor's cache can shift
        # The global scale of each LoRA adapter (POST /lora-adapters); empty: none loaded.
        self.lora_scales = list(lora_scales or [])
        self.cache_ram_bytes = cache_ram_bytes  # host memory for evicted prefixes; < 0: no limit
        self.ctx_per_request = ctx_per_request  # 0: a request may use the whole pool
        self.max_queue = max_queue
        self.prefix_cache = prefix_cache
        self.n_batch = n_batch
        self.executors: dict[int, ExecutorState] = {}
        self.draining = False  # new requests are refused; running and queued ones finish
        self.waiting: collections.deque[Request] = collections.deque()
        self.requests: dict[str, Request] = {}  # every unfinished request
        self.outputs: dict[bytes, list[RequestOutput]] = collections.defaultdict(list)
        self.replies: list[tuple[bytes, SlotActionDone | EndReasoningDone]] = []  # to frontend peers
        self.file_keys: dict[str, CacheKey] = {}  # slot files saved in this run: the cache key of their cells
        self._step_ids = 0
        self.counters = collections.Counter[str]()
        self.metrics = EngineCounters()
        self.embed = EmbedQueue(self._embed_ended)  # an embedding server's requests

    # ------------------------------------------------------------------ executors

    @property
    def ready(self) -> bool:
        """Every executor reported ready once (the engine's facts are known)."""
        return len(self.executors) == self.n_executors

    @property
    def n_alive(self) -> int:
        return sum(e.alive for e in self.executors.values())

    @property
    def n_ctx_slot(self) -> int:
        return min(e.n_ctx_slot for e in self.executors.values())

    @property
    def embedding(self) -> bool:
        """An embedding server: its executors run EmbedPlans, never generation."""
        return any(e.info.pooling >= 0 for e in self.executors.values())

    @property
    def embed_input_limit(self) -> int:
        """Tokens one embedding input may have: it runs whole in one decode, within the KV pool
        and the positions the model was trained on (BERT's position table has no more)."""
        return min(min(e.n_batch, e.n_ctx, e.info.n_ctx_train) for e in self.executors.values())

    @property
    def n_unfinished(self) -> int:
        return len(self.requests) + len(self.embed.jobs)

    def executor_ready(self, info: ExecutorInfo) -> None:
        """A new executor process, or a restarted one: it starts with empty slots and cache."""
        self.n_batch = min(self.n_batch, info.n_batch)
        old = self.executors.get(info.executor_id)
        if old is not None:
            error = EngineError(ErrorCode.EXECUTOR_FAILED, "the executor was restarted")
            self.replies += slot_files.fail_pending(old, error)
            self.embed.fail_executor(info.executor_id, error, time.monotonic())  # a no-op once its death was seen
        self.executors[info.executor_id] = ExecutorState(
            info.executor_id, info, self.n_batch, self.ctx_per_request, self.cache_ram_bytes
        )
        if self.context_shift_asked and not info.can_shift:
            log.warning("context shift is not supported by this model's KV cache (%s); it is disabled: a request "
                        "that fills its context stops there", "sliding window" if info.n_swa else "cannot shift")
        self.context_shift = self.context_shift_asked and all(e.info.can_shift for e in self.executors.values())

    def executor_failed(self, executor_id: int, message: str, pid: int = 0) -> None:
        """The executor is gone: fail what ran on it; queued requests wait for a live executor
        (while the server drains, none comes back: with none left they fail).

        ``pid`` (when known) names the process that failed: news of a process that has already
        been replaced is ignored.
        """
        ex = self.executors.get(executor_id)
        if ex is None or not ex.alive or (pid and pid != ex.info.pid):
            return
        log.error("executor %d failed: %s", executor_id, message)
        ex.alive = False
        ex.in_flight = ex.queued = None
        error = EngineError(ErrorCode.EXECUTOR_FAILED, f"executor {executor_id} failed: {message}")
        for req in list(ex.running):
            self._finish(req, FinishReason.ERROR, error)
        self.embed.fail_executor(executor_id, error, time.monotonic())
        self.replies += slot_files.fail_pending(ex, error)
        if self.draining and self.n_alive == 0:  # none is restarted while the server stops: nothing will run
            self.fail_all(EngineError(ErrorCode.SHUTTING_DOWN, "the server is shutting down and its executors "
                                      "are gone"))

    def hung_executors(self, now: float, step_timeout: float) -> list[ExecutorState]:
        """Live executors whose step has run longer than ``step_timeout`` seconds."""
        return [
            ex
            for ex in self.executors.values()
            if ex.alive and ex.in_flight is not None and now - ex.step_sent_at > step_timeout
        ]

    def fail_all(self, error: EngineError) -> int:
        """End every unfinished request with ``error``; returns how many there were."""
        unfinished = list(self.requests.values())
        for req in unfinished:
            self._finish(req, FinishReason.ERROR, error)
        return len(unfinished) + self.embed.fail_all(error, time.monotonic())

    # ------------------------------------------------------------------ requests

    def set_lora_scales(self, scales: list[LoraScale]) -> None:
        """POST /lora-adapters: the new global scales (adapters not listed: 0) for later requests."""
        problem = lora.problem(scales, len(self.lora_scales))
        if problem is not None:
            log.warning("dropped a LoRA scale change: %s", problem)
            return
        self.lora_scales = [0.0] * len(self.lora_scales)
        for entry in scales:
            self.lora_scales[entry.id] = entry.scale

    def add_request(self, msg: AddRequest, peer: bytes, now: float | None = None) -> None:
        self.add_requests([msg], peer, now)

    def add_requests(self, msgs: list[AddRequest], peer: bytes, now: float | None = None) -> None:
        """The engine requests of one API call: queued together, or all refused with the first
        problem found (the queue's limit counts what waits before the call, not its own choices)."""
        now = time.monotonic() if now is None else now
        rejection = validation.call_problem(self, msgs)
        if rejection is not None:
            for msg in msgs:
                self._reject(msg.request_id, peer, rejection)
            return
        for msg in msgs:
            self._queue(msg, peer, now)

    def _queue(self, msg: AddRequest, peer: bytes, now: float) -> None:
        if self.context_shift and not msg.media:  # a shift could cut a picture in two
            req = Request(msg, peer, msg.max_tokens, now, context_limited=False)
        else:
            room = self.n_ctx_slot - len(msg.prompt_token_ids)
            req = Request(msg, peer, room if msg.max_tokens < 0 else min(msg.max_tokens, room), now,
                          context_limited=msg.max_tokens < 0 or msg.max_tokens >= room)
        req.lora = lora.request_key(msg.lora, self.lora_scales)
        if self.spec.enabled:
            own = msg.speculative
            req.spec_n_max = self.spec.n_max if own is None or own.n_max is None else own.n_max
            req.spec_n_min = self.spec.n_min if own is None or own.n_min is None else own.n_min
            req.spec_p_min = self.spec.p_min if own is None or own.p_min is None else own.p_min
        self.requests[req.id] = req
        self.waiting.append(req)

    def add_embedding(self, msg: EmbedRequest, peer: bytes, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        rejection = validation.embedding_problem(self, msg)
        if rejection is not None:
            self._reject(msg.request_id, peer, rejection)
            return
        self.embed.add(msg, peer, now)

    def _reject(self, request_id: str, peer: bytes, error: EngineError) -> None:
        self.counters["rejected"] += 1
        self.outputs[peer].append(RequestOutput(request_id, finish_reason=FinishReason.ERROR, error=error))

    def abort(self, request_ids: list[str], reason: FinishReason = FinishReason.ABORT) -> None:
        """End these requests (``reason``: see ipc.protocol.Abort)."""
        for rid in request_ids:
            req = self.requests.get(rid)
            if req is not None:
                self._finish(req, reason)
            else:
                self.embed.abort(rid, time.monotonic())

    def abort_peer(self, peer: bytes) -> set[str]:
        """A frontend worker disappeared: abort everything it owned, free the vectors it held, drop
        what was to be sent to it. Returns the ids of its requests whose end it was not told."""
        owned = [r.id for r in self.requests.values() if r.peer == peer]
        unanswered = {*owned, *(job.id for job in self.embed.jobs.values() if job.peer == peer)}
        self.abort(owned)
        self.embed.forget_peer(peer, time.monotonic())
        return unanswered | {out.request_id for out in self.outputs.pop(peer, [])}

    def vectors_read(self, peer: bytes, request_ids: list[str]) -> None:
        """The peer copied these requests' vectors: their arena regions may be reused."""
        self.embed.vectors_read(peer, request_ids)

    # ------------------------------------------------------------------ steps

    def next_plan(self, executor_id: int, now: float | None = None) -> StepPlan | EmbedPlan | None:
        """Admit waiting requests and build the executor's next step; None when it has no work."""
        now = time.monotonic() if now is None else now
        ex = self.executors[executor_id]
        if not ex.idle:
            return None
        if ex.file_actions:  # a slot file's step runs alone
            failure = slot_files.start(ex, self.counters)
            if failure is not None:
                self.replies.append(failure)
            return self._send_plan(ex, [], {}, 0, now)
        if ex.info.pooling >= 0:
            return self._next_embed_plan(ex, now)
        self._make_room_for_decodes(ex)
        self._make_room_for_chunk(ex)  # before admissions: one admitted now would be its first victim
        self._admit(ex, now)
        # A step runs one LoRA adapter set; with no adapter loaded every request has the same.
        running = policy.lora_turn(ex.running) if self.lora_scales else ex.running
        budget = min(ex.budget, ex.free_cells)
        running, turn = policy.step_requests(running, budget, ex.info.device == "cpu", ex.prompt_turn)
        ex.prompt_turn ^= turn
        if self.spec.enabled:
            drafts.plan(self.spec, self.spec_pool, ex, running, budget)
        split = policy.cpu_prompt_split(ex.n_batch) if ex.info.device == "cpu" else 0
        chosen = policy.plan_batch(running, budget, split)
        if not chosen and ex.budget < min(ex.n_batch, ex.free_cells):
            # A budget cut after a refused step must not idle the executor: with nothing else to
            # run, the doubling that restores it never comes, and a media chunk goes whole or not.
            ex.budget = ex.n_batch
            chosen = policy.plan_batch(running, min(ex.budget, ex.free_cells), split)
        if not chosen and not ex.kv_ops and not ex.ends:
            return None
        items: list[BatchItem] = []
        in_flight: dict[int, tuple[Request, int]] = {}
        n_prompt = 0
        for req, n in chosen:
            slot = req.slot
            draft = len(req.draft) if req.status == Status.DECODE else 0
            if req.status == Status.DECODE:
                tokens = [req.pending_token, *req.draft]  # a draft model's tokens: placeholders
                sample = True
            else:
                tokens = req.seq_tokens[req.n_computed : req.n_computed + n]
                sample = req.n_computed + n == len(req.seq_tokens)
                n_prompt += n
            # the prompt token following each position (the last position samples instead)
            targets = req.prompt[req.n_computed + 1 : req.n_computed + n + 1] if (
                req.prompt_logprobs >= 0 and req.status == Status.PREFILL
            ) else []
            if self.spec.model:
                items.append(BatchItem(slot.seq_id, tokens[: len(tokens) - draft], req.n_computed, sample, targets,
                                       draft_model=draft))
            else:
                items.append(BatchItem(slot.seq_id, tokens, req.n_computed, sample, targets, draft))
            req.n_computed += n
            kv.append(slot, tokens)
            slot.last_used = now
            in_flight[slot.seq_id] = (req, n)
        return self._send_plan(ex, items, in_flight, n_prompt, now)

    def next_follow_plan(self, executor_id: int, now: float | None = None) -> StepPlan | None:
        """The step after the one running, planned before its result (asynchronous scheduling,
        as vLLM's): one decode of each request in the running step, feeding the token that step
        samples for it (its first, after its prompt's last chunk), which the executor puts in
        (BatchItem.follows). The executor starts it the moment the running step ends, so this
        process's round trip (the result, its bookkeeping, the next plan) no longer idles it.
        A request whose running step is its last (``max_tokens``) is left out: it ends with that
        result. Anything else waits for the result and a full plan (None here): a request that
        may be admitted, a prompt chunk that is not a prompt's last, drafts, cache edits, file
        actions, LoRA, a request near its context's end."""
        ex = self.executors[executor_id]
        if not ex.alive or not ex.in_flight or ex.queued is not None or ex.file_in_flight or ex.file_actions:
            return None
        if self.spec.enabled or self.lora_scales or ex.kv_ops or ex.starts:
            return None
        if self.waiting and not all(slot.busy for slot in ex.slots):
            return None  # a waiting request may be admitted: that takes a full plan
        running = ex.running
        if not running or len(running) != len(ex.in_flight) or len(running) > ex.free_cells:
            return None
        going_on = []
        for req in running:
            entry = ex.in_flight.get(req.slot.seq_id)
            if (
                entry is None or entry[0] is not req
                # in the running step: a plain decode, or its prompt's last chunk
                or (entry[1] != 1 if req.status == Status.DECODE else req.n_computed != len(req.seq_tokens))
                or req.n_computed + 2 >= ex.n_ctx_slot  # the result may shift or end the context
                or req.ending_banned and len(req.output_ids) + 1 >= req.min_tokens  # its sampler changes
            ):
                return None
            if not 0 <= req.max_tokens < len(req.output_ids) + 2:  # else the running step is its last
                going_on.append(req)
        if not going_on:
            return None
        now = time.monotonic() if now is None else now
        items: list[BatchItem] = []
        queued: dict[int, tuple[Request, int]] = {}
        for req in going_on:
            slot = req.slot
            items.append(BatchItem(slot.seq_id, [], req.n_computed, True, follows=True))
            req.n_computed += 1
            kv.append(slot, [kv.UNNAMED])  # named when the running step's result says the token
            slot.last_used = now
            queued[slot.seq_id] = (req, 1)
        self._step_ids += 1
        plan = StepPlan(self._step_ids, [], [], ex.ends, items, end_reasoning=self._take_end_reasoning(ex))
        ex.ends = []
        ex.queued, ex.queued_step_id = queued, self._step_ids
        self.counters["planned_ahead"] += 1
        return plan

    def _send_plan(self, ex: ExecutorState, items: list[BatchItem], in_flight: dict[int, tuple[Request, int]],
                   n_prompt: int, now: float) -> StepPlan:
        """The step with the executor's pending cache edits and sampler changes; it is now in flight."""
        self._step_ids += 1
        plan = StepPlan(self._step_ids, ex.kv_ops, ex.starts, ex.ends, items, end_reasoning=self._take_end_reasoning(ex))
        first = next(iter(in_flight.values()), None)
        if first is not None and first[0].lora != ex.lora:  # a step runs one adapter set
            ex.lora = first[0].lora
            plan.lora = lora.to_wire(ex.lora)
        ex.kv_ops, ex.starts, ex.ends = [], [], []
        ex.host_cache.sent()
        ex.in_flight = in_flight
        ex.in_flight_prompt_tokens = n_prompt
        ex.step_id = self._step_ids
        ex.step_sent_at = now
        return plan

    @staticmethod
    def _take_end_reasoning(ex: ExecutorState) -> list[int]:
        """The seqs whose thinking the next step ends (those still running the request that asked)."""
        seqs = [seq for seq, req in ex.end_reasoning if ex.slots[seq].request is req]
        ex.end_reasoning = []
        return seqs

    def _next_embed_plan(self, ex: ExecutorState, now: float) -> EmbedPlan | None:
        items = self.embed.plan(ex.id, len(ex.slots), min(ex.n_batch, ex.n_ctx), now)
        if not items:
            return None
        self._step_ids += 1
        ex.in_flight = {}  # busy; the inputs it runs are the embed queue's to track
        ex.in_flight_prompt_tokens = sum(len(item.token_ids) for item in items)
        ex.step_id = self._step_ids
        ex.step_sent_at = now
        return EmbedPlan(self._step_ids, items, self.embed.regions.take_releases(ex.id))

    def embed_result(self, result: EmbedResult, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        ex = self.executors.get(result.executor_id)
        if ex is None or not ex.alive or ex.in_flight is None or result.step_id != ex.step_id:
            return  # stale
        ex.in_flight = None
        n_items = len(self.embed.in_flight.get(ex.id, {}))
        n_tokens = ex.in_flight_prompt_tokens
        self.metrics.on_step(ex.id, result.step_seconds, n_tokens, n_tokens, n_items, 0)
        if ex.info.arena and result.vectors is not None and result.vectors.data:
            self.counters["vectors_inline"] += 1  # the arena was full
        self.embed.on_result(result, now)

    def _embed_ended(self, job: EmbedJob, out: RequestOutput) -> None:
        self.outputs[job.peer].append(out)
        self.counters[_COUNTER_OF.get(out.finish_reason, "finished")] += 1

    def _admit(self, ex: ExecutorState, now: float) -> None:
        """Move waiting requests (oldest first) into this executor's free slots."""
        if not self.waiting or all(s.busy for s in ex.slots):
            return
        candidates = {e.id: e.slots for e in self.executors.values() if e.alive}
        running = [r for e in self.executors.values() if e.alive for r in e.running]
        n_swa = ex.info.n_swa
        for req in list(self.waiting):
            tokens = req.seq_tokens
            reuse_allowed = self.prefix_cache and req.cache_prompt
            if req.id_slot >= 0:
                # Pinned: waits for its slot without holding up the requests behind it.
                placement = policy.place_pinned(ex.slots, ex.id, req.id_slot, tokens, n_swa, reuse_allowed,
                                                req.cache_key)
                needed = policy.cells_needed(req, placement.reuse, ex.n_ctx_slot) if placement else 0
                if placement is not None and room.reserve_cells(
                        ex, needed + policy.n_decoding(ex.running), self.counters, placement):
                    self.waiting.remove(req)
                    self._start(ex, req, placement, now)
                    running.append(req)
                    if all(s.busy for s in ex.slots):
                        break
                continue
            target = policy.choose_executor(candidates, tokens, n_swa, reuse_allowed, req.cache_key)
            if target is None:
                break  # no free slot anywhere
            if target != ex.id:
                continue  # placed when that executor plans its next step
            placement = policy.place(ex.slots, tokens, n_swa, reuse_allowed, req.cache_key)
            if placement is None:
                break
            if reuse_allowed:
                placement = policy.from_host_cache(placement, ex.host_cache, ex.slots, tokens, n_swa, req.cache_key)
            if reuse_allowed and req.n_cache_reuse > 0 and ex.info.can_shift:
                placement = policy.with_chunks(placement, ex.slots, tokens, req.n_cache_reuse, req.cache_key)
            if reuse_allowed and policy.awaits_donor(running, tokens, placement.reuse, req.cache_key):
                continue  # copied from the request prefilling it once that is done
            needed = policy.cells_needed(req, placement.reuse, ex.n_ctx_slot) + policy.n_decoding(ex.running)
            if placement.host is not None:  # restored into new cells, whole, then cut to the reuse
                needed += len(placement.host.tokens)
            with ex.host_cache.keeping(placement.host):
                if not room.reserve_cells(ex, needed, self.counters, placement):
                    break  # first come, first served: later requests wait for cells too
                self.waiting.remove(req)
                self._start(ex, req, placement, now)
            running.append(req)
            if all(s.busy for s in ex.slots):
                break

    def _make_room_for_decodes(self, ex: ExecutorState) -> None:
        """Every decoding request needs a cell this step: free idle prefixes, then preempt the
        newest requests, until they all have one."""
        while True:
            decoding = policy.n_decoding(ex.running)
            if room.reserve_cells(ex, decoding, self.counters) or not decoding:
                return
            victim = policy.preemption_victim(ex.running)
            assert victim is not None  # a decoding request always qualifies
            self._preempt(ex, victim)

    def _make_room_for_chunk(self, ex: ExecutorState) -> None:
        """The oldest prefill, when a media chunk is next, needs the chunk's cells all at once
        (a chunk never splits): free idle prefixes, then preempt newer requests, until they are
        free. Text takes whatever cells are free and decodes preempt for theirs, but a chunk that
        found too few would otherwise wait for cells that nothing frees (finished requests leave
        their prefixes cached). When it is the newest request itself, the older ones' ends give
        it room."""
        head = next((r for r in ex.running if r.status == Status.PREFILL and r.prompt_remaining > 0), None)
        size = head.media_chunks.get(head.n_computed) if head is not None else None
        if size is None:
            return
        while not room.reserve_cells(ex, size + policy.n_decoding(ex.running), self.counters):
            victim = policy.preemption_victim(ex.running)
            if victim is None or victim is head:
                return
            self._preempt(ex, victim)

    def _preempt(self, ex: ExecutorState, req: Request) -> None:
        """Free a running request's cells and put it first in the queue; it recomputes its
        prompt and the tokens it generated when it runs again."""
        log.info("executor %d: preempting request %s (%d cells) for KV room", ex.id, req.id, len(req.slot.tokens))
        ex.running.remove(req)
        slot = req.slot
        slot.request = None
        ex.ends.append(slot.seq_id)
        ex.starts = [start for start in ex.starts if start.seq_id != slot.seq_id]
        if req.status == Status.DECODE:  # a prefill goes on with the same tokens
            req.seq_tokens = slot.tokens + [req.pending_token]
            req.prompt_logprobs = -1  # all reported: the recompute asks for none
        room.evict(ex, slot)
        req.slot = None
        req.status = Status.WAITING
        req.n_computed = 0
        req.n_preempted += 1
        self.counters["preempted"] += 1
        self.waiting.appendleft(req)

    def _start(self, ex: ExecutorState, req: Request, placement: policy.Placement, now: float) -> None:
        slot = placement.slot
        seq = slot.seq_id
        if placement.host is not None:
            if slot.tokens:
                room.drop_prefix(ex, slot, self.counters, now)
            entry = placement.host
            ex.kv_ops.append(KvOp(KvOpKind.RESTORE, seq, entry_id=entry.entry_id))
            kv.append(slot, entry.tokens)
            slot.pos_min = entry.pos_min
            entry.last_used = now
            self.counters["host_cache_restored"] += 1
            if placement.reuse < len(slot.tokens):
                ex.kv_ops.append(KvOp(KvOpKind.TRUNCATE, seq, placement.reuse))
                kv.truncate(slot, placement.reuse)
        elif placement.source is not None:
            if slot.tokens:
                room.drop_prefix(ex, slot, self.counters, now)
            ex.kv_ops.append(KvOp(KvOpKind.COPY, seq, placement.reuse, placement.source.seq_id))
            kv.copy_prefix(slot, placement.source, placement.reuse)
            # The copy shares the source's cells, so it starts where the source's window does
            # (until the step's result reports it): a later admission must not reuse more.
            slot.pos_min = placement.source.pos_min
        elif slot.tokens:
            for pos, n in placement.cuts:  # n_cache_reuse: chunks of the cache move to where the prompt has them
                ex.kv_ops.append(KvOp(KvOpKind.SHIFT, seq, pos, n_discard=n))
                kv.shift(slot, pos, n)
            room.drop_prefix(ex, slot, self.counters, now, keep=placement.reuse)  # what it does not share makes way
        slot.cache_key = req.cache_key  # of the cells it computes (a reused prefix has the same key)
        self._start_sampler(ex, req, seq)
        slot.request = slot.last_request = req
        slot.last_used = now
        req.slot = slot
        req.status = Status.PREFILL
        req.n_computed = placement.reuse
        if not req.n_preempted:
            req.n_cached = placement.reuse
            req.t_admitted = now
            if req.return_progress:  # llama-server's 0% update: the prefill starts
                self.outputs[req.peer].append(RequestOutput(req.id, progress=prompt_progress(req, now)))
        ex.running.append(req)
        self.metrics.on_admit(ex.id, placement.reuse)  # a resumed request's reuse too: not recomputed

    def _start_sampler(self, ex: ExecutorState, req: Request, seq: int) -> None:
        """The request's sampler chain is (re)built on ``seq`` before the next step. A resumed
        request's sees what it generated before (penalties, grammar state); until min_tokens are
        out, the ending tokens are banned."""
        sampling = req.sampling
        req.ending_banned = len(req.output_ids) < req.min_tokens
        if req.ending_banned:
            ending = sorted(req.stop_token_ids | (set() if req.ignore_eos else set(ex.info.eog_token_ids)))
            sampling = msgspec.structs.replace(sampling, logit_bias=[*sampling.logit_bias,
                                                                     *((t, -math.inf) for t in ending)])
        ex.starts = [start for start in ex.starts if start.seq_id != seq]
        ex.starts.append(SeqStart(seq, sampling, req.logprobs, list(req.output_ids), req.prompt_logprobs,
                                  req.penalty_context, req.spec_p_min, req.media))

    def step_result(self, result: StepResult, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        ex = self.executors.get(result.executor_id)
        if ex is None or not ex.alive or ex.in_flight is None or result.step_id != ex.step_id:
            return  # a stale result (of a process already declared failed): nothing to apply
        in_flight, ex.in_flight = ex.in_flight, None
        n_prompt, ex.in_flight_prompt_tokens = ex.in_flight_prompt_tokens, 0  # a queued step has none
        queued, ex.queued = ex.queued, None
        if queued is not None:  # it runs now
            ex.in_flight, ex.step_id, ex.step_sent_at = queued, ex.queued_step_id, now
        ex.host_cache.measured(result.save_seconds)
        for slot, pos_min in zip(ex.slots, result.pos_min):
            slot.pos_min = pos_min
        action, ex.file_in_flight = ex.file_in_flight, None
        if action is not None:
            self.replies.append(slot_files.done(action, result, now, self.file_keys))
        if (result.no_kv_room or result.error is not None) and queued is not None:
            # The executor refuses the step behind one that did not run: undo it first (its
            # cells come after this step's), and let its refusal arrive as a stale result.
            ex.in_flight = None
            self._undo(ex, queued)
        if result.no_kv_room:
            self._retry_smaller(ex, in_flight)
            return
        if sum(n for _, n in in_flight.values()) >= ex.budget:  # (a smaller step says nothing of room for more)
            ex.budget = min(ex.n_batch, ex.budget * 2)
        if result.error is not None:
            error = EngineError(ErrorCode.EXECUTOR_FAILED, f"decode failed: {result.error}")
            for seq, (req, _) in in_flight.items():
                if req.status == Status.FINISHED:
                    room.evict(ex, ex.slots[seq])
                else:
                    self._finish(req, FinishReason.ERROR, error)  # also evicts its slot
            return
        n_tokens = sum(n for _, n in in_flight.values())
        if n_tokens:  # a plan of cache edits alone runs no llama_decode
            longest = max((len(s.tokens) for s in ex.slots if s.busy), default=0)
            self.metrics.on_step(ex.id, result.step_seconds, n_prompt, n_tokens, len(ex.running),
                                 longest)
            ex.step_cost.observe(n_tokens, result.step_seconds - result.draft_seconds - result.save_seconds)
            if log.isEnabledFor(logging.DEBUG):
                self._trace_step(ex, result, in_flight, n_tokens, n_prompt)
            if result.draft_seconds:
                longest = max((len(r.draft) for r, _ in in_flight.values()), default=0)
                per_token = result.draft_seconds / max(1, longest)
                ex.draft_token_seconds += 0.1 * (per_token - ex.draft_token_seconds)
        for failure in result.failures:
            self._fail_seq(ex, failure.seq_id, failure.error, in_flight)
        for req, _ in in_flight.values():
            if req.return_progress and req.status == Status.PREFILL:
                self.outputs[req.peer].append(RequestOutput(req.id, progress=prompt_progress(req, now)))
        for entry in result.prompt_logprobs:
            req = in_flight.get(entry.seq_id, (None, 0))[0]
            if req is not None and req.status != Status.FINISHED:
                self.outputs[req.peer].append(RequestOutput(req.id, prompt_logprobs=entry.logprobs))
        for sample in result.samples:
            req = in_flight.get(sample.seq_id, (None, 0))[0]
            if queued is not None and sample.seq_id in queued:  # the queued step feeds this token
                slot = ex.slots[sample.seq_id]
                if slot.tokens and slot.tokens[-1] == kv.UNNAMED:
                    kv.name_tokens(slot, len(slot.tokens) - 1, [sample.token_id])
            if req is not None and req.status != Status.FINISHED:
                if req.draft:
                    self._verified(ex, req, sample, now)
                else:
                    self._on_tokens(req, [sample.token_id], [sample.logprob], now)

    def _trace_step(self, ex: ExecutorState, result: StepResult, in_flight: dict[int, tuple[Request, int]],
                    n_tokens: int, n_prompt: int) -> None:
        """One debug line per step: what it ran and what it yielded (for tuning the step's mix)."""
        decodes = [req for req, _ in in_flight.values() if req.status == Status.DECODE]
        drafted = sum(len(req.draft) for req in decodes)
        accepted = sum(s.n_accepted for s in result.samples)
        log.debug("executor %d: step %d: %d tokens (%d decodes, %d drafted, %d accepted, %d prompt) in %.1f ms "
                  "(%.1f ms saving prefixes), %d running, %d waiting", ex.id, result.step_id, n_tokens, len(decodes),
                  drafted, accepted, n_prompt, 1e3 * result.step_seconds, 1e3 * result.save_seconds,
                  len(ex.running), len(self.waiting))

    def _verified(self, ex: ExecutorState, req: Request, sample: Sample, now: float) -> None:
        """A draft was verified: the accepted tokens and the one sampled after them are output."""
        tokens, logprobs, n_drafted, n_accepted = drafts.settle(ex, req, sample, bool(self.spec.model))
        if n_drafted:
            self.spec_pool.update(n_drafted, n_accepted)
            self.counters["spec_drafts"] += 1
            self.counters["spec_draft_tokens"] += n_drafted
            self.counters["spec_accepted_tokens"] += n_accepted
            per_pos = self.spec_accepted_per_pos
            per_pos += [0] * (n_accepted - len(per_pos))
            for pos in range(n_accepted):
                per_pos[pos] += 1
        self._on_tokens(req, tokens, logprobs, now)

    def _fail_seq(
        self,
        ex: ExecutorState,
        seq_id: int,
        error: EngineError,
        in_flight: dict[int, tuple[Request, int]],
    ) -> None:
        """One sequence failed alone: its request ends with the error, its cache is dropped."""
        if not 0 <= seq_id < len(ex.slots):
            log.error("executor %d reported a failure of unknown sequence %d", ex.id, seq_id)
            return
        slot = ex.slots[seq_id]
        req = slot.request or in_flight.get(seq_id, (None, 0))[0]
        log.warning("executor %d, sequence %d failed: %s", ex.id, seq_id, error.message)
        if req is not None and req.status != Status.FINISHED:
            self._finish(req, FinishReason.ERROR, error)  # also evicts the slot
        else:
            room.evict(ex, slot)

    def _undo(self, ex: ExecutorState, flight: dict[int, tuple[Request, int]]) -> None:
        """A step did not run: its tokens leave the books (cells and positions), a finished
        request's too, whose slot keeps a cached prefix of what the cache holds (no slot is
        given to another request while a step on it is in flight)."""
        for seq, (req, n) in flight.items():
            slot = ex.slots[seq]
            if req.status == Status.FINISHED:  # its booked draft may be cut already, or it evicted
                keep = min(len(slot.tokens), req.n_computed - n)
            else:
                keep = len(slot.tokens) - n
                req.draft = []
            req.n_computed -= n
            kv.truncate(slot, max(0, keep))

    def _retry_smaller(self, ex: ExecutorState, in_flight: dict[int, tuple[Request, int]]) -> None:
        """llama_decode found no KV room and the executor left the cache as it was (media chunks
        it had decoded in the step included): undo the step's token bookkeeping and plan fewer
        tokens next time (as llama-server halves its batch). When the least step that advances
        (one token, or one media chunk whole) does not fit, the newest request gives its cells
        back by failing."""
        self._undo(ex, in_flight)
        least = 1
        for req, n in in_flight.values():
            if req.status == Status.PREFILL and req.media_chunks.get(req.n_computed) == n:
                least = max(least, n)
        planned = sum(n for _, n in in_flight.values())
        log.warning("executor %d: no KV room for %d tokens; retrying with fewer", ex.id, planned)
        if planned > least:
            ex.budget = max(1, planned // 2)
            return
        newest = next((r for r in reversed(ex.running) if r.status != Status.FINISHED), None)
        if newest is not None:
            self._finish(newest, FinishReason.ERROR,
                         EngineError(ErrorCode.NO_KV_ROOM, "the KV cache is full; retry later"))

    def _on_tokens(self, req: Request, tokens: list[int], logprobs: list[TokenLogprob | None], now: float) -> None:
        """Output tokens of one step, in order: all but the last are in the KV cache already
        (accepted draft tokens); the last is the one to feed next. They go out in one output."""
        out = RequestOutput(req.id)
        if req.status == Status.PREFILL:
            req.status = Status.DECODE
            if not req.t_first_token:  # (a resumed request keeps its first)
                req.t_first_token = now
                out.n_cached_tokens = req.n_cached
        req.t_last_token = now
        ex = self.executors[req.slot.executor_id]
        if req.max_tokens == 0:  # (llama-server's n_predict 0) its prompt is cached; nothing is generated
            self._finish(req, FinishReason.LENGTH, out=out)
            return
        if req.drafter is not None:
            req.drafter.extend(tokens)
        for token, logprob in zip(tokens, logprobs):
            req.output_ids.append(token)
            is_stop = token in req.stop_token_ids or (
                not req.ignore_eos and token in ex.info.eog_token_ids
            )
            if is_stop:
                self._finish(req, FinishReason.STOP, out=out)  # the stop token itself is not output
                return
            out.token_ids.append(token)
            if logprob is not None:
                out.logprobs.append(logprob)
            if 0 <= req.max_tokens <= len(req.output_ids):
                req.truncated |= req.context_limited
                self._finish(req, FinishReason.LENGTH, out=out)
                return
        if req.ending_banned and len(req.output_ids) >= req.min_tokens:
            self._start_sampler(ex, req, req.slot.seq_id)  # the ending tokens may come from now on
        if req.n_computed >= ex.n_ctx_slot:  # no cell left for the token
            if not self.context_shift:
                req.truncated = True
                self._finish(req, FinishReason.LENGTH, out=out)
                return
            self._shift(ex, req)
        req.pending_token = tokens[-1]
        self.outputs[req.peer].append(out)

    def _shift(self, ex: ExecutorState, req: Request) -> None:
        """Context shift, as llama-server's: keep the first n_keep tokens, drop n_discard of the
        ones after them (by default half) and move the rest down, so generation goes on.

        A cell has one position whatever sequences share it, so the moved cells must be this
        sequence's alone: an idle cached prefix sharing them is cut where they start, and when a
        running request shares them the dropped range grows to take them all.
        """
        slot = req.slot
        n = len(slot.tokens)
        keep = max(0, min(req.n_keep, ex.n_ctx_slot - 4))
        n_left = n - keep
        n_discard = max(0, min(req.n_discard or n_left // 2, n_left - 1))
        shared = [(other, kv.shared_end(slot, other)) for other in ex.slots if other is not slot and other.tokens]
        n_discard = max([n_discard] + [end - keep for other, end in shared if other.busy])
        for other, end in shared:
            if not other.busy and end > keep + n_discard:
                room.drop_prefix(ex, other, self.counters, keep=keep + n_discard)
        log.debug("executor %d: request %s: context shift, n_keep %d, n_discard %d of %d", ex.id, req.id, keep,
                  n_discard, n)
        ex.kv_ops.append(KvOp(KvOpKind.SHIFT, slot.seq_id, keep, n_discard=n_discard))
        kv.shift(slot, keep, n_discard)
        req.n_computed -= n_discard
        req.n_shifted += n_discard
        req.truncated = True
        self.counters["context_shifts"] += 1

    # ------------------------------------------------------------------ slot files

    def slot_action(self, msg: SlotAction, peer: bytes) -> None:
        """POST /slots/{id}: an erase is done at once; a save or restore waits for the executor's
        next step (scheduler.slot_files). The slot must be idle: a running request or another
        action on it is a 409."""
        error = slot_files.problem(self.executors, self.ready, msg)
        if error is not None:
            self.replies.append((peer, SlotActionDone(msg.token, error=error)))
            return
        ex, slot = slot_files.locate(self.executors, msg.id_slot)
        if msg.kind == SlotActionKind.ERASE:
            n_erased = len(slot.tokens)
            room.evict(ex, slot)
            self.replies.append((peer, SlotActionDone(msg.token, n_erased)))
        else:
            ex.file_actions.append(FileAction(peer, msg, slot))

    def end_reasoning(self, msg: EndReasoning, peer: bytes) -> None:
        """POST /v1/chat/completions/control: the running choices of a call that armed reasoning
        control end their thinking at their executor's next step (llama-server's answers when
        there are none)."""
        prefix = f"{msg.request_id}-"
        running = [(ex, req) for ex in self.executors.values() for req in ex.running
                   if req.id.startswith(prefix) and req.slot is not None]
        armed = [(ex, req) for ex, req in running
                 if req.sampling.reasoning_budget is not None and req.sampling.reasoning_budget.control]
        if not running:
            self.replies.append((peer, EndReasoningDone(msg.token, error="no active completion for this id")))
            return
        if not armed:
            self.replies.append((peer, EndReasoningDone(
                msg.token, error="reasoning control not enabled for this completion")))
            return
        for ex, req in armed:
            assert req.slot is not None
            ex.end_reasoning.append((req.slot.seq_id, req))
        self.replies.append((peer, EndReasoningDone(msg.token, ended=len(armed))))

    # ------------------------------------------------------------------ endings

    def _finish(
        self,
        req: Request,
        reason: FinishReason,
        error: EngineError | None = None,
        out: RequestOutput | None = None,
    ) -> None:
        if req.status == Status.FINISHED:
            return
        if req.status == Status.WAITING:
            self.waiting.remove(req)
        elif req.slot is not None:
            ex = self.executors[req.slot.executor_id]
            ex.running.remove(req)
            slot = req.slot
            slot.request = None
            if req.draft and self.spec.model and ex.alive:  # cells booked for draft tokens it never learns
                keep = len(slot.tokens) - len(req.draft)
                kv.truncate(slot, keep)
                ex.kv_ops.append(KvOp(KvOpKind.TRUNCATE, slot.seq_id, keep))
            req.draft = []
            if ex.alive:
                ex.ends.append(slot.seq_id)
            if error is not None:
                room.evict(ex, slot)
        req.status = Status.FINISHED
        del self.requests[req.id]
        out = out or RequestOutput(req.id)
        out.finish_reason = reason
        out.error = error
        out.stats = request_stats(req)
        self.outputs[req.peer].append(out)
        self._count(req, reason)

    def _count(self, req: Request, reason: FinishReason) -> None:
        self.counters[_COUNTER_OF.get(reason, "finished")] += 1
        if req.slot is not None:
            decode_seconds = (req.t_last_token - req.t_first_token) if req.t_first_token else 0.0
            self.metrics.on_finish(req.slot.executor_id, len(req.output_ids), decode_seconds)

    # ------------------------------------------------------------------ reporting

    def take_outputs(self) -> dict[bytes, list[RequestOutput]]:
        outputs, self.outputs = self.outputs, collections.defaultdict(list)
        return outputs

    def take_replies(self) -> list[tuple[bytes, SlotActionDone | EndReasoningDone]]:
        replies, self.replies = self.replies, []
        return replies

    def has_work(self, executor_id: int) -> bool:
        ex = self.executors[executor_id]
        return bool(ex.running or ex.kv_ops or ex.ends or ex.file_actions or self.waiting or self.embed.waiting)

    def stats(self, token: int = 0) -> EngineStats:
        """The engine's state and counters (scheduler.observe.reports)."""
        return engine_stats(self, token)
