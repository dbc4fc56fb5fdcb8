"""POST /v1/chat/completions: messages -> chat template -> tokens -> generation -> OpenAI JSON or SSE."""

from __future__ import annotations

import time
from typing import Any

import msgspec

from frontend import sse
from frontend.chat_template import ChatTemplateError
from frontend.errors import invalid
from frontend.generation import ChoiceDelta, Generation, TokenText, collect
from frontend.http import Request, Response, StreamResponse, json_response
from frontend.sampling import check_context, engine_requests, max_tokens, sampling_params, stop_strings
from frontend.schemas import (
    SYSTEM_FINGERPRINT,
    AssistantMessage,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatDelta,
    ChatLogprobs,
    ChatMessage,
    ChatTokenLogprob,
    TopLogprob,
)
from frontend.state import Frontend
from frontend.structured.constraints import output_grammar


def _template_message(message: ChatMessage) -> dict[str, Any]:
    content = message.content
    if isinstance(content, list):
        # Templates differ in what they accept; joined text works with all of them (llama.cpp's choice).
        content = "\n".join(part.text for part in content)
    out: dict[str, Any] = {"role": message.role, "content": content or ""}
    if message.name is not None:
        out["name"] = message.name
    if message.tool_calls is not None:
        out["tool_calls"] = [msgspec.to_builtins(c) for c in message.tool_calls]
    if message.tool_call_id is not None:
        out["tool_call_id"] = message.tool_call_id
    return out


def render_prompt(fe: Frontend, body: ChatCompletionRequest) -> str:
    """The conversation as prompt text (also what /apply-template returns)."""
    if not body.messages:
        raise invalid("messages must not be empty", param="messages")
    try:
        tools = [msgspec.to_builtins(t) for t in body.tools] if body.tools else None
        return fe.template.render([_template_message(m) for m in body.messages], add_generation_prompt=True,
                                  tools=tools, extra=body.chat_template_kwargs)
    except ChatTemplateError as exc:
        raise invalid(str(exc), param="messages") from None


def _prompt_tokens(fe: Frontend, body: ChatCompletionRequest) -> list[int]:
    return fe.tokenizer.tokenize(render_prompt(fe, body), add_special=True, parse_special=True)


def _engine_logprobs(body: ChatCompletionRequest) -> int:
    """-1: none; 0: the chosen token; k: chosen + top k (``top_logprobs``, or llama-server's ``n_probs``)."""
    if body.logprobs:
        return body.top_logprobs or 0
    return body.n_probs if body.n_probs > 0 else -1


def _logprobs(tokens: list[TokenText]) -> ChatLogprobs:
    return ChatLogprobs(content=[
        ChatTokenLogprob(
            token=t.text,
            logprob=t.logprob,
            bytes=list(t.piece),
            top_logprobs=[TopLogprob(token=text, logprob=lp, bytes=list(raw)) for text, raw, lp in t.top],
        )
        for t in tokens
    ])


class _ChatChunks:
    """Stream events of one chat completion."""

    def __init__(self, id: str, created: int, model: str, n_choices: int, gen: Generation, logprobs: bool,
                 include_usage: bool) -> None:
        self._id, self._created, self._model = id, created, model
        self._n_choices = n_choices
        self._gen = gen
        self._logprobs = logprobs
        self._include_usage = include_usage

    def _chunk(self, choices: list[ChatChunkChoice]) -> bytes:
        return sse.event(ChatCompletionChunk(id=self._id, created=self._created, model=self._model,
                                             system_fingerprint=SYSTEM_FINGERPRINT, choices=choices))

    def head(self) -> list[bytes]:
        return [self._chunk([ChatChunkChoice(i, ChatDelta(role="assistant", content=""))])
                for i in range(self._n_choices)]

    def render(self, delta: ChoiceDelta) -> list[bytes]:
        events = []
        if delta.text or delta.tokens:
            logprobs = _logprobs(delta.tokens) if self._logprobs else None
            events.append(self._chunk([ChatChunkChoice(delta.index, ChatDelta(content=delta.text), logprobs)]))
        if delta.finish_reason is not None:
            events.append(self._chunk([ChatChunkChoice(delta.index, ChatDelta(), finish_reason=delta.finish_reason)]))
        return events

    def tail(self) -> list[bytes]:
        if not self._include_usage:
            return []
        return [sse.event(ChatCompletionChunk(id=self._id, created=self._created, model=self._model,
                                              system_fingerprint=SYSTEM_FINGERPRINT, choices=[],
                                              usage=self._gen.usage()))]


async def chat_completions(fe: Frontend, req: Request) -> Response | StreamResponse:
    body = req.decode(ChatCompletionRequest)
    info = fe.engine_info()
    prompt = await fe.prepare(len(req.body), lambda: _prompt_tokens(fe, body))
    grammar = await fe.prepare(len(req.body), lambda: output_grammar(fe.grammars, body))
    if body.max_completion_tokens is not None:
        limit = max_tokens(body.max_completion_tokens, "max_completion_tokens")
    else:
        limit = max_tokens(body.max_tokens)
    check_context(len(prompt), limit, info.n_ctx_slot)
    logprobs = _engine_logprobs(body)
    requests = engine_requests(req.id, [prompt], body.n, body,
                               sampling_params(body, fe.tokenizer, fe.cfg.seed, grammar), limit, logprobs)
    gen = Generation(fe.engine, fe.tokenizer, requests, body.n, stop_strings(body.stop), logprobs >= 0,
                     fe.cfg.sse_ping_interval)
    completion_id, created = f"chatcmpl-{req.id}", int(time.time())
    if body.stream:
        include_usage = body.stream_options is not None and body.stream_options.include_usage
        chunks = _ChatChunks(completion_id, created, fe.model_id, body.n, gen, logprobs >= 0, include_usage)
        return StreamResponse(sse.generation_events(gen, chunks.head(), chunks.render, chunks.tail))
    results = await collect(gen)
    return json_response(ChatCompletion(
        id=completion_id,
        created=created,
        model=fe.model_id,
        system_fingerprint=SYSTEM_FINGERPRINT,
        choices=[
            ChatChoice(
                index=r.index,
                message=AssistantMessage(content=r.text),
                logprobs=_logprobs(r.tokens) if logprobs >= 0 else None,
                finish_reason=r.finish_reason,
            )
            for r in results
        ],
        usage=gen.usage(),
    ))
