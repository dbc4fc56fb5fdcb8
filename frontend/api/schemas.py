"""OpenAI (and llama-server) request and response bodies as msgspec Structs.

Requests decode straight from the body bytes into these types: a wrong type is a 400 naming the
field, and unknown fields are ignored, as OpenAI's API allows. ``None`` marks "not given", so the
server's defaults (llama-server's) apply. Responses encode with the exact field names OpenAI uses.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

import msgspec

from frontend.timings import PromptProgressJson, Timings

NonNegative = Annotated[int, msgspec.Meta(ge=0)]
TopLogprobs = Annotated[int, msgspec.Meta(ge=0, le=20)]
# One request may fan out to this many engine requests (n choices, or prompts x n).
MAX_CHOICES = 128
MAX_STOP_STRINGS = 1024
ChoiceCount = Annotated[int, msgspec.Meta(ge=1, le=MAX_CHOICES)]
# llama.cpp takes these as C ints. Bounded here, a larger value is a 400 naming the field instead
# of a 500 when the engine message cannot encode it (past 64 bits) or a silent wrap-around in ctypes.
CInt = Annotated[int, msgspec.Meta(ge=-(2**31), le=2**31 - 1)]

# ----------------------------------------------------------------------------- requests


class StreamOptions(msgspec.Struct):
    include_usage: bool = False  # a last chunk with the usage
    continuous_usage_stats: bool = False  # vLLM's: with include_usage, every chunk has the usage so far

    def usage_chunks(self) -> tuple[bool, bool]:
        """Whether the stream ends with a usage chunk, and whether every chunk has the usage so far."""
        return self.include_usage, self.include_usage and self.continuous_usage_stats


class JsonSchemaFormat(msgspec.Struct, kw_only=True):
    name: str = "response"
    description: str | None = None
    schema: dict[str, Any] | bool | None = None
    strict: bool | None = None


class ResponseFormat(msgspec.Struct, kw_only=True):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None
    schema: dict[str, Any] | None = None  # llama-server's {"type": "json_object", "schema": {...}}


# logit_bias in every form llama-server takes: {"id or text": bias} or [[id or text, bias], ...];
# a bias of ``false`` bans the token.
Bias = float | bool
LogitBias = dict[str, Bias] | list[tuple[int | str, Bias]]


class GrammarTrigger(msgspec.Struct, kw_only=True):
    """llama-server's lazy grammar trigger (frontend.structured.lazy)."""

    type: int | str  # 0 token, 1 word, 2 pattern, 3 pattern_full, or those names
    value: str
    token: int | None = None  # type token: its id


class LoraField(msgspec.Struct):
    """One LoRA adapter's scale, in a request's ``lora`` or POST /lora-adapters (llama-server's form);
    ``id`` as GET /lora-adapters numbers the adapters."""

    id: int
    scale: float


