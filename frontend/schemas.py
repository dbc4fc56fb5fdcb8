"""OpenAI (and llama-server) request and response bodies as msgspec Structs.

Requests decode straight from the body bytes into these types: a wrong type is a 400 naming the
field, and unknown fields are ignored, as OpenAI's API allows. ``None`` marks "not given", so the
server's defaults (llama-server's) apply. Responses encode with the exact field names OpenAI uses.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

NonNegative = Annotated[int, msgspec.Meta(ge=0)]
TopLogprobs = Annotated[int, msgspec.Meta(ge=0, le=20)]
# One request may fan out to this many engine requests (n choices, or prompts x n).
MAX_CHOICES = 128
ChoiceCount = Annotated[int, msgspec.Meta(ge=1, le=MAX_CHOICES)]
# llama.cpp takes these as C ints. Bounded here, a larger value is a 400 naming the field instead
# of a 500 when the engine message cannot encode it (past 64 bits) or a silent wrap-around in ctypes.
CInt = Annotated[int, msgspec.Meta(ge=-(2**31), le=2**31 - 1)]

# ----------------------------------------------------------------------------- requests


class StreamOptions(msgspec.Struct):
    include_usage: bool = False


class JsonSchemaFormat(msgspec.Struct, kw_only=True):
    name: str = "response"
    description: str | None = None
    schema: dict[str, Any] | bool | None = None
    strict: bool | None = None


class ResponseFormat(msgspec.Struct, kw_only=True):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None
    schema: dict[str, Any] | None = None  # llama-server's {"type": "json_object", "schema": {...}}


class SamplingFields(msgspec.Struct, kw_only=True):
    """Generation parameters shared by /v1/chat/completions and /v1/completions.

    ``model`` and ``user`` are accepted and ignored (one model is served), like any unknown field.
    """

    max_tokens: int | None = None  # None or -1: until the slot's context is full
    temperature: Annotated[float, msgspec.Meta(ge=0.0)] | None = None
    top_p: float | None = None
    n: ChoiceCount = 1
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    # OpenAI: token id (as a string) -> bias in [-100, 100]. llama-server also accepts text keys.
    logit_bias: dict[str, float] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    # llama-server extras
    top_k: CInt | None = None
    min_p: float | None = None
    typical_p: float | None = None
    repeat_penalty: float | None = None
    repeat_last_n: CInt | None = None
    ignore_eos: bool = False
    cache_prompt: bool = True
    n_probs: TopLogprobs = 0
    # constrained output (one of them): GBNF (llama-server's field), a JSON schema, OpenAI's format
    grammar: str | None = None
    json_schema: dict[str, Any] | bool | None = None
    response_format: ResponseFormat | None = None


class TextPart(msgspec.Struct, tag="text", tag_field="type"):
    text: str


class FunctionCall(msgspec.Struct, kw_only=True):
    name: str
    arguments: str | dict[str, Any] = "{}"  # OpenAI sends a JSON string; some clients an object


class ToolCall(msgspec.Struct, kw_only=True):
    id: str | None = None
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(msgspec.Struct, kw_only=True):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    reasoning_content: str | None = None


class FunctionDef(msgspec.Struct, kw_only=True):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(msgspec.Struct, kw_only=True):
    type: Literal["function"] = "function"
    function: FunctionDef


class NamedFunction(msgspec.Struct):
    name: str


class NamedToolChoice(msgspec.Struct, kw_only=True):
    type: Literal["function"] = "function"
    function: NamedFunction


class ChatCompletionRequest(SamplingFields, kw_only=True):
    messages: list[ChatMessage]
    max_completion_tokens: int | None = None
    logprobs: bool = False
    top_logprobs: TopLogprobs | None = None
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool = True
    chat_template_kwargs: dict[str, Any] | None = None
    # reasoning: llama-server's per-request format, OpenAI's effort, a thinking token budget
    reasoning_format: Literal["none", "deepseek", "deepseek-legacy", "auto"] | None = None
    reasoning_effort: str | None = None
    # thinking tokens before the closing tag is forced (-1: no limit); llama-server reads either name
    thinking_budget_tokens: CInt | None = None
    reasoning_budget_tokens: CInt | None = None
    reasoning_budget_message: str | None = None  # written before the forced closing tag


class CompletionRequest(SamplingFields, kw_only=True):
    # a string, a list of strings, a token array, or a list of token arrays
    prompt: str | list[str | int | list[int]]
    suffix: str | None = None
    echo: bool = False
    logprobs: TopLogprobs | None = None


class TokenizeRequest(msgspec.Struct, kw_only=True):
    content: str | list[str | int] = ""
    add_special: bool = False
    parse_special: bool = True
    with_pieces: bool = False


class DetokenizeRequest(msgspec.Struct, kw_only=True):
    tokens: list[int] = []


# ----------------------------------------------------------------------------- responses

SYSTEM_FINGERPRINT = "ggserve"


class PromptTokensDetails(msgspec.Struct):
    cached_tokens: int


class Usage(msgspec.Struct):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails


class TopLogprob(msgspec.Struct):
    token: str
    logprob: float
    bytes: list[int]


class ChatTokenLogprob(msgspec.Struct):
    token: str
    logprob: float
    bytes: list[int]
    top_logprobs: list[TopLogprob]


class ChatLogprobs(msgspec.Struct):
    content: list[ChatTokenLogprob]
    refusal: None = None


class ToolCallFunction(msgspec.Struct):
    name: str
    arguments: str  # JSON text


class ResponseToolCall(msgspec.Struct):
    id: str
    function: ToolCallFunction
    type: str = "function"


class AssistantMessage(msgspec.Struct, omit_defaults=True, kw_only=True):
    role: str = msgspec.field(default_factory=lambda: "assistant")  # a factory: always encoded
    content: str | None  # always sent (null with tool calls and no text)
    reasoning_content: str | None = None
    tool_calls: list[ResponseToolCall] | None = None


class ChatChoice(msgspec.Struct):
    index: int
    message: AssistantMessage
    logprobs: ChatLogprobs | None
    finish_reason: str


class ChatCompletion(msgspec.Struct, tag_field="object", tag="chat.completion"):
    id: str
    created: int
    model: str
    system_fingerprint: str
    choices: list[ChatChoice]
    usage: Usage


class ToolCallFunctionDelta(msgspec.Struct, omit_defaults=True, kw_only=True):
    name: str | None = None
    arguments: str  # always sent ("" with the name)


class ToolCallDelta(msgspec.Struct, omit_defaults=True):
    """The first delta of a call has id, type and name; the next ones argument fragments."""

    index: int
    function: ToolCallFunctionDelta
    id: str | None = None
    type: str | None = None


class ChatDelta(msgspec.Struct, omit_defaults=True):
    role: str | None = None
    content: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None


class ChatChunkChoice(msgspec.Struct):
    index: int
    delta: ChatDelta
    logprobs: ChatLogprobs | None = None
    finish_reason: str | None = None


class ChatCompletionChunk(
    msgspec.Struct, tag_field="object", tag="chat.completion.chunk", omit_defaults=True
):
    id: str
    created: int
    model: str
    system_fingerprint: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None  # only on the last chunk, when stream_options.include_usage


class CompletionLogprobs(msgspec.Struct):
    tokens: list[str]
    token_logprobs: list[float | None]  # None: an echoed first prompt token (no context)
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


class CompletionChoice(msgspec.Struct):
    index: int
    text: str
    logprobs: CompletionLogprobs | None
    finish_reason: str | None


class Completion(msgspec.Struct, tag_field="object", tag="text_completion", omit_defaults=True):
    """A /v1/completions response; stream chunks have the same shape (usage only at the end)."""

    id: str
    created: int
    model: str
    system_fingerprint: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class HealthStatus(msgspec.Struct):
    status: Literal["ok", "loading", "restarting", "draining"]


class ModelMeta(msgspec.Struct, omit_defaults=True):
    """llama-server's ``meta`` of a model; the executor's figures once it has reported them."""

    n_vocab: int
    n_ctx: int  # a slot's context
    n_ctx_train: int | None = None
    n_params: int | None = None
    size: int | None = None  # bytes


class Model(msgspec.Struct, tag_field="object", tag="model", omit_defaults=True):
    id: str
    created: int
    owned_by: str
    meta: ModelMeta | None = None  # absent until the engine is ready


class ModelList(msgspec.Struct, tag_field="object", tag="list"):
    data: list[Model]


class TokenPiece(msgspec.Struct):
    id: int
    piece: str | list[int]  # the bytes when the piece is not whole UTF-8 (part of a character)


class TokenizeResponse(msgspec.Struct):
    tokens: list[int | TokenPiece]  # ids; with ``with_pieces``, all of them TokenPieces


class DetokenizeResponse(msgspec.Struct):
    content: str


class ApplyTemplateResponse(msgspec.Struct):
    prompt: str


class ErrorDetail(msgspec.Struct):
    """What ``ApiError.body`` writes; some errors add fields (``n_prompt_tokens``, ``n_ctx``)."""

    message: str
    type: str
    param: str | None
    code: int  # the HTTP status


class ErrorResponse(msgspec.Struct):
    error: ErrorDetail
