"""POST /v1/chat/completions: messages -> chat template -> tokens -> generation -> OpenAI JSON or SSE."""

from __future__ import annotations

import functools
import time
from typing import Any

import msgspec

from frontend import conversation
from frontend.api import prompt_logprobs
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
    StreamOptions,
    ToolCallDelta,
    ToolCallFunction,
    ToolCallFunctionDelta,
    TopLogprob,
    TopProb,
)
from frontend.api.native_result import stream_tail
from frontend.generation import ChoiceDelta, TokenText, collect, token_name
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
    if body.top_logprobs is not None:  # OpenAI's rule, and llama-server's
        raise invalid("top_logprobs requires logprobs to be set to true", param="top_logprobs")
    return body.n_probs if body.n_probs > 0 else -1


def token_logprobs(tokens: list[TokenText], post_sampling: bool = False,
                   as_ids: bool = False) -> list[ChatTokenLogprob]:
    """OpenAI's logprobs of each token (chat's, and the Responses API's output_text); with
    ``post_sampling_probs`` llama-server's prob and top_probs (the engine then reports
    probabilities in place of log-probabilities)."""
    name = token_name(as_ids)  # (each entry has its token's id too, as llama-server's)
    if post_sampling:
        return [ChatTokenLogprob(id=t.token_id, token=name(t.text, t.token_id), bytes=list(t.piece),
                                 prob=t.logprob, top_probs=[TopProb(i, name(text, i), p, list(raw))
                                                            for (text, raw, p), i in zip(t.top, t.top_ids)])
                for t in tokens]
    return [ChatTokenLogprob(id=t.token_id, token=name(t.text, t.token_id), bytes=list(t.piece),
                             logprob=t.logprob, top_logprobs=[TopLogprob(i, name(text, i), lp, list(raw))
                                                              for (text, raw, lp), i in zip(t.top, t.top_ids)])
            for t in tokens]


class _ChatChunks:
    """Stream events of one chat completion."""

    def __init__(self, id: str, created: int, model: str, body: ChatCompletionRequest, run: conversation.ChatRun,
                 logprobs: bool) -> None:
        self._id, self._created, self._model = id, created, model
        self._body, self._run, self._gen, self._parsers = body, run, run.gen, run.parsers
        self._logprobs = logprobs
        options = body.stream_options or StreamOptions()
        self._include_usage, self._continuous_usage = options.usage_chunks()

    def _chunk(self, choice: ChatChunkChoice, timings: bool = False) -> bytes:
        """A chunk of one choice, with that choice's timings (on its last chunk, or on each with
        timings_per_token) and the usage so far (continuous_usage_stats)."""
        timed = timings or self._body.timings_per_token
        return self._bare([choice], timings=self._gen.timings(choice.index) if timed else None)

    def _bare(self, choices: list[ChatChunkChoice], **fields: Any) -> bytes:
        return sse.event(ChatCompletionChunk(id=self._id, created=self._created, model=self._model,
                                             system_fingerprint=SYSTEM_FINGERPRINT, choices=choices,
                                             usage=self._gen.usage() if self._continuous_usage else None, **fields))

    def head(self) -> list[bytes]:
        """The role chunk of each choice: no timings yet, even with timings_per_token (llama-server);
        the prompt's token ids and text when asked for (vLLM)."""
        body, run = self._body, self._run
        fields = {"prompt_token_ids": run.prompt_token_ids if body.return_token_ids else None,
                  "prompt_text": run.prompt_text if body.return_prompt_text else None}
        return [self._bare([ChatChunkChoice(i, ChatDelta(role="assistant", content=None))], **fields)
                for i in range(body.n)]

    def render(self, delta: ChoiceDelta) -> list[bytes]:
        body = self._body
        events = []
        if delta.progress is not None:
            events.append(self._bare([ChatChunkChoice(delta.index, ChatDelta())],
                                     prompt_progress=progress_json(delta.progress)))
        parser = self._parsers[delta.index]
        out = conversation.parse_delta(parser, delta)
        as_ids = bool(body.return_tokens_as_token_ids)
        logprobs = (ChatLogprobs(token_logprobs(delta.tokens, body.post_sampling_probs, as_ids))
                    if self._logprobs and delta.tokens else None)
        choices = []
        if out.reasoning and body.include_reasoning:
            choices.append(ChatChunkChoice(delta.index, ChatDelta(reasoning_content=out.reasoning)))
        if out.content or logprobs is not None:
            choices.append(ChatChunkChoice(delta.index, ChatDelta(content=out.content), logprobs))
        for call in out.calls:  # OpenAI's shape: the first delta of a call has its id and name
            if call.id is not None:
                piece = ToolCallDelta(call.index, ToolCallFunctionDelta(name=call.name, arguments=call.arguments),
                                      call.id, "function")
            else:
                piece = ToolCallDelta(call.index, ToolCallFunctionDelta(arguments=call.arguments))
            choices.append(ChatChunkChoice(delta.index, ChatDelta(tool_calls=[piece])))
        if body.return_token_ids and delta.token_ids:  # the step's ids go with its first chunk
            if not choices:
                choices.append(ChatChunkChoice(delta.index, ChatDelta()))
            choices[0].token_ids = delta.token_ids
        events += [self._chunk(choice) for choice in choices]
        if delta.finish_reason is not None:
            reason = conversation.finish_reason(delta.finish_reason, parser)
            events.append(self._chunk(ChatChunkChoice(delta.index, ChatDelta(), finish_reason=reason), timings=True))
        return events

    def tail(self) -> list[bytes]:
        bare = functools.partial(ChatCompletionChunk, id=self._id, created=self._created, model=self._model,
                                 system_fingerprint=SYSTEM_FINGERPRINT, choices=[])
        return stream_tail(self._run.native, self._gen, self._include_usage, bare)


