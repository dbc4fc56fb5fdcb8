"""A chat conversation's way through the engine, whichever API it came in by.

OpenAI's /v1/chat/completions, Anthropic's /v1/messages and OpenAI's /v1/responses all translate
their request into a ``ChatCompletionRequest`` and run it here: chat template (with tools as the
template needs them), prompt tokens, context check, grammar (response format or the tool-call
grammar), reasoning budget, sampling, and a reply parser per choice that splits the output into
reasoning, answer text and tool calls. Only the request and response shapes differ per API.
"""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass

import msgspec

from frontend.api.sampling import (
    check_context,
    context_exceeded,
    check_slot,
    engine_requests,
    sampling_params,
    stop_strings,
    time_limit_s,
    token_limit,
    truncated_prompt,
    with_post_sampling_probs,
)
from frontend.media import files as media
from frontend.api.schemas import ChatCompletionRequest, TextPart
from frontend.generation import ChoiceDelta, ChoiceResult, Generation
from frontend.http import sse
from frontend.http.asgi import Request
from frontend.http.errors import invalid
from frontend.state import Frontend
from frontend.api import prompt_logprobs
from frontend.api.lora import request_lora
from frontend.api.native_result import NativeResults
from frontend.structured.lazy import preserved_ids
from frontend.structured.constraints import Frame, answer_schema, check_grammar, output_grammar
from frontend.structured.harmony import HarmonyParser
from frontend.structured.deltas import CallOut, OutputDelta, merge_calls
from frontend.structured.output import OutputParser
from frontend.structured.reasoning import (budget_for, check_budget, is_harmony, opened_thinking, reasoning_for,
                                          thinking_first)
from frontend.structured.tool_formats.json_args import harmony
from frontend.structured.tools import ToolPlan, plan_tools
from frontend.text.chat_template import ChatTemplateError, content_text
from frontend.text.continuation import continuation_mode, continue_message
from frontend.text.multimodal import MediaPrompt, check_chunks
from frontend.text.prompts import Prompt
from ipc.protocol import EngineInfo, ReasoningBudget

ReplyParser = OutputParser | HarmonyParser
# Images reach the model in user messages (frontend.media.files), not in tool results or replies.
MULTIMODAL = "images are accepted in user messages (with --mmproj), not here"


@dataclass(slots=True)
class ChatPlan:
    prompt: str
    tools: ToolPlan
    in_reasoning: bool = False  # continuing reasoning: the reply starts inside the thinking


def plan(fe: Frontend, body: ChatCompletionRequest) -> ChatPlan:
    """The conversation as prompt text (with tools as the template needs them). No messages is
    a conversation too, as llama-server takes it: the generation prompt alone."""
    tools = plan_tools(body, fe.template.source)
    # the request's kwargs, then its reasoning_effort, then the server's defaults (llama-server's order)
    effort: dict[str, object] = {} if body.reasoning_effort is None else {"reasoning_effort": body.reasoning_effort}
    if body.reasoning_effort == "none":  # llama-server's reading: no thinking
        effort = {"enable_thinking": False}
    documents = {} if body.documents is None else {"documents": body.documents}
    extra = fe.cfg.chat_template_kwargs | effort | documents | (body.chat_template_kwargs or {})
    messages, add_generation_prompt = tools.messages, body.add_generation_prompt is not False
    mode = continuation_mode(body, fe.cfg.prefill_assistant)
    if mode is not None:
        # The turns before it and an open assistant turn, then the message: the model writes on from there.
        messages, add_generation_prompt = messages[:-1], True
    try:
        prompt = fe.template.render(messages, add_generation_prompt=add_generation_prompt,
                                    tools=tools.template_tools, extra=extra)
    except ChatTemplateError as exc:
        raise invalid(str(exc), param="messages") from None
    if mode is None:
        return ChatPlan(prompt, tools)
    # The content as the template would get it; the reasoning from the request (templates get none).
    continued = continue_message(prompt, content_text(tools.messages[-1]["content"]),
                                 body.messages[-1].reasoning_content or "", mode,
                                 fe.template.source)
    return ChatPlan(continued.prompt, tools, continued.in_reasoning)


def render_prompt(fe: Frontend, body: ChatCompletionRequest) -> str:
    """The conversation as prompt text (also what /apply-template returns)."""
    return plan(fe, body).prompt


async def prompt_tokens(fe: Frontend, req: Request, body: ChatCompletionRequest) -> tuple[ChatPlan, MediaPrompt]:
    """The plan and the prompt's tokens (with its media chunks), exactly as a generation would
    submit them."""
    files = await media.load_messages(body.messages, fe.media_limits)
    chat = await fe.prepare(len(req.body), lambda: plan(fe, body))
    if fe.multimodal is not None and files:
        prompt = await asyncio.to_thread(fe.multimodal.tokenize, chat.prompt, files, "messages", add_special=True)
        return chat, prompt
    tokens = await fe.prepare(len(req.body), lambda: fe.tokenizer.tokenize(chat.prompt, add_special=True,
                                                                          parse_special=True))
    return chat, MediaPrompt(tokens, [])


