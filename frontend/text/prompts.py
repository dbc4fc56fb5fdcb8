"""Prompts of /v1/completions as token ids: strings, token arrays, lists of either, and infill.

A string gets the model's BOS (``add_special``) and special-token text is parsed, as llama-server
does; a token array is used exactly as given. With ``suffix`` the prompt becomes a
fill-in-the-middle prompt, which needs a model with FIM tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from frontend.http.errors import invalid
from frontend.text.multimodal import Span
from frontend.text.tokenizer import Tokenizer


@dataclass(slots=True)
class Prompt:
    token_ids: list[int]
    text: str  # what ``echo`` sends back
    media: list[Span] = field(default_factory=list)  # its images / audio (frontend.text.multimodal)


def check_tokens(tokenizer: Tokenizer, token_ids: list[int], param: str) -> None:
    bad = tokenizer.invalid_token(token_ids)
    if bad is not None:
        raise invalid(f"token {bad} is outside the vocabulary (0..{tokenizer.n_vocab - 1})", param=param)


def completion_prompts(tokenizer: Tokenizer, prompt: str | list[str | int | list[int]],
                       suffix: str | None) -> list[Prompt]:
    if isinstance(prompt, str):
        items: list[str | list[int]] = [prompt]
    elif prompt and all(isinstance(p, int) for p in prompt):
        items = [prompt]  # type: ignore[list-item]  # one token array
    elif any(isinstance(p, int) for p in prompt):
        raise invalid("prompt must be a string, a list of strings, a token array or a list of token arrays",
                      param="prompt")
    else:
        items = prompt  # type: ignore[assignment]
    if not items:
        raise invalid("prompt is empty", param="prompt")
    if suffix is not None and not tokenizer.supports_infill:
        raise invalid("suffix needs a model with fill-in-the-middle tokens; this one has none", param="suffix")
    prompts = []
    for item in items:
        if isinstance(item, str):
            prompts.append(Prompt(_string_tokens(tokenizer, item, infill=suffix is not None), item))
        else:
            check_tokens(tokenizer, item, "prompt")
            prompts.append(Prompt(list(item), tokenizer.detokenize(item, special=False)))
    if suffix is not None:
        for p in prompts:
            p.token_ids = _infill(tokenizer, p.token_ids, suffix)
    return prompts


def _string_tokens(tokenizer: Tokenizer, text: str, infill: bool) -> list[int]:
    # An infill prefix is plain text placed between FIM tokens: no BOS, no special tokens.
    return tokenizer.tokenize(text, add_special=not infill, parse_special=not infill)


def _infill(tokenizer: Tokenizer, prefix: list[int], suffix: str) -> list[int]:
    """``[BOS] <FIM_PRE> prefix <FIM_SUF> suffix <FIM_MID>``: the model writes the middle."""
    suffix_ids = tokenizer.tokenize(suffix, add_special=False, parse_special=False)
    bos = [tokenizer.bos_id] if tokenizer.add_bos and tokenizer.bos_id >= 0 else []
    return [*bos, tokenizer.fim_prefix_id, *prefix, tokenizer.fim_suffix_id, *suffix_ids, tokenizer.fim_middle_id]
