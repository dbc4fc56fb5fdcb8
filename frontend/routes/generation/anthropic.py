"""POST /v1/messages and /v1/messages/count_tokens: Anthropic's Messages API over the chat path.

A request becomes a ``ChatCompletionRequest`` (system prompt, turns, tool_use / tool_result
blocks as tool calls and results, ``thinking`` as the reasoning format and budget) and runs
through ``frontend.conversation`` like any chat completion; the reply's blocks (thinking, text,
tool calls) become Anthropic's content blocks, streamed with Anthropic's event sequence.

``usage.input_tokens`` counts the prompt tokens that were evaluated, ``cache_read_input_tokens``
those reused from the prefix cache (Anthropic's meaning: their sum is the prompt, what
count_tokens returns). An assistant message at the end is continued (Anthropic's prefill).
"""

from __future__ import annotations

import json
from typing import Any

import msgspec

from frontend import conversation
from frontend.api.anthropic import (
    ContentBlock,
    CountTokensRequest,
    DocumentBlock,
    ImageBlock,
    Message,
    MessageParam,
    MessagesRequest,
    MessageUsage,
    OutputBlock,
    MessageStreamEvent,
    RedactedThinkingBlock,
    TextBlock,
    TextContent,
    ThinkingBlock,
    ThinkingContent,
    ThinkingDisabled,
    ThinkingEnabled,
    TokenCount,
    ToolChoiceAny,
    ToolChoiceAuto,
    ToolChoiceNone,
    ToolChoiceTool,
    ToolResultBlock,
    ToolUseBlock,
    ToolUseContent,
    error_response,
)
from frontend.api import schemas as chat
from frontend.conversation import MULTIMODAL, ChatRun, ReplyParser
from frontend.generation import ChoiceDelta, Generation, collect
from frontend.http import sse
from frontend.http.asgi import Request, Response, StreamResponse, json_response
from frontend.http.errors import ApiError, invalid
from frontend.reply_blocks import Block, BlockEvent, ReplyBlocks, reply_blocks
from frontend.state import Frontend

def _text(blocks: str | list[TextBlock]) -> str:
    return blocks if isinstance(blocks, str) else "\n".join(b.text for b in blocks)


def _tool_result(block: ToolResultBlock, param: str) -> chat.ChatMessage:
    if isinstance(block.content, str):
        text = block.content
    else:
        parts = [p for j, part in enumerate(block.content) for p in _parts(part, f"{param}.content.{j}")]
        if not all(isinstance(part, chat.TextPart) for part in parts):
            raise invalid(MULTIMODAL, param=f"{param}.content")
        text = "\n".join(part.text for part in parts)  # type: ignore[union-attr]
    if block.is_error:  # the chat format has no flag for it: the model reads it
        text = f"Error: {text}"
    return chat.ChatMessage(role="tool", tool_call_id=block.tool_use_id, content=text)


def _user_turn(blocks: list[ContentBlock], param: str) -> list[chat.ChatMessage]:
    """Tool results first (as the chat format answers calls), then the user's text and images."""
    results: list[chat.ChatMessage] = []
    parts: list[chat.ContentPart] = []
    for j, block in enumerate(blocks):
        if isinstance(block, ToolResultBlock):
            results.append(_tool_result(block, f"{param}.{j}"))
        elif isinstance(block, (TextBlock, ImageBlock, DocumentBlock)):
            parts += _parts(block, f"{param}.{j}")
        else:
            raise invalid(f"{param}.{j}: a user message cannot hold a {block.__struct_config__.tag} block",
                          param=f"{param}.{j}")
    if not parts and results:
        return results
    text_only = all(isinstance(part, chat.TextPart) for part in parts)
    content = "\n".join(part.text for part in parts) if text_only else parts  # type: ignore[union-attr]
    return [*results, chat.ChatMessage(role="user", content=content)]


def _parts(block: TextBlock | ImageBlock | DocumentBlock, param: str) -> list[chat.ContentPart]:
    if isinstance(block, TextBlock):
        return [chat.TextPart(block.text)]
    if isinstance(block, ImageBlock):
        return [chat.ImagePart(chat.ImageUrl(url=_image_url(block, param)))]
    return _document(block, param)


def _document(block: DocumentBlock, param: str) -> list[chat.ContentPart]:
    """A document as the parts the model reads: its title and context, then its text (or its
    content blocks)."""
    if block.citations and block.citations.get("enabled"):
        raise invalid("citations are not supported: answers here cite nothing", param=f"{param}.citations")
    source, head = block.source, [chat.TextPart(text) for text in (block.title, block.context) if text]
    if source.get("type") == "text" and isinstance(source.get("data"), str):
        return [*head, chat.TextPart(source["data"])]
    if source.get("type") == "content" and isinstance(source.get("content"), str):
        return [*head, chat.TextPart(source["content"])]
    if source.get("type") == "content" and isinstance(source.get("content"), list):
        try:
            blocks = msgspec.convert(source["content"], list[TextBlock | ImageBlock])
        except msgspec.ValidationError as exc:
            raise invalid(f"a document's content blocks are text or image blocks: {exc}",
                          param=f"{param}.source.content") from None
        return [*head, *(p for j, b in enumerate(blocks) for p in _parts(b, f"{param}.source.content.{j}"))]
    raise invalid("a document's source is plain text ({\"type\": \"text\", \"media_type\": \"text/plain\", "
                  "\"data\"}) or content blocks ({\"type\": \"content\", \"content\"}); PDF documents are not "
                  "supported", param=f"{param}.source")


