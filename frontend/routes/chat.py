"""POST /v1/chat/completions: messages -> chat template -> tokens -> generation -> OpenAI JSON or SSE."""

from __future__ import annotations

import time
from dataclasses import dataclass

import msgspec

from frontend.http import sse
from frontend.text.chat_template import ChatTemplateError
from frontend.text.continuation import continues_final_message
from frontend.http.errors import invalid
from frontend.generation import ChoiceDelta, Generation, TokenText, collect
from frontend.http.asgi import Request, Response, StreamResponse, json_response
from frontend.api.llama_fields import refuse_unsupported
from frontend.api.lora import request_lora
from frontend.api.sampling import (
    check_context,
    check_slot,
    engine_requests,
    sampling_params,
    stop_strings,
    time_limit_s,
    token_limit,
)
from frontend.api.schemas import (
    SYSTEM_FINGERPRINT,
    AssistantMessage,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatDelta,
    ChatLogprobs,
    ChatTokenLogprob,
    ResponseToolCall,
    ToolCallDelta,
    ToolCallFunction,
    ToolCallFunctionDelta,
    TopLogprob,
)
from frontend.state import Frontend
from frontend.timings import progress_json
from frontend.structured.constraints import check_grammar, output_grammar
from frontend.structured.harmony import HarmonyParser
from frontend.structured.output import OutputDelta, OutputParser, merge_calls
from frontend.structured.reasoning import budget_for, check_budget, is_harmony, reasoning_for
from frontend.structured.tool_formats import harmony
from frontend.structured.tools import ToolPlan, plan_tools
from ipc.protocol import ReasoningBudget

ReplyParser = OutputParser | HarmonyParser


@dataclass(slots=True)
class _ChatPlan:
    prompt: str
    tools: ToolPlan


def _plan(fe: Frontend, body: ChatCompletionRequest) -> _ChatPlan:
    """The conversation as prompt text (with tools as the template needs them)."""
    if not body.messages:
        raise invalid("messages must not be empty", param="messages")
    tools = plan_tools(body, fe.template.source)
    extra = fe.cfg.chat_template_kwargs | (body.chat_template_kwargs or {})
    if body.reasoning_effort is not None:
        extra.setdefault("reasoning_effort", body.reasoning_effort)
    messages, prefill = tools.messages, ""
    add_generation_prompt = body.add_generation_prompt is not False
    if continues_final_message(body):
        # The turns before it, an open assistant turn, then its text: the model writes on from there.
        messages, prefill, add_generation_prompt = messages[:-1], messages[-1]["content"], True
    try:
        prompt = fe.template.render(messages, add_generation_prompt=add_generation_prompt,
                                    tools=tools.template_tools, extra=extra)
    except ChatTemplateError as exc:
        raise invalid(str(exc), param="messages") from None
    return _ChatPlan(prompt + prefill, tools)


def render_prompt(fe: Frontend, body: ChatCompletionRequest) -> str:
    """The conversation as prompt text (also what /apply-template returns)."""
    return _plan(fe, body).prompt


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
                 include_usage: bool, parsers: list[ReplyParser], timings_per_token: bool) -> None:
        self._id, self._created, self._model = id, created, model
        self._timings_per_token = timings_per_token
        self._n_choices = n_choices
        self._parsers = parsers
        self._gen = gen
        self._logprobs = logprobs
        self._include_usage = include_usage

    def _chunk(self, choices: list[ChatChunkChoice], timings: bool = False) -> bytes:
        return sse.event(ChatCompletionChunk(id=self._id, created=self._created, model=self._model,
                                             system_fingerprint=SYSTEM_FINGERPRINT, choices=choices,
                                             timings=self._gen.timings() if timings or self._timings_per_token
                                             else None))

    def head(self) -> list[bytes]:
        return [self._chunk([ChatChunkChoice(i, ChatDelta(role="assistant", content=""))])
                for i in range(self._n_choices)]

    def render(self, delta: ChoiceDelta) -> list[bytes]:
        events = []
        if delta.progress is not None:
            events.append(sse.event(ChatCompletionChunk(
                id=self._id, created=self._created, model=self._model, system_fingerprint=SYSTEM_FINGERPRINT,
                choices=[ChatChunkChoice(delta.index, ChatDelta())], prompt_progress=progress_json(delta.progress))))
        parser = self._parsers[delta.index]
        out = parser.push(delta.text)
        if delta.finish_reason is not None:
            rest = parser.finish()
            out = OutputDelta(out.content + rest.content, out.reasoning + rest.reasoning, out.calls + rest.calls)
        logprobs = _logprobs(delta.tokens) if self._logprobs and delta.tokens else None
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
            reason = _finish_reason(delta.finish_reason, parser)
            events.append(self._chunk([ChatChunkChoice(delta.index, ChatDelta(), finish_reason=reason)], timings=True))
        return events

    def tail(self) -> list[bytes]:
        if not self._include_usage:
            return []
        return [sse.event(ChatCompletionChunk(id=self._id, created=self._created, model=self._model,
                                              system_fingerprint=SYSTEM_FINGERPRINT, choices=[],
                                              usage=self._gen.usage(), timings=self._gen.timings()))]


def _finish_reason(reason: str, parser: ReplyParser) -> str:
    return "tool_calls" if parser.n_calls and reason == "stop" else reason