class StructuredOutputs(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """vLLM's ``structured_outputs``: one constraint on the output (frontend.structured.constraints)."""

    json: dict[str, Any] | bool | str | None = None  # a JSON schema (or its JSON text)
    regex: str | None = None  # the whole output matches it
    choice: list[str] | None = None  # the output is one of these
    grammar: str | None = None  # GBNF
    json_object: bool | None = None  # any JSON object
    # vLLM's grammar-backend options: only their defaults (a 400 names the field otherwise)
    disable_any_whitespace: bool = False
    disable_additional_properties: bool = False
    whitespace_pattern: str | None = None
    structural_tag: Any = None

    def __post_init__(self) -> None:
        for name, neutral in (("disable_any_whitespace", False), ("disable_additional_properties", False),
                              ("whitespace_pattern", None), ("structural_tag", None)):
            if getattr(self, name) != neutral:
                raise ValueError(f"{name} is not supported by ggserve")


class ChatPassThrough(msgspec.Struct, kw_only=True):
    """Chat fields that llama-server's /v1/responses takes too (it copies the body into a chat
    request): sampling extras, the template's kwargs, a thinking budget."""

    top_k: CInt | None = None
    min_p: float | None = None
    seed: int | None = None
    stop: str | Annotated[list[str], msgspec.Meta(max_length=MAX_STOP_STRINGS)] | None = None
    presence_penalty: Annotated[float, msgspec.Meta(ge=-2.0, le=2.0)] | None = None
    frequency_penalty: Annotated[float, msgspec.Meta(ge=-2.0, le=2.0)] | None = None
    repeat_penalty: float | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    reasoning_budget_tokens: CInt | None = None


class SamplingFields(msgspec.Struct, kw_only=True):
    """Generation parameters shared by /v1/chat/completions, /v1/completions and /completion.

    ``model`` and ``user`` are accepted and ignored (one model is served), like any unknown field.
    Every llama-server field is either here (honoured) or refused by ``frontend.api.unsupported_fields``.
    """

    max_tokens: int | None = None  # None or -1: until the slot's context is full (no limit with --context-shift)
    n_predict: int | None = None  # llama-server's name of max_tokens
    temperature: Annotated[float, msgspec.Meta(ge=0.0)] | None = None
    top_p: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] | None = None  # OpenAI's and vLLM's ranges
    n: ChoiceCount = 1
    n_cmpl: ChoiceCount | None = None  # llama-server's name of n
    # each is searched for in the text after every token: a bound keeps that work a request's own
    stop: str | Annotated[list[str], msgspec.Meta(max_length=MAX_STOP_STRINGS)] | None = None
    seed: int | None = None
    presence_penalty: Annotated[float, msgspec.Meta(ge=-2.0, le=2.0)] | None = None
    frequency_penalty: Annotated[float, msgspec.Meta(ge=-2.0, le=2.0)] | None = None
    # OpenAI: token id (as a string) -> bias in [-100, 100]. llama-server also accepts text keys.
    logit_bias: LogitBias | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    # llama-server extras
    top_k: CInt | None = None
    min_p: float | None = None
    typical_p: float | None = None
    repeat_penalty: float | None = None
    repeat_last_n: Annotated[int, msgspec.Meta(ge=-1, le=2**31 - 1)] | None = None
    min_keep: Annotated[int, msgspec.Meta(ge=0, le=2**31 - 1)] | None = None
    top_n_sigma: float | None = None
    xtc_probability: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] | None = None
    xtc_threshold: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] | None = None
    dynatemp_range: float | None = None
    dynatemp_exponent: float | None = None
    mirostat: Annotated[int, msgspec.Meta(ge=0, le=2)] | None = None
    mirostat_tau: float | None = None
    mirostat_eta: float | None = None
    dry_multiplier: float | None = None
    dry_base: float | None = None  # below 1: the server's default (as llama-server)
    dry_allowed_length: Annotated[int, msgspec.Meta(ge=0, le=2**31 - 1)] | None = None
    dry_penalty_last_n: Annotated[int, msgspec.Meta(ge=0, le=2**31 - 1)] | None = None
    # at most 16: llama.cpp matches each against the whole vocabulary when it builds the sampler,
    # on the executor's step (~40 ms a breaker for Gemma 3's 262k tokens on a CPU core)
    dry_sequence_breakers: Annotated[list[str], msgspec.Meta(min_length=1, max_length=16)] | None = None
    adaptive_target: Annotated[float, msgspec.Meta(le=1.0)] | None = None
    adaptive_decay: Annotated[float, msgspec.Meta(ge=0.0, le=0.99)] | None = None
    # order of the samplers (names, or letters as "kmt"); bounded: each one is a pass per token
    samplers: Annotated[list[str], msgspec.Meta(max_length=64)] | Annotated[str, msgspec.Meta(max_length=64)] | None = None
    ignore_eos: bool | None = None  # None: the server's --ignore-eos (Frontend.fill_defaults)
    cache_prompt: bool = True
    n_probs: TopLogprobs = 0
    timings_per_token: bool = False  # ``timings`` on every stream chunk, not only the last
    # llama-server's request to run the sampler chain in the compute graph: a place, not a result
    # (the same tokens and probabilities, by its definition); ggserve samples in the executor either way
    backend_sampling: bool = False
    # The thinking's budget: after this many tokens inside it the closing tag is forced (-1: no
    # limit). Chat completions take the tags from the chat template, the text completions from
    # the request (TextCompletionFields); ``reasoning_control`` lets POST
    # /v1/chat/completions/control end the thinking at any time.
    reasoning_budget_tokens: CInt | None = None
    reasoning_budget_message: str | None = None  # written before the forced closing tag
    reasoning_control: bool = False
    verbose: bool = False  # llama-server's debug field: ``__verbose``, the native result, in the response
    return_progress: bool = False  # streams: ``prompt_progress`` chunks during the prefill
    id_slot: Annotated[int, msgspec.Meta(ge=-1)] = -1  # run on this slot (as /slots numbers them); -1: any
    # context shift (--context-shift): prompt tokens kept when the context fills (-1: all; None:
    # the server's --keep), and how many tokens after them are dropped (0: half)
    n_keep: Annotated[int, msgspec.Meta(ge=-1, le=2**31 - 1)] | None = None
    n_discard: Annotated[int, msgspec.Meta(ge=0, le=2**31 - 1)] = 0
    # reuse chunks of at least this many tokens of a cached prompt past a change, by shifting
    # their KV (None: the server's --cache-reuse; 0: off)
    n_cache_reuse: Annotated[int, msgspec.Meta(ge=0, le=2**31 - 1)] | None = None
    # ms after the first token past which the text ends at its next newline (<= 0: no limit)
    t_max_predict_ms: int | None = None
    # lines after the first need this much indentation; the first that has less ends the text
    n_indent: Annotated[int, msgspec.Meta(ge=0, le=2**31 - 1)] = 0
    # seconds of silence before a stream sends ": ping" (-1: never); default --sse-ping-interval
    sse_ping_interval: Annotated[float, msgspec.Meta(ge=-1)] | None = None
    # constrained output (one of them): GBNF (llama-server's field), a JSON schema, OpenAI's format
    grammar: str | None = None
    json_schema: dict[str, Any] | bool | None = None
    response_format: ResponseFormat | None = None
    # lazy grammar (llama-server's): the grammar applies from a trigger on (frontend.structured.lazy)
    grammar_lazy: bool = False
    grammar_triggers: Annotated[list[GrammarTrigger], msgspec.Meta(max_length=64)] | None = None
    preserved_tokens: Annotated[list[str], msgspec.Meta(max_length=256)] | None = None
    # LoRA adapters of this request: those listed at their scales, every other one off; none or
    # []: the global scales (POST /lora-adapters). Steps run one adapter set (README, LoRA).
    lora: list[LoraField] | None = None
    # speculative decoding (--spec-type), llama-server's fields: draft tokens per step at most
    # (0: no speculation for this request) and at least; the draft model's probability floor
    spec_n_max: Annotated[int, msgspec.Meta(ge=0, le=1024)] | None = msgspec.field(default=None, name="speculative.n_max")
    spec_n_min: Annotated[int, msgspec.Meta(ge=0, le=1024)] | None = msgspec.field(default=None, name="speculative.n_min")
    spec_p_min: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] | None = msgspec.field(
        default=None, name="speculative.p_min")
    # vLLM's extras (frontend.api.unsupported_fields refuses the ones not listed here). Constrained
    # output, one of them or one of the fields above: a JSON schema (or its text), a regex or a
    # choice of strings the whole output matches, a GBNF grammar, or the same in one object.
    guided_json: dict[str, Any] | bool | str | None = None
    guided_regex: str | None = None
    guided_choice: Annotated[list[str], msgspec.Meta(min_length=1)] | None = None
    guided_grammar: str | None = None
    structured_outputs: StructuredOutputs | None = None
    # the output is made of these tokens only (an end-of-generation token among them may end it)
    allowed_token_ids: Annotated[list[CInt], msgspec.Meta(min_length=1)] | None = None
    # the grammar engine vLLM should use (xgrammar, outlines, ...): a place, not a result; ggserve's
    # is llama.cpp's, and the constraint is the same
    guided_decoding_backend: str | None = None
    # vLLM's repetition penalty: llama.cpp's repeat_penalty over the whole context (repeat_last_n -1)
    # unless those fields are given
    repetition_penalty: Annotated[float, msgspec.Meta(gt=0.0)] | None = None
    stop_token_ids: list[CInt] | None = None  # generating one of these ends the output (not shown)
    # words the output never contains (their tokens as at the text's start and after a space)
    bad_words: Annotated[list[str], msgspec.Meta(max_length=256)] | None = None
    # no end-of-generation token, stop token or stop string ends the output before this many tokens
    min_tokens: Annotated[int, msgspec.Meta(ge=0, le=2**31 - 1)] = 0
    # cached prefixes are shared only between requests of the same salt (so a tenant cannot tell
    # from a fast answer that another sent the same prompt)
    cache_salt: Annotated[str, msgspec.Meta(min_length=1)] | None = None
    include_stop_str_in_output: bool = False  # the stop string that ended the text is kept in it
    # a longer prompt is cut to this many tokens (-1: as many as fit beside the output limit):
    # its last ones (truncation_side "left", vLLM's default) or its first ones ("right")
    truncate_prompt_tokens: Annotated[int, msgspec.Meta(ge=-1)] | None = None
    truncation_side: Literal["left", "right"] | None = None
    # the prompt's token ids (prompt_token_ids) and each choice's generated ones (token_ids) in the
    # answer; a stream sends the prompt's with a choice's first chunk and each chunk's own ids
    return_token_ids: bool | None = None
    # log-probabilities name their tokens "token_id:<id>" (a token's text may not be valid UTF-8)
    return_tokens_as_token_ids: bool | None = None
    # each prompt token's log-probability and rank, with this many alternatives (not streamed)
    prompt_logprobs: TopLogprobs | None = None

    def __post_init__(self) -> None:
        if self.n_cmpl is not None:  # llama-server reads n_cmpl first, n as its fallback
            self.n = self.n_cmpl


