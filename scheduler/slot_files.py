"""Slot files (POST /slots/{id}?action=save|restore, llama-server's --slot-save-path): an idle
slot's KV cells written to a file, or read back from one, in a step of their own.

The scheduler checks an action when it arrives (``problem``), queues it on the slot's executor
(ExecutorState.file_actions), runs the oldest as that executor's next step (``start``: nothing
else touches the KV cache meanwhile, so the cells stay accounted), and books the executor's
answer (``done``). Slots are numbered across executors, ``n_slots`` each.
"""

from __future__ import annotations

import collections

from ipc.protocol import (
    EngineError,
    ErrorCode,
    KvOp,
    KvOpKind,
    SlotAction,
    SlotActionDone,
    SlotActionKind,
    StepResult,
)
from scheduler import policy
from scheduler.cache import kv, room
from scheduler.executor_state import ExecutorState, FileAction
from scheduler.request import NO_KEY, CacheKey
from scheduler.slots import Slot

Reply = tuple[bytes, SlotActionDone]  # to a frontend peer


def locate(executors: dict[int, ExecutorState], id_slot: int) -> tuple[ExecutorState, Slot]:
    n_slots = len(next(iter(executors.values())).slots)
    ex = executors[id_slot // n_slots]
    return ex, ex.slots[id_slot % n_slots]


def problem(executors: dict[int, ExecutorState], ready: bool, msg: SlotAction) -> EngineError | None:
    """Why the action cannot be taken (no such slot, a busy one: 409, a file too large), or None."""
    if not ready:
        return EngineError(ErrorCode.SHUTTING_DOWN, "the engine is still loading")
    n_slots = sum(len(e.slots) for e in executors.values())
    if not 0 <= msg.id_slot < n_slots:
        return EngineError(ErrorCode.INVALID_REQUEST, f"slot {msg.id_slot} does not exist ({n_slots} slots)")
    ex, slot = locate(executors, msg.id_slot)
    if not ex.alive:
        return EngineError(ErrorCode.EXECUTOR_FAILED, f"executor {ex.id} is restarting")
    if slot.busy or any(a.slot is slot for a in [*ex.file_actions, ex.file_in_flight] if a is not None):
        return EngineError(ErrorCode.SLOT_BUSY, f"slot {msg.id_slot} is busy; retry when it is idle")
    if msg.kind == SlotActionKind.RESTORE and msg.n_tokens > ex.n_ctx_slot:
        return EngineError(ErrorCode.INVALID_REQUEST,
                           f"the file holds {msg.n_tokens} tokens; a slot holds at most {ex.n_ctx_slot}")
    return None


def start(ex: ExecutorState, counters: collections.Counter[str]) -> Reply | None:
    """The oldest waiting action goes in flight, its KvOp queued for the step (with the cache
    edits pending); the failure reply when a restore finds no room."""
    action = ex.file_in_flight = ex.file_actions.pop(0)
    slot, msg = action.slot, action.msg
    if msg.kind == SlotActionKind.SAVE:
        action.n_saved = len(slot.tokens)
        ex.kv_ops.append(KvOp(KvOpKind.SAVE_FILE, slot.seq_id, path=msg.path, tokens=list(slot.tokens)))
        return None
    room.evict(ex, slot)
    if room.reserve_cells(ex, msg.n_tokens + policy.n_decoding(ex.running), counters):
        ex.kv_ops.append(KvOp(KvOpKind.LOAD_FILE, slot.seq_id, msg.n_tokens, path=msg.path))
        return None
    ex.file_in_flight = None
    error = EngineError(ErrorCode.NO_KV_ROOM, f"no room in the KV cache for {msg.n_tokens} tokens")
    return action.peer, SlotActionDone(msg.token, error=error)


def done(action: FileAction, result: StepResult, now: float, file_keys: dict[str, CacheKey]) -> Reply:
    """The reply to an action whose step ran; a restored slot holds the file's tokens, reusable
    by the requests of the cache key (adapter set, salt) that computed them: ``file_keys``
    remembers it for each file saved in this run; another file (a previous run's,
    llama-server's) restores as computed with no adapters and no salt."""
    answer = result.slot_files[0] if result.slot_files else None
    msg = action.msg
    if answer is None or answer.error is not None:
        error = answer.error if answer is not None else EngineError(
            ErrorCode.INTERNAL, f"the executor did not run the slot action: {result.error or 'no result'}")
        # a failed load leaves the sequence empty, as the scheduler already counts it
        return action.peer, SlotActionDone(msg.token, error=error)
    n_tokens = action.n_saved
    if msg.kind == SlotActionKind.SAVE:
        file_keys[msg.path] = action.slot.cache_key
    else:
        kv.append(action.slot, answer.tokens)
        action.slot.cache_key = file_keys.get(msg.path, NO_KEY)
        action.slot.last_used = now
        n_tokens = len(answer.tokens)
    return action.peer, SlotActionDone(msg.token, n_tokens, answer.n_bytes, answer.ms)


def fail_pending(ex: ExecutorState, error: EngineError) -> list[Reply]:
    """The executor is gone: every action waiting for it or running on it ends with ``error``."""
    actions = [*ex.file_actions, *([ex.file_in_flight] if ex.file_in_flight is not None else [])]
    ex.file_actions, ex.file_in_flight = [], None
    return [(a.peer, SlotActionDone(a.msg.token, error=error)) for a in actions]
