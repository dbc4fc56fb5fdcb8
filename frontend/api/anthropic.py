"""Anthropic Messages API bodies (POST /v1/messages, /v1/messages/count_tokens) as msgspec Structs.

Requests forbid unknown fields: a field this server does not implement is a 400 that names it.
Fields Anthropic defines as hints or bookkeeping are accepted and ignored, as its API does with
them: ``metadata`` (an end-user id for abuse tracking), ``cache_control`` on the request, its
blocks and tools (prompt-caching breakpoints; the prefix cache here works on every prompt
without them), ``service_tier``, ``speed`` and ``inference_geo`` (capacity and placement),
``user_profile_id`` and ``workspace_id`` (account attribution), ``diagnostics`` (cache
diagnostics), ``citations``, ``caller`` and ``toolset_name`` on blocks sent back, a thinking
block's ``signature`` (nothing to verify: this server signs nothing) and thinking's ``display``
(the thinking is returned whole).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from frontend.api.schemas import MAX_STOP_STRINGS
from frontend.http.errors import ApiError

# ----------------------------------------------------------------------------- requests

CacheControl = dict[str, Any] | None  # a hint: accepted, ignored


class TextBlock(msgspec.Struct, tag="text", tag_field="type", forbid_unknown_fields=True):
    text: str
    cache_control: CacheControl = None
    citations: list[Any] | None = None  # of a text block sent back; ignored


class ImageBlock(msgspec.Struct, tag="image", tag_field="type", forbid_unknown_fields=True):
    source: dict[str, Any]
    cache_control: CacheControl = None


class ToolUseBlock(msgspec.Struct, tag="tool_use", tag_field="type", forbid_unknown_fields=True):
    id: str
    name: str
    input: dict[str, Any]
    cache_control: CacheControl = None
    # of a block sent back: who made the call, the tool set it came from; ignored
    caller: dict[str, Any] | None = None
    toolset_name: str | None = None


class DocumentBlock(msgspec.Struct, tag="document", tag_field="type", forbid_unknown_fields=True):
    """A document the model reads: plain text (``{"type": "text", "data"}``) or content blocks
    (``{"type": "content", "content"}``); PDF sources are a 400 (nothing here reads PDF)."""

    source: dict[str, Any]
    title: str | None = None
    context: str | None = None
    citations: dict[str, Any] | None = None  # {"enabled": true} asks for cited answers: a 400, not done here
    cache_control: CacheControl = None


class ToolResultBlock(msgspec.Struct, tag="tool_result", tag_field="type", forbid_unknown_fields=True):
    tool_use_id: str
    content: str | list[TextBlock | ImageBlock | DocumentBlock] = ""
    is_error: bool = False
    cache_control: CacheControl = None


class ThinkingBlock(msgspec.Struct, tag="thinking", tag_field="type", forbid_unknown_fields=True):
    thinking: str
    signature: str = ""  # nothing to verify here


class RedactedThinkingBlock(msgspec.Struct, tag="redacted_thinking", tag_field="type", forbid_unknown_fields=True):
    """Thinking another server encrypted, sent back in an assistant turn: nothing here can read
    it, so the turn goes on without it."""

    data: str


ContentBlock = TextBlock | ImageBlock | DocumentBlock | ToolUseBlock | ToolResultBlock | ThinkingBlock \
    | RedactedThinkingBlock


class MessageParam(msgspec.Struct, forbid_unknown_fields=True):
    role: Literal["user", "assistant"]
    content: str | list[ContentBlock]


class ToolParam(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: str
    input_schema: dict[str, Any]
    description: str | None = None
    type: Literal["custom"] | None = None  # Anthropic's server tools (bash, web search...) are not run here
    cache_control: CacheControl = None
    strict: bool | None = None  # calls always follow the schema here: a grammar constrains them
    eager_input_streaming: bool | None = None  # a hint: a call's input streams as it is written anyway


class ToolChoiceAuto(msgspec.Struct, tag="auto", tag_field="type", forbid_unknown_fields=True):
    disable_parallel_tool_use: bool = False


class ToolChoiceAny(msgspec.Struct, tag="any", tag_field="type", forbid_unknown_fields=True):
    disable_parallel_tool_use: bool = False


class ToolChoiceTool(msgspec.Struct, tag="tool", tag_field="type", forbid_unknown_fields=True):
    name: str
    disable_parallel_tool_use: bool = False


class ToolChoiceNone(msgspec.Struct, tag="none", tag_field="type", forbid_unknown_fields=True):
    pass


ToolChoice = ToolChoiceAuto | ToolChoiceAny | ToolChoiceTool | ToolChoiceNone


class ThinkingEnabled(msgspec.Struct, tag="enabled", tag_field="type", forbid_unknown_fields=True):
    budget_tokens: Annotated[int, msgspec.Meta(ge=0, le=2**31 - 1)]
    display: str | None = None  # a hint: ignored


class ThinkingAdaptive(msgspec.Struct, tag="adaptive", tag_field="type", forbid_unknown_fields=True):
    display: str | None = None  # a hint: ignored


class ThinkingDisabled(msgspec.Struct, tag="disabled", tag_field="type", forbid_unknown_fields=True):
    pass


Thinking = ThinkingEnabled | ThinkingAdaptive | ThinkingDisabled


class JsonOutputFormat(msgspec.Struct, forbid_unknown_fields=True):
    type: Literal["json_schema"]
    schema: dict[str, Any]


class OutputConfig(msgspec.Struct, forbid_unknown_fields=True):
    effort: Literal["low", "medium", "high", "xhigh", "max"] | None = None  # the template's reasoning_effort
    format: JsonOutputFormat | None = None  # structured output: the reply follows the schema


class CountTokensRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """What a prompt is made of: the fields count_tokens takes, and every request's."""

    messages: list[MessageParam]
    model: str = ""  # one model is served: any name
    system: str | list[TextBlock] | None = None
    tools: list[ToolParam] | None = None
    tool_choice: ToolChoice | None = None
    thinking: Thinking | None = None
    output_config: OutputConfig | None = None
    cache_control: CacheControl = None