class TextPart(msgspec.Struct, tag="text", tag_field="type"):
    text: str


class ImageUrl(msgspec.Struct, kw_only=True):
    url: str  # a data: URI, or http(s) with --allow-remote-media
    detail: Literal["auto", "low", "high"] | None = None  # accepted; the projector sets the resolution


class ImagePart(msgspec.Struct, tag="image_url", tag_field="type"):
    image_url: ImageUrl


class InputAudio(msgspec.Struct, kw_only=True):
    data: str  # base64
    format: Literal["wav", "mp3", "flac"]


class AudioPart(msgspec.Struct, tag="input_audio", tag_field="type"):
    input_audio: InputAudio


class VideoSource(msgspec.Struct, kw_only=True):
    """llama-server's video part: ``data`` (read first) or ``url``: a data: URI, bare base64, or
    http(s) with --allow-remote-media."""

    data: str | None = None
    url: str | None = None

    def __post_init__(self) -> None:
        if self.data is None and self.url is None:
            raise ValueError("a video part needs data or url")

    @property
    def source(self) -> str:
        return self.data if self.data is not None else self.url or ""


class VideoPart(msgspec.Struct, tag="input_video", tag_field="type"):
    input_video: VideoSource


class VideoUrlPart(msgspec.Struct, tag="video_url", tag_field="type"):
    """OpenAI-style spelling llama-server takes as an alias of ``input_video``."""

    video_url: VideoSource


