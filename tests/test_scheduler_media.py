"""Media chunks in the scheduler, with the fake executor of test_scheduler_policy: a chunk is
always planned whole and alone in its item, a reused prefix never ends inside one, a picture's
id keys the prefix cache by content, and malformed media requests are refused."""

from __future__ import annotations

import hashlib

import pytest
from test_scheduler_policy import Harness, prompt

from ipc.protocol import ArrayRef, FinishReason, MediaChunk, media_token_id
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