class MessagesRequest(CountTokensRequest, forbid_unknown_fields=True, kw_only=True):
    max_tokens: Annotated[int, msgspec.Meta(ge=1)]  # required, as Anthropic requires it
    stop_sequences: Annotated[list[str], msgspec.Meta(max_length=MAX_STOP_STRINGS)] | None = None
    temperature: Annotated[float, msgspec.Meta(ge=0.0)] | None = None
    top_p: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] | None = None
    top_k: Annotated[int, msgspec.Meta(ge=0, le=2**31 - 1)] | None = None
    stream: bool = False
    chat_template_kwargs: dict[str, Any] | None = None  # llama-server's, passed to the chat template
    # hints and bookkeeping, ignored (see the module's docstring)
    metadata: dict[str, Any] | None = None
    service_tier: str | None = None
    speed: str | None = None
    inference_geo: str | None = None
    user_profile_id: str | None = None
    workspace_id: str | None = None
    diagnostics: dict[str, Any] | None = None


# ----------------------------------------------------------------------------- responses


class TextContent(msgspec.Struct, tag="text", tag_field="type"):
    text: str


class ThinkingContent(msgspec.Struct, tag="thinking", tag_field="type"):
    thinking: str
    signature: str = ""  # always sent: nothing is signed here


class ToolUseContent(msgspec.Struct, tag="tool_use", tag_field="type"):
    id: str
    name: str
    input: dict[str, Any]


OutputBlock = TextContent | ThinkingContent | ToolUseContent


class MessageUsage(msgspec.Struct):
    input_tokens: int  # prompt tokens not read from the cache (Anthropic's meaning)
    output_tokens: int
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0


class Message(msgspec.Struct, tag="message", tag_field="type"):
    id: str
    model: str
    content: list[OutputBlock]
    stop_reason: Literal["end_turn", "max_tokens", "stop_sequence", "tool_use"] | None
    stop_sequence: str | None
    usage: MessageUsage
    role: Literal["assistant"] = "assistant"


class TokenCount(msgspec.Struct):
    input_tokens: int


class MessageStreamEvent(msgspec.Struct, omit_defaults=True):
    """The data of one stream event (its ``type`` is also the SSE event name); which other fields
    it has depends on the type, as in Anthropic's stream."""

    type: Literal["message_start", "content_block_start", "content_block_delta", "content_block_stop",
                  "message_delta", "message_stop", "ping", "error"]
    message: Message | None = None
    index: int | None = None
    content_block: OutputBlock | None = None
    delta: dict[str, Any] | None = None
    usage: MessageUsage | None = None


class AnthropicErrorDetail(msgspec.Struct):
    type: str
    message: str


class AnthropicError(msgspec.Struct, tag="error", tag_field="type"):
    error: AnthropicErrorDetail


_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "not_found_error", 405: "invalid_request_error", 413: "request_too_large",
                429: "overloaded_error", 503: "overloaded_error"}


def error_response(exc: ApiError) -> AnthropicError:
    return AnthropicError(AnthropicErrorDetail(_ERROR_TYPES.get(exc.status, "api_error"), exc.message))


def error_body(exc: ApiError) -> bytes:
    """An error in Anthropic's shape, ``{"type": "error", "error": {"type", "message"}}``."""
    return msgspec.json.encode(error_response(exc))
