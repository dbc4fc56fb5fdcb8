"""POST /v1/chat/completions: messages -> chat template -> tokens -> generation -> OpenAI JSON or SSE."""

from __future__ import annotations

import functools
import time

from frontend import conversation
from frontend.api.unsupported_fields import refuse_unsupported
from frontend.api.schemas import (
    CHAT_COMPLETION_ID_PREFIX,
    SYSTEM_FINGERPRINT,
    TEXT_COMPLETION_ID_PREFIX,
    AssistantMessage,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatDelta,
    ChatLogprobs,
    ChatTokenLogprob,
    ControlRequest,
    ControlResult,
    InputTokenCount,
    ResponseToolCall,
    ToolCallDelta,
    ToolCallFunction,
    ToolCallFunctionDelta,
    TopLogprob,
    TopProb,
)
from frontend.conversation import ReplyParser
from frontend.api.native_result import NativeResults, stream_tail
from frontend.generation import ChoiceDelta, Generation, TokenText, collect
from frontend.http import sse
from frontend.http.asgi import Request, Response, StreamResponse, json_response
from frontend.http.errors import invalid, unavailable
from frontend.state import Frontend
from frontend.timings import progress_json


CONTROL_TIMEOUT_S = 5.0  # the scheduler answers a control at once, between two steps


def _engine_logprobs(body: ChatCompletionRequest) -> int:
    """-1: none; 0: the chosen token; k: chosen + top k (``top_logprobs``, or llama-server's ``n_probs``)."""
    if body.logprobs:
        return body.top_logprobs or 0
    return body.n_probs if body.n_probs > 0 else -1


def _logprobs(tokens: list[TokenText], post_sampling: bool) -> ChatLogprobs:
    """OpenAI's logprobs; with ``post_sampling_probs`` llama-server's prob and top_probs (the
    engine then reports probabilities in place of log-probabilities)."""
    if post_sampling:
        return ChatLogprobs(content=[
            ChatTokenLogprob(token=t.text, bytes=list(t.piece), prob=t.logprob,
                             top_probs=[TopProb(token=text, prob=p, bytes=list(raw)) for text, raw, p in t.top])
            for t in tokens
        ])
    return ChatLogprobs(content=[
        ChatTokenLogprob(token=t.text, bytes=list(t.piece), logprob=t.logprob,
                         top_logprobs=[TopLogprob(token=text, logprob=lp, bytes=list(raw)) for text, raw, lp in t.top])
        for t in tokens
    ])


class _ChatChunks:
    """Stream events of one chat completion."""

    def __init__(self, id: str, created: int, model: str, n_choices: int, gen: Generation, logprobs: bool,
                 post_sampling: bool, include_usage: bool, parsers: list[ReplyParser], timings_per_token: bool,
                 native: NativeResults | None) -> None:
        self._id, self._created, self._model = id, created, model
        self._native = native
        self._timings_per_token = timings_per_token
        self._n_choices = n_choices
        self._parsers = parsers
        self._gen = gen
        self._logprobs, self._post_sampling = logprobs, post_sampling
        self._include_usage = include_usage

    def _chunk(self, choices: list[ChatChunkChoice], timings: bool = False) -> bytes:
        return sse.event(ChatCompletionChunk(id=self._id, created=self._created, model=self._model,
                                             system_fingerprint=SYSTEM_FINGERPRINT, choices=choices,
                                             timings=self._gen.timings() if timings or self._timings_per_token
                                             else None))

    def head(self) -> list[bytes]:
        """The role chunk of each choice: no timings yet, even with timings_per_token (llama-server)."""
        return [sse.event(ChatCompletionChunk(id=self._id, created=self._created, model=self._model,
                                              system_fingerprint=SYSTEM_FINGERPRINT,
                                              choices=[ChatChunkChoice(i, ChatDelta(role="assistant", content=None))]))
                for i in range(self._n_choices)]

    def render(self, delta: ChoiceDelta) -> list[bytes]:
        events = []
        if delta.progress is not None:
            events.append(sse.event(ChatCompletionChunk(
                id=self._id, created=self._created, model=self._model, system_fingerprint=SYSTEM_FINGERPRINT,
                choices=[ChatChunkChoice(delta.index, ChatDelta())], prompt_progress=progress_json(delta.progress))))
        parser = self._parsers[delta.index]
        out = conversation.parse_delta(parser, delta)
        logprobs = _logprobs(delta.tokens, self._post_sampling) if self._logprobs and delta.tokens else None
        if out.reasoning:
            events.append(self._chunk([ChatChunkChoice(delta.index, ChatDelta(reasoning_content=out.reasoning))]))
        if out.content or logprobs is not None:
            events.append(self._chunk([ChatChunkChoice(delta.index, ChatDelta(content=out.content), logprobs)]))
        for call in out.calls:  # OpenAI's shape: the first delta of a call has its id and name
            if call.id is not None:
                piece = ToolCallDelta(call.index, ToolCallFunctionDelta(name=call.name, arguments=call.arguments),
                                      call.id, "function")
            else:
                piece = ToolCallDelta(call.index, ToolCallFunctionDelta(arguments=call.arguments))
            events.append(self._chunk([ChatChunkChoice(delta.index, ChatDelta(tool_calls=[piece]))]))
        if delta.finish_reason is not None:
            reason = conversation.finish_reason(delta.finish_reason, parser)
            events.append(self._chunk([ChatChunkChoice(delta.index, ChatDelta(), finish_reason=reason)], timings=True))
        return events

    def tail(self) -> list[bytes]:
        bare = functools.partial(ChatCompletionChunk, id=self._id, created=self._created, model=self._model,
                                 system_fingerprint=SYSTEM_FINGERPRINT, choices=[])
        return stream_tail(self._native, self._gen, self._include_usage, bare)