def _reply_parsers(fe: Frontend, body: ChatCompletionRequest, chat: ChatPlan) -> tuple[list[ReplyParser], list[str]]:
    """A parser per choice for the reply's reasoning and calls, and the control tokens they read
    (rendered as text); --skip-chat-parsing: everything stays in the content."""
    if fe.cfg.skip_chat_parsing:
        return [OutputParser(None, None, body.stream, False) for _ in range(body.n)], []
    fmt = body.reasoning_format or fe.cfg.reasoning_format
    template = fe.template.source
    reasoning = reasoning_for(fmt, chat.prompt, template, chat.in_reasoning)
    if is_harmony(template):
        calls, starts_open = chat.tools.format is not None, reasoning is not None and reasoning.starts_open
        parsers: list[ReplyParser] = [HarmonyParser(reasoning is not None, calls, starts_open, body.stream)
                                      for _ in range(body.n)]
        return parsers, list(harmony.MARKERS)
    tools = chat.tools.format or chat.tools.reader
    markers = [*(tools.starts if tools else ()), *([tools.end] if tools and tools.end else []),
               *(tools.tokens if tools else ()), *([reasoning.start, reasoning.end] if reasoning else [])]
    prefix = opened_thinking(fmt, chat.prompt, template, chat.in_reasoning)
    return [OutputParser(reasoning, tools, body.stream, chat.tools.forced, prefix) for _ in range(body.n)], markers


def _budget(fe: Frontend, body: ChatCompletionRequest, chat: ChatPlan) -> ReasoningBudget | None:
    """``--reasoning-budget`` unless the request sets its own (llama-server reads either of its
    names; vLLM's is the third)."""
    for name in ("reasoning_budget_tokens", "thinking_budget_tokens", "thinking_token_budget"):
        if (value := getattr(body, name)) is not None:
            tokens = check_budget(value, name)
            break
    else:
        tokens = fe.cfg.reasoning_budget
    message = body.reasoning_budget_message
    if message is None:
        message = fe.cfg.reasoning_budget_message
    tools = chat.tools.format
    return budget_for(tokens, message, fe.template.source, chat.prompt, fe.tokenizer, chat.in_reasoning,
                      body.reasoning_control, tools.thinking_enders if tools else ())


def _grammar(fe: Frontend, body: ChatCompletionRequest, chat: ChatPlan) -> str | None:
    """The reply's grammar: the output constraint's, the tool calls', or with tools and a
    response format, calls or the format's JSON (gpt-oss: calls only in its channels)."""
    harmony_template = is_harmony(fe.template.source)
    thinking = None if harmony_template else _thinking_frame(fe, body, chat)  # (Harmony's calls have their channels)
    grammar = output_grammar(fe.grammars, body, harmony.final_message if harmony_template else thinking)
    if chat.tools.format is None or grammar is None:
        tools = chat.tools.grammar(thinking)
        return grammar if tools is None else check_grammar(fe.grammars, tools, "tools")
    answer = None if harmony_template else answer_schema(body)
    if answer is None:  # llama-server refuses it too
        raise invalid("a grammar cannot be combined with tool calls (a JSON schema response format can)",
                      param="tool_choice")
    return check_grammar(fe.grammars, chat.tools.grammar(thinking, answer), "tools")


def _thinking_frame(fe: Frontend, body: ChatCompletionRequest, chat: ChatPlan) -> Frame | None:
    """Where a forced answer (a schema's JSON, forced calls) goes in the reply: after the thinking,
    for templates that think in tags first, as llama-server's grammars allow; None: from the first
    token."""
    template = fe.template.source
    fmt = body.reasoning_format or fe.cfg.reasoning_format
    reasoning = reasoning_for(fmt, chat.prompt, template, chat.in_reasoning)
    if reasoning is None or not (reasoning.starts_open or reasoning.start in template):
        return None
    tools = chat.tools.format
    return functools.partial(thinking_first, reasoning=reasoning, opens=tools.thinking_enders if tools else ())


@dataclass(slots=True)
class ChatRun:
    """A chat request ready to run: its generation (enter it to submit) and a reply parser per choice."""

    gen: Generation
    parsers: list[ReplyParser]
    prompt_token_ids: list[int]
    prompt_text: str  # the conversation rendered by the chat template
    native: NativeResults | None = None  # with ``verbose``: llama-server's result objects (``__verbose``)


