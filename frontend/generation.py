"""One API call's generation: its engine requests (n choices, several prompts) read as text deltas.

Each choice turns the token ids the engine sends into text: incremental detokenization (no
broken UTF-8), stop strings (held back until decided; a match aborts the request in the engine),
and log-probabilities released together with the text of their tokens. The engine finishes every
request with exactly one terminal output; a choice is done when that output has arrived, so usage
numbers (cached prompt tokens) are complete when the generation ends. Leaving the ``async with``
block early (client gone, error) aborts whatever is still running.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from collections.abc import Callable
from typing import Self

from frontend.engine_client import EngineClient
from frontend.http.errors import ApiError, from_engine
from frontend.api.schemas import PromptTokensDetails, Usage
from frontend.text.stop import IndentGuard, StopMatcher
from frontend.timings import Timings, make_timings
from frontend.text.tokenizer import IncrementalDetokenizer, Tokenizer
from frontend.observe.prompt_log import PromptLog
from frontend.observe.trace import ChoiceTrace, RequestTrace
from ipc.protocol import AddRequest, FinishReason, PromptProgress, RequestOutput, RequestStats, TokenLogprob


@dataclass(slots=True)
class TokenText:
    """A generated token with its log-probability and alternatives, as text."""

    text: str
    piece: bytes  # the token's bytes (OpenAI's "bytes")
    logprob: float
    top: list[tuple[str, bytes, float]]
    offset: int  # characters of the choice's text before this token
    token_id: int = -1
    top_ids: list[int] = field(default_factory=list)  # the ids of ``top``


def token_name(as_ids: bool) -> Callable[[str, int], str]:
    """How log-probabilities name a token: its text, or vLLM's ``token_id:<id>``
    (``return_tokens_as_token_ids``)."""
    return (lambda _text, token_id: f"token_id:{token_id}") if as_ids else (lambda text, _id: text)


@dataclass(slots=True)
class ChoiceDelta:
    index: int
    text: str = ""
    tokens: list[TokenText] = field(default_factory=list)
    token_ids: list[int] = field(default_factory=list)  # the generated ids that count (llama-server's tokens)
    finish_reason: str | None = None  # "stop" or "length" on the choice's last delta
    progress: PromptProgress | None = None  # the prefill's progress (with return_progress)


class Choice:
    """The text of one engine request, built token by token."""

    def __init__(self, index: int, request_id: str, tokenizer: Tokenizer, stops: list[str],
                 logprobs: bool, special_ids: frozenset[int] = frozenset(), time_limit_s: float | None = None,
                 n_indent: int = 0, keep_stop: bool = False, min_tokens: int = 0) -> None:
        """``time_limit_s``: llama-server's t_max_predict_ms: a token with a newline generated
        this long after the first token ends the text (finish "length"); ``n_indent``: see
        IndentGuard; ``keep_stop``: the stop string that ends the text stays in it;
        ``min_tokens``: stop strings apply from this many tokens on (vLLM's min_tokens)."""
        self.index = index
        self.request_id = request_id
        # generated tokens that count: up to a stop string's last token, or with the ending token
        self.n_tokens = 0
        self.finish_reason: str | None = None  # known as soon as the text is final
        self.finished = False  # the engine's terminal output arrived
        self.stats: RequestStats | None = None
        self.error = ""  # the engine's message when it failed the request
        self.first_token_at: float | None = None  # time.monotonic() when its first token arrived
        self.n_cached = 0  # its prompt tokens from the prefix cache (said with its first tokens)
        self.ended_at: float | None = None  # when the engine's terminal output arrived
        self.stopped_by_string = False
        self.cut_short = False  # ended here (stop string, time limit): the engine request is to be aborted
        self.prompt_logprobs: list[TokenLogprob] = []  # with echo + logprobs: prompt tokens 1..
        self._tokenizer = tokenizer
        self._detok = IncrementalDetokenizer(tokenizer, special_ids)
        self._special_ids = special_ids
        self._stop = StopMatcher(stops, keep_stop)
        self._min_tokens = min_tokens
        self._logprobs = logprobs
        self._decoded = 0  # characters decoded so far
        self._emitted = 0  # characters released to the client
        self._held_tokens: list[tuple[int, TokenText]] = []  # (end, token) whose text is not all out
        self._delta = ChoiceDelta(index)
        self._finish_reported = False
        self._time_limit_s = time_limit_s
        self._indent = IndentGuard(n_indent)

    def feed(self, output: RequestOutput) -> None:
        if self.finished:
            return
        self.prompt_logprobs += output.prompt_logprobs
        if output.progress is not None:
            self._delta.progress = output.progress
        if output.token_ids and self.first_token_at is None:
            self.first_token_at = time.monotonic()
        if output.n_cached_tokens >= 0:
            self.n_cached = output.n_cached_tokens
        if self.finish_reason is None:
            for k, token_id in enumerate(output.token_ids):
                self.n_tokens += 1
                self._delta.token_ids.append(token_id)
                raw = self._detok.push(token_id)
                text, short_indent = self._indent.push(raw)
                if self._logprobs and k < len(output.logprobs):
                    self._hold_token(output.logprobs[k], text)
                self._decoded += len(text)
                if self._emit(text):
                    self.stopped_by_string = self.cut_short = True
                    self.finish_reason = "stop"
                    break
                if short_indent or self._over_time(raw):
                    self.cut_short = True
                    self._delta.text += self._stop.flush()  # no stop string can end the text now
                    self._release_tokens(None)
                    self.finish_reason = "length"
                    break
            else:
                self._release_tokens(self._emitted)
        if output.finish_reason is not None:
            self._finish(output)

    def take_delta(self) -> ChoiceDelta | None:
        """What changed since the last call, or None."""
        delta = self._delta
        report_finish = self.finish_reason is not None and not self._finish_reported
        if not (delta.text or delta.tokens or delta.token_ids or delta.progress or report_finish):
            return None
        if report_finish:
            delta.finish_reason = self.finish_reason
            self._finish_reported = True
        self._delta = ChoiceDelta(self.index)
        return delta

    @property
    def stop_type(self) -> str:
        """llama-server's stop_type: word (a stop string), eos, limit, or none (not finished)."""
        if self.stopped_by_string:
            return "word"
        return {"stop": "eos", "length": "limit"}.get(self.finish_reason or "", "none")

    @property
    def stopping_word(self) -> str:
        return self._stop.matched

    def _finish(self, output: RequestOutput) -> None:
        self.finished = True
        self.ended_at = time.monotonic()
        self.stats = output.stats
        reason = output.finish_reason
        if reason == FinishReason.ERROR:
            error = from_engine(output.error)
            self.error = error.message
            raise error
        if self.finish_reason is not None:  # ended here (a stop string): the engine ended what it was told to
            return
        if reason == FinishReason.ABORT:
            raise ApiError(500, "the engine aborted the request")
        if self._emit(self._indent.push(self._detok.flush())[0] + self._indent.flush()):
            self.stopped_by_string = True
            self.finish_reason = "stop"
            return
        self._delta.text += self._stop.flush()
        self._release_tokens(None)
        if reason == FinishReason.STOP:  # the end-of-generation (or stop) token: generated, not shown,
            self.n_tokens += 1  # and counted as llama-server and vLLM count it
        self.finish_reason = "stop" if reason == FinishReason.STOP else "length"

    def _over_time(self, text: str) -> bool:
        if self._time_limit_s is None or "\n" not in text:
            return False
        return self.first_token_at is not None and time.monotonic() - self.first_token_at >= self._time_limit_s

    def _emit(self, text: str) -> bool:
        """Pass text through the stop matcher into the delta; True when a stop string matched."""
        if self.n_tokens < self._min_tokens:  # too soon for a stop string to end the text
            emitted, stopped = self._stop.flush() + text, False
        else:
            emitted, stopped = self._stop.push(text)
        self._delta.text += emitted
        self._emitted += len(emitted)
        if stopped:
            # Keep the tokens whose text was (partly) sent; those past the stop string go.
            self._delta.tokens.extend(t for _, t in self._held_tokens if t.offset < self._emitted)
            self._held_tokens.clear()
        return stopped

    def _hold_token(self, logprob: TokenLogprob, text: str) -> None:
        piece = self._tokenizer.piece(logprob.token_id, logprob.token_id in self._special_ids)
        top = []
        for token_id, value in logprob.top:
            top_piece = self._tokenizer.piece(token_id, token_id in self._special_ids)
            top.append((top_piece.decode("utf-8", errors="replace"), top_piece, value))
        token = TokenText(piece.decode("utf-8", errors="replace"), piece, logprob.logprob, top, self._decoded,
                          logprob.token_id, [token_id for token_id, _ in logprob.top])
        self._held_tokens.append((self._decoded + len(text), token))

    def _release_tokens(self, upto: int | None) -> None:
        """Move tokens whose text is all emitted (all of them with None) into the delta."""
        held = self._held_tokens
        n = len(held) if upto is None else next((i for i, (end, _) in enumerate(held) if end > upto), len(held))
        if n:
            self._delta.tokens.extend(t for _, t in held[:n])
            del held[:n]


class Generation:
    """The engine requests of one API call; ``requests[p * n + i]`` is choice i of prompt p."""

    def __init__(self, engine: EngineClient, tokenizer: Tokenizer, requests: list[AddRequest], n: int,
                 stops: list[str], logprobs: bool, ping_interval_s: float | None,
                 special_ids: frozenset[int] = frozenset(), time_limit_s: float | None = None,
                 n_indent: int = 0, trace: RequestTrace | None = None,
                 on_exit: Callable[[], None] | None = None, prompt_log: PromptLog | None = None,
                 keep_stop: bool = False) -> None:
        """``special_ids``: control tokens written as their text (tool-call and reasoning markers);
        ``ping_interval_s``: None never pings; ``time_limit_s``, ``n_indent``, ``keep_stop``: see Choice;
        ``trace``: the HTTP request's, which learns how each engine request went; ``on_exit``:
        called once every request has ended (frees the requests' media files); ``prompt_log``:
        --log-prompts-dir's, which gets the prompts when they are submitted."""
        self._engine = engine
        self._prompt_log = prompt_log
        self._trace = trace
        self._requests = requests
        self._n = n
        self._ping_interval_s = ping_interval_s
        self.choices = [Choice(i, r.request_id, tokenizer, stops, logprobs, special_ids, time_limit_s, n_indent,
                               keep_stop, r.min_tokens) for i, r in enumerate(requests)]
        self._by_id = {c.request_id: c for c in self.choices}
        self._aborted: set[str] = set()
        self._queue: asyncio.Queue[RequestOutput] | None = None
        self._t_submit = 0.0
        self._on_exit = on_exit

    async def __aenter__(self) -> Self:
        self._t_submit = time.monotonic()
        if self._prompt_log is not None:
            self._prompt_log.write([r.prompt_token_ids for r in self._requests[::self._n]])
        self._queue = self._engine.submit(self._requests)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        running = [c.request_id for c in self.choices if not c.finished and c.request_id not in self._aborted]
        if running:
            self._engine.abort(running)
        self._engine.release([c.request_id for c in self.choices])
        if self._on_exit is not None:
            self._on_exit()
        if self._trace is not None:
            now = time.monotonic()
            self._trace.choices += [
                ChoiceTrace(len(self._requests[c.index].prompt_token_ids), c.n_tokens, c.index % self._n == 0,
                            c.first_token_at, c.ended_at or now, c.stats, c.error)
                for c in self.choices
            ]

    @property
    def done(self) -> bool:
        return all(c.finished for c in self.choices)

    async def next_deltas(self) -> list[ChoiceDelta] | None:
        """The deltas of whatever the engine sent next; None if it sent nothing for a ping interval.

        Raises ApiError when the engine failed a request.
        """
        assert self._queue is not None, "use inside async with"
        try:
            async with asyncio.timeout(self._ping_interval_s):
                outputs = [await self._queue.get()]
        except TimeoutError:
            return None
        while not self._queue.empty():
            outputs.append(self._queue.get_nowait())
        touched: dict[int, Choice] = {}
        for output in outputs:
            choice = self._by_id[output.request_id]
            choice.feed(output)
            touched[choice.index] = choice
            if choice.cut_short and not choice.finished and choice.request_id not in self._aborted:
                self._aborted.add(choice.request_id)  # ended here: finished, not aborted
                self._engine.abort([choice.request_id], FinishReason.STOP if choice.finish_reason == "stop"
                                   else FinishReason.LENGTH)
        return [d for c in touched.values() if (d := c.take_delta()) is not None]

    def usage(self) -> Usage:
        """Token counts: each prompt counted once (with the cache hits of its first choice)."""
        firsts = self.choices[:: self._n]
        prompt_tokens = sum(len(self._requests[c.index].prompt_token_ids) for c in firsts)
        completion_tokens = sum(c.n_tokens for c in self.choices)
        return Usage(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens,
            prompt_tokens_details=PromptTokensDetails(
                cached_tokens=sum(c.stats.n_cached_tokens for c in firsts if c.stats is not None)
            ),
        )


    def timings(self, index: int | None = None) -> Timings:
        """llama-server's timings of this call, or of its choice ``index`` alone (what a stream's
        chunks of that choice carry): the engine's stats once the choices are done, live figures
        measured here before that. Over several choices: tokens add up, each phase lasts as long
        as its slowest choice."""
        choices = self.choices if index is None else [self.choices[index]]
        firsts = self.choices[:: self._n] if index is None else choices
        predicted_n = sum(c.n_tokens for c in choices)
        if all(c.finished and c.stats is not None for c in choices):
            stats = [c.stats for c in choices if c.stats is not None]
            first_stats = [c.stats for c in firsts if c.stats is not None]
            return make_timings(
                cache_n=sum(s.n_cached_tokens for s in first_stats),
                prompt_n=sum(s.n_evaluated_prompt_tokens for s in first_stats),
                prompt_ms=max(s.prefill_ms for s in stats),
                predicted_n=predicted_n,
                predicted_ms=max(s.decode_ms for s in stats),
                draft_n=sum(s.n_draft_tokens for s in stats),
                draft_n_accepted=sum(s.n_draft_accepted for s in stats),
            )
        now = time.monotonic()
        started = [c.first_token_at for c in choices if c.first_token_at is not None]
        cache_n = sum(c.n_cached for c in firsts)
        prompt_n = sum(len(self._requests[c.index].prompt_token_ids) for c in firsts) - cache_n
        if not self._t_submit:  # not submitted yet (a stream's first chunk is built before)
            return make_timings(0, prompt_n, 0.0, 0, 0.0)
        return make_timings(
            cache_n=cache_n,
            prompt_n=prompt_n,
            prompt_ms=1e3 * ((max(started) if started else now) - self._t_submit),
            predicted_n=predicted_n,
            predicted_ms=1e3 * (now - min(started)) if started else 0.0,
        )


@dataclass(slots=True)
class ChoiceResult:
    """A finished choice: all its text and tokens."""

    index: int
    text: str
    tokens: list[TokenText]
    finish_reason: str
    prompt_logprobs: list[TokenLogprob]
    token_ids: list[int]


async def collect(gen: Generation) -> list[ChoiceResult]:
    """Run a generation to its end (non-streaming responses)."""
    texts: list[list[str]] = [[] for _ in gen.choices]
    tokens: list[list[TokenText]] = [[] for _ in gen.choices]
    token_ids: list[list[int]] = [[] for _ in gen.choices]
    async with gen:
        while not gen.done:
            for delta in await gen.next_deltas() or ():
                texts[delta.index].append(delta.text)
                tokens[delta.index].extend(delta.tokens)
                token_ids[delta.index].extend(delta.token_ids)
    results = []
    for c in gen.choices:
        assert c.finish_reason is not None, "a finished choice has its finish reason"
        text = "".join(texts[c.index])
        results.append(ChoiceResult(c.index, text, tokens[c.index], c.finish_reason, c.prompt_logprobs,
                                    token_ids[c.index]))
    return results