def _image_url(block: ImageBlock, param: str) -> str:
    """An Anthropic image source as an image URL: ``base64`` (as a data: URI) or ``url``."""
    source = block.source
    if source.get("type") == "base64" and isinstance(source.get("data"), str):
        return f"data:{source.get('media_type', 'image/png')};base64,{source['data']}"
    if source.get("type") == "url" and isinstance(source.get("url"), str):
        return source["url"]
    raise invalid("an image source is {\"type\": \"base64\", \"media_type\", \"data\"} or {\"type\": \"url\", "
                  "\"url\"}", param=f"{param}.source")


def _assistant_turn(blocks: list[ContentBlock], param: str) -> chat.ChatMessage:
    texts, thinking, calls = [], [], []
    for j, block in enumerate(blocks):
        if isinstance(block, TextBlock):
            texts.append(block.text)
        elif isinstance(block, ThinkingBlock):
            thinking.append(block.thinking)
        elif isinstance(block, ToolUseBlock):
            calls.append(chat.ToolCall(id=block.id, function=chat.FunctionCall(name=block.name, arguments=block.input)))
        elif isinstance(block, RedactedThinkingBlock):
            continue  # another server's encrypted thinking: unreadable here
        elif isinstance(block, ImageBlock):
            raise invalid(MULTIMODAL, param=f"{param}.{j}")
        else:
            raise invalid(f"{param}.{j}: an assistant message cannot hold a {block.__struct_config__.tag} block",
                          param=f"{param}.{j}")
    return chat.ChatMessage(role="assistant", content="".join(texts), reasoning_content="".join(thinking) or None,
                            tool_calls=calls or None)


def _turns(message: MessageParam, i: int) -> list[chat.ChatMessage]:
    if isinstance(message.content, str):
        return [chat.ChatMessage(role=message.role, content=message.content)]
    param = f"messages.{i}.content"
    return [_assistant_turn(message.content, param)] if message.role == "assistant" \
        else _user_turn(message.content, param)


_TOOL_CHOICES: dict[type, str] = {ToolChoiceAuto: "auto", ToolChoiceAny: "required", ToolChoiceNone: "none"}


def chat_request(body: CountTokensRequest, sampling: MessagesRequest | None = None) -> chat.ChatCompletionRequest:
    """The Messages request as a chat completion request (``sampling``: the generation's settings;
    None for counting tokens). No messages is accepted, as llama-server accepts it."""
    messages = [chat.ChatMessage(role="system", content=_text(body.system))] if body.system else []
    for i, message in enumerate(body.messages):
        messages += _turns(message, i)
    tools = [chat.Tool(function=chat.FunctionDef(name=t.name, description=t.description, parameters=t.input_schema))
             for t in body.tools or []]
    choice = body.tool_choice
    fields: dict[str, Any] = {
        "tool_choice": chat.NamedToolChoice(function=chat.NamedFunction(choice.name))
        if isinstance(choice, ToolChoiceTool) else _TOOL_CHOICES.get(type(choice)),
        "parallel_tool_calls": not getattr(choice, "disable_parallel_tool_use", False),
    }
    if isinstance(body.thinking, ThinkingDisabled):
        fields["chat_template_kwargs"] = {"enable_thinking": False}
    elif body.thinking is not None:  # <think> extracted; its length bounded when a budget is given
        fields |= {"reasoning_format": "deepseek", "chat_template_kwargs": {"enable_thinking": True}}
        if isinstance(body.thinking, ThinkingEnabled):
            fields["thinking_budget_tokens"] = body.thinking.budget_tokens
    if body.output_config is not None:
        fields["reasoning_effort"] = body.output_config.effort
        if body.output_config.format is not None:
            fields["response_format"] = chat.ResponseFormat(
                type="json_schema", json_schema=chat.JsonSchemaFormat(schema=body.output_config.format.schema))
    if sampling is not None:
        fields |= {"max_tokens": sampling.max_tokens, "stop": sampling.stop_sequences, "stream": sampling.stream,
                   "temperature": sampling.temperature, "top_p": sampling.top_p, "top_k": sampling.top_k}
        if sampling.chat_template_kwargs:  # the request's own win over what ``thinking`` implies
            fields["chat_template_kwargs"] = fields.get("chat_template_kwargs", {}) | sampling.chat_template_kwargs
    return chat.ChatCompletionRequest(messages=messages, tools=tools or None, **fields)


