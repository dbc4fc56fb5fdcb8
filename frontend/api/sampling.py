"""API parameters -> engine requests: defaults, seeds, logit bias, limits and the context check.

Defaults for omitted parameters are llama-server's (temperature 0.8, top_k 40, top_p 0.95,
min_p 0.05, no repetition penalty), so clients tuned against it behave the same here; the
server-wide sampling flags (``--temp``, ``--top-k``, ...) replace them, as llama-server's do, and
so do its output defaults (ggserve.flags.output: ``-l``, ``--grammar``, ``-j``) for requests that
set no logit bias or output format of their own.
With ``n > 1`` choice i samples with ``seed + i``: the choices differ from each other, and the
same request with the same seed gives the same n choices again.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass

import msgspec

from frontend.http.errors import ApiError, invalid
from frontend.text.prompts import Prompt, check_tokens, truncate_tokens
from ggserve.samplers import infill_problem, sampler_order
from frontend.api.schemas import LogitBias, SamplingFields
from frontend.structured.grammar import GrammarChecker, GrammarError
from frontend.structured.json_schema import schema_to_gbnf
from frontend.structured.lazy import grammar_triggers
from frontend.text.tokenizer import Tokenizer
from ggserve.config import ServeConfig
from ggserve.flags.output import parse_logit_bias
from ipc.protocol import AddRequest, EngineInfo, LoraScale, MediaChunk, SamplingParams, Speculation

# llama-server's defaults for whatever a request leaves out.
DEFAULTS = SamplingParams(temperature=0.8, top_k=40, top_p=0.95, min_p=0.05)
# Request fields that map one to one onto SamplingParams (same name, same meaning).
FROM_REQUEST = ("temperature", "top_k", "top_p", "min_p", "typical_p", "repeat_penalty", "repeat_last_n",
                "presence_penalty", "frequency_penalty", "min_keep", "top_n_sigma", "xtc_probability",
                "xtc_threshold", "dynatemp_range", "dynatemp_exponent", "mirostat", "mirostat_tau", "mirostat_eta",
                "dry_multiplier", "dry_allowed_length", "dry_penalty_last_n", "dry_sequence_breakers",
                "adaptive_target", "adaptive_decay")
_SEED_MASK = 0xFFFFFFFF  # llama.cpp seeds are uint32


def server_defaults(cfg: ServeConfig) -> SamplingParams:
    """llama-server's defaults with the server-wide flags applied; a JSON schema that cannot be
    converted raises SchemaError."""
    schema = schema_to_gbnf(json.loads(cfg.json_schema)) if cfg.json_schema else None
    return msgspec.structs.replace(DEFAULTS, **cfg.sampling, logit_bias=[parse_logit_bias(v) for v in cfg.logit_bias],
                                   grammar=cfg.grammar or schema)


def check_server_defaults(defaults: SamplingParams, tokenizer: Tokenizer, checker: GrammarChecker) -> None:
    """What the command line cannot check without the model: -l's token ids, and the grammar of
    --grammar / -j as llama.cpp parses it. ValueError says what is wrong."""
    for token, _ in defaults.logit_bias:
        if not 0 <= token < tokenizer.n_vocab:
            raise ValueError(f"--logit-bias: token {token} is not in the model's vocabulary of {tokenizer.n_vocab}")
    if (why := infill_problem(defaults.samplers, defaults.top_k)) is not None:
        raise ValueError(f"--samplers: {why}")
    if defaults.grammar is not None:
        try:
            checker.check(defaults.grammar)
        except GrammarError as exc:
            raise ValueError(f"the server's grammar (--grammar / --json-schema): {exc}") from None


def sampling_params(req: SamplingFields, tokenizer: Tokenizer, defaults: SamplingParams, default_seed: int,
                    eog_ids: list[int], n_ctx_slot: int, grammar: str | None = None) -> SamplingParams:
    """The sampler settings of choice 0 (``with_seed_offset`` derives the others); ``grammar``
    is the checked GBNF the output must follow (lazily with ``grammar_lazy``; None: the
    server's, if any); ``eog_ids`` are
    banned with ``ignore_eos``, as llama-server does (an end-of-generation token that may not end
    the output is not sampled), and by ``allowed_token_ids`` that list none of them."""
    given = {name: value for name in FROM_REQUEST if (value := getattr(req, name)) is not None}
    if given.get("repeat_last_n", defaults.repeat_last_n) == -1:  # -1: the whole context, as llama-server
        given["repeat_last_n"] = n_ctx_slot
    if req.repetition_penalty is not None and req.repeat_penalty is None:  # vLLM's: over the whole context
        given["repeat_penalty"] = req.repetition_penalty
        given.setdefault("repeat_last_n", n_ctx_slot)
    # llama.cpp sizes a buffer by these windows: past the context they mean the whole context
    for name in ("repeat_last_n", "dry_penalty_last_n"):
        if given.get(name, getattr(defaults, name)) > n_ctx_slot:
            given[name] = n_ctx_slot
    if req.dry_base is not None and req.dry_base >= 1.0:  # below 1: the default, as llama-server
        given["dry_base"] = req.dry_base
    if req.samplers is not None:
        try:
            given["samplers"] = sampler_order(req.samplers)
        except ValueError as exc:
            raise invalid(str(exc), param="samplers") from None
    if req.stop_token_ids and not all(0 <= t < tokenizer.n_vocab for t in req.stop_token_ids):
        raise invalid(f"stop_token_ids: a token id is not in the model's vocabulary of {tokenizer.n_vocab}",
                      param="stop_token_ids")
    bias = logit_bias(req.logit_bias, tokenizer) if req.logit_bias is not None else list(defaults.logit_bias)
    if req.allowed_token_ids is not None:  # (the grammar of frontend.structured.constraints)
        check_tokens(tokenizer, req.allowed_token_ids, "allowed_token_ids")
    if req.ignore_eos or (req.allowed_token_ids is not None and not set(req.allowed_token_ids) & set(eog_ids)):
        bias += [(t, -math.inf) for t in eog_ids]
    seed = default_seed if req.seed is None else req.seed
    triggers = grammar_triggers(req, tokenizer)  # checked even without a grammar to trigger
    if req.bad_words:
        given["banned_sequences"] = banned_sequences(req.bad_words, tokenizer)
    if (why := infill_problem(given.get("samplers", defaults.samplers), given.get("top_k", defaults.top_k))):
        raise invalid(why, param="samplers" if "samplers" in given else "top_k")
    return msgspec.structs.replace(defaults, **given, logit_bias=bias,
                                   seed=None if seed < 0 else seed & _SEED_MASK,
                                   grammar=grammar if grammar is not None else defaults.grammar,
                                   grammar_triggers=triggers if grammar is not None else None)


def banned_sequences(words: list[str], tokenizer: Tokenizer) -> list[list[int]]:
    """vLLM's bad_words as token sequences: each word's tokens as written at the start of the
    text and after a space (most vocabularies spell a word differently there), once each."""
    out: list[list[int]] = []
    for i, word in enumerate(words):
        bare = word.lstrip()
        if not bare:
            raise invalid(f"bad_words[{i}] is empty", param=f"bad_words[{i}]")
        for text in (bare, " " + bare):
            tokens = tokenizer.tokenize(text, add_special=False, parse_special=False)
            if tokens and tokens not in out:
                out.append(tokens)
    return out


def with_post_sampling_probs(params: SamplingParams, wanted: bool) -> SamplingParams:
    """``post_sampling_probs``: report the probabilities after the sampler chain (those the token
    was drawn from) instead of the model's log-probabilities. Not with a grammar, whose sampler
    rules candidates out rather than weighing them."""
    if not wanted:
        return params
    if params.grammar is not None or params.banned_sequences:
        raise invalid("post_sampling_probs cannot be combined with a grammar, JSON schema, tools or bad_words",
                      param="post_sampling_probs")
    return msgspec.structs.replace(params, post_sampling_probs=True)


def with_seed_offset(params: SamplingParams, offset: int) -> SamplingParams:
    if params.seed is None or offset == 0:
        return params
    return msgspec.structs.replace(params, seed=(params.seed + offset) & _SEED_MASK)


def logit_bias(bias: LogitBias, tokenizer: Tokenizer) -> list[tuple[int, float]]:
    """OpenAI's {"token id": bias}, and llama-server's forms: a key that is not a number is text
    (all its tokens get the bias), ``[[id or text, bias], ...]``, and ``false`` as the bias bans."""
    pairs = bias.items() if isinstance(bias, dict) else bias
    out: list[tuple[int, float]] = []
    for key, value in pairs:
        if value is True:
            raise invalid(f"logit_bias of {key!r} is true; a bias is a number, or false to ban the token",
                          param="logit_bias")
        if isinstance(key, int):
            token_ids = [key]
        else:
            try:
                token_ids = [int(key)]
            except ValueError:
                token_ids = tokenizer.tokenize(key, add_special=False, parse_special=False)
        check_tokens(tokenizer, token_ids, "logit_bias")
        out.extend((t, -math.inf if value is False else float(value)) for t in token_ids)
    return out


def time_limit_s(req: SamplingFields) -> float | None:
    """``t_max_predict_ms`` in seconds; None: no limit."""
    return req.t_max_predict_ms / 1e3 if req.t_max_predict_ms is not None and req.t_max_predict_ms > 0 else None


def stop_strings(stop: str | list[str] | None) -> list[str]:
    if stop is None:
        return []
    return [stop] if isinstance(stop, str) else stop


def max_tokens(value: int | None, param: str = "max_tokens", default: int = -1) -> int:
    """The engine's max_tokens: -1 (no limit but the context) for -1; ``default`` (the server's
    ``-n``) for None; 0 evaluates the prompt into the cache and generates nothing (llama-server's
    n_predict 0, as editors warm a cache with it)."""
    if value is None:
        return default
    if value < -1:
        raise invalid(f"{param} must be at least 0 (or -1 for no limit), got {value}", param=param)
    return value


def token_limit(req: SamplingFields, cfg: ServeConfig, max_completion_tokens: int | None = None) -> int:
    """The request's output limit: llama-server reads ``n_predict``, then
    ``max_completion_tokens``, then ``max_tokens``; none of them: the server's ``-n``."""
    for param, value in (("n_predict", req.n_predict), ("max_completion_tokens", max_completion_tokens),
                         ("max_tokens", req.max_tokens)):
        if value is not None:
            return max_tokens(value, param)
    return max_tokens(None, default=cfg.n_predict)


