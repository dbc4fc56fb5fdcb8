"""Media chunks in the scheduler, with the fake executor of test_scheduler_policy: a chunk is
always planned whole and alone in its item, a reused prefix never ends inside one, a picture's
id keys the prefix cache by content, and malformed media requests are refused."""

from __future__ import annotations

import hashlib

import pytest
from test_scheduler_policy import Harness, prompt

from ipc.protocol import ArrayRef, ErrorCode, FinishReason, MediaChunk, StepResult, media_token_id
from scheduler.media import fit_chunk, snap_reuse

IMAGE = 40  # embeddings of one picture


def sha(n: int) -> str:
    return hashlib.sha256(str(n).encode()).hexdigest()


def with_image(head: list[int], digest: str, tail: list[int]) -> tuple[list[int], list[MediaChunk]]:
    ref = ArrayRef("ggserve-test-frontend", 0, 10, "|u1", (10,))
    return [*head, *[media_token_id(digest)] * IMAGE, *tail], [MediaChunk(len(head), IMAGE, digest, ref)]


def test_fit_chunk_stops_text_before_a_chunk_and_takes_a_chunk_whole():
    tokens, media = with_image(prompt(10), sha(1), prompt(5))
    chunks = {c.start: c.n_tokens for c in media}
    assert fit_chunk(chunks, tokens, 0, 64) == 10  # text up to the picture
    assert fit_chunk(chunks, tokens, 4, 3) == 3
    assert fit_chunk(chunks, tokens, 10, 64) == IMAGE  # the picture, whole
    assert fit_chunk(chunks, tokens, 10, IMAGE - 1) == 0  # or not at all
    assert fit_chunk(chunks, tokens, 10 + IMAGE, 64) == 5


def test_snap_reuse_never_ends_inside_a_chunk():
    tokens, _ = with_image(prompt(10), sha(1), prompt(5))
    assert snap_reuse(tokens, 25) == 10
    assert snap_reuse(tokens, 10) == 10
    assert snap_reuse(tokens, 10 + IMAGE) == 10 + IMAGE  # the picture ends there
    assert snap_reuse(tokens, 7) == 7


def test_a_picture_is_planned_whole_and_alone_beside_other_requests():
    h = Harness(n_slots=4, n_batch=64)
    tokens, media = with_image(prompt(30), sha(1), prompt(20, 500))
    h.add("img", tokens, max_tokens=3, media=media)
    h.add("txt", prompt(50, 900), max_tokens=3)
    h.run_until_idle()
    for rid in ("img", "txt"):
        assert h.final(rid).finish_reason == FinishReason.LENGTH
    mid = media_token_id(sha(1))
    for plan in h.fakes[0].plans:
        for item in plan.items:
            if mid in item.token_ids:
                assert item.token_ids == [mid] * IMAGE and item.pos == 30 and not item.sample
            else:
                assert all(t >= 0 for t in item.token_ids)
    starts = [s for plan in h.fakes[0].plans for s in plan.starts if s.media]
    assert len(starts) == 1 and starts[0].media == media


def test_the_same_picture_reuses_the_prefix_and_another_does_not():
    h = Harness(n_slots=2, n_batch=128)
    first, media = with_image(prompt(20), sha(1), prompt(10, 500))
    h.add("a", first, max_tokens=2, media=media)
    h.run_until_idle()
    again, media = with_image(prompt(20), sha(1), prompt(12, 600))
    h.add("b", again, max_tokens=2, media=media)
    h.run_until_idle()
    assert h.final("b").stats.n_cached_tokens == 20 + IMAGE  # the text, the picture
    other, media = with_image(prompt(20), sha(2), prompt(10, 500))
    h.add("c", other, max_tokens=2, media=media)
    h.run_until_idle()
    assert h.final("c").stats.n_cached_tokens == 20  # the text only


@pytest.mark.parametrize(("change", "needle"), [
    (lambda t, m: (t, [MediaChunk(m[0].start + 1, IMAGE, m[0].sha256, m[0].data)]), "do not hold its id"),
    (lambda t, m: (t, [MediaChunk(m[0].start, IMAGE + 20, m[0].sha256, m[0].data)]), "leave the prompt"),
    (lambda t, m: (t[: m[0].start + IMAGE], m), "must not end with a media chunk"),
    (lambda t, m: (t, []), "out of range"),  # media ids without their chunk
])
def test_malformed_media_requests_are_refused(change, needle):
    h = Harness()
    tokens, media = change(*with_image(prompt(10), sha(1), prompt(5)))
    h.add("bad", tokens, media=media)
    out = h.final("bad")
    assert out.finish_reason == FinishReason.ERROR and needle in out.error.message