def _stop_reason(gen: Generation, finish_reason: str) -> tuple[str, str | None]:
    """(stop_reason, stop_sequence) of the reply's finish."""
    choice = gen.choices[0]
    if finish_reason == "tool_calls":
        return "tool_use", None
    if finish_reason == "length":
        return "max_tokens", None
    if choice.stopped_by_string:
        return "stop_sequence", choice.stopping_word
    return "end_turn", None


def _usage(gen: Generation) -> MessageUsage:
    usage = gen.usage()
    cached = usage.prompt_tokens_details.cached_tokens
    return MessageUsage(usage.prompt_tokens - cached, usage.completion_tokens, cache_read_input_tokens=cached)


def _content(block: Block) -> OutputBlock:
    if block.kind == "thinking":
        return ThinkingContent(block.text)
    if block.kind == "text":
        return TextContent(block.text)
    try:
        arguments = json.loads(block.text or "{}")
    except json.JSONDecodeError:  # cut off by max_tokens
        arguments = {}
    # Anthropic's ids read toolu_...; a tool_result names it back as it is
    tool_use_id = "toolu_" + block.call_id.removeprefix("call_")
    return ToolUseContent(tool_use_id, block.name, arguments if isinstance(arguments, dict) else {})


def _event(event: MessageStreamEvent) -> bytes:
    return sse.named_event(event.type, event)


def _error_event(exc: ApiError) -> bytes:
    return sse.named_event("error", error_response(exc))


_PING = _event(MessageStreamEvent("ping"))
_DELTA_TYPES = {"thinking": ("thinking_delta", "thinking"), "text": ("text_delta", "text"),
                "tool_call": ("input_json_delta", "partial_json")}


class _MessageStream:
    """Anthropic's event sequence: message_start, then per content block content_block_start,
    content_block_delta..., content_block_stop, then message_delta (stop reason, usage) and
    message_stop."""

    def __init__(self, message_id: str, model: str, run: ChatRun) -> None:
        self._id, self._model = message_id, model
        self._gen = run.gen
        self._n_prompt = len(run.prompt_token_ids)
        self._parser: ReplyParser = run.parsers[0]
        self._blocks = ReplyBlocks()
        self._finish_reason = "stop"

    def head(self) -> list[bytes]:
        # The cache hit comes with the first output; when a ping went first the whole prompt
        # counts as input here, and message_delta's usage splits it.
        cached = self._gen.choices[0].n_cached
        usage = MessageUsage(self._n_prompt - cached, 0, cache_read_input_tokens=cached)
        return [_event(MessageStreamEvent("message_start", message=Message(self._id, self._model, [], None, None,
                                                                           usage)))]

    def render(self, delta: ChoiceDelta) -> list[bytes]:
        events = self._blocks.feed(conversation.parse_delta(self._parser, delta))
        if delta.finish_reason is not None:
            events += self._blocks.close()
            self._finish_reason = conversation.finish_reason(delta.finish_reason, self._parser)
        return [_event(self._block_event(e)) for e in events]

    def tail(self) -> list[bytes]:
        stop_reason, stop_sequence = _stop_reason(self._gen, self._finish_reason)
        delta = {"stop_reason": stop_reason, "stop_sequence": stop_sequence}
        return [_event(MessageStreamEvent("message_delta", delta=delta,
                                   usage=_usage(self._gen))),
                _event(MessageStreamEvent("message_stop"))]

    @staticmethod
    def _block_event(event: BlockEvent) -> MessageStreamEvent:
        block = event.block
        if event.kind == "start":
            # empty, as Anthropic opens a block
            opened = Block(block.index, block.kind, call_id=block.call_id, name=block.name)
            return MessageStreamEvent("content_block_start", index=block.index, content_block=_content(opened))
        if event.kind == "delta":
            kind, field = _DELTA_TYPES[block.kind]
            return MessageStreamEvent("content_block_delta", index=block.index, delta={"type": kind, field: event.text})
        return MessageStreamEvent("content_block_stop", index=block.index)


async def messages(fe: Frontend, req: Request) -> Response | StreamResponse:
    body = req.decode(MessagesRequest)
    run = await conversation.start(fe, req, chat_request(body, body))
    message_id = f"msg_{req.id}"
    if body.stream:
        stream = _MessageStream(message_id, fe.model_id, run)
        return StreamResponse(sse.generation_events(run.gen, stream.head, stream.render, stream.tail, done=False,
                                                    ping=_PING, on_error=_error_event), error_event=_error_event)
    result = (await collect(run.gen))[0]
    reply = conversation.read_reply(run.parsers[0], result)
    stop_reason, stop_sequence = _stop_reason(run.gen, reply.finish_reason)
    return json_response(Message(message_id, fe.model_id, [_content(b) for b in reply_blocks(reply)], stop_reason,
                                 stop_sequence, _usage(run.gen)))


async def count_tokens(fe: Frontend, req: Request) -> Response:
    body = req.decode(CountTokensRequest)
    _, prompt = await conversation.prompt_tokens(fe, req, chat_request(body))
    return json_response(TokenCount(len(prompt.tokens)))