def check_slot(req: SamplingFields, info: EngineInfo) -> None:
    """``id_slot`` names a slot that exists (numbered over all executors, as /slots shows them)."""
    n_slots = info.n_slots * info.n_executors
    if req.id_slot >= n_slots:
        raise invalid(f"id_slot {req.id_slot} does not exist: the server has {n_slots} slots (0..{n_slots - 1})",
                      param="id_slot")


def truncated_prompt(token_ids: list[int], req: SamplingFields, max_new: int, info: EngineInfo,
                     has_media: bool = False) -> list[int]:
    """The prompt cut as vLLM's ``truncate_prompt_tokens`` says: to k tokens, its last ones
    unless ``truncation_side`` is "right"; -1: as many as fit in a slot beside the output limit."""
    keep = req.truncate_prompt_tokens
    if keep is None:
        return token_ids
    if has_media:
        raise invalid("truncate_prompt_tokens cannot cut a prompt with images or audio",
                      param="truncate_prompt_tokens")
    if keep < 0:  # room for max_tokens beside it, or for one token when they would not leave one
        keep = info.n_ctx_slot - (max_new if 0 <= max_new < info.n_ctx_slot and not info.context_shift else 1)
    return truncate_tokens(token_ids, keep, req.truncation_side)


def truncated_prompts(prompts: list[Prompt], req: SamplingFields, max_new: int, info: EngineInfo,
                      tokenizer: Tokenizer) -> list[Prompt]:
    """Text prompts cut by ``truncate_prompt_tokens`` (truncated_prompt); ``echo`` then sends
    the text of what was kept."""
    fitted = []
    for prompt in prompts:
        tokens = truncated_prompt(prompt.token_ids, req, max_new, info, bool(prompt.media))
        fitted.append(prompt if tokens is prompt.token_ids else Prompt(tokens, tokenizer.detokenize(tokens, False)))
    return fitted


