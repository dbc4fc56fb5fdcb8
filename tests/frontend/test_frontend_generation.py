"""Engine outputs -> choice deltas: text, stop strings, log-probabilities, finish, usage, aborts.

The engine is a stub that records what the generation sends; outputs are pushed by hand.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import msgspec
import pytest

from frontend.http.errors import ApiError
from frontend.generation import ChoiceDelta, Generation, collect
from frontend.timings import make_timings
from frontend.text.tokenizer import Tokenizer
from ipc.protocol import (
    AddRequest,
    EngineError,
    ErrorCode,
    FinishReason,
    RequestOutput,
    RequestStats,
    TokenLogprob,
)

T = TypeVar("T")


class StubEngine:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[RequestOutput] = asyncio.Queue()
        self.submitted: list[AddRequest] = []
        self.aborted: list[str] = []
        self.abort_reasons: list[FinishReason] = []
        self.released: list[str] = []

    def submit(self, requests: list[AddRequest]) -> asyncio.Queue[RequestOutput]:
        self.submitted += requests
        return self.queue

    def abort(self, request_ids: list[str], reason: FinishReason = FinishReason.ABORT) -> None:
        self.aborted += request_ids
        self.abort_reasons += [reason] * len(request_ids)

    def release(self, request_ids: list[str]) -> None:
        self.released += request_ids


def ids(tokenizer: Tokenizer, text: str) -> list[int]:
    return tokenizer.tokenize(text, add_special=False, parse_special=False)


def stats(n_prompt: int, n_generated: int, cached: int = 0) -> RequestStats:
    return RequestStats(n_prompt, cached, n_prompt - cached, n_generated, 0.0, 0.0, 0.0)


def make(tokenizer: Tokenizer, n: int = 1, stops: list[str] | None = None, logprobs: bool = False,
         prompts: int = 1, ping_s: float = 5.0) -> tuple[StubEngine, Generation]:
    engine = StubEngine()
    requests = [AddRequest(f"r-{i}", [1, 2, 3], 16) for i in range(n * prompts)]
    gen = Generation(engine, tokenizer, requests, n, stops or [], logprobs, ping_s)  # type: ignore[arg-type]
    return engine, gen


def output(rid: str, token_ids: list[int], finish: FinishReason | None = None, logprobs: bool = False,
           **kw: object) -> RequestOutput:
    lps = [TokenLogprob(t, -0.25, [(t, -0.25)]) for t in token_ids] if logprobs else []
    return RequestOutput(rid, token_ids, lps, finish, **kw)  # type: ignore[arg-type]


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def test_text_and_finish_and_usage(tokenizer: Tokenizer):
    async def scenario() -> tuple[list[ChoiceDelta], StubEngine, Generation]:
        engine, gen = make(tokenizer)
        tokens = ids(tokenizer, "Paris is nice.")
        engine.queue.put_nowait(output("r-0", tokens[:2]))
        engine.queue.put_nowait(output("r-0", tokens[2:], FinishReason.STOP, stats=stats(3, len(tokens), cached=2)))
        return await collect(gen), engine, gen

    [result], engine, gen = run(scenario())
    assert (result.text, result.finish_reason) == ("Paris is nice.", "stop")
    usage = gen.usage()
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (3, 5, 8)  # 4 + the ending token
    assert usage.prompt_tokens_details.cached_tokens == 2
    assert engine.aborted == [] and engine.released == ["r-0"]


def test_length_finish(tokenizer: Tokenizer):
    async def scenario() -> list[ChoiceDelta]:
        engine, gen = make(tokenizer)
        engine.queue.put_nowait(output("r-0", ids(tokenizer, "a b"), FinishReason.LENGTH))
        return await collect(gen)

    assert run(scenario())[0].finish_reason == "length"


def test_stop_string_across_tokens_aborts_once_and_drops_later_tokens(tokenizer: Tokenizer):
    async def scenario() -> tuple[list[list[ChoiceDelta] | None], StubEngine, Generation]:
        engine, gen = make(tokenizer, stops=["\nUser:"])
        deltas = []
        async with gen:
            for text in ["Sure.", "\n", "User", ":", " more"]:
                engine.queue.put_nowait(output("r-0", ids(tokenizer, text)))
                deltas.append(await gen.next_deltas())
            engine.queue.put_nowait(output("r-0", [], FinishReason.ABORT, stats=stats(3, 5)))
            deltas.append(await gen.next_deltas())
            assert gen.done
        return deltas, engine, gen

    deltas, engine, gen = run(scenario())
    texts = [d[0].text if d else "" for d in deltas]
    assert "".join(texts) == "Sure."
    assert texts[1] == ""  # "\n" was held: it could start the stop string
    assert deltas[3] is not None and deltas[3][0].finish_reason == "stop"
    assert engine.aborted == ["r-0"]  # once, although more output followed
    assert engine.abort_reasons == [FinishReason.STOP]  # ended here: the engine counts it finished
    # counted up to the token completing the stop string; " more" came after it
    assert gen.usage().completion_tokens == sum(len(ids(tokenizer, t)) for t in ["Sure.", "\n", "User", ":"])


def test_held_stop_prefix_is_released_when_generation_ends(tokenizer: Tokenizer):
    async def scenario() -> list[ChoiceDelta]:
        engine, gen = make(tokenizer, stops=["\n\n"])
        engine.queue.put_nowait(output("r-0", ids(tokenizer, "end\n"), FinishReason.STOP))
        return await collect(gen)

    assert run(scenario())[0].text == "end\n"


def test_logprobs_follow_their_text(tokenizer: Tokenizer):
    async def scenario() -> tuple[list[ChoiceDelta], list[ChoiceDelta]]:
        engine, gen = make(tokenizer, stops=["STOP"], logprobs=True)
        async with gen:
            engine.queue.put_nowait(output("r-0", ids(tokenizer, "go ST"), logprobs=True))
            first = await gen.next_deltas()
            engine.queue.put_nowait(output("r-0", ids(tokenizer, "ART"), FinishReason.LENGTH, logprobs=True))
            second = await gen.next_deltas()
        return first, second

    first, second = run(scenario())
    # "go ST" is the tokens "go" + " ST"; "ST" may begin "STOP", so it and the logprob of " ST" wait
    assert first[0].text == "go "
    assert [t.text for t in first[0].tokens] == ["go"]
    assert second[0].text == "START"
    assert [(t.text, t.offset) for t in second[0].tokens] == [(" ST", 2), ("ART", 5)]
    assert all(t.logprob == -0.25 and t.top[0][2] == -0.25 for t in first[0].tokens + second[0].tokens)


def test_logprobs_of_tokens_past_a_stop_string_are_dropped(tokenizer: Tokenizer):
    async def scenario() -> list[ChoiceDelta]:
        engine, gen = make(tokenizer, stops=["ART"], logprobs=True)
        async with gen:
            engine.queue.put_nowait(output("r-0", ids(tokenizer, "go ST"), logprobs=True))
            engine.queue.put_nowait(output("r-0", ids(tokenizer, "ART more"), logprobs=True))
            deltas = await gen.next_deltas()
        return deltas

    [delta] = run(scenario())
    assert (delta.text, delta.finish_reason) == ("go ST", "stop")
    assert [t.text for t in delta.tokens] == ["go", " ST"]


def test_n_choices_and_several_prompts_count_each_prompt_once(tokenizer: Tokenizer):
    async def scenario() -> tuple[list[ChoiceDelta], Generation]:
        engine, gen = make(tokenizer, n=2, prompts=2)
        for i, text in enumerate(["a", "b", "c", "d"]):
            engine.queue.put_nowait(output(f"r-{i}", ids(tokenizer, text), FinishReason.STOP, stats=stats(3, 1, 1)))
        return await collect(gen), gen

    results, gen = run(scenario())
    assert [r.text for r in results] == ["a", "b", "c", "d"]
    usage = gen.usage()
    # each choice: its token and the ending one
    assert (usage.prompt_tokens, usage.completion_tokens, usage.prompt_tokens_details.cached_tokens) == (6, 8, 2)


def test_engine_error_raises_with_its_status(tokenizer: Tokenizer):
    async def scenario() -> None:
        engine, gen = make(tokenizer, n=2)
        engine.queue.put_nowait(output("r-1", [], FinishReason.ERROR, error=EngineError(ErrorCode.OVERLOADED, "full")))
        try:
            await collect(gen)
        finally:
            assert engine.aborted == ["r-0"]  # the surviving choice is aborted on the way out

    with pytest.raises(ApiError) as info:
        run(scenario())
    assert info.value.status == 503


def test_quiet_engine_gives_ping_ticks(tokenizer: Tokenizer):
    async def scenario() -> list[ChoiceDelta] | None:
        _, gen = make(tokenizer, ping_s=0.01)
        async with gen:
            return await gen.next_deltas()

    assert run(scenario()) is None


def test_leaving_early_aborts_running_requests(tokenizer: Tokenizer):
    async def scenario() -> StubEngine:
        engine, gen = make(tokenizer, n=2)
        task = asyncio.ensure_future(collect(gen))
        await asyncio.sleep(0.01)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return engine

    engine = run(scenario())
    assert sorted(engine.aborted) == ["r-0", "r-1"]
    assert sorted(engine.released) == ["r-0", "r-1"]


def test_timings_carry_both_draft_counts_once_anything_was_drafted():
    """llama-server writes draft_n and draft_n_accepted whenever something was drafted, the
    accepted count too when it is 0; neither without speculation."""
    none_accepted = msgspec.json.decode(msgspec.json.encode(make_timings(0, 4, 1.0, 8, 2.0, 6, 0)))
    assert (none_accepted["draft_n"], none_accepted["draft_n_accepted"]) == (6, 0)
    assert "draft_n" not in msgspec.json.decode(msgspec.json.encode(make_timings(0, 4, 1.0, 8, 2.0)))