ContentPart = TextPart | ImagePart | AudioPart | VideoPart | VideoUrlPart
MediaPart = ImagePart | AudioPart | VideoPart | VideoUrlPart


class FunctionCall(msgspec.Struct, kw_only=True):
    name: str
    arguments: str | dict[str, Any] = "{}"  # OpenAI sends a JSON string; some clients an object


class ToolCall(msgspec.Struct, kw_only=True):
    id: str | None = None
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(msgspec.Struct, kw_only=True):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
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
    # llama-server's: logprobs as probabilities after the sampler chain ("prob", "top_probs")
    post_sampling_probs: bool = False
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool = True
    chat_template_kwargs: dict[str, Any] | None = None
    add_generation_prompt: bool | None = None  # None: true (false when continuing the last message)
    # continue the final assistant message: true / "content"; false: never (see frontend.text.continuation)
    continue_final_message: bool | Literal["content", "reasoning_content"] | None = None
    # reasoning: llama-server's per-request format, OpenAI's effort, a thinking token budget
    reasoning_format: Literal["none", "deepseek", "deepseek-legacy", "auto"] | None = None
    reasoning_effort: str | None = None
    thinking_budget_tokens: CInt | None = None  # llama-server's other name of reasoning_budget_tokens
    thinking_token_budget: CInt | None = None  # vLLM's name of it
    include_reasoning: bool = True  # vLLM's: false leaves the reasoning out of the answer
    return_prompt_text: bool | None = None  # vLLM's: the rendered conversation in the answer (prompt_text)
    # vLLM's: documents for retrieval-augmented generation, given to the chat template as
    # ``documents`` (Command-R's, Granite's); a template that does not use them renders as without
    documents: list[dict[str, str]] | None = None


