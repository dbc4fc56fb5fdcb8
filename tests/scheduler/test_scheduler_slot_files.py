"""Slot save / restore / erase (POST /slots/{id}) in the scheduler, against the fake executor:
each save or restore runs as a step of its own, the restored tokens become the slot's prefix
cache and count as KV cells, busy slots are refused, and a failing executor answers every
pending action with an error."""

from __future__ import annotations

from test_scheduler_policy import Harness, prompt

from ipc.protocol import ErrorCode, KvOpKind, SlotAction, SlotActionDone, SlotActionKind
from scheduler.cache.kv import cells_used

PEER = b"peer"


def act(h: Harness, kind: SlotActionKind, id_slot: int, path: str = "", n_tokens: int = 0) -> int:
    token = len(h.sched.replies) + 1000
    h.sched.slot_action(SlotAction(token, kind, id_slot, path, n_tokens), PEER)
    return token


def replies(h: Harness) -> dict[int, SlotActionDone]:
    out = {}
    for peer, reply in h.sched.take_replies():
        assert peer == PEER
        out[reply.token] = reply
    return out


def test_save_erase_restore_then_the_prefix_is_reused() -> None:
    h = Harness(n_slots=2)
    h.add("first", prompt(40), max_tokens=3, id_slot=1)
    h.run_until_idle()
    slot = h.sched.executors[0].slots[1]
    held = list(slot.tokens)
    assert len(held) == 42  # the prompt and the generated tokens fed back

    save = act(h, SlotActionKind.SAVE, 1, "/slots/a.bin")
    (plan,) = h.step()
    assert [op.kind for op in plan.kv_ops] == [KvOpKind.SAVE_FILE] and not plan.items
    assert replies(h)[save].n_tokens == 42 and h.fakes[0].files["/slots/a.bin"] == held

    erase = act(h, SlotActionKind.ERASE, 1)
    assert replies(h)[erase].n_tokens == 42 and not slot.tokens
    h.step()  # the CLEAR reaches the executor
    assert h.fakes[0].cells_used == 0 and cells_used(h.sched.executors[0].slots) == 0

    restore = act(h, SlotActionKind.RESTORE, 0, "/slots/a.bin", 42)
    (plan,) = h.step()
    assert plan.kv_ops[-1].kind == KvOpKind.LOAD_FILE and plan.kv_ops[-1].pos == 42
    assert replies(h)[restore].n_tokens == 42
    restored = h.sched.executors[0].slots[0]
    assert restored.tokens == held and cells_used(h.sched.executors[0].slots) == 42 == h.fakes[0].cells_used

    h.add("again", held + [7], max_tokens=2)
    h.run_until_idle()
    assert h.final("again").stats.n_cached_tokens == 42


def test_actions_on_busy_or_unknown_slots_are_refused() -> None:
    h = Harness(n_slots=2)
    h.add("long", prompt(10), max_tokens=50, id_slot=0)
    h.step()
    busy = act(h, SlotActionKind.SAVE, 0, "/slots/b.bin")
    unknown = act(h, SlotActionKind.ERASE, 2)
    too_long = act(h, SlotActionKind.RESTORE, 1, "/slots/b.bin", 5000)
    got = replies(h)
    assert got[busy].error.code == ErrorCode.SLOT_BUSY
    assert got[unknown].error.code == ErrorCode.INVALID_REQUEST
    assert got[too_long].error.code == ErrorCode.INVALID_REQUEST
    first = act(h, SlotActionKind.SAVE, 1, "/slots/c.bin")
    second = act(h, SlotActionKind.ERASE, 1)  # the save is still waiting for its step
    assert replies(h)[second].error.code == ErrorCode.SLOT_BUSY
    h.step()
    assert replies(h)[first].error is None


def test_a_failing_executor_answers_its_pending_actions() -> None:
    h = Harness(n_slots=2)
    h.add("r", prompt(10), max_tokens=1)
    h.run_until_idle()
    running = act(h, SlotActionKind.SAVE, 0, "/slots/d.bin")
    waiting = act(h, SlotActionKind.SAVE, 1, "/slots/e.bin")
    plan = h.sched.next_plan(0)
    assert plan is not None  # the first save is in flight, the second waits
    h.sched.executor_failed(0, "killed")
    got = replies(h)
    assert got[running].error.code == got[waiting].error.code == ErrorCode.EXECUTOR_FAILED


def test_a_restore_evicts_idle_prefixes_for_room_and_a_failed_load_leaves_the_slot_empty() -> None:
    h = Harness(n_slots=3, n_ctx=100)
    h.fakes[0].files["/slots/f.bin"] = prompt(60, 500)
    for i in range(2):
        h.add(f"r{i}", prompt(38, 100 * (i + 1)), max_tokens=1, id_slot=i)
        h.run_until_idle()
    restore = act(h, SlotActionKind.RESTORE, 2, "/slots/f.bin", 60)
    h.step()
    assert replies(h)[restore].error is None
    ex = h.sched.executors[0]
    assert ex.slots[2].tokens == prompt(60, 500) and cells_used(ex.slots) <= 100
    assert h.fakes[0].cells_used == cells_used(ex.slots)

    missing = act(h, SlotActionKind.RESTORE, 2, "/slots/missing.bin", 10)
    h.step()
    assert replies(h)[missing].error.code == ErrorCode.NOT_FOUND
    assert not ex.slots[2].tokens and h.fakes[0].cells_used == cells_used(ex.slots)


def test_slot_ids_count_over_executors() -> None:
    h = Harness(n_slots=2, n_executors=2)
    h.fakes[1].files["/slots/g.bin"] = prompt(20, 700)
    restore = act(h, SlotActionKind.RESTORE, 3, "/slots/g.bin", 20)  # executor 1, its second slot
    plans = h.step()
    assert len(plans) == 1 and replies(h)[restore].error is None
    assert h.sched.executors[1].slots[1].tokens == prompt(20, 700) and not h.sched.executors[0].slots[1].tokens