def test_a_chunk_that_finds_too_few_free_cells_waits_and_then_runs():
    # Three prompts admitted together into a pool that holds two of them: the third one's
    # picture finds too few free cells once the first two have prefilled, and the cells the
    # first two keep as cached prefixes when they finish must be freed for it (a chunk goes
    # whole, so it cannot take what little room there is as text would).
    h = Harness(n_slots=4, n_batch=128, n_ctx=140)
    for i in range(3):
        tokens, media = with_image(prompt(10, 100 + 1000 * i), sha(i), prompt(5, 500 + 1000 * i))
        h.add(f"r{i}", tokens, max_tokens=3, media=media)
    h.run_until_idle()
    for i in range(3):
        assert h.final(f"r{i}").finish_reason == FinishReason.LENGTH
        assert len(h.tokens(f"r{i}")) == 3
    assert h.fakes[0].no_room == 0  # the scheduler's cells were right all along


def test_an_older_prefill_waiting_at_a_chunk_preempts_newer_requests_for_its_cells():
    h = Harness(n_slots=3, n_batch=128, n_ctx=140)
    tokens, media = with_image(prompt(10), sha(1), prompt(5, 500))
    h.add("old", tokens, max_tokens=2, media=media)
    h.add("new", prompt(60, 2000), max_tokens=40)  # admitted beside it, takes most of the pool
    h.add("newer", prompt(40, 3000), max_tokens=40)
    h.run_until_idle()
    assert [h.final(r).finish_reason for r in ("old", "new", "newer")] == [FinishReason.LENGTH] * 3
    assert h.sched.counters["preempted"] > 0


def test_a_refused_chunk_waits_while_the_budget_recovers_and_comes_back_whole():
    h = Harness(n_slots=2, n_batch=128)
    tokens, media = with_image(prompt(10), sha(1), prompt(5, 500))
    h.add("txt", prompt(30, 900), max_tokens=20)
    h.add("img", tokens, max_tokens=2, media=media)
    h.step()  # both texts: "txt" decodes from now on
    plan = h.sched.next_plan(0)
    assert [(len(i.token_ids), i.pos) for i in plan.items] == [(1, 30), (IMAGE, 10)]
    h.sched.step_result(StepResult(plan.step_id, 0, [], [0, 0], no_kv_room=True))  # llama.cpp: no room
    planned = []
    while "img" not in h.outputs or h.outputs["img"][-1].finish_reason is None:
        plan = h.sched.next_plan(0)
        planned += [(i.seq_id, len(i.token_ids), i.pos) for i in plan.items if i.token_ids[0] < 0]
        h.sched.step_result(h.fakes[0].run(plan))
        h._collect()
    assert planned == [(1, IMAGE, 10)]  # whole, where it was refused, once the budget allows it
    assert h.final("img").finish_reason == FinishReason.LENGTH


def test_a_cut_budget_never_idles_an_executor_whose_chunk_is_all_that_is_left():
    h = Harness(n_slots=2, n_batch=128)
    tokens, media = with_image(prompt(10), sha(1), prompt(5, 500))
    h.add("img", tokens, max_tokens=2, media=media)
    h.step()
    h.sched.executors[0].budget = 5  # as a refused step leaves it
    (plan,) = h.step()
    assert [len(i.token_ids) for i in plan.items] == [IMAGE]
    h.run_until_idle()
    assert h.final("img").finish_reason == FinishReason.LENGTH


def test_a_lone_chunk_that_llama_cpp_refuses_fails_its_request():
    h = Harness(n_slots=2, n_batch=128)
    tokens, media = with_image(prompt(10), sha(1), prompt(5, 500))
    h.add("img", tokens, max_tokens=2, media=media)
    h.step()
    plan = h.sched.next_plan(0)
    assert [len(i.token_ids) for i in plan.items] == [IMAGE]
    h.sched.step_result(StepResult(plan.step_id, 0, [], [0, -1], no_kv_room=True))
    h._collect()
    assert h.final("img").error.code == ErrorCode.NO_KV_ROOM


def test_a_chunk_larger_than_a_request_context_is_refused_naming_the_sizes():
    h = Harness(n_ctx=4096, ctx_per_request=32)
    tokens, media = with_image(prompt(4), sha(1), prompt(2))
    h.add("big", tokens, media=media)
    message = h.final("big").error.message
    assert f"{IMAGE} embeddings" in message and "32" in message