async def start(fe: Frontend, req: Request, body: ChatCompletionRequest, logprobs: int = -1) -> ChatRun:
    """Everything between a checked chat request and its engine requests; ``logprobs`` as
    ``AddRequest.logprobs`` (-1: none)."""
    info = fe.engine_info()
    if body.truncate_prompt_tokens is None:
        await _check_text_fits(fe, req, body, info)
    chat, mprompt = await prompt_tokens(fe, req, body)
    prompt = mprompt.tokens
    grammar = await fe.prepare(len(req.body), lambda: _grammar(fe, body, chat))
    parsers, markers = _reply_parsers(fe, body, chat)
    limit = token_limit(body, fe.cfg, body.max_completion_tokens)
    prompt = truncated_prompt(prompt, body, limit, info, bool(mprompt.spans))
    check_chunks(mprompt.spans, info.n_ctx_slot)
    check_context(len(prompt), info)
    check_slot(body, info)
    fe.fill_defaults(body)
    sampling = msgspec.structs.replace(
        await fe.prepare(len(req.body), lambda: sampling_params(
            body, fe.tokenizer, fe.sampling_defaults, fe.cfg.seed, fe.eog_ids, info.n_ctx_slot, grammar)),
        reasoning_budget=_budget(fe, body, chat),
    )
    sampling = with_post_sampling_probs(sampling, body.post_sampling_probs)
    lora = request_lora(body, info)
    chunks = fe.media_arena.put([mprompt.spans]) if mprompt.spans else None  # last: nothing may raise after it
    requests = engine_requests(req.id, [prompt], body.n, body, sampling, limit, logprobs, fe.cache_defaults,
                               prompt_logprobs.requested(body), lora=lora, media=chunks)
    gen = Generation(fe.engine, fe.tokenizer, requests, body.n, stop_strings(body.stop), logprobs >= 0,
                     sse.ping_interval(body.sse_ping_interval, fe.cfg.sse_ping_interval),
                     fe.written(fe.tokenizer.marker_tokens(markers)
                                | preserved_ids(fe.tokenizer, body.preserved_tokens)),
                     time_limit_s(body), body.n_indent, trace=req.trace,
                     on_exit=(lambda: fe.media_arena.release(chunks)) if chunks else None, prompt_log=fe.prompt_log,
                     keep_stop=body.include_stop_str_in_output)
    native = (NativeResults(fe, body, [Prompt(prompt, chat.prompt)], sampling, limit, logprobs,
                            post_sampling_probs=body.post_sampling_probs) if body.verbose else None)
    return ChatRun(gen, parsers, prompt, chat.prompt, native)


# Messages with more text than this are checked against the context before they are rendered.
_TEXT_CHECKED = 1 << 20


async def _check_text_fits(fe: Frontend, req: Request, body: ChatCompletionRequest, info: EngineInfo) -> None:
    """A 400 at once for messages whose text alone is more tokens than a slot holds (each token
    covers at most ``max_piece_bytes`` of it): rendering and tokenizing megabytes of messages
    would hold a worker thread for minutes, on after its client gave up."""
    n_chars = sum(len(m.content) if isinstance(m.content, str) else
                  sum(len(part.text) for part in m.content or () if isinstance(part, TextPart))
                  for m in body.messages)
    if n_chars <= max(_TEXT_CHECKED, 64 * info.n_ctx_slot):
        return
    at_least = n_chars // await fe.prepare(len(req.body), lambda: fe.tokenizer.max_piece_bytes)
    if at_least >= info.n_ctx_slot:
        raise context_exceeded(f"the messages hold at least {at_least} tokens of text but a slot's context holds "
                               f"{info.n_ctx_slot} tokens; shorten them or increase the context size",
                               at_least, info.n_ctx_slot)


def parse_delta(parser: ReplyParser, delta: ChoiceDelta) -> OutputDelta:
    """A streamed delta read by its choice's parser (all that is held back comes out at the finish)."""
    out = parser.push(delta.text)
    if delta.finish_reason is not None:
        rest = parser.finish()
        out = OutputDelta(out.content + rest.content, out.reasoning + rest.reasoning, out.calls + rest.calls)
    return out


@dataclass(slots=True)
class Reply:
    """A finished choice read whole."""

    content: str
    reasoning: str
    calls: list[CallOut]  # whole calls
    finish_reason: str  # "stop", "length" or "tool_calls"


def read_reply(parser: ReplyParser, result: ChoiceResult) -> Reply:
    first, rest = parser.push(result.text), parser.finish()
    content = first.content + rest.content
    if parser.n_calls:  # the whitespace around calls is not an answer
        content = content.strip()
    return Reply(content, first.reasoning + rest.reasoning, merge_calls(first.calls + rest.calls),
                 finish_reason(result.finish_reason, parser))


def finish_reason(reason: str, parser: ReplyParser) -> str:
    return "tool_calls" if parser.n_calls and reason == "stop" else reason