async def chat_completions(fe: Frontend, req: Request) -> Response | StreamResponse:
    body = req.decode(ChatCompletionRequest)
    refuse_unsupported(req.body, ChatCompletionRequest)
    logprobs = _engine_logprobs(body)
    run = await conversation.start(fe, req, body, logprobs)
    gen, parsers = run.gen, run.parsers
    completion_id, created = f"{CHAT_COMPLETION_ID_PREFIX}{req.id}", int(time.time())
    if body.stream:
        chunks = _ChatChunks(completion_id, created, fe.model_id, body, run, logprobs >= 0)
        return StreamResponse(sse.generation_events(gen, chunks.head, chunks.render, chunks.tail))
    results = await collect(gen)
    choices = []
    for r in results:
        reply = conversation.read_reply(parsers[r.index], r)
        calls = [ResponseToolCall(c.id, ToolCallFunction(c.name, c.arguments)) for c in reply.calls]
        message = AssistantMessage(content=reply.content or (None if calls else ""),
                                   reasoning_content=(reply.reasoning if body.include_reasoning else "") or None,
                                   tool_calls=calls or None)
        as_ids = bool(body.return_tokens_as_token_ids)
        logprobs_out = (ChatLogprobs(token_logprobs(r.tokens, body.post_sampling_probs, as_ids))
                        if logprobs >= 0 else None)
        choices.append(ChatChoice(index=r.index, message=message, logprobs=logprobs_out,
                                  finish_reason=reply.finish_reason,
                                  token_ids=r.token_ids if body.return_token_ids else msgspec.UNSET))
    return json_response(ChatCompletion(
        id=completion_id,
        created=created,
        model=fe.model_id,
        system_fingerprint=SYSTEM_FINGERPRINT,
        choices=choices,
        usage=gen.usage(),
        timings=gen.timings(),
        verbose=run.native.first(gen, results) if run.native is not None else None,
        prompt_token_ids=run.prompt_token_ids if body.return_token_ids else None,
        prompt_text=run.prompt_text if body.return_prompt_text else None,
        prompt_logprobs=prompt_logprobs.as_vllm(fe.tokenizer, results[0].prompt_logprobs, body.prompt_logprobs,
                                                bool(body.return_tokens_as_token_ids))
        if body.prompt_logprobs is not None else None,
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