def _reply(fe: Frontend, body: ChatCompletionRequest, plan: _ChatPlan) -> tuple[list[ReplyParser], list[str]]:
    """A parser per choice for the reply's reasoning and calls, and the control tokens they read
    (rendered as text)."""
    fmt = body.reasoning_format or fe.cfg.reasoning_format
    template = fe.template.source
    reasoning = reasoning_for(fmt, plan.prompt, template)
    if is_harmony(template):
        calls, starts_open = plan.tools.format is not None, reasoning is not None and reasoning.starts_open
        parsers: list[ReplyParser] = [HarmonyParser(reasoning is not None, calls, starts_open, body.stream)
                                      for _ in range(body.n)]
        return parsers, list(harmony.MARKERS)
    tools = plan.tools.format
    markers = [*(tools.starts if tools else ()), *([tools.end] if tools and tools.end else []),
               *([reasoning.start, reasoning.end] if reasoning else [])]
    return [OutputParser(reasoning, tools, body.stream) for _ in range(body.n)], markers


def _budget(fe: Frontend, body: ChatCompletionRequest, plan: _ChatPlan) -> ReasoningBudget | None:
    """``--reasoning-budget`` unless the request sets its own (llama-server reads either name)."""
    if body.reasoning_budget_tokens is not None:
        tokens = check_budget(body.reasoning_budget_tokens, "reasoning_budget_tokens")
    elif body.thinking_budget_tokens is not None:
        tokens = check_budget(body.thinking_budget_tokens, "thinking_budget_tokens")
    else:
        tokens = fe.cfg.reasoning_budget
    message = body.reasoning_budget_message
    if message is None:
        message = fe.cfg.reasoning_budget_message
    return budget_for(tokens, message, fe.template.source, plan.prompt, fe.tokenizer)


def _grammar(fe: Frontend, body: ChatCompletionRequest, plan: _ChatPlan) -> str | None:
    frame = harmony.final_message if is_harmony(fe.template.source) else None
    grammar = output_grammar(fe.grammars, body, frame)
    if plan.tools.grammar is None:
        return grammar
    if grammar is not None:
        raise invalid("a response format or grammar cannot be combined with tool calls", param="tool_choice")
    return check_grammar(fe.grammars, plan.tools.grammar, "tools")


async def chat_completions(fe: Frontend, req: Request) -> Response | StreamResponse:
    body = req.decode(ChatCompletionRequest)
    refuse_unsupported(req.body, ChatCompletionRequest)
    info = fe.engine_info()
    plan = await fe.prepare(len(req.body), lambda: _plan(fe, body))
    prompt = await fe.prepare(len(req.body), lambda: fe.tokenizer.tokenize(plan.prompt, add_special=True,
                                                                          parse_special=True))
    grammar = await fe.prepare(len(req.body), lambda: _grammar(fe, body, plan))
    parsers, markers = _reply(fe, body, plan)
    limit = token_limit(body, fe.cfg, body.max_completion_tokens)
    check_context(len(prompt), limit, info.n_ctx_slot)
    check_slot(body, info)
    logprobs = _engine_logprobs(body)
    sampling = msgspec.structs.replace(
        sampling_params(body, fe.tokenizer, fe.sampling_defaults, fe.cfg.seed, fe.eog_ids, info.n_ctx_slot, grammar),
        reasoning_budget=_budget(fe, body, plan),
    )
    requests = engine_requests(req.id, [prompt], body.n, body, sampling, limit, logprobs,
                               lora=request_lora(body, info))
    gen = Generation(fe.engine, fe.tokenizer, requests, body.n, stop_strings(body.stop), logprobs >= 0,
                     sse.ping_interval(body.sse_ping_interval, fe.cfg.sse_ping_interval),
                     fe.tokenizer.marker_tokens(markers), time_limit_s(body), body.n_indent, trace=req.trace)
    completion_id, created = f"chatcmpl-{req.id}", int(time.time())
    if body.stream:
        include_usage = body.stream_options is not None and body.stream_options.include_usage
        chunks = _ChatChunks(completion_id, created, fe.model_id, body.n, gen, logprobs >= 0, include_usage, parsers,
                             body.timings_per_token)
        return StreamResponse(sse.generation_events(gen, chunks.head(), chunks.render, chunks.tail))
    results = await collect(gen)
    choices = []
    for r in results:
        parser = parsers[r.index]
        first, rest = parser.push(r.text), parser.finish()
        content = (first.content + rest.content).strip() if parser.n_calls else first.content + rest.content
        reasoning_text = first.reasoning + rest.reasoning
        calls = [ResponseToolCall(c.id, ToolCallFunction(c.name, c.arguments))
                 for c in merge_calls(first.calls + rest.calls)]
        message = AssistantMessage(content=content or (None if calls else ""),
                                   reasoning_content=reasoning_text or None, tool_calls=calls or None)
        choices.append(ChatChoice(index=r.index, message=message,
                                  logprobs=_logprobs(r.tokens) if logprobs >= 0 else None,
                                  finish_reason=_finish_reason(r.finish_reason, parser)))
    return json_response(ChatCompletion(
        id=completion_id,
        created=created,
        model=fe.model_id,
        system_fingerprint=SYSTEM_FINGERPRINT,
        choices=choices,
        usage=gen.usage(),
        timings=gen.timings(),
    ))
