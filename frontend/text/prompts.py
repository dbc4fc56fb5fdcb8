"""Prompts as token ids, in every form llama-server takes (its ``tokenize_input_prompts``).

A request's prompt (``prompt`` of the completion routes, ``input`` / ``content`` of the embedding
routes) is one prompt or a list of them: a list holding no token id is a list of prompts, anything
else is one. One prompt is a string, a token array, text and token ids mixed in one array
(``[12, "text", 34]``), or an object: ``{"prompt_string": ..., "multimodal_data": [...]}``, and on
the embedding routes OpenAI's ``{"content": [{"type": "text", "text": ...}]}``. Text gets the
model's BOS (``add_special``) and special-token text is parsed, as llama-server does; token ids are
used exactly as given. With ``suffix`` a completion prompt becomes a fill-in-the-middle prompt,
which needs a model with FIM tokens.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from frontend.api.schemas import PromptInput, PromptObject
from frontend.http.errors import invalid
from frontend.text.multimodal import Span
from frontend.text.tokenizer import Tokenizer

# One prompt of a request: text, token ids, both mixed, or an object prompt.
Subprompt = str | list[str | int] | PromptObject
NO_PROJECTOR = "no multimodal projector loaded: this server takes text prompts only (start it with --mmproj)"
_MEDIA_PARTS = frozenset({"image_url", "input_audio", "input_video", "video_url"})


@dataclass(slots=True)
class Prompt:
    token_ids: list[int]
    text: str  # what ``echo`` sends back
    media: list[Span] = field(default_factory=list)  # its images / audio (frontend.text.multimodal)


def truncate_tokens(token_ids: list[int], keep: int, side: str | None) -> list[int]:
    """At most ``keep`` tokens (vLLM's ``truncate_prompt_tokens``): the last ones (side "left" or
    None, vLLM's truncation) or the first ones ("right")."""
    if keep < 1:
        raise invalid("truncate_prompt_tokens keeps k >= 1 tokens (-1: as many as fit)", param="truncate_prompt_tokens")
    if len(token_ids) <= keep:
        return token_ids
    return token_ids[:keep] if side == "right" else token_ids[len(token_ids) - keep:]


def check_tokens(tokenizer: Tokenizer, token_ids: list[int], param: str) -> None:
    bad = tokenizer.invalid_token(token_ids)
    if bad is not None:
        raise invalid(f"token {bad} is outside the vocabulary (0..{tokenizer.n_vocab - 1})", param=param)


def tokenize_mixed(tokenizer: Tokenizer, content: str | list[str | int], add_special: bool,
                   parse_special: bool) -> list[int]:
    """A string, or a list mixing strings and token ids (special tokens added before the first
    element only, as llama-server does)."""
    parts = [content] if isinstance(content, str) else content
    token_ids: list[int] = []
    for i, part in enumerate(parts):
        if isinstance(part, str):
            token_ids += tokenizer.tokenize(part, add_special=add_special and i == 0, parse_special=parse_special)
        else:
            token_ids.append(part)
    return token_ids


def split_prompts(value: PromptInput, param: str) -> list[Subprompt]:
    """The prompts of a request: a list without token ids holds several, anything else is one."""
    if isinstance(value, list) and not any(isinstance(v, int) for v in value):
        if not value:
            raise invalid(f"{param} must not be empty", param=param)
        return value  # type: ignore[return-value]  # its items are prompts (a token-id item makes it one)
    return [value]  # type: ignore[list-item]


def subprompt_tokens(tokenizer: Tokenizer, item: Subprompt, param: str, special: bool = True,
                     content_parts: bool = False, add_bos: bool = True) -> list[int]:
    """One prompt's token ids; `special`: add BOS (unless not `add_bos`) and parse special-token
    text in its text; `content_parts`: an object prompt may be OpenAI's ``{"content": [parts]}``
    (embeddings)."""
    text = object_prompt(item, param, content_parts) if isinstance(item, PromptObject) else item
    if not isinstance(text, str) and not all(isinstance(part, str | int) for part in text):
        raise invalid("a prompt holding token ids is one prompt: its items must be token ids or strings, "
                      "not lists or objects", param=param)
    token_ids = tokenize_mixed(tokenizer, text, add_special=special and add_bos, parse_special=special)
    if not isinstance(text, str):
        check_tokens(tokenizer, token_ids, param)
    return token_ids


def object_prompt(prompt: PromptObject, param: str, content_parts: bool) -> str | list[str | int]:
    """The text (or mixed text and token ids) of an object prompt. Media (``multimodal_data``, or
    image, audio and video parts) needs a multimodal projector, and this server has none loaded."""
    if prompt.multimodal_data is not None:
        raise invalid(NO_PROJECTOR, param=f"{param}.multimodal_data")
    if prompt.prompt_string is not None and prompt.content is None:
        return prompt.prompt_string
    if content_parts and prompt.content is not None and prompt.prompt_string is None:
        return _content_text(prompt.content, f"{param}.content")
    wanted = '"prompt_string" or "content"' if content_parts else '"prompt_string"'
    raise invalid(f"an object prompt has exactly one of {wanted}", param=param)


def _content_text(parts: list[dict[str, Any]] | str, param: str) -> str:
    """OpenAI's content parts as one text (the parts' texts joined, as llama-server does)."""
    if isinstance(parts, str):
        raise invalid(f"{param} must be an array of content parts", param=param)
    texts = []
    for i, part in enumerate(parts):
        kind = part.get("type")
        if isinstance(kind, str) and kind in _MEDIA_PARTS:
            raise invalid(NO_PROJECTOR, param=f"{param}[{i}]")
        if kind != "text" or not isinstance(part.get("text"), str):
            raise invalid(f"{param}[{i}] must be a text part ({{\"type\": \"text\", \"text\": ...}}), "
                          f"not type {kind!r}", param=f"{param}[{i}]")
        texts.append(part["text"])
    return "".join(texts)


def completion_prompts(tokenizer: Tokenizer, value: PromptInput, suffix: str | None,
                       multimodal: Callable[[PromptObject, str], Prompt] | None = None,
                       spm: bool = False, add_bos: bool = True) -> list[Prompt]:
    """The prompts of a completion request, each with the text ``echo`` sends back.
    ``multimodal``: how an object prompt with ``multimodal_data`` becomes one (a server with a
    projector; without one such a prompt is a 400); ``spm``: a ``suffix`` goes first
    (``fim_tokens``); ``add_bos``: False leaves out the BOS a text prompt gets (vLLM's
    add_special_tokens)."""
    if suffix is not None and not tokenizer.supports_infill:
        raise invalid("suffix needs a model with fill-in-the-middle tokens; this one has none", param="suffix")
    prompts = []
    items = split_prompts(value, "prompt")
    for i, item in enumerate(items):
        if multimodal is not None and isinstance(item, PromptObject) and item.multimodal_data:
            prompts.append(multimodal(item, f"prompt[{i}]" if isinstance(value, list) else "prompt"))
            continue
        # An infill prefix is plain text placed between FIM tokens: no BOS, no special tokens.
        token_ids = subprompt_tokens(tokenizer, item, "prompt", special=suffix is None, add_bos=add_bos)
        text = item if isinstance(item, str) else tokenizer.detokenize(token_ids, special=False)
        prompts.append(Prompt(_infill(tokenizer, token_ids, suffix, spm) if suffix is not None else token_ids, text))
    return prompts


def _infill(tokenizer: Tokenizer, prefix: list[int], suffix: str, spm: bool) -> list[int]:
    """``[BOS]`` and the ``fim_tokens``: the model writes the middle."""
    suffix_ids = tokenizer.tokenize(suffix, add_special=False, parse_special=False)
    bos = [tokenizer.bos_id] if tokenizer.add_bos and tokenizer.bos_id >= 0 else []
    return [*bos, *fim_tokens(tokenizer, prefix, suffix_ids, spm)]


def fim_tokens(tokenizer: Tokenizer, prefix: list[int], suffix: list[int], spm: bool) -> list[int]:
    """``<FIM_PRE> prefix <FIM_SUF> suffix <FIM_MID>``, or with ``spm`` (llama-server's
    ``--spm-infill``, for models trained suffix first) ``<FIM_SUF> suffix <FIM_PRE> prefix <FIM_MID>``."""
    pre, suf = [tokenizer.fim_prefix_id, *prefix], [tokenizer.fim_suffix_id, *suffix]
    return [*(suf + pre if spm else pre + suf), tokenizer.fim_middle_id]
