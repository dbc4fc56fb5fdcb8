"""llama-server request fields ggserve does not implement: refused with a 400 that names them.

The rule: every field llama-server accepts is either honoured (it is a field of the request
schemas in ``frontend.api.schemas``) or refused here, never silently dropped. A field sent with the
value that means "off" is accepted, since many clients (SillyTavern, the llama.cpp web UI) send
every field with its default; any other value is a 400 naming it. ``null`` means "the server's
default" in llama-server, so it is accepted too.

vLLM's extras that ggserve does not implement are refused the same way (their table is in
frontend.api.vllm_fields). The raw body is parsed a second time only when it names one of these
fields (a byte search), so ordinary requests pay nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from frontend.api import vllm_fields
from frontend.http.errors import invalid


def _falsy(value: Any) -> bool:
    return value is False or value == 0 or value == "" or value == [] or value == {}


# field -> (whether a value is the neutral one, why anything else is refused)
UNSUPPORTED: dict[str, tuple[Callable[[Any], bool], str]] = {
    "echo": (_falsy, "echo is only supported on /v1/completions"),
    "post_sampling_probs": (_falsy, "probabilities after the sampler chain are reported by /completion and "
                            "/v1/chat/completions only"),
    "chat_format": (lambda v: False, "chat_format is internal to llama-server; use reasoning_format and tools"),
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
_REFUSED = {**UNSUPPORTED, **vllm_fields.UNSUPPORTED}
_NEEDLES = [(name, f'"{name}"'.encode()) for name in _REFUSED]


def refuse_unsupported(body: bytes, request_type: type[msgspec.Struct]) -> None:
    """A 400 naming the first unsupported llama-server or vLLM field the body sets to a non-neutral value.

    Fields of ``request_type`` are honoured by that endpoint and never refused here.
    """
    honoured = request_type.__struct_fields__
    present = [name for name, needle in _NEEDLES if name not in honoured and needle in body]
    if not present:
        return
    try:
        fields = msgspec.json.decode(body)
    except msgspec.DecodeError:
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
