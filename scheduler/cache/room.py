"""Room in an executor's KV pool: idle cached prefixes give way, least recently used first.

A slot keeps its last prefix cached after its request ends (the prefix cache). When cells are
needed (an admission, the step's decodes, a media chunk, a slot file's restore), idle prefixes
are evicted oldest first; one worth keeping goes to host memory first (--cache-ram: a SAVE op
before the step) when saving it costs less than recomputing it would (scheduler.cache.host_cache).
Each edit is booked here (scheduler.cache.kv) and queued as a KvOp for the executor's next step.
Preemption, the last resort when idle prefixes do not free enough, is the scheduler's: it
requeues a request.
"""

from __future__ import annotations

import collections
import time

from ipc.protocol import KvOp, KvOpKind
from scheduler import policy
from scheduler.cache import kv
from scheduler.cache.host_cache import MIN_TOKENS as MIN_HOST_TOKENS
from scheduler.executor_state import ExecutorState
from scheduler.slots import Slot


def evict(ex: ExecutorState, slot: Slot) -> None:
    """The slot's cache is cleared (cells other slots share live on)."""
    kv.truncate(slot, 0)
    slot.pos_min = -1
    if ex.alive:
        ex.kv_ops.append(KvOp(KvOpKind.CLEAR, slot.seq_id))


def drop_prefix(ex: ExecutorState, slot: Slot, counters: collections.Counter[str], now: float | None = None,
                keep: int = 0) -> None:
    """Cut an idle slot's cached prefix to ``keep`` tokens (0: evict it), first keeping it
    whole in host memory when what is cut is worth it (and is what a prefill computes: not
    after a shift)."""
    if (len(slot.tokens) - keep >= MIN_HOST_TOKENS and slot.shift_keep < 0 and ex.alive
            and ex.host_cache.worth_saving(slot.tokens, slot.cache_key)):
        pays = ex.host_cache.save_pays(slot.writes, ex.step_cost.seconds(len(slot.tokens)))
        added = ex.host_cache.add(slot.tokens, slot.pos_min, time.monotonic() if now is None else now,
                                  slot.cache_key) if pays else None
        if added is None:  # slower to save than to recompute, or no room beside a restore's entry
            counters["host_cache_unsaved"] += 1
        else:
            entry_id, dropped = added
            ex.kv_ops.append(KvOp(KvOpKind.SAVE, slot.seq_id, entry_id=entry_id))
            ex.kv_ops += [KvOp(KvOpKind.DROP, entry_id=e) for e in dropped]
            ex.host_cache.queued(slot.writes)
            counters["host_cache_saved"] += 1
    if keep == 0:
        evict(ex, slot)
    elif keep < len(slot.tokens):
        ex.kv_ops.append(KvOp(KvOpKind.TRUNCATE, slot.seq_id, keep))
        kv.truncate(slot, keep)


def reserve_cells(ex: ExecutorState, needed: int, counters: collections.Counter[str],
                  placement: policy.Placement | None = None) -> bool:
    """Evict idle cached prefixes, least recently used first, until ``needed`` cells are
    free once ``placement`` has cut its slot to what it reuses (never evicting the slot or
    the donor it places with, nor a slot a file action is to save); whether they are."""
    def free() -> int:
        if placement is None:
            return ex.free_cells
        own = placement.source is None and placement.host is None
        return ex.n_ctx - kv.cells_used(ex.slots, {placement.slot: placement.reuse if own else 0})

    keep = {placement.slot, placement.source} if placement is not None else set()
    keep |= {action.slot for action in ex.file_actions}  # to be saved as they are now
    idle = sorted((s for s in ex.slots if not s.busy and s.tokens and s not in keep), key=lambda s: s.last_used)
    for slot in idle:
        if free() >= needed:
            break
        drop_prefix(ex, slot, counters)
    return free() >= needed
