"""OpenAI Responses API bodies (POST /v1/responses, GET / DELETE /v1/responses/{id}) as msgspec Structs.

Requests forbid unknown fields: a field this server does not implement is a 400 that names it.
Fields the API defines as hints or bookkeeping are accepted and ignored: ``user``,
``safety_identifier``, ``prompt_cache_key``, ``prompt_cache_retention`` (the prefix cache works
on every prompt), ``service_tier``, ``stream_options`` (obfuscation padding), ``text.verbosity``
and ``reasoning.summary`` (no summaries are written: reasoning comes back whole); and on items
sent back, their ``id``, ``status``, ``annotations`` and ``logprobs``. ``metadata`` is kept and
returned, as OpenAI does. ``include`` is honoured (see ``Include``).

Input items are decoded one by one (``frontend.routes.generation.responses``): a message item may leave out
its ``type``, which a tagged union cannot express.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from frontend.api.schemas import ChatPassThrough, ChatTokenLogprob
from frontend.timings import PromptProgressJson, Timings

# ----------------------------------------------------------------------------- requests


class InputText(msgspec.Struct, tag="input_text", tag_field="type", forbid_unknown_fields=True):
    text: str


class OutputText(msgspec.Struct, tag="output_text", tag_field="type", forbid_unknown_fields=True):
    text: str
    annotations: list[Any] | None = None  # of a message sent back; ignored
    logprobs: list[Any] | None = None


class InputImage(msgspec.Struct, tag="input_image", tag_field="type", forbid_unknown_fields=True):
    image_url: str | None = None
    file_id: str | None = None
    detail: str | None = None


class Refusal(msgspec.Struct, tag="refusal", tag_field="type", forbid_unknown_fields=True):
    refusal: str


ContentPart = InputText | OutputText | InputImage | Refusal


class MessageItem(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[ContentPart]
    id: str | None = None
    status: str | None = None


class FunctionCallItem(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    type: Literal["function_call"]
    call_id: str
    name: str
    arguments: str
    id: str | None = None
    status: str | None = None


class FunctionCallOutputItem(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    type: Literal["function_call_output"]
    call_id: str
    output: str | list[InputText | InputImage]
    id: str | None = None
    status: str | None = None


class ReasoningText(msgspec.Struct, forbid_unknown_fields=True):
    type: Literal["reasoning_text", "summary_text"]
    text: str


class ReasoningItem(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    type: Literal["reasoning"]
    summary: list[ReasoningText] = []
    content: list[ReasoningText] | None = None
    # what ggserve's include "reasoning.encrypted_content" wrote (frontend.routes.generation.responses.seal),
    # or another server's opaque blob (unreadable here: ignored)
    encrypted_content: str | None = None
    id: str | None = None
    status: str | None = None


InputItem = MessageItem | FunctionCallItem | FunctionCallOutputItem | ReasoningItem
ITEM_TYPES: dict[str, type[InputItem]] = {"message": MessageItem, "function_call": FunctionCallItem,
                                          "function_call_output": FunctionCallOutputItem, "reasoning": ReasoningItem}


class FunctionTool(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    type: Literal["function"]
    name: str
    parameters: dict[str, Any] | None = None
    description: str | None = None
    strict: bool | None = None


class FunctionToolChoice(msgspec.Struct, forbid_unknown_fields=True):
    type: Literal["function"]
    name: str


class TextFormat(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    type: Literal["text", "json_object", "json_schema"]
    name: str = "response"
    schema: dict[str, Any] | None = None
    description: str | None = None
    strict: bool | None = None


class TextConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    format: TextFormat | None = None
    verbosity: str | None = None  # a hint: ignored


class ReasoningConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    effort: str | None = None  # the chat template's reasoning_effort
    summary: str | None = None  # a hint: no summaries are written
    generate_summary: str | None = None  # summary's old name


# ``include``: reasoning items carry their reasoning as encrypted_content (which a stateless client
# sends back to continue the conversation); output_text parts carry their tokens' logprobs; the
# outputs of OpenAI's hosted tools, which this server has none of, and the input's image URLs,
# which no output item repeats here, add nothing. Any other value: a 400.
Include = Literal["reasoning.encrypted_content", "message.output_text.logprobs", "file_search_call.results",
                  "web_search_call.results", "web_search_call.action.sources", "code_interpreter_call.outputs",
                  "computer_call_output.output.image_url", "message.input_image.image_url"]


class ResponsesRequest(ChatPassThrough, forbid_unknown_fields=True, kw_only=True):
    input: str | list[dict[str, Any]]
    model: str = ""  # one model is served: any name
    instructions: str | None = None
    max_output_tokens: Annotated[int, msgspec.Meta(ge=1)] | None = None
    temperature: Annotated[float, msgspec.Meta(ge=0.0)] | None = None
    top_p: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] | None = None
    tools: list[FunctionTool] | None = None
    tool_choice: Literal["none", "auto", "required"] | FunctionToolChoice | None = None
    parallel_tool_calls: bool = True
    text: TextConfig | None = None
    reasoning: ReasoningConfig | None = None
    stream: bool = False
    previous_response_id: str | None = None
    store: bool = True
    metadata: dict[str, str] | None = None
    truncation: Literal["disabled"] | None = None  # "auto" (dropping items to fit) is not implemented
    background: bool = False  # true: refused (responses run while their request waits)
    include: list[Include] | None = None
    # the k most likely tokens beside each output token's logprob (the logprobs come with include
    # "message.output_text.logprobs", or with top_logprobs alone)
    top_logprobs: Annotated[int, msgspec.Meta(ge=0, le=20)] | None = None
    # hints and bookkeeping, ignored (see the module's docstring)
    user: str | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    prompt_cache_retention: str | None = None
    service_tier: str | None = None
    stream_options: dict[str, Any] | None = None
    # llama-server's extensions: ``timings`` on every stream event batch, ``prompt_progress``
    # in response.in_progress events during the prefill
    timings_per_token: bool = False
    return_progress: bool = False


# ----------------------------------------------------------------------------- responses


class OutputTextPart(msgspec.Struct, tag="output_text", tag_field="type"):
    text: str
    annotations: list[Any] = msgspec.field(default_factory=list)
    logprobs: list[ChatTokenLogprob] = msgspec.field(default_factory=list)


class ReasoningTextPart(msgspec.Struct, tag="reasoning_text", tag_field="type"):
    text: str


Status = Literal["in_progress", "completed", "incomplete"]


class OutputMessage(msgspec.Struct, tag="message", tag_field="type", kw_only=True):
    id: str
    content: list[OutputTextPart]
    status: Status
    role: Literal["assistant"] = "assistant"


class OutputFunctionCall(msgspec.Struct, tag="function_call", tag_field="type", kw_only=True):
    id: str
    call_id: str
    name: str
    arguments: str
    status: Status


class OutputReasoning(msgspec.Struct, tag="reasoning", tag_field="type", kw_only=True):
    id: str
    content: list[ReasoningTextPart]
    status: Status
    summary: list[Any] = msgspec.field(default_factory=list)
    encrypted_content: str | msgspec.UnsetType = msgspec.UNSET  # with include "reasoning.encrypted_content"


OutputItem = OutputMessage | OutputFunctionCall | OutputReasoning


class InputTokensDetails(msgspec.Struct):
    cached_tokens: int
    cache_write_tokens: int = 0


class OutputTokensDetails(msgspec.Struct):
    reasoning_tokens: int


class ResponseUsage(msgspec.Struct):
    input_tokens: int  # the whole prompt, cached tokens included (OpenAI's meaning)
    input_tokens_details: InputTokensDetails
    output_tokens: int
    output_tokens_details: OutputTokensDetails
    total_tokens: int


class IncompleteDetails(msgspec.Struct):
    reason: Literal["max_output_tokens"]


class Response(msgspec.Struct, tag="response", tag_field="object", kw_only=True):
    id: str
    created_at: int
    status: Status
    model: str
    output: list[OutputItem]
    usage: ResponseUsage | None
    instructions: str | None
    max_output_tokens: int | None
    metadata: dict[str, str]
    parallel_tool_calls: bool
    previous_response_id: str | None
    reasoning: ReasoningConfig
    store: bool
    temperature: float | None
    text: TextConfig
    tool_choice: Literal["none", "auto", "required"] | FunctionToolChoice
    tools: list[FunctionTool]
    top_p: float | None
    top_logprobs: int | None = None
    truncation: Literal["disabled"] = "disabled"
    error: None = None
    incomplete_details: IncompleteDetails | None = None
    completed_at: int | None = None


class DeletedResponse(msgspec.Struct, tag="response.deleted", tag_field="object"):
    id: str
    deleted: bool = True


class ResponseItemList(msgspec.Struct, tag="list", tag_field="object"):
    """GET /v1/responses/{id}/input_items: a page of input items."""

    data: list[dict[str, Any]]
    first_id: str | None
    last_id: str | None
    has_more: bool


class ResponseStreamEvent(msgspec.Struct, omit_defaults=True, kw_only=True):
    """The data of one stream event (its ``type`` is also the SSE event name); which other fields
    it has depends on the type, as in OpenAI's stream."""

    type: str
    sequence_number: int
    response: Response | None = None
    output_index: int | None = None
    item_id: str | None = None
    content_index: int | None = None
    item: OutputItem | None = None
    part: OutputTextPart | ReasoningTextPart | None = None
    delta: str | None = None
    text: str | None = None
    name: str | None = None
    arguments: str | None = None
    logprobs: list[ChatTokenLogprob] | None = None
    # llama-server's: a batch's last event with timings_per_token (and response.completed)
    timings: Timings | None = None
    prompt_progress: PromptProgressJson | None = None  # response.in_progress during the prefill
    # an "error" event
    code: str | None = None
    message: str | None = None
    param: str | None = None