def check_context(n_prompt: int, info: EngineInfo) -> None:
    """A prompt must leave a slot room for one token. A longer ``max_tokens`` than the rest of
    the context is no error: the output stops where the context is full (finish "length",
    ``truncated``), as llama-server does; with a context that shifts it goes on."""
    n_ctx_slot = info.n_ctx_slot
    if n_prompt == 0:
        raise invalid("the prompt is empty", param="prompt")
    if n_prompt >= n_ctx_slot:
        raise context_exceeded(f"the prompt has {n_prompt} tokens but a slot's context holds {n_ctx_slot} tokens, "
                               "prompt and generated tokens together; shorten the prompt or increase the context "
                               "size", n_prompt, n_ctx_slot)


def context_exceeded(message: str, n_prompt: int, n_ctx: int) -> ApiError:
    """llama-server's 400 for a prompt a slot cannot hold, with its counts."""
    return ApiError(400, message, type="exceed_context_size_error", extra={"n_prompt_tokens": n_prompt, "n_ctx": n_ctx})


@dataclass(frozen=True)
class CacheDefaults:
    """The server's defaults for a request's KV-cache fields: ``--keep`` (n_keep),
    ``--cache-reuse`` (n_cache_reuse), and whether the vocabulary adds BOS."""

    n_keep: int = 0
    n_cache_reuse: int = 0
    add_bos: bool = True