async def chat_completions(fe: Frontend, req: Request) -> Response | StreamResponse:
    body = req.decode(ChatCompletionRequest)
    refuse_unsupported(req.body, ChatCompletionRequest)
    logprobs = _engine_logprobs(body)
    run = await conversation.start(fe, req, body, logprobs)
    gen, parsers = run.gen, run.parsers
    completion_id, created = f"{CHAT_COMPLETION_ID_PREFIX}{req.id}", int(time.time())
    if body.stream:
        include_usage = body.stream_options is not None and body.stream_options.include_usage
        chunks = _ChatChunks(completion_id, created, fe.model_id, body.n, gen, logprobs >= 0, body.post_sampling_probs,
                             include_usage, parsers, body.timings_per_token, run.native)
        return StreamResponse(sse.generation_events(gen, chunks.head(), chunks.render, chunks.tail))
    results = await collect(gen)
    choices = []
    for r in results:
        reply = conversation.read_reply(parsers[r.index], r)
        calls = [ResponseToolCall(c.id, ToolCallFunction(c.name, c.arguments)) for c in reply.calls]
        message = AssistantMessage(content=reply.content or (None if calls else ""),
                                   reasoning_content=reply.reasoning or None, tool_calls=calls or None)
        choices.append(ChatChoice(index=r.index, message=message,
                                  logprobs=_logprobs(r.tokens, body.post_sampling_probs) if logprobs >= 0 else None,
                                  finish_reason=reply.finish_reason))
    return json_response(ChatCompletion(
        id=completion_id,
        created=created,
        model=fe.model_id,
        system_fingerprint=SYSTEM_FINGERPRINT,
        choices=choices,
        usage=gen.usage(),
        timings=gen.timings(),
        verbose=run.native.first(gen, results) if run.native is not None else None,
    ))


async def control(fe: Frontend, req: Request) -> Response:
    """llama-server's POST /v1/chat/completions/control: ``reasoning_end`` ends the thinking of a
    running completion that set ``reasoning_control`` (every choice of it; a /v1/completions id
    works too); a completion that is not running (finished, unknown, still queued) is
    ``success: false`` with the reason."""
    body = req.decode(ControlRequest)
    if not body.id:
        raise invalid("missing completion id", param="id")
    if body.action != "reasoning_end":
        raise invalid(f"unknown control action {body.action!r}; the one action is reasoning_end", param="action")
    try:
        done = await fe.engine.end_reasoning(_request_id(body.id), CONTROL_TIMEOUT_S)
    except TimeoutError:
        raise unavailable(f"the scheduler did not answer within {CONTROL_TIMEOUT_S:g} s") from None
    return json_response(ControlResult(success=True) if done.ended else ControlResult(False, done.error))


def _request_id(completion_id: str) -> str:
    """The request id in a chat completion's id (or a text completion's: ``cmpl-``)."""
    for prefix in (CHAT_COMPLETION_ID_PREFIX, TEXT_COMPLETION_ID_PREFIX):
        if completion_id.startswith(prefix):
            return completion_id.removeprefix(prefix)
    return completion_id


async def input_tokens(fe: Frontend, req: Request) -> Response:
    """How many prompt tokens a chat request would submit, without generating (llama-server's
    /v1/chat/completions/input_tokens)."""
    body = req.decode(ChatCompletionRequest)
    refuse_unsupported(req.body, ChatCompletionRequest)
    _, prompt = await conversation.prompt_tokens(fe, req, body)
    return json_response(InputTokenCount(len(prompt.tokens)))
