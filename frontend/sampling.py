"""API parameters -> engine requests: defaults, seeds, logit bias, limits and the context check.

Defaults for omitted parameters are llama-server's (temperature 0.8, top_k 40, top_p 0.95,
min_p 0.05, no repetition penalty), so clients tuned against it behave the same here.
With ``n > 1`` choice i samples with ``seed + i``: the choices differ from each other, and the
same request with the same seed gives the same n choices again.
"""

from __future__ import annotations

import time

import msgspec

from frontend.errors import ApiError, invalid
from frontend.prompts import check_tokens
from frontend.schemas import SamplingFields
from frontend.tokenizer import Tokenizer
from ipc.protocol import AddRequest, SamplingParams

# llama-server's defaults for whatever a request leaves out.
DEFAULTS = SamplingParams(temperature=0.8, top_k=40, top_p=0.95, min_p=0.05, typical_p=1.0, repeat_penalty=1.0,
                          repeat_last_n=64, presence_penalty=0.0, frequency_penalty=0.0)
_FROM_REQUEST = ("temperature", "top_k", "top_p", "min_p", "typical_p", "repeat_penalty", "repeat_last_n",
                 "presence_penalty", "frequency_penalty")
_SEED_MASK = 0xFFFFFFFF  # llama.cpp seeds are uint32


def sampling_params(req: SamplingFields, tokenizer: Tokenizer, default_seed: int,
                    grammar: str | None = None) -> SamplingParams:
    """The sampler settings of choice 0 (``with_seed_offset`` derives the others); ``grammar``
    is the checked GBNF the output must follow."""
    given = {name: value for name in _FROM_REQUEST if (value := getattr(req, name)) is not None}
    seed = default_seed if req.seed is None else req.seed
    return msgspec.structs.replace(DEFAULTS, **given, logit_bias=logit_bias(req.logit_bias or {}, tokenizer),
                                   seed=None if seed < 0 else seed & _SEED_MASK, grammar=grammar)


def with_seed_offset(params: SamplingParams, offset: int) -> SamplingParams:
    if params.seed is None or offset == 0:
        return params
    return msgspec.structs.replace(params, seed=(params.seed + offset) & _SEED_MASK)


def logit_bias(bias: dict[str, float], tokenizer: Tokenizer) -> list[tuple[int, float]]:
    """OpenAI's {"token id": bias}; a key that is not a number is text, biasing all its tokens
    (llama-server's extension)."""
    out: list[tuple[int, float]] = []
    for key, value in bias.items():
        try:
            token_ids = [int(key)]
        except ValueError:
            token_ids = tokenizer.tokenize(key, add_special=False, parse_special=False)
        check_tokens(tokenizer, token_ids, "logit_bias")
        out.extend((t, value) for t in token_ids)
    return out


def stop_strings(stop: str | list[str] | None) -> list[str]:
    if stop is None:
        return []
    return [stop] if isinstance(stop, str) else stop


def max_tokens(value: int | None, param: str = "max_tokens") -> int:
    """The engine's max_tokens: -1 (no limit but the context) for None or -1."""
    if value is None or value == -1:
        return -1
    if value < 1:
        raise invalid(f"{param} must be at least 1 (or -1 for no limit), got {value}", param=param)
    return value


def check_context(n_prompt: int, max_new: int, n_ctx_slot: int) -> None:
    """A request must fit a slot: prompt + max_tokens, or prompt + one token without a limit."""
    if n_prompt == 0:
        raise invalid("the prompt is empty", param="prompt")
    if max_new < 0 and n_prompt >= n_ctx_slot:
        message = (f"the prompt has {n_prompt} tokens but a slot's context holds {n_ctx_slot} tokens, "
                   "prompt and generated tokens together; shorten the prompt or increase the context size")
    elif max_new >= 0 and n_prompt + max_new > n_ctx_slot:
        message = (f"the request asks for {n_prompt + max_new} tokens ({n_prompt} prompt + {max_new} max_tokens) "
                   f"but a slot's context holds {n_ctx_slot} tokens; shorten the prompt, lower max_tokens "
                   "or increase the context size")
    else:
        return
    raise ApiError(400, message, type="exceed_context_size_error",
                   extra={"n_prompt_tokens": n_prompt, "n_ctx": n_ctx_slot})


def engine_requests(request_id: str, prompts: list[list[int]], n: int, req: SamplingFields, sampling: SamplingParams,
                    max_new: int, logprobs: int, prompt_logprobs: int = -1) -> list[AddRequest]:
    """One AddRequest per (prompt, choice); ids are ``<request_id>-<index>``."""
    now = time.time()
    return [
        AddRequest(
            request_id=f"{request_id}-{p * n + i}",
            prompt_token_ids=prompt,
            max_tokens=max_new,
            sampling=with_seed_offset(sampling, i),
            ignore_eos=req.ignore_eos,
            logprobs=logprobs,
            cache_prompt=req.cache_prompt,
            arrival_time=now,
            prompt_logprobs=prompt_logprobs,
        )
        for p, prompt in enumerate(prompts)
        for i in range(n)
    ]