def kept_tokens(req: SamplingFields, n_prompt: int, cache: CacheDefaults) -> int:
    """Leading tokens a context shift keeps, as llama-server counts them: ``n_keep`` (the
    server's ``--keep`` when not given; -1: the whole prompt), plus one for the BOS token of a
    vocabulary that adds it."""
    n_keep = cache.n_keep if req.n_keep is None else req.n_keep
    return (n_prompt if n_keep < 0 else n_keep) + cache.add_bos


def speculation(req: SamplingFields) -> Speculation | None:
    """The request's own speculative decoding settings (None: the server's)."""
    if req.spec_n_max is None and req.spec_n_min is None and req.spec_p_min is None:
        return None
    return Speculation(req.spec_n_max, req.spec_n_min, req.spec_p_min)


def engine_requests(request_id: str, prompts: list[list[int]], n: int, req: SamplingFields,
                    sampling: SamplingParams | list[SamplingParams], max_new: int, logprobs: int, cache: CacheDefaults,
                    prompt_logprobs: int = -1, lora: list[LoraScale] | None = None,
                    media: list[list[MediaChunk]] | None = None) -> list[AddRequest]:
    """One AddRequest per (prompt, choice); ids are ``<request_id>-<index>``; ``sampling``: for
    every prompt, or each prompt's; ``lora``: the adapter scales of frontend.api.lora.request_lora;
    ``media``: each prompt's media chunks."""
    if 0 <= max_new < req.min_tokens:
        raise invalid(f"min_tokens ({req.min_tokens}) is more than the tokens the request may generate ({max_new})",
                      param="min_tokens")
    now = time.time()
    samplings = sampling if isinstance(sampling, list) else [sampling] * len(prompts)
    return [
        AddRequest(
            request_id=f"{request_id}-{p * n + i}",
            prompt_token_ids=prompt,
            max_tokens=max_new,
            sampling=with_seed_offset(samplings[p], i),
            stop_token_ids=req.stop_token_ids or [],
            min_tokens=req.min_tokens,
            cache_salt=req.cache_salt or "",
            ignore_eos=bool(req.ignore_eos),
            logprobs=logprobs,
            cache_prompt=req.cache_prompt,
            arrival_time=now,
            prompt_logprobs=prompt_logprobs,
            return_progress=req.return_progress and req.stream,
            id_slot=req.id_slot,
            n_keep=kept_tokens(req, len(prompt), cache),
            n_discard=req.n_discard,
            n_cache_reuse=cache.n_cache_reuse if req.n_cache_reuse is None else req.n_cache_reuse,
            lora=lora,
            speculative=speculation(req),
            media=media[p] if media else [],
        )
        for p, prompt in enumerate(prompts)
        for i in range(n)
    ]
