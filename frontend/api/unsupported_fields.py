"""Request fields of llama-server's, vLLM's and OpenAI's APIs that ggserve does not implement:
refused with a 400 that names them.

The rule: every field llama-server or vLLM accepts is either honoured (it is a field of the
request schemas in ``frontend.api.schemas``) or refused here, never silently dropped. A field
sent with the value that means "off" is accepted, since many clients (SillyTavern, the llama.cpp
web UI, vLLM clients' ``extra_body``) send every field with its default; any other value is a 400
naming it. ``null`` means "the server's default", so it is accepted too.

The raw body is parsed a second time only when it names one of these fields (a byte search),
so ordinary requests pay nothing.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import msgspec

from frontend.http.errors import UNREADABLE_JSON, invalid


def _falsy(value: Any) -> bool:
    return value is False or value == 0 or value == "" or value == [] or value == {}


def _never(value: Any) -> bool:
    return False


# field -> (whether a (non-null) value is the neutral one, why anything else is refused)
Table = dict[str, tuple[Callable[[Any], bool], str]]

LLAMA_SERVER: Table = {
    "echo": (_falsy, "echo is only supported on /v1/completions"),
    "post_sampling_probs": (_falsy, "probabilities after the sampler chain are reported by /completion and "
                            "/v1/chat/completions only"),
    "chat_format": (_never, "chat_format is internal to llama-server; use reasoning_format and tools"),
    "chat_parser": (_falsy, "custom chat parsers are not supported"),
    "generation_prompt": (_falsy, "generation_prompt is internal to llama-server"),
    "multimodal_data": (_falsy, 'it belongs in a prompt object: {"prompt_string": ..., "multimodal_data": [...]}'),
    "image_data": (_falsy, 'the old image API; send {"prompt_string": ..., "multimodal_data": [...]} as the prompt'),
    "reasoning_format": (lambda v: v == "none", "reasoning extraction applies to chat completions"),
    "parse_tool_calls": (lambda v: v is True, "tool calls are always parsed when tools are given"),
    "reasoning_budget_start_tag": (_falsy, "a chat completion's thinking tags are its chat template's"),
    "reasoning_budget_end_tags": (_falsy, "a chat completion's thinking tags are its chat template's"),
    "reasoning_budget_end_tag": (_falsy, "a chat completion's thinking tags are its chat template's"),
}

# vLLM's extras (sent in ``extra_body``). Honoured elsewhere: ``guided_*``, ``structured_outputs``,
# ``allowed_token_ids``, ``min_tokens``, ``cache_salt``, ``repetition_penalty``, ``stop_token_ids``,
# ``include_stop_str_in_output``, ``truncate_prompt_tokens`` and ``truncation_side``,
# ``add_special_tokens`` on /v1/completions and /v1/embeddings, ``return_token_ids``,
# ``return_tokens_as_token_ids`` and ``prompt_logprobs`` on the OpenAI routes, ``include_reasoning``,
# ``thinking_token_budget``, ``return_prompt_text`` and ``documents`` on chat, ``normalize`` on
# /v1/embeddings, ``bad_words`` on completions.
# A field a request type lists in its ``not_honoured`` is refused there although it has it.
VLLM: Table = {
    "best_of": (lambda v: v == 1, "no server-side best-of; ask for n choices and pick one"),
    "use_beam_search": (_falsy, "no beam search"),
    "length_penalty": (lambda v: v == 1, "length_penalty applies to beam search, which ggserve does not do"),
    "logits_processors": (_falsy, "no custom logits processors"),
    "prompt_logprobs": (_never, "/v1/completions and /v1/chat/completions give them"),
    "return_token_ids": (_falsy, "llama-server's return_tokens gives the generated token ids here"),
    "return_tokens_as_token_ids": (_falsy, "llama-server's completion_probabilities give each token's id here"),
    "logprob_token_ids": (_falsy, "no log-probabilities of chosen token ids; top_logprobs gives the most likely"),
    "repetition_detection": (_falsy, "no repetition detection; max_tokens bounds the output"),
    "watermarking": (_falsy, "no watermarking"),
    "stream_interval": (lambda v: v == 1, "a stream sends each token's text as soon as it is known"),
    # honoured by chat completions only
    "include_reasoning": (lambda v: v is True, "a text completion has no reasoning to leave out"),
    "thinking_token_budget": (_never, "a text completion's budget names its tags: reasoning_budget_tokens with "
                              "reasoning_budget_start_tag and reasoning_budget_end_tags"),
    "return_prompt_text": (_falsy, "the prompt is the request's own text (echo returns it)"),
    "skip_special_tokens": (lambda v: v is True, "special tokens are left out of the text (as with vLLM's default); "
                            "start the server with --special to write them"),
    "spaces_between_special_tokens": (lambda v: v is True, "a Hugging Face detokenizer option; llama.cpp's writes no "
                                      "extra spaces"),
    "guided_whitespace_pattern": (_falsy, "no custom whitespace pattern for JSON"),
    "structural_tag": (_falsy, "no structural tags; guided_grammar can express them"),
    "chat_template": (_falsy, "no per-request chat template; start the server with --chat-template-file"),
    "documents": (_falsy, "documents go to a chat template: chat completions only"),
    "mm_processor_kwargs": (_falsy, "the multimodal projector sets its own options"),
    "priority": (_falsy, "no priorities: requests run first come, first served"),
    "kv_transfer_params": (_falsy, "no disaggregated serving"),
    "vllm_xargs": (_falsy, "vLLM's extension arguments have no meaning here"),
    "request_id": (_never, "ggserve names each request itself (the response's id)"),
    # /v1/completions and /v1/embeddings honour it; a chat prompt gets BOS once, as the vocabulary wants it
    "add_special_tokens": (lambda v: v is False, "the prompt gets the model's special tokens once, as a chat "
                           "template's prompt does"),
}

# OpenAI's own fields that ask for what ggserve cannot give. Honoured or accepted elsewhere: the
# rest; ``prediction`` (Predicted Outputs) is a hint to go faster, with the same output, and
# ``store``, ``metadata``, ``service_tier``, ``user``, ``prompt_cache_key``, ``safety_identifier``
# and ``verbosity`` are bookkeeping or hints (like any unknown field, ignored).
OPENAI: Table = {
    "functions": (_falsy, "the deprecated functions API is not supported; send them as tools"),
    "function_call": (lambda v: v in ("none", "auto"), "the deprecated functions API is not supported; "
                      "use tool_choice"),
    "audio": (_falsy, "no audio output"),
    "modalities": (lambda v: v == ["text"], "text is the only output modality"),
    "web_search_options": (_falsy, "no web search"),
}

_REFUSED = {**LLAMA_SERVER, **VLLM, **OPENAI}
_NEEDLES = [(name, f'"{name}"'.encode()) for name in _REFUSED]


@functools.cache
def _needles(request_type: type[msgspec.Struct]) -> list[tuple[str, bytes]]:
    """The refused fields ``request_type`` does not honour (its own fields, less its ``not_honoured``)."""
    honoured = set(request_type.__struct_fields__) - getattr(request_type, "not_honoured", frozenset())
    return [(name, needle) for name, needle in _NEEDLES if name not in honoured]


def refuse_unsupported(body: bytes, request_type: type[msgspec.Struct]) -> None:
    """A 400 naming the first unsupported llama-server, vLLM or OpenAI field the body sets to a
    non-neutral value.

    Fields of ``request_type`` are honoured by that endpoint and never refused here.
    """
    present = [name for name, needle in _needles(request_type) if needle in body]
    if not present:
        return
    try:
        fields = msgspec.json.decode(body)
    except UNREADABLE_JSON:  # (msgspec's DecodeError is a ValueError)
        return  # the typed decode reports the malformed body
    if not isinstance(fields, dict):
        return
    for name in present:
        value = fields.get(name)
        if value is None:
            continue
        neutral, why = _REFUSED[name]
        if not neutral(value):
            raise invalid(f"{name} is not supported by ggserve: {why}", param=name)