class PromptObject(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """llama-server's object prompt ``{"prompt_string": ..., "multimodal_data": [base64, ...]}``;
    on the embedding routes also OpenAI's ``{"content": [parts]}`` (frontend.text.prompts)."""

    prompt_string: str | list[str | int] | None = None
    multimodal_data: list[str] | str | None = None
    content: list[dict[str, Any]] | str | None = None  # a string is refused there, as llama-server does


# llama-server's prompt forms (its tokenize_input_prompts): a string, a token array, text and
# token ids mixed in one array, an object prompt, or a list of any of these (one result each).
PromptInput = str | list[str | int | list[str | int] | PromptObject] | PromptObject


class TextCompletionFields(SamplingFields, kw_only=True):
    """What /v1/completions and /completion add: a raw prompt has no chat template to name the
    thinking's tags, so a reasoning budget names them (llama-server's fields)."""

    reasoning_budget_start_tag: str | None = None
    reasoning_budget_end_tags: list[str] | None = None  # any of them ends the thinking; the first is forced
    reasoning_budget_end_tag: str | None = None  # llama-server's other name, for one tag


class CompletionRequest(TextCompletionFields, kw_only=True):
    prompt: PromptInput
    suffix: str | None = None
    echo: bool = False
    logprobs: TopLogprobs | None = None
    add_special_tokens: bool = True  # vLLM's: false leaves out the BOS token of a text prompt


class InfillChunk(msgspec.Struct, kw_only=True):
    """A file of the repository given as context to /infill."""

    text: str
    filename: str = "tmp"


class NativeCompletionRequest(TextCompletionFields, kw_only=True):
    """llama-server's POST /completion (and /infill, which adds the input_* fields)."""

    # vLLM's fields of the OpenAI answers, refused here (``return_tokens`` gives the ids)
    not_honoured: ClassVar[frozenset[str]] = frozenset({"return_token_ids", "return_tokens_as_token_ids",
                                                        "prompt_logprobs"})

    prompt: PromptInput | None = None  # required by /completion (as llama-server), "" by default on /infill
    return_tokens: bool = False
    response_fields: list[str] | None = None  # only these fields ("a/b" reaches into objects)
    logprobs: TopLogprobs | None = None  # llama-server's fallback name of n_probs
    # completion_probabilities as probabilities after the sampler chain ("prob", "top_probs")
    post_sampling_probs: bool = False
    # /infill
    input_prefix: str | None = None
    input_suffix: str | None = None
    input_extra: list[InfillChunk] | None = None


class TokenizeRequest(msgspec.Struct, kw_only=True):
    """llama-server's form (``content``) or vLLM's (``prompt``, or chat ``messages`` tokenized as a
    chat completion's prompt is), whose answer is vLLM's VllmTokenizeResponse."""

    content: str | list[str | int] = ""
    add_special: bool = False
    parse_special: bool = True
    with_pieces: bool = False
    prompt: str | None = None
    messages: list[ChatMessage] | None = None
    add_special_tokens: bool | None = None  # a prompt: BOS as the model wants it unless false
    add_generation_prompt: bool | None = None
    continue_final_message: bool | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    return_token_strs: bool = False


class VllmTokenizeResponse(msgspec.Struct):
    count: int
    max_model_len: int  # tokens one request may hold
    tokens: list[int]
    token_strs: list[str] | None = None


class DetokenizeRequest(msgspec.Struct, kw_only=True):
    tokens: list[int] = []


# ----------------------------------------------------------------------------- responses

SYSTEM_FINGERPRINT = "ggserve"
# A completion's id is one of these and its request's id (the engine's are that id, "-", the choice).
CHAT_COMPLETION_ID_PREFIX = "chatcmpl-"
TEXT_COMPLETION_ID_PREFIX = "cmpl-"


class PromptTokensDetails(msgspec.Struct):
    cached_tokens: int


class Usage(msgspec.Struct):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails


class TopLogprob(msgspec.Struct):
    id: int  # llama-server's: the token's id
    token: str
    logprob: float
    bytes: list[int]


class TopProb(msgspec.Struct):
    id: int
    token: str
    prob: float
    bytes: list[int]


class ChatTokenLogprob(msgspec.Struct, kw_only=True):
    """A generated token: OpenAI's logprob and top_logprobs, or with llama-server's
    ``post_sampling_probs`` prob and top_probs (probabilities after the sampler chain)."""

    id: int  # llama-server's: the token's id
    token: str
    bytes: list[int]
    logprob: float | msgspec.UnsetType = msgspec.UNSET
    top_logprobs: list[TopLogprob] | msgspec.UnsetType = msgspec.UNSET
    prob: float | msgspec.UnsetType = msgspec.UNSET
    top_probs: list[TopProb] | msgspec.UnsetType = msgspec.UNSET


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


class PromptTokenLogprob(msgspec.Struct):
    """vLLM's log-probability of a prompt token (or of an alternative to it)."""

    logprob: float
    rank: int  # 1: the most likely token
    decoded_token: str


# vLLM's prompt_logprobs: per prompt token, by token id, the token and the most likely
# alternatives; None for the first (nothing precedes it)
PromptLogprobs = list[dict[int, PromptTokenLogprob] | None]


class ChatChoice(msgspec.Struct):
    index: int
    message: AssistantMessage
    logprobs: ChatLogprobs | None
    finish_reason: str
    token_ids: list[int] | msgspec.UnsetType = msgspec.UNSET  # vLLM's return_token_ids


# ``__verbose``, with llama-server's ``verbose: true``: the native result (frontend.api.native_result)
# of the first choice; a stream sends one chunk with it per choice, after the last text.
Verbose = dict[str, Any] | None


class ChatCompletion(msgspec.Struct, tag_field="object", tag="chat.completion", omit_defaults=True):
    id: str
    created: int
    model: str
    system_fingerprint: str
    choices: list[ChatChoice]
    usage: Usage
    timings: Timings | None = None  # llama-server's prompt and generation speed
    verbose: Verbose = msgspec.field(default=None, name="__verbose")
    prompt_token_ids: list[int] | None = None  # vLLM's return_token_ids
    prompt_text: str | None = None  # vLLM's return_prompt_text
    prompt_logprobs: PromptLogprobs | None = None  # vLLM's (of the first choice's prompt)


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
    """One chunk's delta; ``content`` left unset is omitted, set to None it is sent as null (the
    first chunk's, as llama-server and OpenAI send it)."""

    role: str | None = None
    content: str | None | msgspec.UnsetType = msgspec.UNSET
    reasoning_content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None


class ChatChunkChoice(msgspec.Struct):
    index: int
    delta: ChatDelta
    logprobs: ChatLogprobs | None = None
    finish_reason: str | None = None
    token_ids: list[int] | msgspec.UnsetType = msgspec.UNSET  # vLLM's return_token_ids: this chunk's


class ControlRequest(msgspec.Struct, kw_only=True):
    """POST /v1/chat/completions/control (llama-server's): act on a running chat completion."""

    id: str = ""  # the completion's id, as its response or stream gave it
    action: str = ""  # "reasoning_end": end its thinking now (it must have set reasoning_control)
    model: str | None = None  # router mode: the model that runs it


class ControlResult(msgspec.Struct, omit_defaults=True):
    success: bool
    message: str | None = None  # why nothing was done


class InputTokenCount(msgspec.Struct, tag_field="object", tag="response.input_tokens"):
    """POST /v1/chat/completions/input_tokens: the prompt tokens a chat request would submit."""

    input_tokens: int


class ChatCompletionChunk(
    msgspec.Struct, tag_field="object", tag="chat.completion.chunk", omit_defaults=True
):
    id: str
    created: int
    model: str
    system_fingerprint: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None  # on the last chunk with stream_options.include_usage (all: continuous_usage_stats)
    timings: Timings | None = None  # on a choice's last chunk (on every chunk with timings_per_token)
    prompt_progress: PromptProgressJson | None = None  # during the prefill, with return_progress
    verbose: Verbose = msgspec.field(default=None, name="__verbose")
    prompt_token_ids: list[int] | None = None  # vLLM's return_token_ids: on the first chunk
    prompt_text: str | None = None  # vLLM's return_prompt_text: on the first chunk


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
    # vLLM's return_token_ids: the choice's prompt (a stream's first chunk of the choice) and its tokens
    prompt_token_ids: list[int] | msgspec.UnsetType = msgspec.UNSET
    token_ids: list[int] | msgspec.UnsetType = msgspec.UNSET
    prompt_logprobs: PromptLogprobs | msgspec.UnsetType = msgspec.UNSET  # vLLM's


class Completion(msgspec.Struct, tag_field="object", tag="text_completion", omit_defaults=True):
    """A /v1/completions response; stream chunks have the same shape (usage only at the end)."""

    id: str
    created: int
    model: str
    system_fingerprint: str
    choices: list[CompletionChoice]
    usage: Usage | None = None
    timings: Timings | None = None  # llama-server's; on streams the last chunk (every one with timings_per_token)
    prompt_progress: PromptProgressJson | None = None  # stream chunks during the prefill, with return_progress
    verbose: Verbose = msgspec.field(default=None, name="__verbose")


class HealthStatus(msgspec.Struct):
    status: Literal["ok", "loading", "restarting", "draining"]


class ModelMeta(msgspec.Struct, omit_defaults=True):
    """llama-server's ``meta`` of a model; the executor's figures once it has reported them."""

    n_vocab: int
    n_ctx: int  # a slot's context
    n_ctx_train: int | None = None
    n_params: int | None = None
    size: int | None = None  # bytes
    n_embd: int | None = None
    vocab_type: int | None = None  # llama_vocab_type (1 SPM, 2 BPE, ...)


class ModelStatusInfo(msgspec.Struct, omit_defaults=True):
    """Router mode: a model's ``status`` as llama-server's router lists it."""

    value: str  # unloaded / loading / loaded / sleeping
    args: list[str] = []  # the model's own flags (from the preset)
    failed: bool = False  # the last load failed (value "unloaded")
    message: str = ""  # why it failed or was unloaded


class ModelArchitecture(msgspec.Struct):
    input_modalities: list[str]  # "text", and "image" / "audio" with --mmproj
    output_modalities: list[str] = msgspec.field(default_factory=lambda: ["text"])


class Model(msgspec.Struct, tag_field="object", tag="model", omit_defaults=True):
    id: str
    created: int
    owned_by: str
    aliases: list[str]  # llama-server's: the names requests may use
    tags: list[str]  # llama-server's --tags
    meta: ModelMeta | None = None  # absent until the engine is ready
    path: str | None = None  # router mode: the GGUF
    status: ModelStatusInfo | None = None  # router mode
    architecture: ModelArchitecture | None = None
    # vLLM's: tokens one request may hold (meta's n_ctx; on an embedding server, one input's limit)
    max_model_len: int | None = None


class OllamaModelDetails(msgspec.Struct):
    parent_model: str = ""
    format: str = "gguf"
    family: str = ""
    families: list[str] = msgspec.field(default_factory=lambda: [""])
    parameter_size: str = ""
    quantization_level: str = ""


class OllamaModel(msgspec.Struct):
    """An entry of llama-server's Ollama-style ``models`` list (what Ollama clients read)."""

    name: str
    model: str
    modified_at: str = ""
    size: str = ""
    digest: str = ""
    type: str = "model"
    description: str = ""
    tags: list[str] = msgspec.field(default_factory=lambda: [""])
    capabilities: list[str] = msgspec.field(default_factory=lambda: ["completion"])
    parameters: str = ""
    details: OllamaModelDetails = msgspec.field(default_factory=OllamaModelDetails)


class ModelList(msgspec.Struct, tag_field="object", tag="list"):
    data: list[Model]
    models: list[OllamaModel] = []  # llama-server's Ollama-compatible listing of the same models


class TokenPiece(msgspec.Struct):
    id: int
    piece: str | list[int]  # the bytes when the piece is not whole UTF-8 (part of a character)


class LoraAdapter(msgspec.Struct):
    """An entry of GET /lora-adapters (llama-server's fields)."""

    id: int
    path: str
    scale: float  # its global scale
    task_name: str
    prompt_prefix: str


class LoraApplied(msgspec.Struct):
    """POST /lora-adapters' answer (llama-server's)."""

    success: bool = True


class TokenizeResponse(msgspec.Struct):
    tokens: list[int | TokenPiece]  # ids; with ``with_pieces``, all of them TokenPieces


class DetokenizeResponse(msgspec.Struct):
    content: str
    prompt: str  # the same text, under vLLM's name


class VersionInfo(msgspec.Struct):
    version: str


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
